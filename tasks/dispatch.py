"""Sending a backup to a host's queue: the record first, then the message."""
from __future__ import annotations

from datetime import datetime

from offsite.config import Config
from offsite.constants import BackupType, RunState, host_queue
from offsite.records import RunRecord, RunStore
from offsite.run_context import new_run_id, queue_run
from offsite.schedules import describe_lateness, utcnow
from tasks.backup import start_backup
from tasks.callbacks import failure_callback


def enqueue_backup(config: Config, store: RunStore, host: str, backup_type: BackupType,
                   run_id: str | None = None, scheduled_for: datetime | None = None,
                   late_by_s: float | None = None, note: str | None = None) -> RunRecord:
    """Queue a run for the host; raises UnknownHostError for a host not in the config, so a
    typo never creates a queue that nobody reads. A run that already left the queued state
    is not sent again."""
    config.host(host)
    run_id = run_id or new_run_id(host, backup_type, utcnow())
    record = queue_run(store, host, backup_type, run_id, scheduled_for, late_by_s, note)
    if record.state == RunState.QUEUED:
        start_backup.apply_async(
            args=(host, backup_type.value, run_id),
            kwargs={"scheduled_for": scheduled_for.isoformat() if scheduled_for else None},
            queue=host_queue(host), link_error=failure_callback(host, run_id))
    return record


def send_slot(config: Config, store: RunStore, host: str, backup_type: BackupType,
              slot: datetime, sent_at: datetime) -> RunRecord:
    """Send a scheduled slot as the run `<host>-<type>-<slot>`, noting how late it is."""
    spec = config.host_schedule(host, backup_type)
    late_by_s, note = describe_lateness(spec, config.schedule.timezone, slot, sent_at)
    return enqueue_backup(config, store, host, backup_type, new_run_id(host, backup_type, slot),
                          slot, late_by_s, note)
