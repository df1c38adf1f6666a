"""Writes a replica holds before they count, behind Redis Sentinel.

A write the master acknowledged is lost when the master dies before its replica has it: the
sentinels promote the replica without it. `commit_replicated` sends the writes and a `WAIT`
in one pipeline, so when it returns a replica holds them; when the master dies meanwhile,
the client's retry (offsite.config.broker's clients ride out a failover and reconnect to the
master the sentinels name) sends the pipeline whole again to the new master, so the writes
land there instead, never nowhere.
The writes must therefore be idempotent (a SET, a ZREM, a SET NX that reads its own answer)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import redis
from redis.client import Pipeline

REPLICA_WAIT_MS = 10_000
log = logging.getLogger(__name__)


def expected_replicas(client: redis.Redis) -> int:
    """The replicas a write should reach: those the sentinels see up (one whose link to the
    master is down for a moment, resyncing, still counts: WAIT waits for it; one the sentinels
    cannot reach, like a dead master just demoted, does not), else those connected to the
    master now."""
    pool = client.connection_pool
    manager, service = getattr(pool, "sentinel_manager", None), getattr(pool, "service_name", None)
    if manager is None or not service:
        info: Any = client.info("replication")
        return int(info.get("connected_slaves", 0)) if isinstance(info, dict) else 0
    for sentinel in manager.sentinels:
        try:
            replicas = sentinel.sentinel_slaves(service)
        except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
            continue
        return sum(1 for replica in replicas if not (
            replica.get("is_sdown") or replica.get("is_odown") or replica.get("is_disconnected")))
    return 0


def commit_replicated(client: redis.Redis, replicas: int, stage: Callable[[Pipeline], Any],
                      what: str) -> list[Any]:
    """Run the writes `stage` queues and, with `replicas`, WAIT until that many replicas (or
    as many as are alive: expected_replicas) hold them; returns the writes' replies. One
    warning line when no replica is alive (a group degraded by a failover: the writes stand
    on the master only) or too few acknowledged within REPLICA_WAIT_MS."""
    needed = min(replicas, expected_replicas(client)) if replicas else 0
    if replicas and not needed:
        log.warning("%s is on the master only: no replica is connected (none the sentinels "
                    "hold alive)", what)
    with client.pipeline(transaction=False) as pipe:
        stage(pipe)
        staged = len(pipe.command_stack)
        if needed:
            pipe.wait(needed, REPLICA_WAIT_MS)
        replies = pipe.execute()
    if needed and int(replies[-1]) < needed:
        log.warning("%s reached %d of %d replica(s) within %d ms", what, int(replies[-1]),
                    needed, REPLICA_WAIT_MS)
    return list(replies[:staged])
