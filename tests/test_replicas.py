"""Redundant targets: every set of a host reaches its replica on another S3 server (SeaweedFS, a
real storage server), checked object by object; a replica that is down leaves the backup
succeeded and `behind`, and catches up on the next run or by the control node; a damaged copy
is found and copied again; `list`, `verify`, `restore` and `recover` read a replica with
`--target NAME`."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.helpers import describe, find_leaks, wait_until
from tests.seaweed import S3Store, SeaweedServer
from tests.test_backup_flow import same_tree, write_tree
from tests.test_failures import Ledger, backup

SECOND_KEYS = {"SECOND_AWS_ACCESS_KEY_ID": "AKIASECONDREPLICA1",
               "SECOND_AWS_SECRET_ACCESS_KEY": "second-replica-secret-0123456789"}
READ_KEYS = {"READ_AWS_ACCESS_KEY_ID": "AKIACONTROLREAD1",   # the control node's on the primary
             "READ_AWS_SECRET_ACCESS_KEY": "control-read-secret-0123456789"}


@pytest.fixture
def replica(seaweed: SeaweedServer) -> Iterator[S3Store]:
    """A versioned bucket on the session's SeaweedFS."""
    seaweed.start()
    store = S3Store("seaweedfs", seaweed.endpoint_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of the test's own, to be stopped and started again."""
    server = SeaweedServer(tmp_path / "seaweed-own")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def data_tree(root: Path) -> Path:
    write_tree(root, {"db.sql": b"-- dump\n" * 2000, "sub/blob.bin": bytes(range(256)) * 900})
    return root


def sha(store: S3Store, key: str) -> str:
    body = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"]
    try:
        return hashlib.sha256(body.read()).hexdigest()
    finally:
        body.close()


def chains(run_offsite: Any, config: Path, *target: str) -> Any:
    result = run_offsite("list", "carcosa", "--json", *target, config=config,
                         env_extra=SECOND_KEYS)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)["chains"]


@pytest.mark.slow
def test_full_and_incr_through_the_worker_reach_the_replica_which_restores_alone(
        make_config: Any, start_worker: Any, run_offsite: Any, target_store: S3Store,
        replica: S3Store, redis_client: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         replicas={"second": replica.target()})
    worker = start_worker(config, "carcosa", env_extra=SECOND_KEYS)
    runs = Ledger(redis_client)
    full = backup(run_offsite, config, "carcosa", "full", ledger=runs)
    (data / "later.txt").write_text("after the full\n")
    incr = backup(run_offsite, config, "carcosa", "incr", ledger=runs)

    for record in (full, incr):
        assert record["state"] == "succeeded", record
        assert record["replicas"]["second"]["state"] == "current", record
        assert record["replicas"]["second"]["newest_set"] == record["backup_set"]
        assert [step["name"] for step in record["steps"]][-2:] == ["upload", "replicate"]
    assert incr["replicas"]["second"]["copied_sets"] == 1, json.dumps(incr["replicas"])
    primary_keys = target_store.object_keys("carcosa/")
    assert replica.object_keys("carcosa/") == primary_keys
    for key in primary_keys:
        assert sha(replica, key) == sha(target_store, key), key
    assert chains(run_offsite, config, "--target", "second") == chains(run_offsite, config)
    hosts = run_offsite("hosts", config=config)
    assert hosts.returncode == 0, describe(hosts)
    assert f"replicas: second {incr['backup_set']} (current)" in hosts.stdout, hosts.stdout
    listed = json.loads(run_offsite("hosts", "--json", config=config).stdout)
    assert listed[0]["replicas"] == {"second": {"state": "current",
                                                "newest_set": incr["backup_set"]}}

    verified = run_offsite("verify", "carcosa", "--local", "--target", "second", config=config,
                           env_extra=SECOND_KEYS, timeout=180)
    assert verified.returncode == 0, describe(verified)
    for key in primary_keys:   # the primary's host folder is gone: the replica alone restores
        target_store.s3.delete_object(Bucket=target_store.bucket, Key=key)
    assert target_store.object_keys("carcosa/") == []
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), "--target", "second",
                         config=config, env_extra=SECOND_KEYS, timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)

    ledger = "".join(str(redis_client.get(key)) for key in redis_client.keys("*")
                     if redis_client.type(key) == "string")
    assert not find_leaks(ledger + worker.log_text(), SECOND_KEYS.values())


