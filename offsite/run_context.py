"""What identifies one run, and its record before anything runs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from offsite.config import Config
from offsite.constants import BackupType, RunType
from offsite.lease import HostLease
from offsite.records import RunRecord, RunStore


@dataclass(frozen=True)
class RunContext:
    config: Config
    store: RunStore
    lease: HostLease
    host: str
    run_id: str
    worker: str


def new_run_id(host: str, backup_type: BackupType | RunType, slot: datetime) -> str:
    """Derived from the slot, so a slot sent twice is recognised as one run."""
    return f"{host}-{backup_type.value}-{slot.strftime('%Y%m%dT%H%M%SZ')}"


def queue_run(store: RunStore, host: str, backup_type: BackupType | RunType, run_id: str,
              scheduled_for: datetime | None = None, late_by_s: float | None = None,
              note: str | None = None) -> RunRecord:
    """The record of a run about to be sent; an existing record is returned untouched."""
    record = RunRecord(run_id=run_id, host=host, type=RunType(backup_type.value), scheduled_for=scheduled_for,
                       late_by_s=late_by_s, notes=[note] if note else [])
    if store.create(record):
        return record
    existing = store.get(run_id)
    assert existing is not None
    return existing
