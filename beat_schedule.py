"""The beat schedule as a pure function: config in, Celery `beat_schedule` dict out.

One full and one incremental entry per host, from the host's own schedule or the fleet
default, each routed to the host's queue; a restore drill entry per host with `verify.schedule`
(routed where `verify.where` says) and a prune entry per host with retention (the control node).
The scheduler (workers.beat) adds the slot's run id and time when it sends an entry, so a slot
sent twice still runs once.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from zoneinfo import ZoneInfo

from celery.schedules import crontab, schedule as interval

from offsite.config.model import Config
from offsite.constants import CONTROL_QUEUE, RunType, host_queue
from offsite.wire.messages import PRUNE, START_BACKUP, VERIFY
from offsite.schedule.specs import EverySpec, ScheduleSpec


def entry_name(host: str, kind: RunType | str) -> str:
    return f"{host}-{RunType(kind).value}"


def entry_route(config: Config, host: str, kind: RunType) -> tuple[str, str]:
    """The task an entry sends and the queue it goes to."""
    if kind == RunType.VERIFY:
        on = config.verify_on(host)
        return VERIFY, CONTROL_QUEUE if on == "control" else host_queue(on)
    if kind == RunType.PRUNE:
        return PRUNE, CONTROL_QUEUE
    return START_BACKUP, host_queue(host)


def celery_schedule(spec: ScheduleSpec, timezone: str) -> Any:
    if isinstance(spec, EverySpec):
        return interval(timedelta(seconds=spec.seconds))
    minute, hour, day_of_month, month_of_year, day_of_week = spec.fields()
    schedule = crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month_of_year, day_of_week=day_of_week)
    schedule.tz = ZoneInfo(timezone)
    return schedule


def scheduled_entries(config: Config) -> dict[str, tuple[str, RunType]]:
    """The entries the config names, by name: (host, run type). Beat keeps exactly these in
    Redis (workers.beat): an entry it finds that is not here is removed, one missing is made."""
    return {entry_name(host, kind): (host, kind) for host in config.hosts for kind in RunType
            if config.run_schedule(host, kind.value) is not None}


def build_beat_schedule(config: Config) -> dict[str, dict[str, Any]]:
    entries = {}
    for name, (host, kind) in scheduled_entries(config).items():
        spec = config.run_schedule(host, kind.value)
        assert spec is not None
        task, queue = entry_route(config, host, kind)
        entries[name] = {
            "task": task,
            "schedule": celery_schedule(spec, config.schedule.timezone),
            "args": (host, kind.value),
            "options": {"queue": queue},
        }
    return entries
