"""A fleet on Redis Sentinel (`sentinel://…` broker_url, `broker_sentinel_master`): a real
master, replica and three sentinels on loopback. The master is SIGKILLed between backups:
the worker, the control node, beat and every client command follow the failover to the new
master without a restart, and the records written before it survive."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.config.broker import broker_client, parse_sentinel_url
from offsite.config.model import parse_config
from offsite.constants import BackupType, RunState
from offsite.ledger.records import RedisRunStore, RunRecord
from tests.helpers import describe, offsite_argv, wait_until
from tests.sentinel_redis import MASTER_NAME, SentinelGroup

HOST = "carcosa"


@pytest.fixture(params=[None, "s3cret-sentinel-pw"], ids=["open", "password"])
def sentinels(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelGroup]:
    directory = tmp_path / "sentinel"
    directory.mkdir()
    group = SentinelGroup(directory, password=request.param)
    group.start()
    try:
        yield group
    finally:
        group.stop()


def _records(run_offsite: Any, config: Path) -> list[dict[str, Any]]:
    shown = run_offsite("status", "--json", "--limit", "100", config=config, timeout=60)
    assert shown.returncode == 0, describe(shown)
    return list(json.loads(shown.stdout))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_fleet_on_sentinel_survives_the_masters_death(
        sentinels: SentinelGroup, make_config: Any, start_worker: Any, start_control: Any,
        start_process: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo $OFFSITE_RUN_ID > run"}}}},
                         broker_url=sentinels.url, broker_sentinel_master=MASTER_NAME,
                         target={"url": f"file://{tmp_path}/target"}, alerts=None,
                         schedule={"full": {"every": "1d"}, "incr": {"every": "1h"}})
    worker = start_worker(config, HOST)
    control = start_control(config)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    first = run_offsite("backup", HOST, "--type", "full", "--wait", config=config, timeout=180)
    assert first.returncode == 0, describe(first)
    before = sentinels.master_port()
    assert before == sentinels.data_ports[0]
    # no WAIT here: the run's final state was acknowledged by the replica before it was
    # reported final (offsite.ledger.records), so killing the master now loses nothing

    killed_at = time.time()
    sentinels.kill(before)
    wait_until(lambda: sentinels.master_port() == sentinels.data_ports[1], timeout=60,
               what="the sentinels to promote the replica")

    second = run_offsite("backup", HOST, "--type", "incr", "--wait", config=config,
                         timeout=240)
    assert second.returncode == 0, describe(second)
    # (beat's hourly incr may fall due meanwhile, a test across an hour's turn: its run is
    # the schedule's, not one of these)
    states = {r["run_id"]: r["state"] for r in _records(run_offsite, config)
              if not r.get("scheduled_for")}
    assert states == {first.stdout.split()[1]: "succeeded",
                      second.stdout.split()[1]: "succeeded"}, states
    hosts = run_offsite("hosts", "--json", config=config, timeout=60)
    assert hosts.returncode == 0, describe(hosts)
    # worker, control node and beat all write their heartbeat to the new master
    new_master = sentinels.master()

    def beats_after_the_failover() -> bool:
        beats = {str(k): str(v) for k, v in new_master.hgetall("offsite:heartbeats").items()}
        return all(float(beats.get(node, "0").split(" ")[0]) > killed_at
                   for node in ("beat", "control", f"worker:{HOST}"))
    wait_until(beats_after_the_failover, timeout=60, what="every node to beat on the new master")
    # the worker's transport behind Sentinel still screens what comes off its queue
    new_master.lpush(f"backup.{HOST}", b'{"nope "task": "tasks.backup.upload", "id": "hostile-x"')
    wait_until(lambda: any("hostile-x" in str(entry) and "not a kombu message envelope"
                           in str(entry) for entry in new_master.lrange("offsite:rejected", 0, -1)),
               timeout=30, what="the worker to refuse a malformed envelope")
    for process in (worker, beat, control):
        assert process.alive, process.log_text()[-3000:]
        assert "Traceback" not in process.log_text(), process.log_text()[-3000:]
    if sentinels.password:   # reached with it, shown nowhere
        logs = "".join(p.log_text() for p in (beat, control)) + first.stdout + first.stderr
        assert sentinels.password not in logs


def test_sentinel_urls_and_the_master_name_are_checked_together(tmp_path: Path) -> None:
    def config(**extra: Any) -> Any:
        return parse_config({"target": {"url": "file:///srv/backups"},
                             "hosts": {HOST: {"scripts": {"s": {"bash": "true"}}}}, **extra})
    url = "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380"
    parsed = parse_sentinel_url(url)
    assert parsed.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert parsed.password == "pw" and parsed.db == 2
    assert config(broker_url=url, broker_sentinel_master="offsite").broker_sentinel_master
    for bad in ({"broker_url": url},
                {"broker_url": "redis://localhost:6379/0", "broker_sentinel_master": "x"},
                {"broker_url": "sentinel://10.0.0.1", "broker_sentinel_master": "x"},
                {"broker_url": "sentinel://10.0.0.1:1;redis://h:2", "broker_sentinel_master": "x"},
                {"broker_url": "sentinel://10.0.0.1:1/zz", "broker_sentinel_master": "x"}):
        with pytest.raises(Exception) as refused:
            config(**bad)
        assert "broker" in str(refused.value), bad
    with pytest.raises(ValueError):
        broker_client(url, None)


@pytest.mark.slow
def test_a_final_state_is_on_the_replica_when_the_update_returns(
        sentinels: SentinelGroup) -> None:
    client = broker_client(sentinels.url, MASTER_NAME, socket_timeout=10)
    replica = redis.Redis(host="127.0.0.1", port=sentinels.data_ports[1],
                          password=sentinels.password)
    try:
        store = RedisRunStore(client, replicas=1)
        for n in range(20):
            run_id = f"{HOST}-full-20261129T1200{n:02d}Z"
            store.create(RunRecord(run_id=run_id, host=HOST, type=BackupType.FULL))

            def succeed(record: RunRecord) -> None:
                record.state = RunState.SUCCEEDED
                record.finished_at = record.created_at
            store.update(run_id, succeed)
            copy = replica.get(f"offsite:run:{run_id}")   # read at once, no waiting
            assert copy is not None and RunRecord.model_validate_json(copy).is_final, n
    finally:
        _close(client)
        replica.close()


def _close(client: redis.Redis) -> None:
    """The master's client and the sentinels' connections behind it."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", []):
        sentinel.close()
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_run_cut_by_the_masters_death_ends_final_on_the_new_master(
        request: pytest.FixtureRequest, sentinels: SentinelGroup, make_config: Any, start_worker: Any, start_control: Any,
        run_offsite: Any, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    config = make_config({HOST: {"scripts": {"s": {
        "bash": f"touch {tmp_path}/started; while [ ! -e {gate} ]; do sleep 0.1; done; "
                "echo a > a"}}}},
        broker_url=sentinels.url, broker_sentinel_master=MASTER_NAME,
        target={"url": f"file://{tmp_path}/target"}, alerts=None)
    worker = start_worker(config, HOST)
    control = start_control(config)
    queued = run_offsite("backup", HOST, "--type", "full", config=config, timeout=60)
    assert queued.returncode == 0, describe(queued)
    run_id = queued.stdout.split()[1]
    wait_until((tmp_path / "started").exists, timeout=60, what="the run's script")
    sentinels.kill(sentinels.data_ports[0])
    wait_until(lambda: sentinels.master_port() == sentinels.data_ports[1], timeout=60,
               what="the sentinels to promote the replica")
    gate.touch()
    store = RedisRunStore(broker_client(sentinels.url, MASTER_NAME, socket_timeout=10))
    request.addfinalizer(lambda: _close(store.client))
    wait_until(lambda: (r := store.get(run_id)) is not None and r.is_final, timeout=180,
               what="the cut run to end", interval=0.5)
    record = store.get(run_id)
    assert record is not None and record.state in (RunState.SUCCEEDED, RunState.LOST), record
    if record.state == RunState.LOST:   # then its re-run succeeds
        rerun = run_id + "-rerun"
        wait_until(lambda: (r := store.get(rerun)) is not None and r.is_final, timeout=180,
                   what="the re-run to end", interval=0.5)
        assert store.get(rerun).state == RunState.SUCCEEDED  # type: ignore[union-attr]
    again = run_offsite("backup", HOST, "--type", "incr", "--wait", config=config, timeout=240)
    assert again.returncode == 0, describe(again)
    assert worker.alive and control.alive
    # the group is degraded (its only replica was promoted): said, not waited for
    assert "no replica is connected" in worker.log_text()
    assert "replica(s) within" not in worker.log_text()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_beat_keeps_its_slots_once_across_a_failover(
        request: pytest.FixtureRequest, sentinels: SentinelGroup, make_config: Any,
        start_worker: Any, start_process: Any, tmp_path: Path) -> None:
    if sentinels.password:
        pytest.skip("the failover itself is the subject: once is enough")
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo a > a"}}}},
                         broker_url=sentinels.url, broker_sentinel_master=MASTER_NAME,
                         target={"url": f"file://{tmp_path}/target"}, alerts=None,
                         schedule={"full": {"every": "1d"}, "incr": {"every": "3s"}})
    start_worker(config, HOST)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    store = RedisRunStore(broker_client(sentinels.url, MASTER_NAME, socket_timeout=10))
    request.addfinalizer(lambda: _close(store.client))

    def slots() -> list[Any]:
        return [r.scheduled_for for r in store.recent(HOST, 200)
                if r.scheduled_for is not None and r.is_final]
    wait_until(lambda: len(slots()) >= 2, timeout=120, what="two scheduled runs", interval=0.5)
    before = len(slots())
    sentinels.kill(sentinels.data_ports[0])   # beat's lock and entries were on it
    wait_until(lambda: sentinels.master_port() == sentinels.data_ports[1], timeout=60,
               what="the sentinels to promote the replica")
    wait_until(lambda: len(slots()) >= before + 3, timeout=180,
               what="beat to send three more slots on the new master", interval=0.5)
    sent = slots()
    assert len(sent) == len(set(sent)), f"a slot ran twice: {sorted(sent)}"
    assert all(slot.timestamp() % 3 == 0 for slot in sent), sent
    assert beat.alive and "Traceback" not in beat.log_text(), beat.log_text()[-3000:]
