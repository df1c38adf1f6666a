"""Run records: what happened to each run, kept in Redis (or in memory for --local runs)."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Protocol, cast

import redis
from redis.client import Pipeline

from offsite.constants import (ALL_RUNS_KEY, HOST_RUNS_KEY, KEEP_RUNS_DAYS, KEEP_RUNS_PER_HOST,
                               KEY_PREFIX, RUN_KEY, RunState, RunType)
from offsite.errors import OffsiteError
from offsite.ledger.facts import HOST_FACTS_KEY, QUEUED_KEY, stage_facts, unstage_run
from offsite.ledger.replicated import commit_replicated
from offsite.ledger.run_record import RunRecord


class RunNotFound(OffsiteError):
    pass


Mutation = Callable[[RunRecord], None]


class RunStore(Protocol):
    def create(self, record: RunRecord) -> bool: ...
    def get(self, run_id: str) -> RunRecord | None: ...
    def update(self, run_id: str, mutate: Mutation) -> RunRecord: ...
    def recent(self, host: str | None = None, limit: int = 20) -> list[RunRecord]: ...
    def verified_set(self, host: str) -> str | None: ...


# -> {created (0/1), runs in the host's index, score of its oldest run}
FINAL_CHANNEL = KEY_PREFIX + "final:"   # pub/sub channel final:<run_id>: the run ended
REPLICA_PROBE_KEY = KEY_PREFIX + "replicated"
_log = logging.getLogger(__name__)

_CREATE_QUEUED = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX') then return {0, 0, '0'} end
redis.call('zadd', KEYS[2], ARGV[2], ARGV[3])
redis.call('zadd', KEYS[3], ARGV[2], ARGV[3])
redis.call('zadd', KEYS[4], ARGV[2], ARGV[3])
local oldest = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
return {1, redis.call('zcard', KEYS[2]), oldest[2]}
"""


