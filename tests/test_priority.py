"""`priority: {nice, io}` (fleet, `hosts.<host>.priority` overrides): a host's scripts and
duplicity run at the CPU and I/O priority the config gives, read back from a real run through
/proc and ionice; without it they run at the worker's own priority."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe

PROBE = ("awk '{print $19}' /proc/$$/stat > nice.txt; ionice -p $$ > ionice.txt; "
         "awk '{print $19}' /proc/$PPID/stat > parent.txt")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ionice") is None, reason="needs util-linux ionice")
def test_scripts_run_at_the_configured_priority_and_a_host_overrides_the_fleet(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config({"alpha": {"scripts": {"probe": {"bash": PROBE}}},
                          "beta": {"scripts": {"probe": {"bash": PROBE}},
                                   "priority": {"nice": 5, "io": "best-effort"}},
                          "gamma": {"scripts": {"probe": {"bash": PROBE}},
                                    "priority": {"nice": 0, "io": "normal"}}},
                         priority={"nice": 15, "io": "idle"},
                         target={"url": f"file://{tmp_path}/target"})
    seen = {}
    for host in ("alpha", "beta", "gamma"):
        done = run_offsite("backup", host, "--type", "full", "--local", config=config,
                           timeout=180)
        assert done.returncode == 0, describe(done)
        dest = tmp_path / f"restored-{host}"
        restored = run_offsite("restore", host, str(dest), config=config, timeout=180)
        assert restored.returncode == 0, describe(restored)
        seen[host] = ((dest / "probe" / "nice.txt").read_text().strip(),
                      (dest / "probe" / "ionice.txt").read_text().strip())
    assert seen["alpha"] == ("15", "idle")
    assert seen["beta"] == ("5", "best-effort: prio 7")
    assert seen["gamma"][0] == "0" and seen["gamma"][1] != "idle"