@pytest.mark.slow
def test_a_replica_down_leaves_the_backup_succeeded_behind_then_it_catches_up_and_heals(
        make_config: Any, run_offsite: Any, target_store: S3Store, own_seaweed: SeaweedServer,
        tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    replica = S3Store("seaweedfs", own_seaweed.endpoint_url)
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         replicas={"second": replica.target(retries=1)})
    try:
        own_seaweed.stop()
        down = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                           env_extra=SECOND_KEYS, timeout=180)
        assert down.returncode == 0, describe(down)
        assert ": succeeded" in down.stdout and "second: none (behind)" in down.stdout
        assert "replica second behind" in down.stdout

        own_seaweed.start()
        (data / "later.txt").write_text("while the replica was down\n")
        back = run_offsite("backup", "carcosa", "--type", "incr", "--local", config=config,
                           env_extra=SECOND_KEYS, timeout=180)
        assert back.returncode == 0 and "(current)" in back.stdout, describe(back)
        keys = target_store.object_keys("carcosa/")
        assert replica.object_keys("carcosa/") == keys   # both sets: the full caught up
        assert chains(run_offsite, config, "--target", "second") == chains(run_offsite, config)

        volume = next(key for key in keys if ".difftar" in key)
        size = len(replica.s3.get_object(Bucket=replica.bucket, Key=volume)["Body"].read())
        replica.s3.put_object(Bucket=replica.bucket, Key=volume, Body=b"\0" * size)
        (data / "third.txt").write_text("third\n")
        healed = run_offsite("backup", "carcosa", "--type", "incr", "--local", config=config,
                             env_extra=SECOND_KEYS, timeout=180)
        assert healed.returncode == 0 and "(current)" in healed.stdout, describe(healed)
        assert sha(replica, volume) == sha(target_store, volume)
        assert replica.object_keys("carcosa/") == target_store.object_keys("carcosa/")

        moment = int(time.time()) + 1   # after the copies, before the deletion below
        wait_until(lambda: time.time() >= moment + 1, 5, "a second after the copies")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
        replica.s3.delete_object(Bucket=replica.bucket, Key=volume)   # on the replica only
        recovered = run_offsite("recover", "carcosa", "--time", at, "--target", "second",
                                "--apply", config=config, env_extra={
                                    **SECOND_KEYS, "SECOND_RECOVER_AWS_ACCESS_KEY_ID": "AKIAR2",
                                    "SECOND_RECOVER_AWS_SECRET_ACCESS_KEY": "recover-2"})
        assert recovered.returncode == 0, describe(recovered)
        assert f"undelete {volume}" in recovered.stdout and "put back 1 object(s)" in \
            recovered.stdout
        assert sha(replica, volume) == sha(target_store, volume)
    finally:
        replica.close()


def test_a_host_opted_out_gets_no_replicate_step(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                                      "replicas": []}},
                         target={"url": f"file://{tmp_path}/primary"},
                         replicas={"second": {"url": f"file://{tmp_path}/second"}})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0 and "replicas" not in result.stdout, describe(result)
    assert not (tmp_path / "second").exists()


def test_file_replica_gets_every_object_and_lists_the_same_chains(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/primary"},
                         replicas={"second": {"url": f"file://{tmp_path}/second"}})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0 and "(current)" in result.stdout, describe(result)
    (tmp_path / "primary" / "carcosa" / "offsite-seal.extra").write_text("not a set's")
    stamp = sorted(p.name for p in (tmp_path / "primary" / "carcosa").iterdir())[0]
    seal = stamp.split(".")[1]   # an object a later change may add, named with the set's time
    (tmp_path / "primary" / "carcosa" / f"seal.{seal}.json").write_text("{}")
    again = run_offsite("backup", "carcosa", "--type", "incr", "--local", config=config)
    assert again.returncode == 0, describe(again)
    primary = {p.name: p.read_bytes() for p in (tmp_path / "primary" / "carcosa").iterdir()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "second" / "carcosa").iterdir()}
    assert f"seal.{seal}.json" in second, sorted(second)
    assert "offsite-seal.extra" not in second   # not a set's object
    del primary["offsite-seal.extra"]
    assert second == primary
    assert chains(run_offsite, config, "--target", "second") == chains(run_offsite, config)


def classes_of(aws: Any) -> list[str]:
    """The classes of every alert so far (without waiting)."""
    return [a["MessageAttributes"]["class"]["Value"] for a in aws.alerts(0, 0)]


def alert_classes(aws: Any, expected: int, timeout: float) -> list[tuple[str, str]]:
    return [(a["MessageAttributes"]["class"]["Value"], a["Subject"])
            for a in aws.alerts(expected, timeout=timeout)]


