"""The hub obeys only offsite: Celery's remote control (a broadcast anyone who can write to
Redis may send) reaches no offsite process, every header Celery would read is screened before
it does, a refused message ends the queued run it names, and a process ends with exit 0 only
when its supervisor stopped it. Real workers, control node and beat on a real Redis."""
from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from offsite.constants import BackupType, RunState
from offsite.ledger.records import RedisRunStore, RunRecord
from offsite.process.supervisor import EXIT_UNSUPERVISED, StopReason
from offsite.wire.headers import check_embed, check_headers, named_run
from offsite.wire.messages import (NOTIFY_FAILURE, PRUNE, START_BACKUP, UPLOAD, VERIFY,
                                   MalformedMessage)
from offsite.wire.publish import failure_callback
from tests.helpers import describe, wait_until
from tests.injection import NO_OPTIONS, publish, rejected_entries, task_headers
from tests.processes import offsite_argv

HOST, OTHER = "carcosa", "hali"
CONTROL_QUEUE = "offsite.control"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def _remote(redis_url: str) -> Celery:
    """What `celery -b redis://… control …` uses: any Celery app on the broker."""
    return Celery("intruder", broker=redis_url)


def _backup_succeeds(run_offsite: Any, config: Path, host: str) -> str:
    done = run_offsite("backup", host, "--type", "full", "--wait", config=config, timeout=180)
    assert done.returncode == 0, describe(done)
    return str(done.stdout.split()[1])


@pytest.mark.slow
def test_broadcasts_reach_no_worker_and_no_control_node(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        redis_client: redis.Redis, redis_url: str) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo a > a"}}},
                          OTHER: {"scripts": {"s": {"bash": "echo b > b"}}}})
    workers = [start_worker(config, HOST), start_worker(config, OTHER)]
    control = start_control(config)
    intruder = _remote(redis_url)
    try:
        intruder.control.rate_limit(START_BACKUP, "1/h")
        intruder.control.cancel_consumer(f"backup.{OTHER}")
        intruder.control.add_consumer(f"backup.{OTHER}", destination=[f"{HOST}@*"])
        intruder.control.pool_restart()
        intruder.control.broadcast("shutdown")
        # a broadcast is answered by no one: nothing consumes the pidbox exchange
        assert intruder.control.ping(timeout=3) == []
        assert intruder.control.inspect(timeout=2).active_queues() is None
    finally:
        intruder.close()
    processes = [*workers, control]
    assert all(process.alive for process in processes)
    # each worker's heartbeat names the queues it reads: its own, and only its own
    wait_until(lambda: redis_client.hget("offsite:consuming", f"worker:{OTHER}") is not None,
               timeout=30, what="the heartbeat to name the queues read")
    for host in (HOST, OTHER):
        assert redis_client.hget("offsite:consuming", f"worker:{host}") == f"backup.{host}"
    runs = [_backup_succeeds(run_offsite, config, HOST),
            _backup_succeeds(run_offsite, config, OTHER)]
    store = RedisRunStore(redis_client)
    for run_id in runs:
        record = store.get(run_id)
        assert record is not None and record.state == RunState.SUCCEEDED, record
    assert [r.state for r in store.recent(None, 10)] == [RunState.SUCCEEDED] * 2
    for process in processes:
        log = process.log_text()
        assert process.alive, log[-3000:]
        assert "from remote" not in log and "Unrecoverable" not in log, log[-3000:]
        assert process.stop() == 0, process.log_text()[-3000:]


