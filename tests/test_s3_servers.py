"""`offsite recover` on both S3 servers of the suite (moto, and SeaweedFS: a real storage server):
what someone with the upload keys deleted or overwrote is put back from the bucket's versions, and
the backup restores byte for byte. The other core S3 tests (backup full + incremental, restore,
verify, prune) are parametrised over the same servers where they live (tests/seaweed.S3_SERVERS).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, wait_until
from tests.seaweed import S3_SERVERS
from tests.test_backup_flow import same_tree, write_tree

RECOVER_ENV = {"RECOVER_AWS_ACCESS_KEY_ID": "AKIARECOVER", "RECOVER_AWS_SECRET_ACCESS_KEY":
               "recover-secret"}


@pytest.mark.parametrize("target_store", S3_SERVERS, indirect=True)
def test_recover_puts_back_deleted_and_overwritten_objects_then_restore_is_identical(
        make_config: Any, run_offsite: Any, target_store: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tree(data, {"a.txt": b"alpha\n" * 500, "sub/b.bin": bytes(range(256)) * 400})
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                         timeout=180)
    assert result.returncode == 0 and ": succeeded" in result.stdout, describe(result)
    keys = target_store.object_keys("carcosa/")
    manifest = next(key for key in keys if ".manifest" in key)
    volume = next(key for key in keys if ".difftar" in key)
    after = datetime.now(timezone.utc).replace(microsecond=0)
    wait_until(lambda: time.time() >= after.timestamp() + 2, 5, "two seconds after the backup")

    target_store.s3.put_object(Bucket=target_store.bucket, Key=manifest, Body=b"ransom note")
    target_store.s3.delete_object(Bucket=target_store.bucket, Key=volume)
    broken = run_offsite("restore", "carcosa", str(tmp_path / "broken"), config=config)
    assert broken.returncode == 1, describe(broken)

    at = after.strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = run_offsite("recover", "carcosa", "--time", at, config=config, env_extra=RECOVER_ENV)
    assert plan.returncode == 0, describe(plan)
    assert f"restore {manifest} from version" in plan.stdout
    assert f"undelete {volume}" in plan.stdout
    assert "2 object(s) to put back" in plan.stdout and "nothing was changed" in plan.stdout
    applied = run_offsite("recover", "carcosa", "--time", at, "--apply", config=config,
                          env_extra=RECOVER_ENV)
    assert applied.returncode == 0, describe(applied)
    assert "put back 2 object(s)" in applied.stdout
    assert target_store.object_keys("carcosa/") == keys

    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)
    again = run_offsite("recover", "carcosa", "--time", at, config=config, env_extra=RECOVER_ENV)
    assert "0 object(s) to put back" in again.stdout, describe(again)
