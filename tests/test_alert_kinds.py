"""Alerts are true per kind of run: a drill that succeeds while the host's backups keep failing
sends no recovery and does not end the backups' failure streak (the next identical backup
failure is held back as a repeat); the next good backup sends the one recovery. Real worker,
control (watchdog), duplicity, redis-server and moto (SNS)."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.watch.watchdog import TICK_KEY
from tests.helpers import describe, wait_until
from tests.test_backup_flow import backup, record_of
from tests.test_failures import FAST_WATCHDOG, attributes


def _tick_after(client: redis.Redis, moment: str) -> bool:
    raw = client.hget(TICK_KEY, "at")
    return raw is not None and datetime.fromisoformat(raw.decode()) > \
        datetime.fromisoformat(moment)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_good_drill_does_not_end_a_backup_failure_streak(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path, redis_url: str) -> None:
    healthy = tmp_path / "healthy"
    healthy.touch()
    config = make_config({"carcosa": {"scripts": {
        "s": {"bash": f"test -e {healthy} || {{ echo broken >&2; exit 4; }}; echo d > d"}},
        "verify": {"where": "carcosa"}}}, watchdog=FAST_WATCHDOG)
    start_worker(config, "carcosa")
    start_control(config)
    backup(run_offsite, config, "carcosa", "full")
    healthy.unlink()
    failed = backup(run_offsite, config, "carcosa", "incr", expect_rc=1)
    (first,) = aws.alerts(1, timeout=30)
    assert attributes(first)["class"] == "script_failed" and failed["run_id"] in \
        first["Message"]

    drill = run_offsite("verify", "carcosa", "--wait", "--timeout", "120", "--json",
                        config=config, timeout=180)
    assert drill.returncode == 0, describe(drill)
    finished = json.loads(drill.stdout)["finished_at"]
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: _tick_after(client, finished), timeout=30,
                   what="a watchdog tick after the drill")
        seen = client.hget(TICK_KEY, "at")
        assert seen is not None
        wait_until(lambda: _tick_after(client, seen.decode()), timeout=30,
                   what="a second watchdog tick")
        assert client.exists("offsite:streak:carcosa:backup")
    finally:
        client.close()
    assert [a["Subject"] for a in aws.alerts(2, timeout=3)] == [first["Subject"]]

    again = backup(run_offsite, config, "carcosa", "incr", expect_rc=1)
    wait_until(lambda: any("held back" in note for note in record_of(
        run_offsite, config, "carcosa", again["run_id"])["notes"]), timeout=20,
        what="the repeat to be held back, not alerted as a new problem")

    healthy.touch()
    good = backup(run_offsite, config, "carcosa", "incr")
    alerts = aws.alerts(2, timeout=30)
    assert len(alerts) == 2, [a["Subject"] for a in alerts]
    recovery = alerts[1]
    assert attributes(recovery)["class"] == "recovered"
    assert good["run_id"] in recovery["Message"]
    assert "2 backup failure(s)" in recovery["Message"], recovery["Message"]
    assert "verify" not in recovery["Subject"], recovery["Subject"]
