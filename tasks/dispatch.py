"""Sending a backup to a host's queue: the record first, then the message."""
from __future__ import annotations

from datetime import datetime

from offsite.config import Config
from offsite.constants import CONTROL_QUEUE, BackupType, RunState, RunType, host_queue
from offsite.records import RunRecord, RunStore
from offsite.run_context import new_run_id, queue_run
from offsite.schedules import describe_lateness, utcnow
from tasks.backup import start_backup
from tasks.callbacks import failure_callback
from tasks.verify import verify_backup


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


def verify_queue(config: Config, host: str) -> str:
    on = config.verify_on(host)
    return CONTROL_QUEUE if on == "control" else host_queue(on)


def enqueue_verify(config: Config, store: RunStore, host: str, at: datetime | None = None,
                   run_id: str | None = None, scheduled_for: datetime | None = None,
                   note: str | None = None) -> RunRecord:
    """Queue a verify of the host where `verify.on` says it runs; the record first."""
    config.host(host)
    run_id = run_id or new_run_id(host, RunType.VERIFY, utcnow())
    record = queue_run(store, host, RunType.VERIFY, run_id, scheduled_for, note=note)
    if record.state == RunState.QUEUED:
        verify_backup.apply_async(
            args=(host, run_id),
            kwargs={"at": at.isoformat() if at else None,
                    "scheduled_for": scheduled_for.isoformat() if scheduled_for else None},
            queue=verify_queue(config, host), link_error=failure_callback(host, run_id))
    return record


def send_slot(config: Config, store: RunStore, host: str, backup_type: BackupType,
              slot: datetime, sent_at: datetime) -> RunRecord:
    """Send a scheduled slot as the run `<host>-<type>-<slot>`, noting how late it is."""
    spec = config.host_schedule(host, backup_type)
    late_by_s, note = describe_lateness(spec, config.schedule.timezone, slot, sent_at)
    return enqueue_backup(config, store, host, backup_type, new_run_id(host, backup_type, slot),
                          slot, late_by_s, note)
