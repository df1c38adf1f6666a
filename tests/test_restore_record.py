"""`offsite restore` from an operator's shell is recorded in the ledger when the broker answers:
a run of its own kind (`restore`, never ending a backup's or a drill's failure streak), shown by
`offsite status HOST`, alerting no one unless asked (`--alert`); without a broker it restores
all the same. Real redis-server, real duplicity, a file:// target."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, ledger_json


def runs(run_offsite: Any, config: Path, kind: str) -> list[dict[str, Any]]:
    return [run for run in ledger_json(config, "carcosa") if run["type"] == kind]


@pytest.mark.slow
def test_a_restore_is_recorded_when_the_broker_answers_and_runs_without_one(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    hosts = {"carcosa": {"scripts": {"db": {"bash": "echo dump > dump.sql"}}}}
    target = {"url": f"file://{tmp_path}/target"}
    config = make_config(hosts, target=target)

    refused = run_offsite("restore", "carcosa", str(tmp_path / "none"), config=config)
    assert refused.returncode != 0 and "no backup yet" in refused.stderr, describe(refused)

    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), "--alert", config=config)
    assert result.returncode == 0, describe(result)
    assert (restored / "db" / "dump.sql").read_text() == "dump\n"
    done, failed = runs(run_offsite, config, "restore")   # newest first
    assert failed["state"] == "failed" and failed["alert"] is False, failed
    assert failed["error"]["failure_class"] == "restore_failed", failed
    assert failed["run_id"].startswith("carcosa-restore-") and failed["run_id"].endswith("-local")
    assert done["state"] == "succeeded" and done["alert"] is True, done
    assert any(f"restore into {restored}" in note for note in done["notes"]), done
    assert any(note.startswith("restored the full set of") for note in done["notes"]), done

    no_broker = make_config(hosts, target=target, broker_url="redis://127.0.0.1:1/0",
                            filename="no-broker.yaml")
    again = tmp_path / "again"
    result = run_offsite("restore", "carcosa", str(again), config=no_broker)
    assert result.returncode == 0, describe(result)
    assert "not recorded in the ledger: the broker does not answer" in result.stderr
    assert (again / "db" / "dump.sql").read_text() == "dump\n"
