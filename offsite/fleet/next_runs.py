"""When each host's next run of each type is due by its schedule (offsite.schedule), as `offsite
check` shows it: full and incr from the host's backup schedule (with its spread), verify and prune
when the host has drills or retention. Each moment is computed once and kept until it passes,
so a scrape of a large fleet does no cron arithmetic."""
from __future__ import annotations

from datetime import datetime
from threading import Lock

from offsite.config.model import Config
from offsite.schedule.specs import next_run

RUN_KINDS = ("full", "incr", "verify", "prune")


class NextRuns:
    """The next scheduled run per (host, type) of one config (the control node's)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.kept: dict[tuple[str, str], datetime | None] = {}
        self.lock = Lock()

    def at(self, host: str, kind: str, now: datetime) -> datetime | None:
        """None when the host has no schedule of that type (no drills, no retention)."""
        with self.lock:
            found = self.kept.get((host, kind), now)
        if found is not None and found <= now:
            spec = self.config.run_schedule(host, kind)
            found = None if spec is None else next_run(spec, self.config.schedule.timezone, now)
            with self.lock:
                self.kept[(host, kind)] = found
        return found

    def table(self, hosts: list[str], now: datetime) -> dict[tuple[str, str], float]:
        """(host, type) -> Unix time of its next run, for the types the host has."""
        found = {}
        for host in hosts:
            for kind in RUN_KINDS:
                if (moment := self.at(host, kind, now)) is not None:
                    found[(host, kind)] = moment.timestamp()
        return found
