"""What a failover must not lose or double, on a real master, replica and three sentinels:
an alert being delivered or waiting in the outbox when the master is SIGKILLed reaches the
webhook exactly once; and a run's final state acknowledged before the master dies survives
it because a replica held it first (WAIT), where without WAIT the same write is lost."""
from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from offsite.config.broker import broker_client
from offsite.constants import BackupType, RunState
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord
from tests.helpers import wait_until
from tests.sentinel_redis import MASTER_NAME, SentinelGroup

pytestmark = pytest.mark.slow   # each test fails a master over


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    directory = tmp_path / "sentinel"
    directory.mkdir()
    sentinels = SentinelGroup(directory)
    sentinels.start()
    try:
        yield sentinels
    finally:
        sentinels.stop()


class HoldingReceiver(ThreadingHTTPServer):
    """A webhook that holds the first POST until `release` is set, then answers 200 to all;
    `posts` keeps every alert it received."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.held, self.release = threading.Event(), threading.Event()
        super().__init__(("127.0.0.1", 0), _Hold)


class _Hold(BaseHTTPRequestHandler):
    server: HoldingReceiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if not self.server.held.is_set():
            self.server.held.set()
            self.server.release.wait(60)
        self.server.posts.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[HoldingReceiver]:
    server = HoldingReceiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(300)
def test_an_alert_in_flight_and_one_waiting_reach_the_sink_once_across_a_failover(
        group: SentinelGroup, hook: HoldingReceiver, make_config: Any, start_control: Any,
        tmp_path: Path) -> None:
    # two hosts whose workers never start: one worker_down alert each, in the same tick
    config = make_config({host: {"scripts": {"s": {"bash": "true"}}} for host in ("alpha", "beta")},
                         broker_url=group.url, broker_sentinel_master=MASTER_NAME,
                         target={"url": f"file://{tmp_path}/target"},
                         alerts={"webhook_url": f"http://127.0.0.1:{hook.server_address[1]}/h"},
                         watchdog={"every": "1s", "worker_timeout": "2s", "start_grace": "1h",
                                   "stale_after": "1h"})
    control = start_control(config)
    assert hook.held.wait(60), control.log_text()[-3000:]   # the first alert is being sent
    master = group.master()
    assert master.zcard("offsite:alerts:pending") == 2      # it, and the other one waiting
    group.kill(group.data_ports[0])
    wait_until(lambda: group.master_port() == group.data_ports[1], timeout=60,
               what="the sentinels to promote the replica")
    hook.release.set()                                      # the POST in flight succeeds
    wait_until(lambda: len(hook.posts) >= 2, timeout=90, what="both alerts delivered")
    new_master = group.master()
    ticks: set[str] = set()

    def ticked() -> bool:
        if at := new_master.hget("offsite:watchdog:tick", "at"):
            ticks.add(str(at))
        return len(ticks) >= 3
    wait_until(ticked, timeout=60, what="three watchdog ticks on the new master")
    delivered = Counter((p["attributes"]["host"], p["attributes"]["class"]) for p in hook.posts)
    assert delivered[("alpha", "worker_down")] == 1 and delivered[("beta", "worker_down")] == 1, \
        delivered
    assert max(delivered.values()) == 1, delivered
    assert new_master.zcard("offsite:alerts:pending") == 0
    assert control.alive and "Traceback" not in control.log_text(), control.log_text()[-3000:]


def _store(group: SentinelGroup, replicas: int) -> RedisRunStore:
    """As the nodes' clients are: they ride out a failover (workers.context)."""
    return RedisRunStore(broker_client(
        group.url, MASTER_NAME, socket_timeout=30, socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.2), retries=20),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError]), replicas=replicas)


def _succeed(record: RunRecord) -> None:
    record.state = RunState.SUCCEEDED
    record.finished_at = record.created_at


def _final_after_failover(group: SentinelGroup, mode: str) -> bool:
    """A run recorded on both; the replica cut off; the run's final state written; the
    master killed: the moment the write returned without WAIT ("no-wait"), the moment it
    returned after WAIT once the replica was let back ("wait"), or while WAIT still waited
    ("mid-wait"). Is the state final on the new master?"""
    store = _store(group, 0 if mode == "no-wait" else 1)
    run_id = "carcosa-full-20261204T120000Z"
    master = group.master()
    try:
        store.create(RunRecord(run_id=run_id, host="carcosa", type=BackupType.FULL))
        assert int(master.wait(1, 10_000)) == 1            # the queued record is on the replica
        group.cut_replica()
        done = threading.Event()
        writer = threading.Thread(target=lambda: (store.update(run_id, _succeed), done.set()),
                                  daemon=True)
        writer.start()
        wait_until(lambda: '"succeeded"' in str(master.get(f"offsite:run:{run_id}")),
                   timeout=30, what="the final state on the master")
        if mode == "no-wait":
            assert done.wait(10)                           # acknowledged, on the master only
        elif mode == "wait":
            group.mend_replica()                           # WAIT holds it until the replica
            assert done.wait(30)                           # has it, then it returns
        group.kill(group.data_ports[0])
        group.mend_replica()
        wait_until(lambda: group.master_port() == group.data_ports[1], timeout=60,
                   what="the sentinels to promote the replica")
        assert done.wait(60), "the write never returned"
        record = store.get(run_id)
        assert record is not None
        return record.is_final
    finally:
        manager = store.client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        for sentinel in manager.sentinels:
            sentinel.close()
        store.client.close()


@pytest.mark.timeout(300)
def test_a_final_state_acknowledged_before_a_failover_survives_it_because_of_wait(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outcomes = {}
    for mode in ("no-wait", "wait", "mid-wait"):
        directory = tmp_path / mode
        directory.mkdir()
        group = SentinelGroup(directory)
        group.start()
        try:
            outcomes[mode] = _final_after_failover(group, mode)
        finally:
            group.stop()
    # without WAIT the acknowledged state was on the dead master only; with it, on the
    # replica; and a master that died while WAIT waited had it alone: it was written again
    assert outcomes == {"no-wait": False, "wait": True, "mid-wait": True}, outcomes
    assert "was lost in a failover before a replica had it" in caplog.text
