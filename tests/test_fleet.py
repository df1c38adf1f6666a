"""The fleet scenario at a size that fits the suite: 300 healthy hosts simulated through
offsite's own ledger, lease and heartbeat code, beside real `offsite beat` and `offsite control`
on a real redis-server (bench.fleet starts them), plus one host that misses a slot, one whose
worker is dead and one that never succeeds. Exactly those three are reported; no other."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import VENV_BIN, describe, run_command

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

HOSTS = 300


@pytest.mark.timeout(170)
def test_a_healthy_fleet_raises_no_alert_and_each_unhealthy_host_exactly_its_own(
        tmp_path: Path) -> None:
    result = run_command([str(VENV_BIN / "python"), "-m", "bench.fleet", "--hosts", str(HOSTS),
                          "--period", "15", "--history", "2", "--json"],
                         env={"PATH": str(VENV_BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)},
                         cwd=Path(__file__).resolve().parent.parent, timeout=160)
    assert result.returncode in (0, 1), describe(result)
    figures = json.loads(result.stdout)
    assert figures["simulator_errors"] == []
    assert figures["false_alerts"] == []
    assert sorted(map(tuple, figures["true_alerts"])) == [
        ("dead-1", "worker_down"), ("missed-1", "backup_missed"), ("stale-1", "backup_stale")]
    assert result.returncode == 0, describe(result)
    # the slots beat sent during the scenario all sat on the grid
    assert figures["slots_checked"] >= 2 * HOSTS
    assert figures["slot_grid_offset_max_s"] == 0
    assert figures["ticks_seen"] >= 10
