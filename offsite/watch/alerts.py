"""Alerts: what a failure says; when it is sent (once per run, once per problem until the host
succeeds again); the outbox that keeps it in Redis until a sink takes it; and the sinks that
carry it to a person (SNS, or the log; the webhook and the fan-out are in offsite.watch.sinks,
the Alert itself in offsite.watch.alert_message)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from redis.client import Pipeline
from typing import Any, Callable, cast
import json
import logging
import os
import redis

from offsite.bounded import head_bytes, tail_bytes
from offsite.config.model import Config
from offsite.constants import KEY_PREFIX, RUN_RECORD_TTL_S, RunState, RunType
from offsite.durations import format_duration
from offsite.ledger.records import RunStore
from offsite.ledger.replicated import commit_replicated
from offsite.ledger.run_record import RunRecord
from offsite.watch.alert_message import Alert, AlertSink, sns_subject
from offsite.watch.apprise_sink import apprise_sinks
from offsite.watch.sinks import FanOutSink, PartialDelivery, WebhookSink
from offsite.wire.messages import require_failed_run

log = logging.getLogger(__name__)

_ALERT_ERROR_MAX_BYTES = 2048
_ALERT_STDERR_MAX_BYTES = 4096


def _subject(host: str, kind: str, what: str) -> str:
    return sns_subject(f"offsite: {host} {kind} backup {what.replace('_', ' ')}")


def condition_alert(host: str, kind: str, failure: str, text: str,
                    hint: str | None = None) -> Alert:
    """`hint`: the command that shows more (default `offsite status HOST`; a fleet-wide
    condition names one that takes no host)."""
    return Alert(subject=_subject(host, kind, failure),
                 message=f"{text}\nnext: run `{hint or f'offsite status {host}'}`",
                 attributes={"host": host, "type": kind, "class": failure})


def recovery_alert(host: str, kind: str, failure: str, text: str) -> Alert:
    return Alert(subject=_subject(host, kind, f"recovered from {failure}"), message=text,
                 attributes={"host": host, "type": kind, "class": "recovered"})


def failure_alert(record: RunRecord) -> Alert:
    error = record.error
    failure = error.failure_class if error else "failed"
    lines = [
        f"Backup of host {record.host} ({record.type.value}) {failure.replace('_', ' ')}.",
        f"run id: {record.run_id}",
        f"failed step: {error.step if error else 'unknown'}",
        f"exit code: {error.exit_code if error and error.exit_code is not None else 'none'}",
        f"error: {head_bytes(error.message, _ALERT_ERROR_MAX_BYTES) if error else 'unknown'}",
    ]
    if record.started_at and record.finished_at:
        elapsed = (record.finished_at - record.started_at).total_seconds()
        lines.append(f"duration: {format_duration(elapsed)}")
    if error and error.stderr_tail:
        lines += ["stderr (last lines):", tail_bytes(error.stderr_tail, _ALERT_STDERR_MAX_BYTES)]
    lines.append(f"next: run `offsite status {record.host}` for the run history")
    return Alert(
        subject=_subject(record.host, record.type.value, failure),
        message="\n".join(lines),
        attributes={"host": record.host, "type": record.type.value, "class": failure})


class SnsSink:
    """Publishes with the alert credentials (ALERT_AWS_*), never the upload keys."""

    def __init__(self, config: Config) -> None:
        alerts = config.alerts
        assert alerts.sns_topic_arn
        self.topic_arn = alerts.sns_topic_arn
        import boto3   # only on the node that publishes: host workers never load it
        from botocore.config import Config as BotoConfig
        self.client = boto3.client(
            "sns", region_name=alerts.sns_region, endpoint_url=alerts.endpoint_url,
            aws_access_key_id=os.environ.get("ALERT_AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("ALERT_AWS_SECRET_ACCESS_KEY"),
            config=BotoConfig(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10))

    def send(self, alert: Alert) -> None:
        self.client.publish(
            TopicArn=self.topic_arn, Subject=alert.subject, Message=alert.message,
            MessageAttributes={name: {"DataType": "String", "StringValue": value}
                               for name, value in alert.attributes.items()})


class LogSink:
    """When no topic is configured: the failure is logged (and recorded), nothing crashes."""

    def __init__(self, config: Config) -> None:
        del config

    def send(self, alert: Alert) -> None:
        log.error("ALERT %s\n%s", alert.subject, alert.message)


ALERT_SINKS: dict[str, Callable[[Config], AlertSink]] = {"sns": SnsSink, "log": LogSink}


def sink_for(config: Config) -> AlertSink:
    """Every configured sink (SNS, the webhook, each Apprise URL), fanned out when there are several; the log
    when none is."""
    sinks: dict[str, AlertSink] = {}
    if config.alerts.sns_topic_arn:
        sinks["sns"] = ALERT_SINKS["sns"](config)
    if config.alerts.webhook_url:
        sinks["webhook"] = WebhookSink(config)
    sinks.update(apprise_sinks(config))
    if not sinks:
        return ALERT_SINKS["log"](config)
    return next(iter(sinks.values())) if len(sinks) == 1 else FanOutSink(sinks)


REPORTED_KEY = KEY_PREFIX + "reported:"   # reported:<run_id>: the failure was handled
STREAK_KEY = KEY_PREFIX + "streak:"       # streak:<host>:<kind> -> JSON of the failure streak
SUMMARY_EVERY_S = 24 * 3600
RECENT_RUNS = 100   # runs of the host looked through for a success of the streak's kind
# Streaks, repeat suppression and recovery are kept per host and kind of run: a drill's
# success never says that backups recovered, nor a backup's that drills did.
STREAK_KINDS: dict[RunType, str] = {RunType.FULL: "backup", RunType.INCR: "backup",
                                    RunType.VERIFY: "verify", RunType.PRUNE: "prune",
                                    RunType.RESTORE: "restore"}
KINDS = ("backup", "verify", "prune", "restore")


def streak_key(host: str, kind: str) -> str:
    return f"{STREAK_KEY}{host}:{kind}"


def streak_keys(hosts: list[str]) -> list[tuple[str, str]]:
    """(host, kind) for every streak the watchdog may have to review, in a fixed order."""
    return [(host, kind) for host in hosts for kind in KINDS]


def adopt_legacy_streak(client: redis.Redis, host: str) -> None:
    """A streak written before streaks were kept per kind (`streak:<host>`) becomes the host's
    backup streak (unless one exists already)."""
    client.renamenx(STREAK_KEY + host, streak_key(host, "backup"))


def failure_signature(record: RunRecord) -> str:
    """What makes two failures "the same problem": the class and the step, not the run type
    (a full and an incremental failing in the same script are one problem)."""
    error = record.error
    return f"{error.failure_class if error else '?'}|{error.step if error else '?'}"


def report_failed_run(store: RunStore, client: redis.Redis, outbox: AlertOutbox, host: str,
                      run_id: str, now: datetime) -> str:
    """Queue the run's alert, or hold it back when the same problem was already alerted since
    the host's last success.

    The streak of the host and the run's kind (backups, drills, prunes: STREAK_KINDS) counts
    every failure of that kind since its last success (whatever the problem), and remembers
    which problems were alerted. Returns "alerted", "summarised", "duplicate"
    (this run was already reported) or "quiet" (a run recorded with alert=False). The "reported" mark, the streak and the alert are written
    in one transaction, so a crash in between can neither lose the alert nor count a failure
    twice. Raises NotAFailedRun unless the run's record says it failed or was lost on `host`.
    """
    reported = REPORTED_KEY + run_id
    if client.exists(reported):
        return "duplicate"
    record = require_failed_run(store.get(run_id), host, run_id)
    if not record.alert:   # a manual drill the operator saw fail, and asked not to alert
        client.set(reported, now.isoformat(), ex=RUN_RECORD_TTL_S)
        _note(store, run_id, "not alerted: run by hand without --alert")
        return "quiet"
    key = streak_key(host, STREAK_KINDS[record.type])
    signature = failure_signature(record)
    failed_at = (record.finished_at or now).isoformat()
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(reported, key)
                if pipe.exists(reported):
                    return "duplicate"
                raw = pipe.get(key)
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
                pipe.set(key, json.dumps(streak))
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
                  kind: str, now: datetime) -> None:
    """Clear the streak of the host's runs of `kind` after a success of that kind (with a
    recovery message counting every failure since the last success), or send the daily summary
    of failures held back. A success of another kind changes nothing."""
    key = streak_key(host, kind)
    raw = client.get(key)
    if not raw:
        return
    streak = json.loads(raw)
    last_failure = datetime.fromisoformat(streak["last_at"])
    recovered = next((r for r in store.recent(host, RECENT_RUNS)
                      if STREAK_KINDS.get(r.type) == kind
                      and r.state in (RunState.SUCCEEDED, RunState.WARNING)
                      and r.finished_at and r.finished_at > last_failure), None)
    failure, step = streak["last_signature"].split("|")
    label = "drill" if kind == "verify" else kind
    if recovered is not None:
        client.delete(key)
        outbox.add(f"recovered:{host}:{kind}:{now.timestamp():.0f}", recovery_alert(
            host, recovered.type.value, failure,
            f"Run {recovered.run_id} of host {host} succeeded after {streak['count']} "
            f"{label} failure(s) since the last successful {label}, the first at "
            f"{streak['first_at']} (run {streak['first_run_id']}), the last at "
            f"{streak['last_at']}; {len(streak['alerted'])} alerted, {streak['held']} held "
            "back as repeats."), now)
        return
    since_summary = (now - datetime.fromisoformat(streak["summarised_at"])).total_seconds()
    if streak["held"] > 0 and since_summary >= SUMMARY_EVERY_S:
        streak["summarised_at"] = now.isoformat()
        client.set(key, json.dumps(streak))
        outbox.add(f"summary:{host}:{kind}:{now.timestamp():.0f}", condition_alert(
            host, kind if kind != "backup" else "any", failure,
            f"Host {host} is still failing its {label}s: {streak['count']} failures since the "
            f"last success, the first at {streak['first_at']}; the last at "
            f"{streak['last_at']} (run {streak['last_run_id']}: {failure} at {step}); "
            f"{streak['held']} alert(s) held back as repeats of a problem already "
            "reported."), now)


def _note(store: RunStore, run_id: str, text: str) -> None:
    if store.get(run_id) is not None:
        store.update(run_id, lambda record: record.notes.append(text))


ALERT_KEY = KEY_PREFIX + "alert:"          # alert:<key> -> JSON {alert, attempts, sent_at}
PENDING_KEY = KEY_PREFIX + "alerts:pending"  # sorted set: alert key -> next attempt (epoch s)
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 600.0


class AlertOutbox:
    def __init__(self, client: redis.Redis, replicas: int = 0) -> None:
        """replicas: behind Redis Sentinel, an alert and its delivery claim are on a replica
        before the sink is called, and its `sent` mark before the delivery counts, so a
        failover neither loses an alert nor sends it twice (offsite.ledger.replicated)."""
        self.client = client
        self.replicas = replicas

    def add(self, key: str, alert: Alert, now: datetime) -> None:
        """Store the alert for delivery; an alert already stored under this key is kept."""
        with self.client.pipeline() as pipe:
            self.stage(pipe, key, alert, now)
            pipe.execute()

    @staticmethod
    def stage(pipe: Pipeline, key: str, alert: Alert, now: datetime) -> None:
        """Queue the alert's writes in `pipe`, so they commit together with the state that
        calls for the alert (a condition, a failure streak): never one without the other."""
        entry = {"alert": asdict(alert), "attempts": 0, "sent_at": None, "error": None}
        pipe.set(ALERT_KEY + key, json.dumps(entry), nx=True, ex=RUN_RECORD_TTL_S)
        pipe.zadd(PENDING_KEY, {key: now.timestamp()}, nx=True)

    def deliver_due(self, sink: AlertSink, now: datetime) -> int:
        """Try every alert whose time has come; returns how many were delivered."""
        delivered = 0
        due = cast("list[bytes]", self.client.zrangebyscore(PENDING_KEY, 0, now.timestamp()))
        for raw_key in due:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if self._deliver(key, sink, now):
                delivered += 1
        return delivered

    def _deliver(self, key: str, sink: AlertSink, now: datetime) -> bool:
        raw = self.client.get(ALERT_KEY + key)
        entry = json.loads(raw) if raw else None
        if entry is None or entry["sent_at"]:
            self.client.zrem(PENDING_KEY, key)
            return False
        # Claim this attempt: another deliverer (errback vs. watchdog) skips it meanwhile.
        claim = ALERT_KEY + key + ":sending"
        claimed = commit_replicated(self.client, self.replicas,
                                    lambda pipe: pipe.set(claim, "1", nx=True, ex=60),
                                    f"alert {key}")[0]
        if not claimed:
            return False
        try:
            try:
                if isinstance(sink, FanOutSink):   # a retry goes only where it did not arrive
                    entry["delivered_to"] = sink.send_remaining(
                        Alert(**entry["alert"]), entry.get("delivered_to", []))
                else:
                    sink.send(Alert(**entry["alert"]))
            except PartialDelivery as partial:
                entry["delivered_to"] = partial.done
                self._postpone(key, entry, partial, now)
                return False
            except Exception as exc:  # any sink failure: keep the alert, retry later
                self._postpone(key, entry, exc, now)
                return False
            entry["sent_at"] = now.isoformat()

            def sent(pipe: Pipeline) -> None:
                pipe.set(ALERT_KEY + key, json.dumps(entry), ex=RUN_RECORD_TTL_S)
                pipe.zrem(PENDING_KEY, key)
            commit_replicated(self.client, self.replicas, sent, f"the delivery of alert {key}")
            log.info("alert %s delivered: %s", key, entry["alert"]["subject"])
            return True
        finally:
            self.client.delete(claim)

    def _postpone(self, key: str, entry: dict[str, Any], exc: Exception,
                  now: datetime) -> None:
        entry["attempts"] += 1
        entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (entry["attempts"] - 1))
        self.client.set(ALERT_KEY + key, json.dumps(entry), ex=RUN_RECORD_TTL_S)
        self.client.zadd(PENDING_KEY, {key: now.timestamp() + delay})
        log.warning("alert %s not delivered (attempt %d, next in %.0fs): %s", key,
                    entry["attempts"], delay, entry["error"])
