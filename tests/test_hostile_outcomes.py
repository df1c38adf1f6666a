"""offsite's word must be true under faults: the target decides whether a backup exists, a wrong
key is found before the dumps run, restore never answers a time with a later backup, errors
name their real cause, and a graceful stop never turns a finished backup into a lost one.
Every part is real: worker processes, duplicity, gpg, moto's S3, SIGTERM."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, wait_until
from tests.procfs import descendants, duplicity_uploading
from tests.test_backup_flow import record_of, same_tree
from tests.test_failures import FAST_WATCHDOG, Ledger, attributes, backup, only_alert, records

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s


def data_tree(root: Path, files: int = 3, size: int = 200_000) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (root / f"part{index}.bin").write_bytes(os.urandom(size))
    return root


def host_config(make_config: Any, data: Path, marker: Path | None = None,
                **overrides: Any) -> Path:
    """carcosa copies `data`; with a marker, its script also appends a line to the marker
    (so a test can tell whether the dump ran)."""
    code = f"cp -a {data}/. ."
    if marker is not None:
        code += f" && echo ran >> {marker}"
    return make_config({"carcosa": {"scripts": {"files": {"bash": code}}}}, **overrides)


def restore(run_offsite: Any, config: Path, dest: Path, *args: str) -> Any:
    return run_offsite("restore", "carcosa", str(dest), *args, config=config, timeout=180)


def test_incremental_after_the_target_was_emptied_becomes_a_full_naming_the_target(
        make_config: Any, start_worker: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    data = data_tree(tmp_path / "data")
    config = host_config(make_config, data)
    start_worker(config, "carcosa")
    assert backup(run_offsite, config, "carcosa", "full", ledger=ledger)["state"] == "succeeded"
    for key in aws.object_keys("carcosa/"):
        aws.s3.delete_object(Bucket=aws.bucket, Key=key)   # a delete marker: versioned bucket

    incr = backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    assert incr["state"] == "succeeded" and incr["type"] == "full", incr
    assert incr["notes"] == [f"promoted to full: the target boto3+s3://{aws.bucket}/carcosa "
                             "holds no complete backup chain"]
    assert incr["backup_set"], "the record names the set confirmed in the target"
    restored = tmp_path / "restored"
    result = restore(run_offsite, config, restored)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)


def test_a_lost_cache_with_the_chain_present_resyncs_and_stays_incremental(
        make_config: Any, start_worker: Any, run_offsite: Any, tmp_path: Path,
        redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    data = data_tree(tmp_path / "data")
    config = host_config(make_config, data)
    start_worker(config, "carcosa")
    backup(run_offsite, config, "carcosa", "full", ledger=ledger)
    (data / "new.txt").write_text("after the full")
    cache = tmp_path / "cache" / "carcosa"
    for entry in (cache / "carcosa").iterdir():
        entry.unlink()

    incr = backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    assert incr["state"] == "succeeded" and incr["type"] == "incr", incr
    (note,) = incr["notes"]
    assert "the local cache held no chain" in note and "resynced" in note
    restored = tmp_path / "restored"
    assert restore(run_offsite, config, restored).returncode == 0
    assert same_tree(restored / "files", data)


def test_a_changed_passphrase_fails_the_incremental_before_its_scripts_run(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    data = data_tree(tmp_path / "data")
    marker = tmp_path / "dump-ran"
    config = host_config(make_config, data, marker)
    start_worker(config, "carcosa")
    start_control(config)
    backup(run_offsite, config, "carcosa", "full", ledger=ledger)
    assert marker.read_text() == "ran\n"
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("not the passphrase of this chain\n")

    failed = backup(run_offsite, config, "carcosa", "incr", expect_rc=1,
                    ledger=ledger)
    assert failed["state"] == "failed"
    assert failed["error"]["step"] == "start"
    assert failed["error"]["failure_class"] == "encryption_failed"
    assert "wrong passphrase" in failed["error"]["message"]
    assert marker.read_text() == "ran\n", "the dump script must not run with a wrong key"
    alert = only_alert(aws)
    assert attributes(alert)["class"] == "encryption_failed"
    assert "wrong passphrase" in alert["Message"]

    result = restore(run_offsite, config, tmp_path / "restored")
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_without_promotion_an_incremental_with_no_chain_fails_as_chain_missing(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    marker = tmp_path / "dump-ran"
    config = host_config(make_config, data_tree(tmp_path / "data"), marker,
                         schedule={"promote_to_full": False})
    start_worker(config, "carcosa")
    start_control(config)
    failed = backup(run_offsite, config, "carcosa", "incr", expect_rc=1,
                    ledger=ledger)
    assert failed["error"]["failure_class"] == "chain_missing", failed
    assert "holds no complete backup chain" in failed["error"]["message"]
    assert not marker.exists()
    assert attributes(only_alert(aws))["class"] == "chain_missing"
    assert aws.object_keys("carcosa/") == []


def test_restore_times_the_target_cannot_answer_are_refused_in_one_line(
        make_config: Any, start_worker: Any, run_offsite: Any, tmp_path: Path,
        redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    config = host_config(make_config, data_tree(tmp_path / "data"))
    nothing = restore(run_offsite, config, tmp_path / "none")
    assert nothing.returncode == 1 and "no backup yet" in nothing.stderr, describe(nothing)

    start_worker(config, "carcosa")
    full = backup(run_offsite, config, "carcosa", "full", ledger=ledger)
    before = restore(run_offsite, config, tmp_path / "early", "--time", "2001-01-01")
    assert before.returncode == 1, describe(before)
    assert "no backup at or before 2001-01-01T00:00:00Z" in before.stderr
    assert f"oldest backup of carcosa is from {full['backup_set']}" in before.stderr
    assert not (tmp_path / "early").exists()

    for bad in ("garbage", "2026-13-45", "x" * 500):
        refused = restore(run_offsite, config, tmp_path / "bad", "--time", bad)
        assert refused.returncode == 2, describe(refused)
        assert "bad --time" in refused.stderr and "lock" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    into_file = tmp_path / "a-file"
    into_file.write_text("mine")
    refused = restore(run_offsite, config, into_file)
    assert refused.returncode == 2, describe(refused)
    assert "exists and is not a folder" in refused.stderr
    assert into_file.read_text() == "mine"


def test_an_archived_volume_is_named_as_archived_not_as_bad_credentials(
        make_config: Any, start_worker: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    config = host_config(make_config, data_tree(tmp_path / "data"))
    start_worker(config, "carcosa")
    backup(run_offsite, config, "carcosa", "full", ledger=ledger)
    for key in aws.object_keys("carcosa/"):
        if ".difftar." in key:   # what the lifecycle rule does to data volumes after 64 days
            aws.s3.copy_object(Bucket=aws.bucket, Key=key, StorageClass="GLACIER",
                               CopySource={"Bucket": aws.bucket, "Key": key})
    result = restore(run_offsite, config, tmp_path / "restored")
    assert result.returncode == 1, describe(result)
    assert "archived (Glacier" in result.stderr, result.stderr
    assert "credentials" not in result.stderr and "Traceback" not in result.stderr


def _big_upload_config(make_config: Any, aws: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Six volumes of 5 MB: the signal follows duplicity's upload seen running
    (tests.procfs, polled every 50 ms) by one `offsite status`, long before its last volume."""
    data = data_tree(tmp_path / "data", files=3, size=10_000_000)
    return data, host_config(make_config, data, watchdog=FAST_WATCHDOG,
                             target={"url": f"boto3+s3://{aws.bucket}",
                                     "endpoint_url": aws.endpoint_url, "region": "eu-west-1",
                                     "volsize": 5})


