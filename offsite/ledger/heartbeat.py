"""Liveness written by every node into one Redis hash, read by the watchdog in one command.

Each host worker writes `worker:<host>`, beat writes `beat`, the control worker `control`, with
the time of writing and the digest of the config it runs with ("<epoch> <digest>"; see
offsite.watch.config_digest), every few seconds from a daemon thread. Unlike a broadcast ping,
reading the whole fleet costs one HMGET and never waits for replies.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterable, cast

import redis

from offsite.constants import KEY_PREFIX

log = logging.getLogger(__name__)

HEARTBEATS_KEY = KEY_PREFIX + "heartbeats"   # hash: node -> "<epoch seconds> [<config digest>]"
CONSUMING_KEY = KEY_PREFIX + "consuming"     # hash: node -> the queues it reads, comma-separated
MAX_INTERVAL_S = 5.0
BEAT_NODE = "beat"
CONTROL_NODE = "control"


def worker_node(host: str) -> str:
    return f"worker:{host}"


def interval_for(timeout_s: float) -> float:
    """A few beats per timeout, at most every MAX_INTERVAL_S, never busier than 4 per second."""
    return max(0.25, min(MAX_INTERVAL_S, timeout_s / 4))


def beat_value(now: float | None = None, digest: str | None = None) -> str:
    stamp = f"{time.time() if now is None else now:.3f}"
    return f"{stamp} {digest}" if digest else stamp


def beat_once(client: redis.Redis, node: str, now: float | None = None,
              digest: str | None = None, queues: list[str] | None = None) -> None:
    """One beat; with `queues`, also the queues the node reads now (a worker's own queue
    missing from them is reported by the watchdog: worker_not_consuming)."""
    if queues is None:
        client.hset(HEARTBEATS_KEY, node, beat_value(now, digest))
        return
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(HEARTBEATS_KEY, node, beat_value(now, digest))
        pipe.hset(CONSUMING_KEY, node, ",".join(sorted(queues)))
        pipe.execute()


def parse_consuming(value: bytes | str | None) -> frozenset[str] | None:
    """The queues a node said it reads (None: it never said)."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return frozenset(name for name in text.split(",") if name)


def beat_many(client: redis.Redis, nodes: Iterable[str], now: float | None = None) -> None:
    """One beat for many nodes in one command (a gateway or agent speaking for several)."""
    stamp = f"{time.time() if now is None else now:.3f}"
    fields = [item for node in nodes for item in (node, stamp)]
    if fields:
        client.hset(HEARTBEATS_KEY, items=fields)


def last_beats(client: redis.Redis, nodes: Iterable[str]) -> dict[str, datetime | None]:
    """Each node's last beat (None: never seen), in one command."""
    names = list(nodes)
    if not names:
        return {}
    raw = cast("list[bytes | None]", client.hmget(HEARTBEATS_KEY, names))
    return {name: parse_beat(value) for name, value in zip(names, raw)}


def parse_beat(value: bytes | str | None) -> datetime | None:
    """A beat as written by beat_once; anything else (a stray write) counts as no beat."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    try:
        return datetime.fromtimestamp(float(text.split(" ", 1)[0]), tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None   # not a beat this code wrote: as good as never seen


def parse_digest(value: bytes | str | None) -> str | None:
    """The config digest a beat carries (None: the node published none)."""
    if value is None:
        return None
    parts = (value.decode(errors="replace") if isinstance(value, bytes) else value).split(" ", 1)
    return parts[1] if len(parts) == 2 and parts[1] else None


class Heartbeat:
    """A daemon thread beating for `node` until stopped; a failed write (Redis away) is logged
    once per outage and retried at the next beat, never ends the thread."""

    def __init__(self, client_factory: Callable[[], redis.Redis], node: str,
                 interval_s: float, digest: Callable[[], str | None] | None = None,
                 queues: Callable[[], list[str] | None] | None = None) -> None:
        self.client_factory = client_factory
        self.node = node
        self.interval_s = interval_s
        self.digest = digest or (lambda: None)
        self.queues = queues or (lambda: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{node}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failing = False
        while True:
            try:
                beat_once(self.client_factory(), self.node, digest=self.digest(),
                          queues=self.queues())
                if failing:
                    log.info("heartbeat of %s written again", self.node)
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("heartbeat of %s not written: %s", self.node, exc)
                failing = True
            if self._stop.wait(self.interval_s):
                return