HEADER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("timelimit-triple", {"timelimit": [1, 2, 3]}),
    ("timelimit-text", {"timelimit": "nope"}),
    ("timelimit-set", {"timelimit": [1, None]}),
    ("eta-text", {"eta": "nope"}),
    ("eta-far", {"eta": "9999-01-01T00:00:00+00:00"}),
    ("expires-past", {"expires": "2001-01-01T00:00:00+00:00"}),
    ("retries-negative", {"retries": -1}),
    ("retries-text", {"retries": "many"}),
    ("group-not-an-id", {"group": "g 1\n"}),
    ("group-index-huge", {"group": "g1", "group_index": 10**9}),
    ("shadow", {"shadow": "tasks.backup.innocent"}),
    ("parent-id-huge", {"parent_id": "p" * 5000}),
    ("root-id-newline", {"root_id": "a\nb"}),
    ("stamps", {"stamped_headers": ["x"], "stamps": {"x": 1}}),
    ("unknown-header", {"countdown": 5}),
    ("soft-time-limit", {"soft_time_limit": 1}),
    ("ignore-result-text", {"ignore_result": "yes"}),
]
EMBED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("chord", {**NO_OPTIONS, "chord": {"task": UPLOAD}}),
    ("callbacks", {**NO_OPTIONS, "callbacks": [{"task": NOTIFY_FAILURE}]}),
    ("chain-to-control", {**NO_OPTIONS, "chain": [{"task": PRUNE}]}),
    ("errback-other", {**NO_OPTIONS, "errbacks": [{"task": START_BACKUP}]}),
    ("embed-extra", {**NO_OPTIONS, "link": []}),
]


def _inject_cases(redis_url: str, queue: str, task: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> list[str]:
    tags = []
    for name, extra in HEADER_CASES:
        task_id = f"hostile-{name}"
        publish(redis_url, queue, task, task_id, args, kwargs,
                headers=task_headers(task, task_id, **extra))
        tags.append(f"[{task_id}]")
    for name, embed in EMBED_CASES:
        task_id = f"hostile-{name}"
        publish(redis_url, queue, task, task_id, body=[list(args), kwargs, embed],
                headers=task_headers(task, task_id))
        tags.append(f"[{task_id}]")
    return tags


def _refused_each_once(process: Any, client: redis.Redis, tags: list[str]) -> None:
    wait_until(lambda: sum(1 for e in rejected_entries(client) if "[hostile-" in e)
               >= len(tags), timeout=60, what="every malformed message to be refused")
    entries, log = rejected_entries(client), process.log_text()
    for tag in tags:
        assert len([e for e in entries if tag in e]) == 1, (tag, entries)
        assert len([line for line in log.splitlines()
                    if tag in line and "refusing a message:" in line]) == 1, tag
    assert "Traceback" not in log and "Unrecoverable" not in log, log[-5000:]


@pytest.mark.slow
def test_malformed_headers_on_host_and_control_queues_are_refused_and_workers_live(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        redis_client: redis.Redis, redis_url: str, aws: Any) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo a > a"}}}},
                         watchdog={"every": "1s"})
    worker, control = start_worker(config, HOST), start_control(config)
    store = RedisRunStore(redis_client)
    queued = f"{HOST}-full-20261129T130000Z"
    store.create(RunRecord(run_id=queued, host=HOST, type=BackupType.FULL))
    tags = _inject_cases(redis_url, f"backup.{HOST}", START_BACKUP, (HOST, "full", queued), {})
    _refused_each_once(worker, redis_client, tags)
    redis_client.delete("offsite:rejected")
    prune = f"{HOST}-prune-20261129T130000Z"
    tags = _inject_cases(redis_url, CONTROL_QUEUE, PRUNE, (HOST, prune), {})
    _refused_each_once(control, redis_client, tags)

    # the queued run its refused start named ended failed, and was alerted once
    record = store.get(queued)
    assert record is not None and record.state == RunState.FAILED, record
    assert record.error is not None and record.error.failure_class == "message_refused"
    alerts = aws.alerts(1, timeout=30)
    assert len(alerts) == 1 and queued in alerts[0]["Message"], alerts
    # both still work: a real backup succeeds, and each process stops cleanly on SIGTERM
    _backup_succeeds(run_offsite, config, HOST)
    assert worker.alive and control.alive
    assert worker.stop() == 0 and control.stop() == 0


