"""The fixed cost of a run through the queue: `offsite backup --wait` is woken by the run's
end (pub/sub), not by polling; an idle host worker stays small."""
from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from offsite.records import RedisRunStore
from tests.helpers import describe, offsite_argv

WAKE_S = 0.3
IDLE_WORKER_RSS_MIB = 80


def test_wait_returns_within_a_moment_of_the_run_finishing(
        make_config: Any, start_worker: Any, offsite_env: Any, tmp_path: Path,
        redis_client: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo hi > hi"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    lags = []
    for kind in ("full", "incr", "incr"):
        proc = subprocess.run(offsite_argv(config, "backup", "carcosa", "--type", kind,
                                           "--wait", "--timeout", "120"),
                              env=dict(offsite_env), cwd=tmp_path, capture_output=True,
                              text=True, timeout=180)
        returned = datetime.now(timezone.utc)
        assert proc.returncode == 0, describe(proc)
        run_id = proc.stdout.split()[1]
        record = RedisRunStore(redis_client).get(run_id)
        assert record is not None and record.finished_at is not None
        lags.append((returned - record.finished_at).total_seconds())
    # two of three: one slow interpreter exit on a loaded machine is not the wake-up
    assert sorted(lags)[1] < WAKE_S, lags


def test_an_idle_host_worker_stays_under_its_memory_budget(
        make_config: Any, start_worker: Any, tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    worker = start_worker(config, "carcosa")   # ready: connected, waiting for a message
    status = Path(f"/proc/{worker.pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("VmRSS:")))
    assert rss_kib / 1024 <= IDLE_WORKER_RSS_MIB, f"idle worker RSS {rss_kib / 1024:.0f} MiB"
