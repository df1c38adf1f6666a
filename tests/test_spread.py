"""Fleet load control: `schedule.spread` shifts each host's full and incr slots by a fixed
offset within the window, from its name alone: spread evenly over 1,000 hosts, the same in every
process (not Python's salted hash), and consistent between the next slot beat sends and the
latest slot the watchdog judges."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from offsite.config.model import parse_config
from offsite.constants import BackupType
from offsite.schedule.specs import latest_slot, next_run
from offsite.schedule.spread import spread_offset

HOSTS = [f"host-{index:04d}" for index in range(1000)]
WINDOW = 3600


def test_a_thousand_hosts_spread_evenly_over_the_window() -> None:
    offsets = [spread_offset(host, WINDOW) for host in HOSTS]
    assert all(0 <= offset < WINDOW for offset in offsets)
    per_ten_minutes = Counter(offset // 600 for offset in offsets)
    assert sorted(per_ten_minutes) == list(range(6))
    expected = len(HOSTS) / 6
    assert all(abs(count - expected) < 0.25 * expected for count in per_ten_minutes.values()), \
        per_ten_minutes
    per_minute = Counter(offset // 60 for offset in offsets)
    assert max(per_minute.values()) <= 40, "no minute holds a crowd of fulls"
    assert spread_offset("alpha", None) == spread_offset("alpha", 0) == 0


def test_offsets_are_the_same_in_every_process(tmp_path: Path, run_offsite: Any) -> None:
    config = tmp_path / "offsite.yaml"
    config.write_text(yaml.safe_dump({
        "target": {"url": f"file://{tmp_path}/target"}, "schedule": {"spread": "1h"},
        "encryption": {"passphrase_file": str(tmp_path / "p")},
        "hosts": {host: {"scripts": {"s": {"bash": "true"}}} for host in HOSTS[:200]}}))
    (tmp_path / "p").write_text("x\n")
    runs = []
    for seed in ("1", "2"):   # another hash seed, another process: the same offsets
        result = run_offsite("check", "--json", config=config,
                             env_extra={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        runs.append({row["host"]: row["spread_s"] for row in json.loads(result.stdout)["hosts"]})
    assert runs[0] == runs[1] == {host: spread_offset(host, WINDOW) for host in HOSTS[:200]}
    text = run_offsite("check", config=config).stdout
    assert f"spread +" in text and "(schedule.spread 1h)" in text


@pytest.mark.parametrize("full, incr", [("0 0 1 * *", "0 4 * * 1"),
                                        ({"every": "6h"}, {"every": "30m"})])
def test_beat_and_the_watchdog_see_the_same_shifted_slots(full: Any, incr: Any) -> None:
    config = parse_config({"target": {"url": "file:///srv/b"},
                           "schedule": {"spread": "1h", "full": full, "incr": incr},
                           "hosts": {host: {"scripts": {"s": {"bash": "true"}}}
                                     for host in HOSTS[:50]}})
    now = datetime(2026, 12, 4, 21, 30, 7, tzinfo=timezone.utc)
    starts = set()
    for host in HOSTS[:50]:
        offset = config.spread_offset(host)
        for kind in BackupType:
            spec = config.host_schedule(host, kind)
            upcoming = next_run(spec, "UTC", now)
            previous = latest_slot(spec, "UTC", now)
            assert previous is not None and previous <= now < upcoming
            assert latest_slot(spec, "UTC", upcoming) == upcoming
            assert next_run(spec, "UTC", previous) == upcoming   # no slot between the two
            unshifted = next_run(parse_config({"target": {"url": "file:///srv/b"},
                                               "schedule": {"full": full, "incr": incr},
                                               "hosts": {host: {"scripts": {"s": {
                                                   "bash": "true"}}}}}).host_schedule(
                host, kind), "UTC", upcoming - timedelta(seconds=offset + 1))
            assert upcoming - unshifted == timedelta(seconds=offset)
            if kind == BackupType.FULL:
                starts.add(upcoming)
    assert len(starts) > 40, "the fulls no longer start at one moment"
