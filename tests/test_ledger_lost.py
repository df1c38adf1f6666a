"""Redis loses its data (FLUSHALL) under a running fleet: beat, the control node and a worker
keep going without a restart, the control node rebuilds the host's newest full from the
target and raises one `ledger_lost` alert, and the next slot runs. Real processes, real
duplicity, moto_server for S3 and SNS."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import redis

from offsite.constants import RunState
from offsite.ledger.records import RedisRunStore
from tests.helpers import describe, offsite_argv, wait_until

HOST = "carcosa"


def _ledger_lost(aws: Any, expected: int, timeout: float) -> list[dict[str, Any]]:
    return [alert for alert in aws.alerts(expected, timeout=timeout)
            if alert["MessageAttributes"]["class"]["Value"] == "ledger_lost"]


def _scheduled_success(store: RedisRunStore) -> str | None:
    return next((r.run_id for r in store.recent(HOST, 50) if r.scheduled_for is not None
                 and r.state == RunState.SUCCEEDED), None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flushall_under_a_running_fleet_rebuilds_the_ledger_and_the_next_slot_runs(
        make_config: Any, start_worker: Any, start_control: Any, start_process: Any,
        run_offsite: Any, redis_client: redis.Redis, aws: Any) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo $OFFSITE_RUN_ID > run"}}}},
                         schedule={"full": {"every": "1d"}, "incr": {"every": "10s"}},
                         watchdog={"every": "1s", "stale_after": "1h"})
    start_worker(config, HOST)
    control = start_control(config)
    full = run_offsite("backup", HOST, "--type", "full", "--wait", config=config, timeout=180)
    assert full.returncode == 0, describe(full)
    full_id = full.stdout.split()[1]
    full_set = RedisRunStore(redis_client).get(full_id).backup_set  # type: ignore[union-attr]
    assert full_set is not None
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    store = RedisRunStore(redis_client)
    wait_until(lambda: _scheduled_success(store) is not None, timeout=120,
               what="a scheduled incremental to succeed", interval=0.5)
    assert _ledger_lost(aws, 1, timeout=1) == []

    redis_client.flushall()

    alerts = _ledger_lost(aws, 1, timeout=60)
    assert len(alerts) == 1, alerts
    assert f"{HOST}: newest full {full_set}" in alerts[0]["Message"], alerts[0]["Message"]
    wait_until(lambda: _scheduled_success(store) is not None, timeout=120,
               what="the next scheduled slot to succeed after the flush", interval=0.5)
    shown = run_offsite("hosts", "--json", config=config)
    assert shown.returncode == 0, describe(shown)
    (row,) = json.loads(shown.stdout)
    rebuilt_id = f"{HOST}-full-" + datetime.strptime(
        full_set, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%dT%H%M%SZ")   # named by its set
    assert row["last_full"]["run_id"] == rebuilt_id, row
    assert row["last_full"]["state"] == "succeeded"
    rebuilt = store.get(rebuilt_id)
    assert rebuilt is not None and rebuilt.backup_set == full_set and rebuilt.notes == [
        "rebuilt from the target after the ledger was lost"]
    assert len(_ledger_lost(aws, 2, timeout=5)) == 1, "ledger_lost alerted twice"
    for process in (beat, control):
        assert process.alive, process.log_text()[-3000:]
        assert "Traceback" not in process.log_text()


@pytest.mark.slow
def test_the_operator_rebuilds_a_host_from_the_target(
        make_config: Any, start_worker: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo a > a"}}}})
    start_worker(config, HOST)
    full = run_offsite("backup", HOST, "--type", "full", "--wait", config=config, timeout=180)
    assert full.returncode == 0, describe(full)
    incr = run_offsite("backup", HOST, "--type", "incr", "--wait", config=config, timeout=180)
    assert incr.returncode == 0, describe(incr)
    store = RedisRunStore(redis_client)
    sets = [store.get(run.stdout.split()[1]).backup_set  # type: ignore[union-attr]
            for run in (full, incr)]
    redis_client.flushall()
    rebuilt = run_offsite("ledger-rebuild", config=config, timeout=60)
    assert rebuilt.returncode == 0, describe(rebuilt)
    assert f"{HOST}: newest full {sets[0]}, newest incremental {sets[1]}, 1 chain(s)" \
        in rebuilt.stdout, rebuilt.stdout
    assert sorted(r.type.value for r in store.recent(HOST, 10)) == ["full", "incr"]
    again = run_offsite("ledger-rebuild", config=config, timeout=60)
    assert "nothing to rebuild" in again.stdout, again.stdout
    unknown = run_offsite("ledger-rebuild", "yuggoth", config=config, timeout=60)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
