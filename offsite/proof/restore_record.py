"""A restore from an operator's shell, in the ledger (`offsite restore` when the broker
answers): a run of its own kind, `restore`, so `offsite status HOST` shows who restored what
and when, and a restore's success or failure never starts or ends a backup's or a drill's
failure streak (offsite.watch.alerts keeps streaks per kind).

The record is written once, when the restore ends, already final: a restore takes no host lease
(it must not wait for a running backup), and a run recorded as running without one would be
judged lost by the watchdog. A failure is alerted only when the operator asks (`--alert`, like
`verify --local`): the record carries `alert: false` otherwise. A usage error (a bad `--time`, a
DEST that is not empty) is not a restore and is not recorded. Recording never hides the
restore's own outcome: a ledger that fails meanwhile is a warning on stderr.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import redis

from offsite.constants import RunState, RunType
from offsite.errors import CommandError, OffsiteError, UsageError
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord, StepRecord
from offsite.schedule.specs import utcnow

log = logging.getLogger(__name__)

STEP = "restore"
FAILURE_CLASS = "restore_failed"
_ID_TRIES = 60


class RestoreLog:
    """What the record says besides its outcome; `skipped`: nothing was restored (a thaw was
    requested instead), with why."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.skipped: str | None = None
        self.record: RunRecord | None = None   # once the restore ended

    @property
    def failed(self) -> RunRecord | None:
        return self.record if self.record and self.record.state == RunState.FAILED else None


@contextmanager
def recorded_restore(store: RunStore | None, host: str, *, alert: bool,
                     request: str) -> Iterator[RestoreLog]:
    """Record the restore run inside the block in `store` when it ends (nothing without a
    store). `request` says what was asked (DEST, --time, --path)."""
    started, log_ = utcnow(), RestoreLog()
    log_.notes.append(f"asked by local@{socket.gethostname()[:120]}: {request}")
    try:
        yield log_
    except UsageError:
        raise
    except OffsiteError as error:
        log_.record = _write(store, host, started, log_, alert, error)
        raise
    log_.record = _write(store, host, started, log_, alert, None)


def _write(store: RunStore | None, host: str, started: datetime, log_: RestoreLog, alert: bool,
           error: OffsiteError | None) -> RunRecord:
    """The restore's record, created in `store` when there is one."""
    finished = utcnow()
    exit_code = error.returncode if isinstance(error, CommandError) else None
    state = (RunState.FAILED if error is not None else
             RunState.SKIPPED if log_.skipped else RunState.SUCCEEDED)
    record = RunRecord(
        run_id="", host=host, type=RunType.RESTORE, state=state, created_at=started,
        started_at=started, finished_at=finished, alert=alert,
        notes=log_.notes + ([f"skipped: {log_.skipped}"] if log_.skipped else []),
        steps=[StepRecord(name=STEP, worker=f"local@{socket.gethostname()[:120]}",
                          started_at=started, finished_at=finished,
                          exit_code=exit_code if error is not None else 0,
                          duration_s=(finished - started).total_seconds())],
        error=None if error is None else ErrorRecord(
            step=STEP, exit_code=exit_code, message=error.one_line(),
            stderr_tail=error.stderr_tail if isinstance(error, CommandError) else "",
            failure_class=error.failure_class or FAILURE_CLASS))
    record.run_id = _run_id(host, started)
    if store is None:
        return record
    try:
        for offset in range(_ID_TRIES):   # ids name a second: a second restore takes the next
            record.run_id = _run_id(host, started + timedelta(seconds=offset))
            if store.create(record):
                return record
        log.warning("the restore was not recorded: no free run id within %d s", _ID_TRIES)
    except (redis.RedisError, OSError) as exc:
        log.warning("the restore was not recorded in the ledger: %s", exc)
    return record


def _run_id(host: str, at: datetime) -> str:
    return f"{host}-{RunType.RESTORE.value}-{at.strftime('%Y%m%dT%H%M%SZ')}-local"