class RedisRunStore:
    """Records as JSON strings under `offsite:run:<id>`, indexed by creation time per host."""

    def __init__(self, client: redis.Redis, keep_runs: int = KEEP_RUNS_PER_HOST,
                 keep_days: float = KEEP_RUNS_DAYS, replicas: int = 0) -> None:
        """replicas: how many replicas must hold a final state before it is reported final
        (a broker behind Redis Sentinel: a failover then never loses a final state)."""
        self.client = client
        self.replicas = replicas
        self.keep_runs = keep_runs
        self.keep_s = keep_days * 86400

    def create(self, record: RunRecord) -> bool:
        """Store a new record; False (and nothing written) when the run id already exists.
        The record, its index entries and the host's facts are written in one transaction."""
        key = RUN_KEY + record.run_id
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.exists(key):
                        return False
                    pipe.multi()
                    self._stage_new(pipe, record)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self.trim([record.host])
        return True

    def create_many(self, records: list[RunRecord]) -> list[bool]:
        """Store many new queued records in one round trip (beat's batch of due slots): each
        with its index entries atomically, and only when its run id is new; True at the index
        of each one written."""
        if not records:
            return []
        create = self.client.register_script(_CREATE_QUEUED)   # EVALSHA, not the body
        with self.client.pipeline(transaction=False) as pipe:
            for record in records:
                if record.state != RunState.QUEUED:
                    raise ValueError(f"create_many takes queued records, not {record.state}")
                create(keys=[RUN_KEY + record.run_id, HOST_RUNS_KEY + record.host,
                             ALL_RUNS_KEY, QUEUED_KEY],
                       args=[record.to_json(), record.created_at.timestamp(), record.run_id],
                       client=pipe)
            replies = pipe.execute()
        created = [bool(reply[0]) for reply in replies]
        cutoff = time.time() - self.keep_s
        due = {record.host for record, (new, count, oldest) in zip(records, replies)
               if new and (count > self.keep_runs or float(oldest) < cutoff)}
        self.trim(sorted(due))
        return created

    def trim(self, hosts: list[str], now: float | None = None) -> int:
        """Drop each host's runs beyond the newest `keep_runs` and older than `keep_days`:
        record, index entries and fleet facts in one transaction, so no index entry outlives
        its record. Two round trips for any number of hosts when nothing is due; returns how
        many runs went."""
        cutoff = (time.time() if now is None else now) - self.keep_s
        with self.client.pipeline(transaction=False) as pipe:
            for host in hosts:
                pipe.zcard(HOST_RUNS_KEY + host)
                pipe.zrange(HOST_RUNS_KEY + host, 0, 0, withscores=True)
            replies = pipe.execute()
        due = [host for host, count, oldest in zip(hosts, replies[::2], replies[1::2])
               if count > self.keep_runs or (oldest and oldest[0][1] < cutoff)]
        if not due:
            return 0
        with self.client.pipeline(transaction=False) as pipe:
            for host in due:
                pipe.zrangebyscore(HOST_RUNS_KEY + host, "-inf", f"({cutoff}")
                pipe.zrange(HOST_RUNS_KEY + host, 0, -(self.keep_runs + 1))
            replies = pipe.execute()
        dropped = 0
        with self.client.pipeline(transaction=True) as pipe:
            for host, too_old, too_many in zip(due, replies[::2], replies[1::2]):
                for raw in set(too_old) | set(too_many):
                    run_id = raw.decode() if isinstance(raw, bytes) else raw
                    pipe.delete(RUN_KEY + run_id)
                    pipe.zrem(HOST_RUNS_KEY + host, run_id)
                    pipe.zrem(ALL_RUNS_KEY, run_id)
                    unstage_run(pipe, run_id)
                    dropped += 1
            pipe.execute()
        return dropped

    @staticmethod
    def _stage_new(pipe: Pipeline, record: RunRecord) -> None:
        pipe.set(RUN_KEY + record.run_id, record.to_json())
        RedisRunStore._stage_indexes(pipe, record)

    @staticmethod
    def _stage_indexes(pipe: Pipeline, record: RunRecord) -> None:
        score = record.created_at.timestamp()
        pipe.zadd(HOST_RUNS_KEY + record.host, {record.run_id: score})
        pipe.zadd(ALL_RUNS_KEY, {record.run_id: score})
        stage_facts(pipe, record, newly_final=record.is_final)

    def get(self, run_id: str) -> RunRecord | None:
        raw = self.client.get(RUN_KEY + run_id)
        return RunRecord.model_validate_json(raw) if raw else None

    def get_many(self, run_ids: list[str]) -> dict[str, RunRecord]:
        """The records that exist among `run_ids`, in one command."""
        return {record.run_id: record for record in self._load(run_ids)}

    def update(self, run_id: str, mutate: Mutation) -> RunRecord:
        """Apply `mutate` atomically (optimistic WATCH); raises RunNotFound for an unknown id."""
        key = RUN_KEY + run_id
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = cast("bytes | None", pipe.get(key))
                    if raw is None:
                        raise RunNotFound(f"no record for run {run_id}")
                    record = RunRecord.model_validate_json(raw)
                    was_final = record.is_final
                    mutate(record)
                    pipe.multi()
                    pipe.set(key, record.to_json())
                    stage_facts(pipe, record, newly_final=record.is_final and not was_final)
                    if record.is_final and not self.replicas:
                        pipe.publish(FINAL_CHANNEL + run_id, record.state.value)
                    pipe.execute()
                    if record.is_final and self.replicas:
                        if not self._replicated(run_id):
                            continue
                        self.client.publish(FINAL_CHANNEL + run_id, record.state.value)
                    return record
                except redis.WatchError:
                    continue

    def _replicated(self, run_id: str) -> bool:
        """WAIT until `replicas` replicas hold the final state (offsite.ledger.replicated);
        False when the master died before one did and the new master does not have it: the
        caller writes it again there."""
        # WAIT counts the replication stream up to this connection's last write: the probe is
        # written after the transaction above, so waiting for it waits for both
        commit_replicated(self.client, self.replicas,
                          lambda pipe: pipe.set(REPLICA_PROBE_KEY, run_id),
                          f"the final state of run {run_id}")
        current = self.get(run_id)
        if current is not None and current.is_final:
            return True
        _log.warning("the final state of run %s was lost in a failover before a replica had "
                     "it: writing it again on the new master", run_id)
        return False

    def wait_final(self, run_id: str, timeout_s: float | None) -> RunRecord | None:
        """The run's record once it is final, woken by the message its final write publishes
        (no polling); None when the timeout comes first. Subscribes before reading the record,
        so an end between the two is not missed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(FINAL_CHANNEL + run_id)
            while True:
                record = self.get(run_id)
                if record is not None and record.is_final:
                    return record
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                pubsub.get_message(timeout=min(remaining or 60.0, 60.0))

    def verified_set(self, host: str) -> str | None:
        """The backup set the host's newest successful restore drill restored: a fact kept
        with the ledger (offsite.ledger.facts), whatever the number of runs since; for a drill
        recorded before that fact existed, read from the drill's own record."""
        found, run_id = (value.decode() if isinstance(value, bytes) else value
                         for value in cast("list[bytes | str | None]", self.client.hmget(
                             HOST_FACTS_KEY + host, "verified_set", "verified:run")))
        if found:
            return found
        record = self.get(run_id) if run_id else None
        return record.verify.backup_set if record and record.verify else None

    def recent(self, host: str | None = None, limit: int = 20) -> list[RunRecord]:
        index = HOST_RUNS_KEY + host if host else ALL_RUNS_KEY
        run_ids = cast("list[bytes]", self.client.zrevrange(index, 0, limit - 1))
        return list(self._load(run_ids))

    def _load(self, run_ids: Iterable[bytes | str]) -> Iterable[RunRecord]:
        keys = [RUN_KEY + (rid.decode() if isinstance(rid, bytes) else rid) for rid in run_ids]
        for raw in self.client.mget(keys) if keys else []:
            if raw:
                yield RunRecord.model_validate_json(raw)


class MemoryRunStore:
    """The same contract in this process only: for `offsite backup --local`."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}

    def create(self, record: RunRecord) -> bool:
        if record.run_id in self.records:
            return False
        self.records[record.run_id] = record.to_json()
        return True

    def get(self, run_id: str) -> RunRecord | None:
        raw = self.records.get(run_id)
        return RunRecord.model_validate_json(raw) if raw else None

    def update(self, run_id: str, mutate: Mutation) -> RunRecord:
        record = self.get(run_id)
        if record is None:
            raise RunNotFound(f"no record for run {run_id}")
        mutate(record)
        self.records[run_id] = record.to_json()
        return record

    def recent(self, host: str | None = None, limit: int = 20) -> list[RunRecord]:
        records = [RunRecord.model_validate_json(raw) for raw in self.records.values()]
        chosen = [r for r in records if host is None or r.host == host]
        return sorted(chosen, key=lambda r: r.created_at, reverse=True)[:limit]

    def verified_set(self, host: str) -> str | None:
        drills = [record for record in map(RunRecord.model_validate_json, self.records.values())
                  if record.host == host and record.type == RunType.VERIFY
                  and record.state == RunState.SUCCEEDED and record.verify is not None
                  and record.finished_at is not None]
        newest = max(drills, key=lambda record: record.finished_at or record.created_at,
                     default=None)
        return newest.verify.backup_set if newest and newest.verify else None
