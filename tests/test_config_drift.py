"""Config drift and reload with real processes: a worker whose copy of the file differs from the
control node's is reported once (config_drift, naming it) and recovers when its copy is fixed
(re-read while idle); an invalid new file keeps the config in use and alerts once
(config_invalid); a run re-reads a changed file at its start."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import describe, wait_until

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

WATCHDOG = {"every": "1s", "worker_timeout": "4s", "start_grace": "15m", "lease_ttl": "30s"}


def classes(alerts: list[dict[str, Any]]) -> list[str]:
    return [alert["MessageAttributes"]["class"]["Value"] for alert in alerts]


def hosts_with(*scripts: str) -> dict[str, Any]:
    return {"carcosa": {"scripts": {name: {"bash": f"echo {name} > {name}.txt"}
                                    for name in scripts}}}


def test_drift_alerts_once_names_the_node_and_recovers_then_invalid_file_is_kept_out(
        make_config: Any, aws: Any, run_offsite: Any, start_worker: Callable[..., Any],
        start_control: Callable[..., Any], tmp_path: Path) -> None:
    control_config = make_config(hosts_with("db"), watchdog=WATCHDOG)
    worker_config = make_config(hosts_with("db", "www"), watchdog=WATCHDOG,
                                filename="worker.yaml")
    worker = start_worker(worker_config, "carcosa")
    start_control(control_config)

    drift = aws.alerts(1, timeout=60)
    assert classes(drift) == ["config_drift"], drift
    assert "worker:carcosa" in drift[0]["Message"]
    named = drift[0]["Message"].split("control node's: ", 1)[1].split(".", 1)[0]
    assert named == "worker:carcosa"     # beat is not running, the control node agrees
    shown = run_offsite("hosts", "--json", config=control_config)
    assert shown.returncode == 0, describe(shown)
    assert json.loads(shown.stdout)[0]["config_drift"] is True
    table = run_offsite("hosts", config=control_config)
    assert "config drift" in table.stdout and "worker:carcosa" in table.stdout

    worker_config.write_bytes(control_config.read_bytes())   # the copy is fixed
    found = aws.alerts(2, timeout=60)
    assert classes(found) == ["config_drift", "recovered"], found
    assert worker.wait_for("changed: re-read", timeout=30)

    worker_config.write_text("hosts: [unclosed\n")              # then broken
    found = aws.alerts(3, timeout=60)
    assert classes(found)[2] == "config_invalid", found
    assert "worker.yaml" in found[2]["Message"]
    assert worker.wait_for("is invalid; keeping the config in use", timeout=30)
    # the worker keeps the good config: no drift, and no second alert for the same file
    assert classes(aws.alerts(4, timeout=6)) == ["config_drift", "recovered", "config_invalid"]

    # a valid change is read when the next run starts (or before, while idle)
    make_config(hosts_with("db", "www"), watchdog=WATCHDOG, filename="worker.yaml")
    result = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "120",
                         config=control_config, timeout=180)
    assert result.returncode == 0, describe(result) + worker.log_text()[-3000:]
    run_id = result.stdout.split()[1]
    status = json.loads(run_offsite("status", "carcosa", "--json",
                                    config=control_config).stdout)
    steps = [step["name"] for step in next(r for r in status if r["run_id"] == run_id)["steps"]]
    assert any("www" in name for name in steps), steps
    wait_until(lambda: len(aws.alerts(4, timeout=1)) >= 4, 60, "drift raised again")
    assert classes(aws.alerts(4, timeout=1))[3] == "config_drift"
