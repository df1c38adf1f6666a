"""`offsite provision --apply --target NAME` against real servers: on a moto_server that enforces
IAM it makes the replica's bucket (versioning on) and, on it, the host's identity with the same
rights as on the primary, the control node's copy identity and the recover identity; with those
keys alone the control node catches the replica up, a backup copies to it, and `recover --target`
undoes a delete there; the copies of data volumes carry the lifecycle tag. On SeaweedFS (no IAM,
no lifecycle, no public access block) apply makes the bucket and says what it could not do,
without failing."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from offsite.deploy.iam_policy import host_policy
from tests.helpers import REGION, TEST_AWS_KEY_ID, TEST_AWS_SECRET, describe, wait_until
from tests.seaweed import S3Store, SeaweedServer
from tests.security_harness import (StrictAws, copy_host, grant_head_bucket, read_env_file,
                                    unique_prefix, write_config)
from tests.test_hostile_outcomes import data_tree
from tests.test_provision import _operator, _passphrase, strict
from tests.test_security import local

__all__ = ["strict"]   # the module's IAM-enforcing moto_server fixture


def _only(env: dict[str, str], *prefixes: str) -> dict[str, str | None]:
    """The child env of a node holding only these identities' keys."""
    keys: dict[str, str | None] = {name: value for name, value in env.items()
                                   if name.startswith(prefixes)}
    return {**keys, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}


