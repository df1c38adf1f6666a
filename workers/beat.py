"""Celery beat with its state in Redis (RedBeat, one lock for the fleet), sending slots as runs."""
from __future__ import annotations

import logging
import socket
from datetime import timezone
from typing import Any

import redis
from celery.beat import SchedulingError
from redis.exceptions import LockNotOwnedError
from redbeat import RedBeatScheduler
from redbeat.schedulers import RedBeatSchedulerEntry

from offsite.constants import BackupType
from offsite.schedules import due_after, utcnow
from tasks.dispatch import send_slot
from workers.context import current_config, run_store

log = logging.getLogger(__name__)

OUTAGE_RETRY_S = 2.0


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

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """A Redis outage pauses beat instead of ending it; slots due meanwhile are sent once
        when it returns (they collapse like any catch-up)."""
        try:
            return float(super().tick(*args, **kwargs))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("beat: Redis unreachable (%s); retrying in %ss", exc, OUTAGE_RETRY_S)
            return OUTAGE_RETRY_S
        except LockNotOwnedError:
            if self.lock is not None and self.lock.acquire(blocking=False):
                log.warning("beat: lock expired during an outage and was taken again")
                return 0.0
            raise

    @property
    def info(self) -> str:
        return super().info + f"\n       . node -> {socket.gethostname()}"
