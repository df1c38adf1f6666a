"""Failed runs become alerts: once per run, and once per streak of identical failures."""
from __future__ import annotations

import json
import logging
from datetime import datetime

import redis

from offsite.alerts import condition_alert, failure_alert, recovery_alert
from offsite.constants import KEY_PREFIX, RUN_RECORD_TTL_S, RunState
from offsite.messages import require_failed_run
from offsite.outbox import AlertOutbox
from offsite.records import RunRecord, RunStore

log = logging.getLogger(__name__)

REPORTED_KEY = KEY_PREFIX + "reported:"   # reported:<run_id>: the failure was handled
STREAK_KEY = KEY_PREFIX + "streak:"       # streak:<host> -> JSON of the current failure streak
SUMMARY_EVERY_S = 24 * 3600


def failure_signature(record: RunRecord) -> str:
    error = record.error
    return f"{record.type.value}|{error.failure_class if error else '?'}|{error.step if error else '?'}"


def report_failed_run(store: RunStore, client: redis.Redis, outbox: AlertOutbox, host: str,
                      run_id: str, now: datetime) -> str:
    """Queue the run's alert, or fold it into the host's streak of identical failures.

    Returns "alerted", "summarised" or "duplicate" (this run was already reported). The
    "reported" mark, the streak and the alert are written in one transaction, so a crash in
    between can neither lose the alert nor count a failure twice. Raises NotAFailedRun unless
    the run's record says it failed or was lost on `host`.
    """
    reported, streak_key = REPORTED_KEY + run_id, STREAK_KEY + host
    if client.exists(reported):
        return "duplicate"
    record = require_failed_run(store.get(run_id), host, run_id)
    signature = failure_signature(record)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(reported, streak_key)
                if pipe.exists(reported):
                    return "duplicate"
                raw = pipe.get(streak_key)
                streak = json.loads(raw) if raw else None
                repeated = bool(streak and streak["signature"] == signature)
                if streak and repeated:
                    streak.update(count=streak["count"] + 1, last_at=now.isoformat(),
                                  last_run_id=run_id)
                else:
                    streak = {"signature": signature, "count": 1, "first_at": now.isoformat(),
                              "last_at": now.isoformat(), "first_run_id": run_id,
                              "last_run_id": run_id, "summarised_at": now.isoformat()}
                pipe.multi()
                pipe.set(reported, now.isoformat(), ex=RUN_RECORD_TTL_S)
                pipe.set(streak_key, json.dumps(streak))
                if not repeated:
                    outbox.stage(pipe, f"run:{run_id}", failure_alert(record), now)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if repeated:
        _note(store, run_id, f"alert held back: same failure as {streak['first_run_id']} "
                             f"({streak['count']} in a row)")
        return "summarised"
    _note(store, run_id, "alert queued")
    return "alerted"


def review_streak(store: RunStore, client: redis.Redis, outbox: AlertOutbox, host: str,
                  now: datetime) -> None:
    """Clear the host's streak after a success (with a recovery message), or send the daily
    summary of failures held back."""
    raw = client.get(STREAK_KEY + host)
    if not raw:
        return
    streak = json.loads(raw)
    last_failure = datetime.fromisoformat(streak["last_at"])
    recovered = next((r for r in store.recent(host, 20)
                      if r.state in (RunState.SUCCEEDED, RunState.WARNING)
                      and r.finished_at and r.finished_at > last_failure), None)
    if recovered is not None:
        client.delete(STREAK_KEY + host)
        kind, failure, _ = streak["signature"].split("|")
        outbox.add(f"recovered:{host}:{now.timestamp():.0f}", recovery_alert(
            host, kind, failure,
            f"Run {recovered.run_id} of host {host} succeeded after {streak['count']} "
            f"identical failure(s) ({streak['signature']}), the first at {streak['first_at']}, "
            f"the last at {streak['last_at']}."), now)
        return
    held_back = streak["count"] - 1
    since_summary = (now - datetime.fromisoformat(streak["summarised_at"])).total_seconds()
    if held_back > 0 and since_summary >= SUMMARY_EVERY_S:
        streak["summarised_at"] = now.isoformat()
        client.set(STREAK_KEY + host, json.dumps(streak))
        kind, failure, step = streak["signature"].split("|")
        outbox.add(f"summary:{host}:{now.timestamp():.0f}", condition_alert(
            host, kind, failure,
            f"Host {host} is still failing: {streak['count']} identical failures ({failure} "
            f"at {step}) since {streak['first_at']}; the last at {streak['last_at']} "
            f"(run {streak['last_run_id']})."), now)


def _note(store: RunStore, run_id: str, text: str) -> None:
    if store.get(run_id) is not None:
        store.update(run_id, lambda record: record.notes.append(text))

