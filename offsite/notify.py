"""Failed runs become alerts: once per run, and once per problem until the host succeeds again."""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

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
    """What makes two failures "the same problem": the class and the step, not the run type
    (a full and an incremental failing in the same script are one problem)."""
    error = record.error
    return f"{error.failure_class if error else '?'}|{error.step if error else '?'}"


def report_failed_run(store: RunStore, client: redis.Redis, outbox: AlertOutbox, host: str,
                      run_id: str, now: datetime) -> str:
    """Queue the run's alert, or hold it back when the same problem was already alerted since
    the host's last success.

    The host's streak counts every failure since its last success (whatever the problem), and
    remembers which problems were alerted. Returns "alerted", "summarised" or "duplicate"
    (this run was already reported). The "reported" mark, the streak and the alert are written
    in one transaction, so a crash in between can neither lose the alert nor count a failure
    twice. Raises NotAFailedRun unless the run's record says it failed or was lost on `host`.
    """
    reported, streak_key = REPORTED_KEY + run_id, STREAK_KEY + host
    if client.exists(reported):
        return "duplicate"
    record = require_failed_run(store.get(run_id), host, run_id)
    signature = failure_signature(record)
    failed_at = (record.finished_at or now).isoformat()
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(reported, streak_key)
                if pipe.exists(reported):
                    return "duplicate"
                raw = pipe.get(streak_key)
                streak: dict[str, Any] = json.loads(raw) if raw else {
                    "count": 0, "held": 0, "first_at": failed_at, "first_run_id": run_id,
                    "alerted": {}, "summarised_at": now.isoformat()}
                repeated = signature in streak["alerted"]
                streak.update(count=streak["count"] + 1, last_at=failed_at, last_run_id=run_id,
                              last_signature=signature)
                if repeated:
                    streak["held"] += 1
                else:
                    streak["alerted"][signature] = run_id
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
        _note(store, run_id, f"alert held back: same problem as {streak['alerted'][signature]} "
                             f"({streak['count']} failures since the last success)")
        return "summarised"
    _note(store, run_id, "alert queued")
    return "alerted"


def review_streak(store: RunStore, client: redis.Redis, outbox: AlertOutbox, host: str,
                  now: datetime) -> None:
    """Clear the host's streak after a success (with a recovery message counting every
    failure since the last success), or send the daily summary of failures held back."""
    raw = client.get(STREAK_KEY + host)
    if not raw:
        return
    streak = json.loads(raw)
    last_failure = datetime.fromisoformat(streak["last_at"])
    recovered = next((r for r in store.recent(host, 20)
                      if r.state in (RunState.SUCCEEDED, RunState.WARNING)
                      and r.finished_at and r.finished_at > last_failure), None)
    failure, step = streak["last_signature"].split("|")
    if recovered is not None:
        client.delete(STREAK_KEY + host)
        outbox.add(f"recovered:{host}:{now.timestamp():.0f}", recovery_alert(
            host, recovered.type.value, failure,
            f"Run {recovered.run_id} of host {host} succeeded after {streak['count']} "
            f"failure(s) since the last success, the first at {streak['first_at']} (run "
            f"{streak['first_run_id']}), the last at {streak['last_at']}; "
            f"{len(streak['alerted'])} alerted, {streak['held']} held back as repeats."), now)
        return
    since_summary = (now - datetime.fromisoformat(streak["summarised_at"])).total_seconds()
    if streak["held"] > 0 and since_summary >= SUMMARY_EVERY_S:
        streak["summarised_at"] = now.isoformat()
        client.set(STREAK_KEY + host, json.dumps(streak))
        outbox.add(f"summary:{host}:{now.timestamp():.0f}", condition_alert(
            host, "any", failure,
            f"Host {host} is still failing: {streak['count']} failures since the last "
            f"success, the first at {streak['first_at']}; the last at {streak['last_at']} "
            f"(run {streak['last_run_id']}: {failure} at {step}); {streak['held']} alert(s) "
            "held back as repeats of a problem already reported."), now)


def _note(store: RunStore, run_id: str, text: str) -> None:
    if store.get(run_id) is not None:
        store.update(run_id, lambda record: record.notes.append(text))

