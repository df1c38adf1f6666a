"""The control node's side of replicas: a replica that refused during a backup is caught up by the
control node (no new backup), under the host lease, and `replica_behind` clears; the copies of
data volumes carry the lifecycle tag as on the primary. (A queued drill with `--target`:
tests/test_replicas.py, the drill rotation.)"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, wait_until
from tests.seaweed import S3Store
from tests.test_replicas import SECOND_KEYS, classes_of, data_tree

READ_KEYS = {"READ_AWS_ACCESS_KEY_ID": "AKIACONTROLREAD1",
             "READ_AWS_SECRET_ACCESS_KEY": "control-read-secret-0123456789"}


@pytest.mark.slow
def test_the_control_node_catches_a_replica_up_without_a_backup_and_replica_behind_clears(
        make_config: Any, start_control: Any, run_offsite: Any, aws: Any,
        target_store: S3Store, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data")
    # the replica's bucket does not exist yet: every write to it is refused, as by a server down
    replica = S3Store("moto", aws.endpoint_url, bucket=f"offsite-late-{uuid.uuid4().hex[:10]}")
    try:
        config = make_config(
            {"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
            replicas={"second": replica.target(retries=1)},
            watchdog={"every": "1s", "replica_behind_after": "1s", "replica_catch_up": "1s"})
        down = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                           env_extra=SECOND_KEYS, timeout=180)
        assert down.returncode == 0 and "second: none (behind)" in down.stdout, describe(down)

        control = start_control(config, env_extra={**SECOND_KEYS, **READ_KEYS})
        wait_until(lambda: "replica_behind" in classes_of(aws), 60, "replica_behind")
        replica.s3.create_bucket(Bucket=replica.bucket,
                                 CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        wait_until(lambda: "recovered from replica behind" in " ".join(
            str(a["Subject"]) for a in aws.alerts(0, 0)), 60, "the recovery from replica_behind")

        keys = target_store.object_keys("carcosa/")
        assert replica.object_keys("carcosa/") == keys
        listed = json.loads(run_offsite("hosts", "--json", config=config).stdout)
        record = listed[0]["replicas"]["second"]
        assert record["state"] == "current" and record["newest_set"], listed
        assert classes_of(aws).count("replica_behind") == 1
        assert "replica second of host carcosa caught up" in control.log_text()

        volumes = [key for key in keys if "/data-" in key and ".difftar" in key]
        assert volumes, keys
        for key in volumes:   # the replica's lifecycle rules see the primary's tag
            tags = replica.s3.get_object_tagging(Bucket=replica.bucket, Key=key)["TagSet"]
            assert tags == [{"Key": "offsite-class", "Value": "volume"}], (key, tags)
        manifest = next(key for key in keys if key.endswith(".manifest.gpg"))
        assert replica.s3.get_object_tagging(Bucket=replica.bucket,
                                             Key=manifest)["TagSet"] == []
    finally:
        replica.close()


def test_a_backup_waits_while_the_catch_up_holds_the_host(
        redis_url: str, tmp_path: Path) -> None:
    """A backup asked for while the control node copies waits (MustWait) rather than being
    skipped: an incremental skipped there would be a backup missed."""
    import redis

    from offsite.config.model import parse_config
    from offsite.constants import BackupType, RunType
    from offsite.host.settings import resolve_host
    from offsite.ledger.lease import RedisHostLease, catch_up_holder
    from offsite.ledger.records import RedisRunStore
    from offsite.run.admission import MustWait, admit
    from offsite.run.context import RunContext, new_run_id
    from offsite.schedule.specs import utcnow

    config = parse_config({
        "broker_url": redis_url, "target": {"url": f"file://{tmp_path}/primary"},
        "replicas": {"second": {"url": f"file://{tmp_path}/second"}},
        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}})
    client = redis.Redis.from_url(redis_url)
    try:
        lease = RedisHostLease(client, 60)
        holder = catch_up_holder("carcosa", "20261204T000000Z")
        assert lease.acquire("carcosa", holder)
        ctx = RunContext(config=config, settings=resolve_host(config, "carcosa"),
                         store=RedisRunStore(client), lease=lease,
                         run_id=new_run_id("carcosa", BackupType.INCR, utcnow()), worker="w")
        with pytest.raises(MustWait, match="catch-up"):
            admit(ctx, RunType.INCR, None)
    finally:
        client.close()