@pytest.mark.slow
def test_replica_stopped_raises_replica_behind_and_the_control_node_catches_it_up(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        target_store: S3Store, own_seaweed: SeaweedServer, tmp_path: Path,
        redis_client: Any) -> None:
    data = data_tree(tmp_path / "data")
    replica = S3Store("seaweedfs", own_seaweed.endpoint_url)
    try:
        config = make_config(
            {"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
            replicas={"second": replica.target()},
            watchdog={"every": "1s", "replica_behind_after": "3s", "replica_catch_up": "1s"})
        own_seaweed.stop()
        start_worker(config, "carcosa", env_extra=SECOND_KEYS)
        control = start_control(config, env_extra={**SECOND_KEYS, **READ_KEYS})
        full = backup(run_offsite, config, "carcosa", "full", ledger=Ledger(redis_client))
        assert full["state"] == "succeeded", full
        assert full["replicas"]["second"]["state"] == "behind", full
        assert full["replicas"]["second"]["lacking"] == 1

        wait_until(lambda: "replica_behind" in classes_of(aws), 60, "replica_behind",
                   interval=0.5)   # each poll is an SQS receive
        own_seaweed.start()   # no new backup: the control node copies what the replica lacks
        wait_until(lambda: "recovered from replica behind" in " ".join(
            a["Subject"] for a in aws.alerts(0, 0)), 60, "the recovery from replica_behind",
            interval=0.5)
        assert replica.object_keys("carcosa/") == target_store.object_keys("carcosa/")
        assert "replica second of host carcosa caught up" in control.log_text()
        listed = json.loads(run_offsite("hosts", "--json", config=config).stdout)
        assert listed[0]["replicas"]["second"] == {"state": "current",
                                                   "newest_set": full["backup_set"]}
        runs = json.loads(run_offsite("status", "carcosa", "--json", config=config).stdout)
        notes = next(run for run in runs if run["run_id"] == full["run_id"])["notes"]
        assert sum("caught up by the control node" in note for note in notes) == 1, notes
        assert classes_of(aws).count("replica_behind") == 1
    finally:
        replica.close()


def test_a_failed_copy_raises_replica_failed_once_and_clears(
        aws: Any, redis_url: str, aws_credentials: None) -> None:
    import redis

    from offsite.config.model import parse_config
    from offsite.constants import BackupType, RunState
    from offsite.ledger.lease import RedisHostLease
    from offsite.ledger.records import RedisRunStore
    from offsite.ledger.run_record import ReplicaRecord, RunRecord
    from offsite.schedule.specs import utcnow
    from offsite.watch.alerts import AlertOutbox, SnsSink
    from offsite.watch.watchdog import Watchdog

    config = parse_config({
        "broker_url": redis_url, "target": {"url": "file:///nowhere"},
        "replicas": {"second": {"url": "file:///elsewhere"}},
        "alerts": {"sns_topic_arn": aws.topic_arn, "endpoint_url": aws.endpoint_url,
                   "region": "eu-west-1"},
        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}})
    client = redis.Redis.from_url(redis_url)
    try:
        store = RedisRunStore(client)
        dog = Watchdog(config=config, store=store, client=client,
                       lease=RedisHostLease(client, 60), outbox=AlertOutbox(client),
                       sink=SnsSink(config), redispatch=lambda lost, rerun: None)
        now = utcnow()
        failed = ReplicaRecord(state="failed", newest_set=None, behind_since=now,
                               problem="vol1: the copy differs (written twice)")
        store.create(RunRecord(run_id="carcosa-full-1", host="carcosa", type=BackupType.FULL,
                               state=RunState.SUCCEEDED, created_at=now, finished_at=now,
                               replicas={"second": failed}))
        dog.tick(now)
        dog.tick(now)
        found = [(c, s) for c, s in alert_classes(aws, 1, 10) if c.startswith("replica")]
        assert [c for c, _ in found] == ["replica_failed"], found
        assert "written twice" in aws.alerts(1, 1)[0]["Message"] or any(
            "written twice" in a["Message"] for a in aws.alerts(1, 1))
        store.create(RunRecord(run_id="carcosa-incr-2", host="carcosa", type=BackupType.INCR,
                               state=RunState.SUCCEEDED, created_at=utcnow(),
                               finished_at=utcnow(),
                               replicas={"second": ReplicaRecord(state="current")}))
        dog.tick(utcnow())
        classes = [c for c, s in alert_classes(aws, 2, 10)]
        assert classes.count("replica_failed") == 1 and "recovered" in classes, classes
    finally:
        client.close()


def _catalog(*fulls: str) -> Any:
    from offsite.target.bucket import TargetObject
    from offsite.target.catalog import build_catalog
    names = [name for stamp in fulls for name in (
        f"duplicity-full.{stamp}.vol1.difftar.gpg", f"duplicity-full.{stamp}.manifest.gpg",
        f"duplicity-full-signatures.{stamp}.sigtar.gpg")]
    return build_catalog("file:///x/carcosa", [TargetObject(name, 10) for name in names])


