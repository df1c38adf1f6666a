"""The control node's escrow watch: a host whose newest backup the key held there does not
decrypt raises `escrow_failed` once; with the right key it clears. Real control, gpg, moto."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import pytest

from tests.helpers import describe, wait_until
from tests.test_failures import attributes

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s


def test_a_control_node_whose_passphrase_does_not_open_a_host_raises_escrow_failed(
        make_config: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         watchdog={"every": "1s", "escrow_every": "2s"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)

    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the escrowed passphrase\n")
    wrong.chmod(0o600)
    settings = yaml.safe_load(config.read_text())
    settings["encryption"]["passphrase_file"] = str(wrong)
    control_config = tmp_path / "control.yaml"
    control_config.write_text(yaml.safe_dump(settings))
    control = start_control(control_config)

    def escrow_alerts() -> list[dict[str, Any]]:
        return [a for a in aws.alerts(1, timeout=2) if attributes(a)["class"] == "escrow_failed"]
    wait_until(lambda: bool(escrow_alerts()), timeout=60, what="the escrow alert", interval=1)
    (alert,) = escrow_alerts()
    assert attributes(alert)["host"] == "carcosa"
    assert "No key held on the control node decrypts" in alert["Message"]

    control.stop()
    start_control(config)   # the right passphrase file: the condition clears
    wait_until(lambda: any(attributes(a)["class"] == "recovered" and "escrow" in a["Subject"]
                           for a in aws.alerts(2, timeout=2)), timeout=60,
               what="the escrow recovery", interval=1)
    assert len([a for a in aws.alerts(2, timeout=2)
                if attributes(a)["class"] == "escrow_failed"]) == 1
