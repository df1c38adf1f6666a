"""Whether a queued run may start, and as what: the rules that keep one backup per slot and
one at a time per host (duplicates, expiry, a full covering an incremental, a busy host).
Whether an incremental has a chain to continue is the target's to say: offsite.run.chain."""
from __future__ import annotations

import logging
from datetime import datetime

from offsite.constants import BackupType, RunState, RunType
from offsite.durations import format_duration
from offsite.errors import OffsiteError
from offsite.ledger.lease import is_catch_up
from offsite.ledger.run_record import RunRecord
from offsite.run.context import RunContext, queue_run
from offsite.schedule.specs import utcnow

log = logging.getLogger(__name__)


class MustWait(OffsiteError):
    """A full backup (or any backup meeting a drill or a prune) found its host busy: it waits
    for `holder` (offsite.wire.outgoing parks it) instead of being skipped."""

    def __init__(self, cause: str, *, host: str | None = None, step: str | None = None,
                 holder: str | None = None) -> None:
        super().__init__(cause, host=host, step=step)
        self.holder = holder


def admit(ctx: RunContext, requested: RunType,
          scheduled_for: datetime | None = None) -> RunType | None:
    """Claim the run and the host, and say which type to run.

    None when the run must not go on: already claimed (a redelivered or doubled message),
    expired (a newer slot of the same type is queued), or skipped (an incremental that meets
    a full, or a host busy with another backup). Raises MustWait for a full or a verify that
    finds the host busy, and for any backup that finds a drill or a prune holding it.
    """
    record = queue_run(ctx.store, ctx.host, requested, ctx.run_id, scheduled_for)
    if record.state != RunState.QUEUED:
        log.warning("run %s is already %s; ignoring this message", ctx.run_id, record.state)
        return None
    if reason := _superseded(ctx, record):
        state = RunState.EXPIRED if reason.startswith("superseded") else RunState.SKIPPED
        _settle(ctx, state, reason)
        return None
    if not ctx.lease.acquire(ctx.host, ctx.run_id):
        holder = ctx.lease.holder(ctx.host)
        if record.type != RunType.INCR or _is_drill(ctx, holder):
            what = {RunType.FULL: "full backup", RunType.INCR: "incremental backup"}.get(
                record.type, record.type.value)
            raise MustWait(f"host busy with run {holder}; the {what} waits",
                           host=ctx.host, step="start", holder=holder)
        _settle(ctx, RunState.SKIPPED, f"skipped: the host is busy with run {holder}")
        return None
    claimed = False

    def claim(current: RunRecord) -> None:
        nonlocal claimed
        claimed = current.state == RunState.QUEUED
        if claimed:
            current.state = RunState.RUNNING
            current.started_at = utcnow()
            if note := _queue_wait_note(current, ctx.config.watchdog.start_grace):
                current.notes.append(note)

    started = ctx.store.update(ctx.run_id, claim)
    if not claimed:
        log.warning("run %s was claimed by another message; ignoring this one", ctx.run_id)
        return None
    return started.type


def _is_drill(ctx: RunContext, holder: str | None) -> bool:
    """Whether the host is held by a drill, a prune or the control node's replica catch-up:
    they end, and a backup asked for meanwhile waits for them (an incremental skipped there
    would be a backup missed)."""
    if is_catch_up(holder):
        return True
    other = ctx.store.get(holder) if holder else None
    return other is not None and other.type in (RunType.VERIFY, RunType.PRUNE)


def _queue_wait_note(record: RunRecord, grace_s: int) -> str | None:
    """A note when a scheduled run started long after it was sent (its host was down)."""
    if record.scheduled_for is None or record.started_at is None:
        return None
    waited = (record.started_at - record.scheduled_for).total_seconds() - (record.late_by_s or 0)
    if waited <= grace_s:
        return None
    return (f"started {format_duration(waited)} after it was sent: it waited in the queue "
            "(was the host's worker down?)")


def _superseded(ctx: RunContext, record: RunRecord) -> str | None:
    """Why a queued run should not start: a newer slot of its type, or a full that covers it."""
    pending = [other for other in ctx.store.recent(ctx.host, 50)
               if other.run_id != record.run_id and not other.is_final]
    if record.scheduled_for is not None:
        newer = [other for other in pending
                 if other.type == record.type and other.state == RunState.QUEUED
                 and other.scheduled_for is not None
                 and other.scheduled_for > record.scheduled_for]
        if newer:
            return (f"superseded by the newer slot {max(newer, key=_slot).run_id}: "
                    "only the latest waiting slot runs")
    if record.type == BackupType.INCR:
        # a running full covers it only while it holds the host: a dead one's record may stay
        # `running` until the watchdog settles it
        holder = ctx.lease.holder(ctx.host)
        fulls = [other for other in pending if other.type == BackupType.FULL
                 and (other.state == RunState.QUEUED or other.run_id == holder)]
        if fulls:
            return (f"skipped: full backup {fulls[0].run_id} of this host is "
                    f"{fulls[0].state.value} and covers this incremental")
    return None


def _slot(record: RunRecord) -> datetime:
    assert record.scheduled_for is not None
    return record.scheduled_for


def _settle(ctx: RunContext, state: RunState, reason: str) -> None:
    """End a run that never started (skipped, expired), with the reason in its record."""
    def settle(record: RunRecord) -> None:
        if record.state == RunState.QUEUED:
            record.state = state
            record.finished_at = utcnow()
            record.notes.append(reason)
    ctx.store.update(ctx.run_id, settle)
    log.warning("run %s %s: %s", ctx.run_id, state.value, reason)


def note_waiting(ctx: RunContext, reason: str) -> None:
    def note(record: RunRecord) -> None:
        if reason not in record.notes:
            record.notes.append(reason)
    ctx.store.update(ctx.run_id, note)
