"""offsite_next_run_timestamp_seconds' source: each host's next run per type from the schedule,
the moments `offsite check` shows, kept until they pass."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from offsite.config.model import parse_config
from offsite.fleet.next_runs import NextRuns
from offsite.schedule.specs import next_run


def test_next_runs_are_the_schedules_and_move_on_once_passed() -> None:
    config = parse_config({
        "target": {"url": "file:///backups"},
        "schedule": {"full": "0 3 * * 0", "incr": {"every": "6h"}, "spread": "1h"},
        "retention": {"keep_full_chains": 2},
        "hosts": {"carcosa": {"scripts": {"db": {"bash": "true"}},
                              "verify": {"schedule": {"every": "7d"}}},
                  "hali": {"scripts": {"db": {"bash": "true"}}}}})
    now = datetime(2026, 12, 4, 23, 0, tzinfo=timezone.utc)
    runs = NextRuns(config)
    table = runs.table(list(config.hosts), now)
    expected = {(host, kind): next_run(spec, config.schedule.timezone, now).timestamp()
                for host in config.hosts for kind in ("full", "incr", "verify", "prune")
                if (spec := config.run_schedule(host, kind)) is not None}
    assert table == expected
    assert ("carcosa", "verify") in table and ("hali", "verify") not in table
    assert table[("carcosa", "full")] != table[("hali", "full")]   # each host's spread
    later = datetime.fromtimestamp(table[("hali", "incr")], timezone.utc) + timedelta(seconds=1)
    moved = runs.table(["hali"], later)
    assert moved[("hali", "incr")] > table[("hali", "incr")]
    assert moved[("hali", "full")] == table[("hali", "full")]
