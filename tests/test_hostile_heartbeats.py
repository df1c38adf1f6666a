"""Whatever sits in the heartbeat hash, the watchdog's read of it never fails: a value that
is not a beat counts as no beat at all."""
from __future__ import annotations

import pytest
import redis

from offsite.ledger.heartbeat import HEARTBEATS_KEY, beat_once, last_beats, parse_beat, worker_node


@pytest.mark.parametrize("value", [b"", b"nan-ish", b"1e400", b"-1e30", "\u00e9t\u00e9".encode(),
                                   b"\xff\xfe", b"twelve 34", b"inf"])
def test_a_value_that_is_not_a_beat_is_no_beat(value: bytes) -> None:
    assert parse_beat(value) is None


def test_the_fleet_read_survives_stray_fields(redis_client: redis.Redis) -> None:
    beat_once(redis_client, worker_node("carcosa"), 1_800_000_000.5)
    redis_client.hset(HEARTBEATS_KEY, worker_node("yuggoth"), "not a time")
    beats = last_beats(redis_client, [worker_node(h) for h in ("carcosa", "yuggoth", "ghost")])
    seen = beats[worker_node("carcosa")]
    assert seen is not None and seen.timestamp() == 1_800_000_000.5
    assert beats[worker_node("yuggoth")] is None
    assert beats[worker_node("ghost")] is None
