"""Alerts waiting to be delivered, kept in Redis until the sink takes them: none is ever lost.

An alert is stored once under its key (so a doubled errback adds nothing), then delivered; a
failed delivery is retried with exponential backoff by whoever calls `deliver_due` next (the
errback itself, then every watchdog tick on the control worker).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

import redis
from redis.client import Pipeline

from offsite.alerts import Alert, AlertSink
from offsite.constants import KEY_PREFIX, RUN_RECORD_TTL_S

log = logging.getLogger(__name__)

ALERT_KEY = KEY_PREFIX + "alert:"          # alert:<key> -> JSON {alert, attempts, sent_at}
PENDING_KEY = KEY_PREFIX + "alerts:pending"  # sorted set: alert key -> next attempt (epoch s)
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 600.0


class AlertOutbox:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

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
        if not self.client.set(claim, "1", nx=True, ex=60):
            return False
        try:
            try:
                sink.send(Alert(**entry["alert"]))
            except Exception as exc:  # any sink failure: keep the alert, retry later
                self._postpone(key, entry, exc, now)
                return False
            entry["sent_at"] = now.isoformat()
            self.client.set(ALERT_KEY + key, json.dumps(entry), ex=RUN_RECORD_TTL_S)
            self.client.zrem(PENDING_KEY, key)
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
