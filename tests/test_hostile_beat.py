"""Beat's entries in Redis are derived from the config and heal themselves: malformed, forged and
missing RedBeat entries, and a FLUSHALL, under a real `offsite beat`. Beat keeps sending the
config's slots on the anchor's grid, sends nothing else, never sends a slot twice, and makes
lost entries again within a tick without a restart."""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from offsite.ledger.records import RedisRunStore
from tests.helpers import ManagedProcess, offsite_argv, wait_until
from workers.beat import LostState, decode_meta

PREFIX = "offsite:redbeat:"
SCHEDULE = PREFIX + ":schedule"
SENT = "Scheduler: Sending due task"
FULL_S = 2
StartProcess = Callable[..., ManagedProcess]


def _config(make_config: Any, tmp_path: Path) -> Path:
    return make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                       target={"url": f"file://{tmp_path}/target"}, alerts=None,
                       schedule={"full": {"every": f"{FULL_S}s"}, "incr": {"every": "1h"}})


def _sends(beat: ManagedProcess, name: str) -> int:
    return sum(1 for line in beat.log_text().splitlines() if SENT in line and f" {name} " in line)


def _slots(client: redis.Redis, kind: str) -> list[datetime]:
    records = [r for r in RedisRunStore(client).recent("carcosa", 500) if r.type.value == kind]
    return sorted(r.scheduled_for for r in records if r.scheduled_for is not None)


def _assert_on_grid_once(slots: list[datetime]) -> None:
    assert len(slots) == len(set(slots)), f"a slot sent twice: {slots}"
    assert all(slot.timestamp() % FULL_S == 0 for slot in slots), slots


def _forged_definition(name: str) -> str:
    """A definition RedBeat itself would accept: a real task, a real host's queue."""
    return json.dumps({"name": name, "task": "tasks.backup.start_backup",
                       "args": ["carcosa", "full"], "kwargs": {},
                       "options": {"queue": "backup.carcosa"}, "enabled": True,
                       "schedule": {"__type__": "interval", "every": 1, "relative": False}})


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_malformed_forged_and_missing_entries_are_removed_or_remade_within_a_tick(
        make_config: Any, tmp_path: Path, start_process: StartProcess,
        redis_client: redis.Redis) -> None:
    config = _config(make_config, tmp_path)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    wait_until(lambda: _sends(beat, "carcosa-full") >= 2, timeout=30, what="two full slots")

    bad_time = {"__type__": "datetime", "year": "x", "month": 1, "day": 1, "hour": 0,
                "minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}
    sent_before = _sends(beat, "carcosa-full")
    with redis_client.pipeline() as hostile:   # at once, between two ticks
        hostile.hset(PREFIX + "evil", "definition", "{not json")
        hostile.zadd(SCHEDULE, {PREFIX + "evil": 0})
        hostile.hset(PREFIX + "forged-full", mapping={
            "definition": _forged_definition("forged-full"), "meta": '{"last_run_at": null}'})
        hostile.zadd(SCHEDULE, {PREFIX + "forged-full": 0})
        hostile.hset(PREFIX + "carcosa-incr", "meta", json.dumps({"last_run_at": bad_time}))
        hostile.zadd(SCHEDULE, {PREFIX + "carcosa-incr": 0})
        hostile.delete(PREFIX + "carcosa-full")
        hostile.zrem(SCHEDULE, PREFIX + "carcosa-full")
        hostile.execute()

    for line in ("removed entry offsite:redbeat:evil", "removed entry offsite:redbeat:forged-full",
                 "entry offsite:redbeat:carcosa-incr: state does not decode",
                 "entry carcosa-full was missing from Redis"):
        beat.wait_for(line, timeout=20)
    wait_until(lambda: _sends(beat, "carcosa-full") >= sent_before + 2, timeout=30,
               what="the remade full entry to send its next slots")
    log = beat.log_text()
    assert beat.alive and "Traceback" not in log and "raised exception" not in log, log[-3000:]
    for line in ("removed entry offsite:redbeat:evil", "removed entry offsite:redbeat:forged"):
        assert log.count(line) == 1, log[-3000:]
    assert "forged-full" not in "\n".join(l for l in log.splitlines() if SENT in l)
    # the remade incr entry sends no slot again; its hourly slot may fall due meanwhile (a
    # test across an hour's turn), once, on the hour
    # (a slot sent again is a second send of one run id, and a send is logged before its
    # record is written)
    wait_until(lambda: _sends(beat, "carcosa-incr") == len(_slots(redis_client, "incr")),
               timeout=10, what="as many incr runs as incr sends (none sent twice)")
    incr_slots = _slots(redis_client, "incr")
    assert len(incr_slots) == len(set(incr_slots)) <= 1, incr_slots
    assert all(slot.timestamp() % 3600 == 0 for slot in incr_slots), incr_slots
    assert {m for m in redis_client.zrange(SCHEDULE, 0, -1)} == {
        PREFIX + "carcosa-full", PREFIX + "carcosa-incr"}
    assert not redis_client.exists(PREFIX + "evil", PREFIX + "forged-full")
    _assert_on_grid_once(_slots(redis_client, "full"))
    assert beat.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_after_flushall_beat_remakes_its_entries_and_sends_the_next_slot_without_restart(
        make_config: Any, tmp_path: Path, start_process: StartProcess,
        redis_client: redis.Redis) -> None:
    config = _config(make_config, tmp_path)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    wait_until(lambda: _sends(beat, "carcosa-full") >= 1, timeout=30, what="a full slot")
    flushed_at = time.time()
    redis_client.flushall()
    # (a tick writing between the flush and the next tick keeps its entry: only the other
    # one is then missing)
    beat.wait_for("was missing from Redis; made again from the config", timeout=20)
    sent = _sends(beat, "carcosa-full")
    wait_until(lambda: _sends(beat, "carcosa-full") >= sent + 2, timeout=30,
               what="the next full slots after the flush")
    assert beat.alive and "Traceback" not in beat.log_text(), beat.log_text()[-3000:]
    # only the runs sent after the flush are in the ledger: none for the incr's spent slot
    # (its next, on the hour, may fall due meanwhile: a test across an hour's turn)
    _assert_on_grid_once(_slots(redis_client, "full"))
    incr_slots = _slots(redis_client, "incr")
    assert len(incr_slots) <= 1 and all(slot.timestamp() % 3600 == 0 for slot in incr_slots) \
        and all(slot.timestamp() > flushed_at for slot in incr_slots), incr_slots
    assert redis_client.get(PREFIX + ":lock") is not None, "beat did not take its lock again"
    assert beat.stop() == 0


@pytest.mark.parametrize("meta,expected", [
    ('{"last_run_at": null}', None),
    ('{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 11, "day": 29, '
     '"hour": 12, "minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}}',
     "2026-11-29T12:00:00+00:00"),
])
def test_state_that_decodes(meta: str, expected: str | None) -> None:
    last = decode_meta(meta)
    assert (last.isoformat() if last else None) == expected


@pytest.mark.parametrize("meta", [
    None, "{not json", "[]", '"x"', '{"last_run_at": {"__type__": "datetime", "year": "x"}}',
    '{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 13, "day": 1, "hour": 0, '
    '"minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}}',
    '{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 1, "day": 1, "hour": 0, '
    '"minute": 0, "second": 0, "microsecond": 0, "timezone": "Nowhere/../etc"}}'])
def test_state_that_does_not_decode_is_lost(meta: str | None) -> None:
    with pytest.raises(LostState):
        decode_meta(meta)
