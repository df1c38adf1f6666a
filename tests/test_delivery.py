"""Nothing written is left unsent (offsite.wire.outgoing): a run whose message the broker
refused is sent by the control node once the broker takes it again, and a full that must wait
for its host is parked, its message acked, and sent again when the host is free. Either way
exactly one run happens."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.config.model import parse_config
from offsite.constants import RunState, RunType, host_queue
from offsite.ledger.lease import RedisHostLease
from offsite.ledger.records import RedisRunStore
from offsite.run.context import queue_run
from offsite.schedule.specs import utcnow
from offsite.wire.messages import START_BACKUP
from offsite.wire.outgoing import UNSENT_KEY, Outgoing, park, resend_due
from tests.helpers import describe, wait_until

UNACKED_KEY = "unacked"   # kombu's Redis transport: messages delivered and not yet acked
DRILL = "carcosa-verify-20261204T000000Z"
WATCHDOG = {"every": "1s", "worker_timeout": "1h", "stale_after": "1h"}


def _counting_config(make_config: Any, tmp_path: Path, **overrides: Any) -> tuple[Path, Path]:
    count = tmp_path / "runs"
    config = make_config({"carcosa": {"scripts": {
        "db": {"bash": f"echo run >> {count}; echo data > dump.sql"}}}}, **overrides)
    return config, count


def _state(redis_client: redis.Redis, run_id: str) -> str | None:
    raw = redis_client.get("offsite:run:" + run_id)
    return json.loads(raw)["state"] if raw else None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_run_whose_publish_the_broker_refused_is_sent_once_it_is_back(
        make_config: Any, tmp_path: Path, start_worker: Any, start_control: Any,
        run_offsite: Any, redis_client: redis.Redis) -> None:
    config, count = _counting_config(make_config, tmp_path, watchdog=WATCHDOG)
    queue = host_queue("carcosa")
    redis_client.set(queue, "not a list")   # the broker refuses every push to the queue
    refused = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert refused.returncode == 1, describe(refused)
    (run_id,) = redis_client.hkeys(UNSENT_KEY)
    assert _state(redis_client, run_id) == "queued"
    assert f"run {run_id} is recorded" in refused.stderr
    assert "the control node sends it" in refused.stderr and "Traceback" not in refused.stderr

    redis_client.delete(queue)   # the broker is back
    start_worker(config, "carcosa")
    start_control(config)
    wait_until(lambda: _state(redis_client, run_id) == "succeeded", 90,
               "the control node to send the refused run")
    assert count.read_text().splitlines() == ["run"]
    assert not redis_client.hexists(UNSENT_KEY, run_id)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_waiting_for_a_drill_holds_no_unacked_message_and_runs_once_after_it(
        make_config: Any, tmp_path: Path, start_worker: Any, run_offsite: Any,
        redis_client: redis.Redis) -> None:
    config, count = _counting_config(make_config, tmp_path)
    drill = DRILL
    queue_run(RedisRunStore(redis_client), "carcosa", RunType.VERIFY, drill)
    lease = RedisHostLease(redis_client, 120)
    assert lease.acquire("carcosa", drill)
    start_worker(config, "carcosa")
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert queued.returncode == 0, describe(queued)
    run_id = queued.stdout.split()[1]

    wait_until(lambda: redis_client.hexists(UNSENT_KEY, run_id), 60,
               "the waiting full to be parked")
    raw = redis_client.get("offsite:run:" + run_id)
    assert raw is not None
    record = json.loads(raw)
    assert record["state"] == "queued"
    assert f"waited: host busy with run {drill}; the full backup waits" in record["notes"]
    unacked = redis_client.hvals(UNACKED_KEY)
    assert not [m for m in unacked if run_id in m], "the worker holds its message"
    assert not count.exists()

    lease.release("carcosa", drill)
    wait_until(lambda: _state(redis_client, run_id) == "succeeded", 90,
               "the full to run once the drill left the host")
    assert count.read_text().splitlines() == ["run"]
    assert not redis_client.hexists(UNSENT_KEY, run_id)


def test_the_watchdog_sends_only_queued_runs_whose_wait_is_over(
        redis_client: redis.Redis, redis_url: str) -> None:
    store, lease = RedisRunStore(redis_client), RedisHostLease(redis_client, 60)
    queue = host_queue("carcosa")
    ids = [f"carcosa-full-20261204T00000{n}Z" for n in range(3)]
    for run_id in ids:
        queue_run(store, "carcosa", RunType.FULL, run_id)
        park(redis_client, Outgoing(run_id, "carcosa", START_BACKUP,
                                    ["carcosa", "full", run_id], {}, queue), DRILL, utcnow())
    assert lease.acquire("carcosa", DRILL)
    store.update(ids[2], lambda record: setattr(record, "state", RunState.EXPIRED))

    config = parse_config({"broker_url": redis_url, "target": {"url": "file:///srv/backups"},
                           "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}})

    def resend() -> list[str]:
        return resend_due(redis_client, store, lease, config, utcnow())

    assert resend() == []   # the drill holds the host; ids[2] is no longer queued: dropped
    assert sorted(redis_client.hkeys(UNSENT_KEY)) == ids[:2]
    lease.release("carcosa", DRILL)
    assert sorted(resend()) == ids[:2]
    assert redis_client.llen(queue) == 2 and not redis_client.exists(UNSENT_KEY)
    assert resend() == []
