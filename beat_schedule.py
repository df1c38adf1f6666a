"""The beat schedule as a pure function: config in, Celery `beat_schedule` dict out.

One full and one incremental entry per host, from the host's own schedule or the fleet
default, each routed to the host's queue. The scheduler (workers.beat) adds the slot's run id
and time when it sends an entry, so a slot sent twice still runs once.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import schedule as interval

from offsite.config import Config
from offsite.constants import BackupType, host_queue
from offsite.schedules import EverySpec, ScheduleSpec

START_BACKUP = "tasks.backup.start_backup"


def entry_name(host: str, backup_type: BackupType) -> str:
    return f"{host}-{backup_type.value}"


def celery_schedule(spec: ScheduleSpec, timezone: str) -> Any:
    if isinstance(spec, EverySpec):
        return interval(timedelta(seconds=spec.seconds))
    return spec.to_crontab(timezone)


def build_beat_schedule(config: Config) -> dict[str, dict[str, Any]]:
    return {
        entry_name(host, kind): {
            "task": START_BACKUP,
            "schedule": celery_schedule(config.host_schedule(host, kind),
                                        config.schedule.timezone),
            "args": (host, kind.value),
            "options": {"queue": host_queue(host)},
        }
        for host in config.hosts
        for kind in BackupType
    }
