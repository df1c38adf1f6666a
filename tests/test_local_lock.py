"""`--local` and the worker share one host lock; local runs have ids of their own; every
command works with no broker at all (the embedded default). Real worker, duplicity, moto."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import load_config
from offsite.constants import BackupType
from offsite.host.lock import FileHostLease
from offsite.run.local import LocalLease, local_run_id
from tests.harness import free_port
from tests.helpers import describe, ledger_json, wait_until
from tests.test_backup_flow import same_tree

NOW = datetime(2026, 12, 4, 20, 0, 0, 400_000, tzinfo=timezone.utc)


def test_two_local_runs_in_one_second_get_distinct_ids(tmp_path: Path) -> None:
    lease = LocalLease(FileHostLease(tmp_path / ".carcosa.lock"), None)
    first = local_run_id(lease, "carcosa", BackupType.FULL, NOW)
    assert lease.acquire("carcosa", first)
    lease.release("carcosa", first)
    second = local_run_id(lease, "carcosa", BackupType.FULL, NOW.replace(microsecond=900_000))
    assert lease.acquire("carcosa", second)
    lease.release("carcosa", second)
    third = local_run_id(lease, "carcosa", BackupType.FULL, NOW.replace(microsecond=950_000))
    assert len({first, second, third}) == 3
    assert first == "carcosa-full-20261204T200000Z-local"
    assert third == "carcosa-full-20261204T200002Z-local"


def test_the_lock_file_names_its_holder_and_refuses_a_second_taker(tmp_path: Path) -> None:
    path = tmp_path / ".carcosa.lock"
    mine, other = FileHostLease(path), FileHostLease(path)
    assert other.holder("carcosa") is None
    assert mine.acquire("carcosa", "carcosa-full-20261204T200000Z-local")
    assert not other.acquire("carcosa", "carcosa-incr-20261204T200001Z-local")
    assert other.holder("carcosa") == "carcosa-full-20261204T200000Z-local"
    mine.release("carcosa", "carcosa-full-20261204T200000Z-local")
    assert other.holder("carcosa") is None
    assert other.acquire("carcosa", "carcosa-incr-20261204T200001Z-local")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_local_run_beside_the_workers_run_is_refused_naming_it(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n" * 1000)
    gate = tmp_path / "gate"
    config = make_config({"carcosa": {"scripts": {"files": {"bash": (
        f"cp -a {data}/. .; touch {tmp_path}/started; "
        f"while [ ! -e {gate} ]; do sleep 0.1; done")}}}})
    start_worker(config, "carcosa")
    start_control(config)
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert queued.returncode == 0, describe(queued)
    run_id = queued.stdout.split()[1]
    wait_until(lambda: (tmp_path / "started").exists(), timeout=60, what="the worker's script")
    local = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert local.returncode == 1, describe(local)
    assert f"host busy with run {run_id}" in local.stderr, describe(local)
    assert len(local.stderr.strip().splitlines()) == 1, describe(local)
    drill = run_offsite("verify", "carcosa", "--local", config=config)
    assert drill.returncode == 1 and f"host busy with run {run_id}" in drill.stderr
    gate.touch()
    status: list[dict[str, Any]] = []

    def ended() -> bool:
        status[:] = ledger_json(config, "carcosa")
        return all(record["state"] not in ("queued", "running") for record in status)
    wait_until(ended, timeout=120, what="the worker's run to end", interval=1)
    assert [(r["run_id"], r["state"]) for r in status] == [(run_id, "succeeded")]
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=120)
    assert result.returncode == 0, describe(result)
    assert same_tree(data, restored / "files")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_backup_verify_prune_and_restore_work_with_no_broker(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         broker_url=f"redis://127.0.0.1:{free_port()}/0",
                         retention={"keep_full_chains": 1},
                         target={"url": f"file://{tmp_path}/target"})
    ids = []
    for kind in ("full", "full"):
        result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config)
        assert result.returncode == 0, describe(result)
        ids.append(result.stdout)
    assert ids[0] != ids[1]
    drill = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert drill.returncode == 0, describe(drill)
    pruned = run_offsite("prune", "carcosa", "--apply", config=config)
    assert pruned.returncode == 0, describe(pruned)
    assert "cannot reach the broker" not in pruned.stderr
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=120)
    assert result.returncode == 0, describe(result)
    assert same_tree(data, restored / "files")
    assert not FileHostLease(load_config(config).staging_root / ".carcosa.lock").holder("carcosa")