def _start_and_reach_upload(run_offsite: Any, config: Path, worker_pid: int) -> str:
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert queued.returncode == 0, describe(queued)
    run_id: str = queued.stdout.split()[1]
    wait_until(lambda: duplicity_uploading(worker_pid), timeout=60, what="duplicity's upload")
    assert any(step["name"] == "upload" for step in record_of(
        run_offsite, config, "carcosa", run_id)["steps"])
    return run_id


@pytest.mark.timeout(240)
def test_sigterm_to_the_worker_during_an_upload_lets_the_backup_finish(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path) -> None:
    data, config = _big_upload_config(make_config, aws, tmp_path)
    worker = start_worker(config, "carcosa")
    start_control(config)
    run_id = _start_and_reach_upload(run_offsite, config, worker.pid)
    worker.kill(signal.SIGTERM)       # the worker alone: a warm shutdown
    assert worker.wait(timeout=150) == 0

    done = record_of(run_offsite, config, "carcosa", run_id)
    assert done["state"] == "succeeded", done
    assert done["backup_set"]
    time.sleep(5)   # several watchdog ticks (every 1 s, lease_ttl 3 s): nothing becomes lost
    assert record_of(run_offsite, config, "carcosa", run_id)["state"] == "succeeded"
    assert [r["run_id"] for r in records(run_offsite, config, "carcosa")] == [run_id]
    assert aws.alerts(1, timeout=2) == []
    assert not (tmp_path / "staging" / "carcosa").exists()
    restored = tmp_path / "restored"
    assert restore(run_offsite, config, restored).returncode == 0
    assert same_tree(restored / "files", data)


@pytest.mark.timeout(300)
def test_sigterm_to_the_whole_worker_tree_during_an_upload_is_lost_once_and_rerun(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    data, config = _big_upload_config(make_config, aws, tmp_path)
    worker = start_worker(config, "carcosa")
    start_control(config)
    run_id = _start_and_reach_upload(run_offsite, config, worker.pid)
    for pid in [worker.pid, *descendants(worker.pid)]:   # systemd's KillMode=control-group
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    worker.wait(timeout=60)

    alert = only_alert(aws, timeout=30)
    lost = record_of(run_offsite, config, "carcosa", run_id)
    assert lost["state"] == "lost", lost
    assert lost["error"]["step"] == "upload" and lost["error"]["failure_class"] == "run_lost"
    assert attributes(alert)["class"] == "run_lost"
    assert not (tmp_path / "staging" / "carcosa").exists() or not any(
        (tmp_path / "staging" / "carcosa").iterdir())

    worker.restart()
    rerun_id = run_id + "-rerun"
    wait_until(lambda: ledger.ended(rerun_id), timeout=150, what="the re-run to finish")
    assert record_of(run_offsite, config, "carcosa", rerun_id)["state"] == "succeeded"
    restored = tmp_path / "restored"
    assert restore(run_offsite, config, restored).returncode == 0
    assert same_tree(restored / "files", data)
