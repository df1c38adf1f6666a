"""Scheduled restore drills: beat sends `verify` runs where `verify.on` says; the watchdog
raises `restore_unproven` once when drills stop succeeding, and clears it when one does. And
scheduled prunes on the control node. Real beat, workers, control, duplicity, moto."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, ledger_json, offsite_argv, wait_until
from tests.test_failures import FAST_WATCHDOG, attributes

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

BEAT_LOCKED = "beat: Acquired lock"
YEARLY = "0 0 1 1 *"


def runs(run_offsite: Any, config: Path) -> list[dict[str, Any]]:
    return ledger_json(config, "carcosa", limit=200)


@pytest.mark.timeout(300)
def test_drills_run_on_schedule_and_a_stopped_drill_node_raises_restore_unproven_once(
        make_config: Any, start_worker: Any, start_control: Any, start_process: Any,
        run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    config = make_config(
        {"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                     # drills 10 s apart: restore_unproven (twice the interval) must not flap
                     # while a drill takes a few seconds on a loaded machine
                     "verify": {"schedule": {"every": "10s"}, "on": "drills"}},
         "drills": {"scripts": {"none": {"bash": "true"}}}},
        schedule={"full": YEARLY, "incr": YEARLY, "min_interval": "1s"},
        watchdog=FAST_WATCHDOG, target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    drills = start_worker(config, "drills")
    done = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "90",
                       config=config)
    assert done.returncode == 0, describe(done)
    start_control(config)
    start_process("beat", offsite_argv(config, "beat"), BEAT_LOCKED)

    def verified() -> list[dict[str, Any]]:
        return [r for r in runs(run_offsite, config)
                if r["type"] == "verify" and r["state"] == "succeeded"]
    wait_until(lambda: len(verified()) >= 2, timeout=120, what="two scheduled drills",
               interval=1)
    assert all(r["verify"]["files_checked"] == 1 for r in verified())

    drills.stop()
    alerts = aws.alerts(1, timeout=60)
    unproven = [a for a in alerts if attributes(a)["class"] == "restore_unproven"]
    assert len(unproven) == 1 and attributes(unproven[0])["host"] == "carcosa", alerts
    drills.start()
    wait_until(lambda: any(attributes(a)["class"] == "recovered" and "drill" in a["Message"]
                           for a in aws.alerts(len(alerts) + 1, timeout=5)),
               timeout=120, what="the recovery", interval=1)
    final = aws.alerts(len(alerts) + 1, timeout=3)
    assert [attributes(a)["class"] for a in final].count("restore_unproven") == 1
    assert not [a for a in final if attributes(a)["class"] == "verify_failed"]


@pytest.mark.timeout(240)
def test_the_control_node_prunes_on_schedule_with_its_own_identity(
        make_config: Any, start_control: Any, start_process: Any, run_offsite: Any,
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         schedule={"full": YEARLY, "incr": YEARLY, "min_interval": "1s"},
                         retention={"keep_full_chains": 1, "schedule": {"every": "3s"}},
                         target={"url": f"file://{tmp_path}/target"})
    for number in range(3):
        (data / f"f{number}").write_text(str(number))
        result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
        assert result.returncode == 0, describe(result)
    start_control(config)
    start_process("beat", offsite_argv(config, "beat"), BEAT_LOCKED)
    wait_until(lambda: any(r["type"] == "prune" and r["state"] == "succeeded"
                           for r in runs(run_offsite, config)), timeout=90,
               what="a scheduled prune", interval=1)
    chains = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]
    assert len(chains) == 1
