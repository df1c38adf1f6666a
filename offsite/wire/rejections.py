"""Refused messages: one log line each and an entry in a bounded Redis list (offsite:rejected)
that an operator reads; whatever the message held, neither grows without bound."""
from __future__ import annotations

import logging
from datetime import datetime

import redis

from offsite.constants import REJECTED_KEY, RunState
from offsite.ledger.records import RunNotFound, RunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord

log = logging.getLogger(__name__)

MAX_REJECTED_ENTRIES = 1000
MAX_ENTRY_CHARS = 512
MAX_LABEL_CHARS = 80


def clip(text: str, limit: int) -> str:
    """text on one line, cut to `limit` characters with a marker saying how long it was."""
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text)} chars]"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def rejection_line(worker: str, task: str, task_id: str, cause: str) -> str:
    return clip(f"{clip(worker, MAX_LABEL_CHARS)} refused {clip(task, MAX_LABEL_CHARS)}"
                f"[{clip(task_id, MAX_LABEL_CHARS)}]: {cause}", MAX_ENTRY_CHARS)


def refuse(client: redis.Redis, now: datetime, worker: str, task: str, task_id: str,
           cause: str) -> None:
    """Log the refusal in one line and append it to the rejected list, keeping only the last
    MAX_REJECTED_ENTRIES; a Redis that cannot take it costs one more line, nothing else."""
    line = rejection_line(worker, task, task_id, cause)
    log.error("refusing a message: %s", line)
    try:
        with client.pipeline() as pipe:
            pipe.rpush(REJECTED_KEY, f"{now.isoformat()} {line}")
            pipe.ltrim(REJECTED_KEY, -MAX_REJECTED_ENTRIES, -1)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record the refused message in %s: %s", REJECTED_KEY, exc)


REFUSED_CLASS = "message_refused"


def fail_refused_run(store: RunStore, run_id: str, cause: str, now: datetime) -> bool:
    """A refused message that names a real run still queued ends that run failed (class
    message_refused): its start will never come, and the watchdog alerts for a failed run
    as for any other. A run already running or final is left as it is. Returns whether the
    run was failed here."""
    if (record := store.get(run_id)) is None or record.state != RunState.QUEUED:
        return False
    failed = False

    def fail(current: RunRecord) -> None:
        nonlocal failed
        if current.state != RunState.QUEUED:
            return
        failed = True
        current.state = RunState.FAILED
        current.finished_at = now
        current.error = ErrorRecord(step="message", failure_class=REFUSED_CLASS, message=(
            f"the run's message was refused by its worker: {clip(cause, MAX_ENTRY_CHARS)}"))
    try:
        store.update(run_id, fail)
    except RunNotFound:
        return False
    if failed:
        log.error("run %s failed: its message was refused", run_id)
    return failed
