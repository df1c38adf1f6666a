"""The run ledger at fleet scale, on a real Redis: per-host facts written with each record,
bounded history (newest N per host, a retention in days), no index entry without a record."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from offsite.constants import (ALL_RUNS_KEY, HOST_RUNS_KEY, RUN_KEY, BackupType, RunState,
                               RunType)
from offsite.ledger.facts import ATTENTION_KEY, HOST_FACTS_KEY, RUNNING_KEY, HostFacts
from offsite.proof.prune import newest_verified_set
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord, VerifyRecord
from offsite.run.context import new_run_id, queue_manual_run, queue_run

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


def run(index: int, host: str = "carcosa", **fields: Any) -> RunRecord:
    return RunRecord(run_id=f"{host}-incr-{index:05d}", host=host, type=BackupType.INCR,
                     created_at=fields.pop("created_at", T0 + timedelta(minutes=index)),
                     **fields)


def index_ids(client: redis.Redis, key: str) -> set[str]:
    return {str(member) for member in client.zrange(key, 0, -1)}


def assert_every_index_entry_has_its_record(client: redis.Redis) -> None:
    ids = index_ids(client, ALL_RUNS_KEY)
    for key in client.scan_iter(HOST_RUNS_KEY + "*"):
        ids |= index_ids(client, str(key))
    assert ids, "nothing indexed"
    missing = [run_id for run_id in ids if not client.exists(RUN_KEY + run_id)]
    assert missing == []


def test_history_is_capped_per_host_and_trimmed_with_its_records(
        redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client, keep_runs=50)
    for index in range(120):
        assert store.create(run(index))
    for index in range(10):
        store.create(run(index, host="yuggoth"))
    kept = index_ids(redis_client, HOST_RUNS_KEY + "carcosa")
    assert kept == {f"carcosa-incr-{i:05d}" for i in range(70, 120)}   # the newest 50
    assert len(index_ids(redis_client, HOST_RUNS_KEY + "yuggoth")) == 10  # others untouched
    assert not redis_client.exists(RUN_KEY + "carcosa-incr-00069")
    assert len(index_ids(redis_client, ALL_RUNS_KEY)) == 60
    assert_every_index_entry_has_its_record(redis_client)
    assert [r.run_id for r in store.recent("carcosa", 3)] == [
        "carcosa-incr-00119", "carcosa-incr-00118", "carcosa-incr-00117"]


def test_runs_older_than_the_retention_go_at_the_next_write(redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client, keep_days=30)
    now = datetime.now(timezone.utc)
    for age_days in (90, 40, 31, 29, 1):
        store.create(run(age_days, created_at=now - timedelta(days=age_days),
                         state=RunState.FAILED))
    assert index_ids(redis_client, HOST_RUNS_KEY + "carcosa") == {
        "carcosa-incr-00029", "carcosa-incr-00001"}
    # a trimmed failed run leaves the watchdog's attention set too
    assert {str(m) for m in redis_client.smembers(ATTENTION_KEY)} == {
        "carcosa-incr-00029", "carcosa-incr-00001"}
    assert_every_index_entry_has_its_record(redis_client)


def test_batch_creation_writes_new_records_once_with_their_index(
        redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client, keep_runs=5)
    assert store.create_many([run(i) for i in range(4)]) == [True] * 4
    assert store.create_many([run(i) for i in range(2, 8)]) == [False, False] + [True] * 4
    assert index_ids(redis_client, HOST_RUNS_KEY + "carcosa") == {
        f"carcosa-incr-{i:05d}" for i in range(3, 8)}
    assert_every_index_entry_has_its_record(redis_client)


def facts(client: redis.Redis, host: str = "carcosa") -> HostFacts:
    raw = client.hgetall(HOST_FACTS_KEY + host)
    return HostFacts.parse({str(k).encode(): str(v).encode() for k, v in raw.items()})


def test_host_facts_follow_each_write_and_never_move_back(redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client)
    store.create(run(1))
    assert facts(redis_client).started == {} and facts(redis_client).success is None

    def start(at: datetime) -> Any:
        def mutate(record: RunRecord) -> None:
            record.state, record.started_at = RunState.RUNNING, at
        return mutate

    def succeed(at: datetime) -> Any:
        def mutate(record: RunRecord) -> None:
            record.state, record.finished_at = RunState.SUCCEEDED, at
        return mutate

    store.update("carcosa-incr-00001", start(T0))
    assert facts(redis_client).started[BackupType.INCR] == (T0, "carcosa-incr-00001")
    assert redis_client.hexists(RUNNING_KEY, "carcosa-incr-00001")
    store.update("carcosa-incr-00001", succeed(T0 + timedelta(hours=1)))
    assert not redis_client.hexists(RUNNING_KEY, "carcosa-incr-00001")
    assert facts(redis_client).success == (T0 + timedelta(hours=1), "carcosa-incr-00001")
    # an older run finishing later does not move the host's facts back
    store.create(run(0, state=RunState.RUNNING, started_at=T0 - timedelta(days=1)))
    store.update("carcosa-incr-00000", succeed(T0 - timedelta(hours=20)))
    assert facts(redis_client).success == (T0 + timedelta(hours=1), "carcosa-incr-00001")
    assert facts(redis_client).started[BackupType.INCR][1] == "carcosa-incr-00001"
    assert facts(redis_client).latest_start({BackupType.FULL}) is None


def _drill(index: int, backup_set: str) -> RunRecord:
    return RunRecord(run_id=f"carcosa-verify-{index:05d}", host="carcosa", type=RunType.VERIFY,
                     created_at=T0 + timedelta(minutes=index), state=RunState.SUCCEEDED,
                     finished_at=T0 + timedelta(minutes=index, seconds=30),
                     verify=VerifyRecord(backup_set=backup_set))


def test_the_newest_verified_set_is_a_fact_whatever_the_runs_since(
        redis_client: redis.Redis) -> None:
    """Prune keeps the chain holding the newest set a drill restored: that set comes from the
    host's facts, not from a window of its newest records (a drill 300 runs ago still counts,
    and even once its own record is trimmed)."""
    store = RedisRunStore(redis_client, keep_runs=100)
    assert newest_verified_set(store, "carcosa") is None
    store.create(_drill(0, "20261201T000000Z"))
    store.create(_drill(1, "20261130T000000Z"))   # an older set, verified later: the newest
    for index in range(2, 302):                   # drill is what counts
        store.create(run(index, state=RunState.SUCCEEDED, finished_at=T0 + timedelta(hours=9)))
    assert not redis_client.exists(RUN_KEY + "carcosa-verify-00001"), "trimmed"
    assert newest_verified_set(store, "carcosa") == datetime(2026, 11, 30, tzinfo=timezone.utc)
    late_write_of_an_older_drill = _drill(-5, "20261115T000000Z")
    store.create(late_write_of_an_older_drill)
    assert newest_verified_set(store, "carcosa") == datetime(2026, 11, 30, tzinfo=timezone.utc)


def test_a_drill_recorded_before_the_set_fact_is_read_from_its_record(
        redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client)
    store.create(_drill(0, "20261201T000000Z"))
    redis_client.hdel(HOST_FACTS_KEY + "carcosa", "verified_set", "verified_set_at")  # as written
    assert newest_verified_set(store, "carcosa") == datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_a_run_asked_for_twice_in_one_second_is_two_runs_a_slot_sent_twice_is_one(
        redis_client: redis.Redis) -> None:
    """Run ids name a second. A command-line request right after another (a retry after a
    failure) is a run of its own with the next free second; a scheduled slot keeps its id,
    so sending it twice still runs it once."""
    store = RedisRunStore(redis_client)
    first = queue_manual_run(store, "carcosa", RunType.PRUNE, T0)
    store.update(first.run_id, lambda record: setattr(record, "state", RunState.FAILED))
    retry = queue_manual_run(store, "carcosa", RunType.PRUNE, T0)
    assert (first.run_id, retry.run_id) == ("carcosa-prune-20261207T030000Z",
                                           "carcosa-prune-20261207T030001Z")
    assert retry.state == RunState.QUEUED
    slot = new_run_id("carcosa", BackupType.FULL, T0)
    assert queue_run(store, "carcosa", BackupType.FULL, slot).run_id == slot
    store.update(slot, lambda record: setattr(record, "state", RunState.SUCCEEDED))
    assert queue_run(store, "carcosa", BackupType.FULL, slot).state == RunState.SUCCEEDED
