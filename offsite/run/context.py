"""What identifies one run, and its record before anything runs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from offsite.config.model import Config
from offsite.host.settings import HostSettings
from offsite.constants import BackupType, RunType
from offsite.errors import OffsiteError
from offsite.ledger.lease import HostLease
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import RunRecord


@dataclass(frozen=True)
class RunContext:
    """One run of one host: `settings` resolved once when the run's step starts
    (offsite.host.settings), `config` kept for the fleet's settings (watchdog grace)."""

    config: Config
    settings: HostSettings
    store: RunStore
    lease: HostLease
    run_id: str
    worker: str

    @property
    def host(self) -> str:
        return self.settings.name


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


MANUAL_ID_TRIES = 60


def queue_manual_run(store: RunStore, host: str, kind: BackupType | RunType, now: datetime,
                     note: str | None = None) -> RunRecord:
    """The record of a run asked for now (the command line, not a schedule): always a run of
    its own. Run ids name a second, so a second request within it (a retry right after a
    failure) takes the next free second instead of being answered with the first's record."""
    for offset in range(MANUAL_ID_TRIES):
        record = RunRecord(run_id=new_run_id(host, kind, now + timedelta(seconds=offset)),
                           host=host, type=RunType(kind.value), notes=[note] if note else [])
        if store.create(record):
            return record
    raise OffsiteError(f"no free run id for a {kind.value} of {host} within "
                       f"{MANUAL_ID_TRIES} s of {now:%Y-%m-%dT%H:%M:%SZ}; try again",
                       host=host, step="queue")
