"""Deliver a failed run's alert exactly once, and note it in the run record."""
from __future__ import annotations

import logging

import redis

from offsite.alerts import AlertSink, failure_alert
from offsite.constants import KEY_PREFIX, RUN_RECORD_TTL_S, BackupType, RunState
from offsite.records import ErrorRecord, RunRecord, RunStore
from offsite.schedules import utcnow

log = logging.getLogger(__name__)

ALERTED_KEY = KEY_PREFIX + "alerted:"


def alert_failed_run(store: RunStore, client: redis.Redis, sink: AlertSink, host: str,
                     run_id: str) -> bool:
    """Send the run's failure alert unless it was sent already; True when sent now.

    Raises whatever the sink raises, so the caller retries; the marker is only set after
    a successful send, so a retry never loses the alert.
    """
    key = ALERTED_KEY + run_id
    if client.exists(key):
        log.info("alert for run %s was already sent", run_id)
        return False
    record = store.get(run_id) or _unknown_run(host, run_id)
    sink.send(failure_alert(record))
    client.set(key, utcnow().isoformat(), ex=RUN_RECORD_TTL_S)
    if store.get(run_id) is not None:
        store.update(run_id, lambda r: r.notes.append(f"alert sent at {utcnow().isoformat()}"))
    return True


def _unknown_run(host: str, run_id: str) -> RunRecord:
    kind = BackupType.FULL if "-full-" in run_id else BackupType.INCR
    return RunRecord(run_id=run_id, host=host, type=kind, state=RunState.FAILED,
                     error=ErrorRecord(step=None, message="the run failed before it was recorded"))
