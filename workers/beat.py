"""Celery beat with its state in Redis (RedBeat, one lock for the fleet), sending slots as runs."""
from __future__ import annotations

import logging
import socket
from datetime import timezone
from typing import Any

from celery.beat import SchedulingError
from redbeat import RedBeatScheduler
from redbeat.schedulers import RedBeatSchedulerEntry

from offsite.constants import BackupType
from offsite.schedules import due_after, utcnow
from tasks.dispatch import send_slot
from workers.context import current_config, run_store

log = logging.getLogger(__name__)


class SlotScheduler(RedBeatScheduler):
    """Sends each due entry as a run whose id comes from the slot it stands for.

    The slot is the first one after the entry last ran, so a catch-up after downtime is one
    run (its record says how late), and a send repeated before the entry advanced (a crash
    between send and save) carries the same run id and is claimed once by the worker.
    """

    def apply_async(self, entry: RedBeatSchedulerEntry, producer: Any = None,
                    advance: bool = True, **kwargs: Any) -> Any:
        host, kind = entry.args
        config = current_config()
        backup_type = BackupType(kind)
        now = utcnow()
        spec = config.host_schedule(host, backup_type)
        last_run_at = entry.last_run_at or now
        slot = due_after(spec, config.schedule.timezone, last_run_at)
        # in UTC: the run id and the notes write the slot with a Z suffix
        slot = min(slot, now).astimezone(timezone.utc)
        try:
            send_slot(config, run_store(), host, backup_type, slot, now)
        except Exception as exc:
            raise SchedulingError(f"could not send {entry.name}: {exc}") from exc
        return self.reserve(entry) if advance else entry

    @property
    def info(self) -> str:
        return super().info + f"\n       . node -> {socket.gethostname()}"