def test_a_replica_never_loses_a_chain_the_primary_keeps() -> None:
    from offsite.proof.replica_prune import protected_sets, replica_plan
    from offsite.proof.retention import plan_prune
    a, b, c = "20261101T000000Z", "20261108T000000Z", "20261115T000000Z"
    primary = _catalog(a, b)            # the primary lost its newest chain; the replica has it
    primary_plan = plan_prune(primary, 1, None, "carcosa")
    assert [chain.full.time.strftime("%Y%m%dT%H%M%SZ") for chain in primary_plan.kept] == [b]
    plan = replica_plan(_catalog(a, b, c), 1, None, "carcosa",
                        protected_sets(primary, primary_plan))
    kept = [chain.full.time.strftime("%Y%m%dT%H%M%SZ") for chain in plan.kept]
    assert kept == [b, c] and "the primary keeps it" in plan.reasons.values()
    assert plan.objects == sorted(n for n in plan.objects if a in n) and len(plan.objects) == 3


def test_prune_applies_retention_to_the_primary_and_the_replica(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/primary"},
                         replicas={"second": {"url": f"file://{tmp_path}/second"}},
                         retention={"keep_full_chains": 1})
    for number in range(3):
        (data / f"file{number}.txt").write_text(f"{number}\n")
        result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
        assert result.returncode == 0 and "(current)" in result.stdout, describe(result)
    assert len(chains(run_offsite, config, "--target", "second")) == 3
    plan = run_offsite("prune", "carcosa", config=config)
    assert plan.returncode == 0, describe(plan)
    assert "replica second:" in plan.stdout and plan.stdout.count("delete chain") == 4
    applied = run_offsite("prune", "carcosa", "--apply", config=config)
    assert applied.returncode == 0, describe(applied)
    newest = chains(run_offsite, config)
    assert len(newest) == 1 and chains(run_offsite, config, "--target", "second") == newest
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), "--target", "second",
                         config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)


@pytest.mark.slow
def test_drills_rotate_over_the_primary_and_the_replica_each_restoring_alone(
        make_config: Any, start_control: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/primary"},
                         replicas={"second": {"url": f"file://{tmp_path}/second"}})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0 and "(current)" in result.stdout, describe(result)
    start_control(config)
    targets = []
    for _ in range(2):
        drill = run_offsite("verify", "carcosa", "--wait", "--timeout", "150", "--json",
                            config=config, timeout=180)
        assert drill.returncode == 0, describe(drill)
        record = json.loads(drill.stdout)
        assert record["state"] == "succeeded" and record["verify"]["mismatch_count"] == 0
        targets.append(record["target"])
    assert targets == ["primary", "second"]

    for volume in (tmp_path / "second" / "carcosa").glob("*.difftar.gpg"):
        volume.write_bytes(b"\0" * volume.stat().st_size)   # the replica's copy is damaged
    # queued with --target: the name travels in the message (the rotation would read primary)
    drill = run_offsite("verify", "carcosa", "--target", "second", "--wait", "--timeout", "150",
                        "--json", config=config, timeout=180)
    record = json.loads(drill.stdout)
    assert drill.returncode == 1 and record["target"] == "second", describe(drill)
    assert record["state"] == "failed" and record["error"]["failure_class"] == "verify_failed"


def test_provision_plans_each_replica_bucket_and_a_host_identity_on_it(
        make_config: Any, run_offsite: Any, replica: S3Store) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}},
                          "quiet": {"scripts": {"s": {"bash": "true"}}, "replicas": []}},
                         replicas={"second": replica.target()})
    plan = run_offsite("provision", config=config)
    assert plan.returncode == 0, describe(plan)
    assert f"replica second (apply with --target second" in plan.stdout
    assert f"bucket {replica.bucket} (eu-west-1): versioning Enabled" in plan.stdout
    assert "keys SECOND_AWS_* in carcosa.env" in plan.stdout
    assert "quiet.env" not in plan.stdout.split("replica second")[1]
    assert "keys SECOND_PRUNE_AWS_* in control.env" in plan.stdout
    assert "keys SECOND_RECOVER_AWS_* in recover.env" in plan.stdout
    data = json.loads(run_offsite("provision", "--format", "json", config=config).stdout)
    second = data["replicas"]["second"]
    assert second["bucket"]["name"] == replica.bucket
    users = {identity["user"]: identity for identity in second["identities"]}
    host = next(i for i in users.values() if i["role"] == "host")
    assert host["host"] == "carcosa" and "-second-host-carcosa" in host["user"]
    assert {i["role"] for i in users.values()} == {"host", "prune", "recover", "copy"}
    primary_host = next(i for i in data["identities"] if i["host"] == "carcosa")
    assert host["policy"]["Statement"][0]["Action"] == \
        primary_host["policy"]["Statement"][0]["Action"]
    only = run_offsite("provision", "--target", "second", config=config)
    assert only.returncode == 0 and f"bucket {replica.bucket}" in only.stdout.splitlines()[0]
