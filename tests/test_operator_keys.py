"""Every role with exactly the keys the docs give it, on a moto_server that enforces IAM: the
control node (control.env: the read identity READ_AWS_*, no upload keys) runs a scheduled drill;
the operator (recover.env: READ_AWS_* and RECOVER_AWS_*) lists, restores and verifies;
`check --connect --role control` fails naming READ_AWS_* when the read identity is taken away."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, ledger_json, offsite_argv, wait_until
from tests.security_harness import (StrictAws, copy_host, denied, grant_head_bucket, keys_of,
                                    read_env_file, unique_prefix, write_config)
from tests.test_backup_flow import same_tree
from tests.test_hostile_outcomes import data_tree
from tests.test_check_roles import persistent_broker  # noqa: F401 (autouse: an AOF broker)

BEAT_LOCKED = "beat: Acquired lock"
YEARLY = "0 0 1 1 *"
FAMILIES = ("DUPLICITY_AWS_", "ALERT_AWS_", "PRUNE_AWS_", "RECOVER_AWS_", "READ_AWS_", "AWS_")


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrictAws]:
    aws = StrictAws(tmp_path_factory.mktemp("strict-moto"))
    aws.start()
    try:
        yield aws
    finally:
        aws.stop()


def node_env(env_file: dict[str, str]) -> dict[str, str | None]:
    """A node holding exactly the keys of its env file: every other key family removed (the
    default AWS chain included)."""
    removed: dict[str, str | None] = {f"{family}{part}": None for family in FAMILIES
                                      for part in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
    return {**removed, **env_file}


def _provisioned(strict: StrictAws, tmp_path: Path, redis_url: str,
                 run_offsite: Any) -> dict[str, Any]:
    bucket, prefix = f"offsite-{uuid.uuid4().hex[:12]}", unique_prefix()
    data = data_tree(tmp_path / "data", files=3, size=40_000)
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(uuid.uuid4().hex + "\n")
    config = write_config(
        tmp_path / "offsite.yaml", broker_url=redis_url, endpoint_url=strict.endpoint_url,
        bucket=bucket, hosts={"alpha": copy_host(data)}, tmp=tmp_path,
        encryption={"passphrase_file": str(passphrase)},
        schedule={"full": YEARLY, "incr": YEARLY, "min_interval": "1s"},
        verify={"schedule": {"every": "4s"}, "where": "control"},
        provision={"name_prefix": prefix, "managed": True})
    creds = tmp_path / "creds"
    applied = run_offsite("provision", "--apply", "--credentials-out", str(creds),
                          config=config, env_extra=strict.admin)
    assert applied.returncode == 0, describe(applied)
    assert f"created an access key for {prefix}-read in {creds}/control.env and " \
           f"{creds}/recover.env" in applied.stdout
    for user in (f"{prefix}-host-alpha", f"{prefix}-read"):
        grant_head_bucket(strict, user, bucket)
    env = {name: read_env_file(creds / f"{name}.env") for name in ("alpha", "control", "recover")}
    assert sorted(env["control"]) == ["PRUNE_AWS_ACCESS_KEY_ID", "PRUNE_AWS_SECRET_ACCESS_KEY",
                                      "READ_AWS_ACCESS_KEY_ID", "READ_AWS_SECRET_ACCESS_KEY"]
    assert env["recover"]["READ_AWS_ACCESS_KEY_ID"] == env["control"]["READ_AWS_ACCESS_KEY_ID"]
    reader = strict.client("s3", keys_of(env["control"], "READ_AWS_"))
    try:   # read only: list and get, nothing else
        assert denied(reader.put_object, Bucket=bucket, Key="alpha/planted", Body=b"x")
        assert denied(reader.delete_object, Bucket=bucket, Key="alpha/anything")
        assert denied(reader.list_object_versions, Bucket=bucket)
        assert not denied(reader.list_objects_v2, Bucket=bucket)
    finally:
        reader.close()
    backup = run_offsite("backup", "alpha", "--type", "full", "--local", config=config,
                         env_extra=node_env(env["alpha"]), timeout=180)
    assert backup.returncode == 0 and ": succeeded" in backup.stdout, describe(backup)
    return {"config": config, "data": data, "env": env}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_each_role_works_with_exactly_the_keys_provision_gives_it(
        strict: StrictAws, tmp_path: Path, redis_url: str, run_offsite: Any,
        start_control: Any, start_process: Any) -> None:
    fleet = _provisioned(strict, tmp_path, redis_url, run_offsite)
    config, env = fleet["config"], fleet["env"]
    operator = node_env(env["recover"])

    listed = run_offsite("list", "alpha", "--json", config=config, env_extra=operator)
    assert listed.returncode == 0, describe(listed)
    (chain,) = json.loads(listed.stdout)["chains"]
    assert [backup_set["type"] for backup_set in chain["sets"]] == ["full"]
    restored = tmp_path / "restored"
    restore = run_offsite("restore", "alpha", str(restored), config=config,
                          env_extra=operator, timeout=180)
    assert restore.returncode == 0, describe(restore)
    assert same_tree(fleet["data"], restored / "files")
    verified = run_offsite("verify", "alpha", "--local", "--json", config=config,
                           env_extra=operator, timeout=180)
    assert verified.returncode == 0, describe(verified)
    assert json.loads(verified.stdout)["verify"]["files_checked"] == 3

    control = node_env(env["control"])
    checked = run_offsite("check", "--connect", "--role", "control", config=config,
                          env_extra=control, timeout=90)
    assert checked.returncode == 0, describe(checked)
    start_control(config, env_extra=control)
    start_process("beat", offsite_argv(config, "beat"), BEAT_LOCKED, env_extra=control)

    def drills() -> list[dict[str, Any]]:
        return [run for run in ledger_json(config, "alpha", limit=50) if run["type"] == "verify"]
    wait_until(lambda: any(run["state"] in ("succeeded", "failed") for run in drills()),
               timeout=180, what="a scheduled drill on the control node", interval=1)
    done = [run for run in drills() if run["state"] in ("succeeded", "failed")]
    assert done[0]["state"] == "succeeded", done[0]
    assert done[0]["verify"]["files_checked"] == 3

    without_read = {**control, "READ_AWS_ACCESS_KEY_ID": None,
                    "READ_AWS_SECRET_ACCESS_KEY": None}
    refused = run_offsite("check", "--connect", "--role", "control", config=config,
                          env_extra=without_read, timeout=90)
    assert refused.returncode == 1, describe(refused)
    assert "READ_AWS_ACCESS_KEY_ID" in refused.stderr, refused.stderr
    listed = run_offsite("list", "alpha", config=config, env_extra=without_read)
    assert listed.returncode == 1, describe(listed)
    assert "set READ_AWS_ACCESS_KEY_ID" in listed.stderr, listed.stderr


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_denied_and_missing_keys_are_named_within_seconds(
        strict: StrictAws, tmp_path: Path, redis_url: str, run_offsite: Any) -> None:
    fleet = _provisioned(strict, tmp_path, redis_url, run_offsite)
    config, env = fleet["config"], fleet["env"]
    iam = strict.client("iam")
    try:
        user = next(u["UserName"] for u in iam.list_users()["Users"]
                    if u["UserName"].endswith("-read") and
                    iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"][0][
                        "AccessKeyId"] == env["recover"]["READ_AWS_ACCESS_KEY_ID"])
        iam.put_user_policy(UserName=user, PolicyName="deny-get", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"}]}))
    finally:
        iam.close()
    operator = node_env(env["recover"])
    for args in (("restore", "alpha", str(tmp_path / "restored")),
                 ("verify", "alpha", "--local")):
        started = time.monotonic()
        refused = run_offsite(*args, config=config, env_extra=operator, timeout=120)
        elapsed = time.monotonic() - started
        assert refused.returncode == 1, describe(refused)
        assert "access denied to the read identity: check READ_AWS_ACCESS_KEY_ID" in \
            refused.stdout + refused.stderr, describe(refused)
        assert "NoneType" not in refused.stdout + refused.stderr
        assert elapsed < 30, f"{args[0]} took {elapsed:.0f}s to name a denied key"
    started = time.monotonic()
    keyless = run_offsite("backup", "alpha", "--type", "incr", "--local", config=config,
                          env_extra=node_env({}), timeout=120)
    assert keyless.returncode == 1, describe(keyless)
    assert "no credentials to read the bucket: set READ_AWS_ACCESS_KEY_ID" in keyless.stdout
    assert "or DUPLICITY_AWS_ACCESS_KEY_ID" in keyless.stdout, describe(keyless)
    assert time.monotonic() - started < 30