def _catch_up(config: Path, control: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """One catch-up pass as the control node runs it, with control.env's keys only, of a ledger
    that says what the worker's replicate step would have said of the full (a local run is
    not recorded there)."""
    import redis

    from offsite.config.model import load_config
    from offsite.constants import BackupType, RunState
    from offsite.ledger.lease import RedisHostLease
    from offsite.ledger.records import RedisRunStore
    from offsite.ledger.run_record import ReplicaRecord, RunRecord
    from offsite.watch.replica_catch_up import CatchUp
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DUPLICITY_AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in _only(control, "READ_AWS_", "SECOND_AWS_").items():
        if value is not None:
            monkeypatch.setenv(name, value)
    settings = load_config(config)
    client = redis.Redis.from_url(settings.broker_url)
    now = datetime.now(timezone.utc)
    try:
        store = RedisRunStore(client)
        store.create(RunRecord(run_id="alpha-full-20261204T000000Z", host="alpha",
                               type=BackupType.FULL, state=RunState.SUCCEEDED, created_at=now,
                               finished_at=now, replicas={"second": ReplicaRecord(
                                   state="behind", behind_since=now, lacking=1)}))
        return CatchUp(settings, store, RedisHostLease(client, 60)).tick(now)
    finally:
        client.close()


@pytest.mark.slow
def test_apply_target_makes_the_replica_whose_keys_copy_catch_up_and_recover(
        strict: StrictAws, tmp_path: Path, run_offsite: Any, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, bucket = unique_prefix(), f"offsite-{uuid.uuid4().hex[:12]}"
    second = f"{bucket}-second"
    data = data_tree(tmp_path / "data", files=2, size=20_000)
    config = write_config(
        tmp_path / "offsite.yaml", broker_url=redis_url, endpoint_url=strict.endpoint_url,
        bucket=bucket, hosts={"alpha": copy_host(data)}, tmp=tmp_path,
        encryption={"passphrase_file": str(_passphrase(tmp_path))},
        provision={"name_prefix": prefix, "managed": True},
        replicas={"second": {"url": f"boto3+s3://{second}",
                             "endpoint_url": strict.endpoint_url, "region": REGION,
                             "retries": 1}})
    creds = tmp_path / "creds"
    primary = run_offsite("provision", "--apply", "--credentials-out", str(creds),
                          config=config, env_extra=_operator(strict))
    assert primary.returncode == 0 and second not in primary.stdout, describe(primary)
    grant_head_bucket(strict, f"{prefix}-host-alpha", bucket)
    host_keys = read_env_file(creds / "alpha.env")
    behind = local(run_offsite, config, "alpha", "full", _only(host_keys, "DUPLICITY_AWS_"))
    assert "second: none (behind)" in behind   # no replica bucket, no keys for it yet

    applied = run_offsite("provision", "--apply", "--target", "second", "--credentials-out",
                          str(creds), config=config, env_extra=_operator(strict))
    assert applied.returncode == 0, describe(applied)
    assert f"created bucket {second}" in applied.stdout
    assert f"enabled versioning on {second}" in applied.stdout
    assert "set lifecycle rules" in applied.stdout and f"on {second}" in applied.stdout
    admin, iam = strict.client("s3"), strict.client("iam")
    try:
        assert admin.get_bucket_versioning(Bucket=second)["Status"] == "Enabled"
        own = iam.get_user_policy(UserName=f"{prefix}-second-host-alpha",
                                  PolicyName="offsite")["PolicyDocument"]
        own = json.loads(own) if isinstance(own, str) else own
        assert own == host_policy(second, "alpha/")   # the primary's rights, on the replica
    finally:
        iam.close()
    host_keys, control = read_env_file(creds / "alpha.env"), read_env_file(creds / "control.env")
    assert "SECOND_AWS_ACCESS_KEY_ID" in host_keys and "SECOND_AWS_ACCESS_KEY_ID" in control
    assert host_keys["SECOND_AWS_ACCESS_KEY_ID"] != control["SECOND_AWS_ACCESS_KEY_ID"]

    caught = _catch_up(config, control, monkeypatch)   # READ_AWS_* and the copy identity
    assert caught["alpha"]["second"].state == "current", caught
    grant_head_bucket(strict, f"{prefix}-second-host-alpha", second)
    (data / "later.txt").write_text("after the catch-up\n")
    copied = local(run_offsite, config, "alpha", "incr",
                   _only(host_keys, "DUPLICITY_AWS_", "SECOND_AWS_"))
    assert "(current)" in copied, copied
    try:
        keys = [item["Key"] for item in admin.list_objects_v2(
            Bucket=bucket, Prefix="alpha/")["Contents"]]
        assert sorted(item["Key"] for item in admin.list_objects_v2(
            Bucket=second, Prefix="alpha/")["Contents"]) == sorted(keys)
        volumes = [key for key in keys if "/data-" in key and ".difftar" in key]
        for key in volumes + [next(k for k in keys if k.endswith(".manifest.gpg"))]:
            tags = admin.get_object_tagging(Bucket=second, Key=key)["TagSet"]
            # the replica's lifecycle rules archive what the primary's do: data volumes only
            assert tags == ([{"Key": "offsite-class", "Value": "volume"}]
                            if key in volumes else []), (key, tags)
        assert len(volumes) >= 2   # the full's, copied by the catch-up, and the incremental's
        moment = time.time()
        wait_until(lambda: time.time() >= moment + 1.5, 5, "a second after the copies")
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        wait_until(lambda: time.time() >= moment + 3, 5, "a second after the time")
        volume = next(key for key in keys if ".difftar" in key)
        admin.delete_object(Bucket=second, Key=volume)   # a delete marker on the replica only
    finally:
        admin.close()
    recovered = run_offsite("recover", "alpha", "--time", at, "--target", "second", "--apply",
                            config=config, env_extra=_only(read_env_file(creds / "recover.env"),
                                                           "SECOND_RECOVER_AWS_"))
    assert recovered.returncode == 0, describe(recovered)
    assert f"undelete {volume}" in recovered.stdout and "put back 1 object(s)" in \
        recovered.stdout


@pytest.mark.slow
def test_apply_target_on_seaweedfs_makes_the_bucket_and_names_what_the_server_lacks(
        seaweed: SeaweedServer, make_config: Any, run_offsite: Any, aws: Any) -> None:
    seaweed.start()   # an earlier test may have stopped it
    store = S3Store("seaweedfs", seaweed.endpoint_url,
                    bucket=f"offsite-prov-{uuid.uuid4().hex[:8]}")   # not made: apply makes it
    try:
        config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                             replicas={"second": store.target()})
        admin = {"AWS_ACCESS_KEY_ID": TEST_AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET}
        applied = run_offsite("provision", "--apply", "--target", "second", config=config,
                              env_extra=admin)
        assert applied.returncode == 0, describe(applied)
        out = applied.stdout
        assert f"created bucket {store.bucket}" in out and "enabled versioning" in out
        assert "does not implement lifecycle rules (NotImplemented)" in out
        assert "does not implement public access blocks" in out
        assert "answers no IAM API" in out and "Traceback" not in applied.stderr
        assert store.s3.get_bucket_versioning(Bucket=store.bucket)["Status"] == "Enabled"
        again = run_offsite("provision", "--apply", "--target", "second", config=config,
                            env_extra=admin)
        assert again.returncode == 0 and "created bucket" not in again.stdout, describe(again)
    finally:
        store.close()