@pytest.mark.slow
def test_a_waiting_start_sent_again_passes_the_screening(
        make_config: Any, start_worker: Any, run_offsite: Any, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    """A start that finds its host busy is parked, then sent again once the host is free
    (offsite.wire.outgoing): the message sent again passes the screening like the first."""
    gate = tmp_path / "go"
    config = make_config({HOST: {"scripts": {"s": {
        "bash": f"touch {tmp_path}/started; while [ ! -e {gate} ]; do sleep 0.1; done; "
                "echo a > a"}}}})
    worker = start_worker(config, HOST)
    first = run_offsite("backup", HOST, "--type", "full", config=config, timeout=60)
    assert first.returncode == 0, describe(first)
    wait_until((tmp_path / "started").exists, timeout=60, what="the first run's script")
    # queued before the first run's upload: it finds the host busy and waits (is parked)
    second = run_offsite("backup", HOST, "--type", "full", config=config, timeout=60)
    assert second.returncode == 0, describe(second)
    gate.touch()
    store = RedisRunStore(redis_client)
    for run_id in (first.stdout.split()[1], second.stdout.split()[1]):
        wait_until(lambda: (r := store.get(run_id)) is not None and r.is_final, timeout=180,
                   what=f"run {run_id} to end")
        assert store.get(run_id).state == RunState.SUCCEEDED  # type: ignore[union-attr]
    second_id = second.stdout.split()[1]
    assert f"sent run {second_id} again" in worker.log_text(), worker.log_text()[-3000:]
    assert rejected_entries(redis_client) == []
    assert "refusing a message" not in worker.log_text()


def test_beat_stops_with_exit_0_on_sigterm(make_config: Any, start_process: Any) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "true"}}}})
    beat = start_process("beat", offsite_argv(config, "beat"), "Acquired lock")
    beat.kill(signal.SIGTERM)
    assert beat.wait(30) == 0, beat.log_text()[-3000:]


# ------------------------------------------------------------------ the pure checks


def _headers(**extra: Any) -> dict[str, Any]:
    return task_headers(START_BACKUP, "t1", **extra)


@pytest.mark.parametrize("name,extra", HEADER_CASES)
def test_headers_offsite_never_sends_are_refused(name: str, extra: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage) as refused:
        check_headers(START_BACKUP, _headers(**extra), HOST, NOW)
    assert "\n" not in refused.value.one_line() and len(refused.value.one_line()) < 600


@pytest.mark.parametrize("extra", [
    {}, {"eta": (NOW + timedelta(seconds=5)).isoformat(), "retries": 3,
         "parent_id": "abc-1", "root_id": "abc-0"},
    {"replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}},
    {"timelimit": None}, {"argsrepr": "carcosa full x", "ignore_result": True},
    {"group": "7b4f118e-cf66-4380-b0d4-a8000563b419", "group_index": 0}])
def test_headers_offsite_and_celery_send_pass(extra: dict[str, Any]) -> None:
    check_headers(START_BACKUP, _headers(**extra), HOST, NOW)


@pytest.mark.parametrize("name,embed", EMBED_CASES)
def test_embedded_callbacks_offsite_never_sends_are_refused(name: str,
                                                            embed: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage):
        check_embed(START_BACKUP, embed, HOST)


def test_a_runs_chain_and_errback_pass() -> None:
    check_embed(START_BACKUP, {**NO_OPTIONS, "chain": [{"task": UPLOAD}],
                               "errbacks": [failure_callback(HOST, "r")]}, HOST)


@pytest.mark.parametrize("task,body,expected", [
    (START_BACKUP, [[HOST, "full", "carcosa-full-x"], {}, {}], "carcosa-full-x"),
    (VERIFY, [[HOST], {"run_id": "carcosa-verify-x"}, {}], "carcosa-verify-x"),
    (PRUNE, [[HOST, "carcosa-prune-x"], {}, {}], "carcosa-prune-x"),
    (UPLOAD, [[HOST, "carcosa-full-x", "full"], {}, {}], None),
    (START_BACKUP, [[HOST, "full", ["x"]], {}, {}], None),
    (START_BACKUP, {"no": "list"}, None),
    (START_BACKUP, [[HOST, "full", "r" * 10_000], {}, {}], None)])
def test_the_run_a_refused_start_names(task: str, body: Any, expected: str | None) -> None:
    assert named_run(task, body) == expected


def test_an_end_without_the_supervisors_signal_exits_non_zero() -> None:
    reason = StopReason()
    assert reason.exit_code("worker", 0) == EXIT_UNSUPERVISED
    assert reason.exit_code("worker", None) == EXIT_UNSUPERVISED
    assert reason.exit_code("worker", 3) == 3
    reason.note("SIGUSR1")
    assert reason.exit_code("worker", 0) == EXIT_UNSUPERVISED
    reason.note("SIGTERM")
    assert reason.exit_code("worker", 0) == 0
    assert reason.exit_code("worker", 2) == 2
