"""`offsite verify --local` from an operator's shell: recorded in the ledger when the broker
answers (a manual drill counts as proof), publishing nothing unless `--alert` is given (and then
the control node sends it, not the laptop). Real control (watchdog), duplicity, redis, moto."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, ledger_json, wait_until
from tests.test_failures import FAST_WATCHDOG, attributes


def _verifies(run_offsite: Any, config: Path) -> list[dict[str, Any]]:
    return [run for run in ledger_json(config, "carcosa") if run["type"] == "verify"]


def _ledger_claimed(redis_url: str) -> None:
    import redis

    from offsite.watch.ledger_lost import MARKER_KEY
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.exists(MARKER_KEY), timeout=60,
                   what="the control node's first tick to claim the ledger")
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_manual_drill_is_recorded_and_alerts_only_when_asked(
        make_config: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n" * 1000)
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         watchdog=FAST_WATCHDOG, target={"url": f"file://{tmp_path}/target"})
    start_control(config)
    _ledger_claimed(redis_url)   # else a first tick after the backup "rebuilds" it: ledger_lost
    done = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                       timeout=120)
    assert done.returncode == 0, describe(done)

    good = run_offsite("verify", "carcosa", "--local", "--json", config=config, timeout=180)
    assert good.returncode == 0, describe(good)
    (recorded,) = _verifies(run_offsite, config)
    assert recorded["run_id"] == json.loads(good.stdout)["run_id"]
    assert recorded["state"] == "succeeded" and recorded["verify"]["files_checked"] == 1
    hosts = run_offsite("hosts", "--json", config=config)
    (row,) = json.loads(hosts.stdout)
    assert row["last_verify"]["state"] == "succeeded", row   # the manual drill is proof

    for volume in (tmp_path / "target" / "carcosa").glob("*.difftar.gpg"):
        volume.write_bytes(b"\x00" * volume.stat().st_size)   # the set no longer restores
    quiet = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert quiet.returncode == 1, describe(quiet)
    failed = next(run for run in _verifies(run_offsite, config) if run["state"] == "failed")
    assert failed["alert"] is False
    wait_until(lambda: any("not alerted" in note for run in _verifies(run_offsite, config)
                           for note in run["notes"]), timeout=30,
               what="the watchdog to see the quiet failure")
    assert aws.alerts(1, timeout=3) == []

    loud = run_offsite("verify", "carcosa", "--local", "--alert", config=config, timeout=180)
    assert loud.returncode == 1, describe(loud)
    (alert,) = aws.alerts(1, timeout=30)
    assert attributes(alert)["class"] == "verify_failed"
    assert attributes(alert)["type"] == "verify"


@pytest.mark.slow
def test_a_manual_drill_without_a_broker_says_it_is_not_recorded(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    from tests.helpers import free_port
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         broker_url=f"redis://127.0.0.1:{free_port()}/0",
                         target={"url": f"file://{tmp_path}/target"})
    done = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                       timeout=120)
    assert done.returncode == 0, describe(done)
    drill = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert drill.returncode == 0, describe(drill)
    assert "not recorded in the ledger: the broker does not answer" in drill.stderr
