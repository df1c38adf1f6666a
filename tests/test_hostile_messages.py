"""Hostile and careless task messages, put on the queues of real workers with kombu while a
real backup runs: each is refused in one log line and recorded in offsite:rejected, none leaves
a traceback, a record, an alert or a trace on the running backup, which then succeeds."""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from offsite.config.model import parse_config
from offsite.constants import BackupType, RunState, RunType
from offsite.wire.messages import (NOTIFY_FAILURE, RUN_SCRIPT, START_BACKUP, UPLOAD, VERIFY,
                              MalformedMessage, NotAFailedRun, WrongWorker, check_envelope,
                              require_failed_run, shown, validate_message)
from offsite.ledger.lease import RedisHostLease
from offsite.ledger.records import RedisRunStore
from offsite.run.context import queue_run
from offsite.wire.outgoing import MAX_ENTRY_BYTES, UNSENT_KEY, resend_due
from offsite.ledger.run_record import RunRecord
from offsite.wire.rejections import MAX_ENTRY_CHARS, MAX_REJECTED_ENTRIES, refuse
from offsite.schedule.specs import utcnow
from offsite.watch.watchdog import RERUN_SUFFIX
from tests.helpers import describe, wait_until
from tests.injection import publish, rejected_entries, task_headers, vm_peak_rss_mib

HOST = "carcosa"
QUEUE = f"backup.{HOST}"
STAMP = "20261129T120000Z"
RUN = f"{HOST}-full-{STAMP}"
HUGE = 50 * 1024 * 1024
REFUSING = "refusing a message:"
PEAK_RSS_LIMIT_MIB = 300


def waiting_script(tmp_path: Path, name: str) -> dict[str, Any]:
    """A script that says it started, then waits for its marker file (keeps the run going)."""
    return {"bash": f"touch {tmp_path}/{name}.started; "
                    f"while [ ! -e {tmp_path}/{name}.go ]; do sleep 0.1; done; echo {name} > x"}


@dataclass
class Case:
    """One hostile message: its task id names it in the log and in offsite:rejected."""
    name: str
    task: str
    args: Any = ()
    kwargs: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return f"hostile-{self.name}"

    @property
    def tag(self) -> str:
        """How Celery and offsite write the task id in a log line: `name[id]`."""
        return f"[{self.task_id}]"


def host_queue_cases(running: str) -> list[Case]:
    other_run = f"hali-full-{STAMP}"
    return [
        Case("huge-run-id", START_BACKUP, (HOST, "full", f"{HOST}-full-" + "x" * HUGE)),
        Case("long-run-id", RUN_SCRIPT, (HOST, "y" * 900_000, "first", "full")),
        Case("traversal-run-id", START_BACKUP, (HOST, "full", "../../etc/x")),
        Case("traversal-after-prefix", START_BACKUP, (HOST, "full", f"{RUN}/../../x")),
        Case("newline-run-id", START_BACKUP, (HOST, "full", f"{RUN}\nFAKE LOG LINE")),
        Case("bad-stamp", START_BACKUP, (HOST, "full", f"{HOST}-full-20261399T999999Z")),
        Case("other-hosts-run-id", RUN_SCRIPT, (HOST, other_run, "first", "full")),
        Case("other-host", START_BACKUP, ("hali", "full", other_run)),
        Case("host-not-configured", START_BACKUP, ("yuggoth", "full", f"yuggoth-full-{STAMP}")),
        Case("unknown-script", RUN_SCRIPT, (HOST, running, "nope", "full")),
        Case("script-traversal", RUN_SCRIPT, (HOST, running, "../first", "full")),
        Case("unknown-type", START_BACKUP, (HOST, "differential", RUN)),
        Case("type-not-the-run-ids", START_BACKUP, (HOST, "incr", RUN)),
        Case("host-int", START_BACKUP, (7, "full", RUN)),
        Case("host-null", UPLOAD, (None, running, "full")),
        Case("run-id-list", UPLOAD, (HOST, [running], "full")),
        Case("run-id-dict", UPLOAD, (HOST, {"run": running}, "full")),
        Case("run-id-int", UPLOAD, (HOST, 12, "full")),
        Case("type-null", UPLOAD, (HOST, running, None)),
        Case("type-bool", UPLOAD, (HOST, running, True)),
        Case("missing-arg", UPLOAD, (HOST, running)),
        Case("no-args", UPLOAD, ()),
        Case("extra-arg", UPLOAD, (HOST, running, "full", "extra")),
        Case("extra-kwarg", START_BACKUP, (HOST, "full", RUN), {"rm": "-rf"}),
        Case("twice-the-host", START_BACKUP, (HOST, "full", RUN), {"host": HOST}),
        Case("slot-without-zone", START_BACKUP, (HOST, "full", RUN),
             {"scheduled_for": "2026-11-29T12:00:00"}),
        Case("slot-not-a-time", START_BACKUP, (HOST, "full", RUN), {"scheduled_for": "soon"}),
        Case("slot-huge", START_BACKUP, (HOST, "full", RUN), {"scheduled_for": "2" * 100_000}),
        Case("args-not-a-list", UPLOAD, options={"body": ["carcosa", {}, {}]}),
        Case("kwargs-not-a-dict", UPLOAD, options={"body": [[HOST, running, "full"], [1], {}]}),
        Case("body-not-a-triple", UPLOAD, options={"body": {"host": HOST}}),
        Case("control-task", NOTIFY_FAILURE, ("x",), {"host": HOST, "run_id": running}),
        Case("unknown-task", "tasks.backup.rm_rf", (HOST,)),
        Case("celery-builtin", "celery.backend_cleanup"),
        Case("pickle", START_BACKUP, (HOST, "full", RUN), options={"serializer": "pickle"}),
        Case("yaml", START_BACKUP, (HOST, "full", RUN), options={"serializer": "yaml"}),
        Case("not-json", START_BACKUP, options={"raw": b"{not json",
                                                 "content_type": "application/json"}),
        Case("huge-task-name", "t" * 1_000_000),
        Case("bad-eta", UPLOAD, (HOST, running, "full"), options={"eta": "yesterday"}),
        Case("no-task-header", UPLOAD, (HOST, running, "full"), options={"headers": True}),
        Case("zip-bomb", UPLOAD, options={"raw": zip_bomb(200 * 1024 * 1024),
                                              "content_type": "application/json",
                                              "compression": "application/x-gzip"}),
        Case("not-an-envelope", UPLOAD, options={
            "lpush": b'{"nope "task": "tasks.backup.upload", "id": "hostile-not-an-envelope"'}),
        Case("envelope-without-properties", UPLOAD, options={"lpush": json.dumps(
            {"body": "", "headers": {"task": UPLOAD,
                                     "id": "hostile-envelope-without-properties"}}).encode()}),
        Case("unknown-body-encoding", UPLOAD, options={"lpush": json.dumps(
            {"body": "x", "content-type": "application/json",
             "headers": {"task": UPLOAD, "id": "hostile-unknown-body-encoding"},
             "properties": {"delivery_tag": "t", "body_encoding": "rot13"}}).encode()}),
    ]


def zip_bomb(inflated_bytes: int) -> bytes:
    """zlib data that inflates to `inflated_bytes` of spaces, made without holding them."""
    packer, chunk = zlib.compressobj(9), b" " * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    return b"".join(parts) + packer.flush()


def inject(broker_url: str, queue: str, case: Case) -> None:
    options = dict(case.options)
    if raw_envelope := options.pop("lpush", None):  # straight onto kombu's list for the queue
        client = redis.Redis.from_url(broker_url)
        try:
            client.lpush(queue, raw_envelope)
        finally:
            client.close()
        return
    headers = None
    if options.pop("headers", False):
        headers = {"id": case.task_id, "lang": "py"}
    if eta := options.pop("eta", None):
        headers = task_headers(case.task, case.task_id, eta=eta)
    if compression := options.pop("compression", None):
        headers = task_headers(case.task, case.task_id, compression=compression)
    publish(broker_url, queue, case.task, case.task_id, case.args, case.kwargs,
            headers=headers, **options)


def lines_naming(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def assert_refused_once(log: str, entries: list[str], case: Case) -> None:
    refusals = [line for line in lines_naming(log, case.tag) if REFUSING in line]
    assert len(refusals) == 1, f"{case.name}: {refusals or lines_naming(log, case.tag)}"
    assert len(refusals[0]) < 1000, f"{case.name}: log line of {len(refusals[0])} chars"
    others = [line for line in lines_naming(log, case.tag)
              if REFUSING not in line and not line.rstrip().endswith("received")]
    assert others == [], f"{case.name}: more lines than the refusal: {others}"
    recorded = [entry for entry in entries if case.tag in entry]
    assert len(recorded) == 1, f"{case.name}: {recorded}"
    assert len(recorded[0]) <= MAX_ENTRY_CHARS + 40


@pytest.mark.slow
def test_hostile_messages_on_a_host_queue_are_refused_while_a_backup_runs(
        make_config: Any, start_worker: Any, run_offsite: Any, redis_client: redis.Redis,
        redis_url: str, tmp_path: Path, aws: Any) -> None:
    config = make_config({HOST: {"scripts": {"first": waiting_script(tmp_path, "first"),
                                             "second": waiting_script(tmp_path, "second")}},
                          "hali": {"scripts": {"first": {"bash": "true"}}}})
    worker = start_worker(config, HOST)
    queued = run_offsite("backup", HOST, "--type", "full", config=config, timeout=60)
    assert queued.returncode == 0, describe(queued)
    running = queued.stdout.split()[1]
    wait_until((tmp_path / "first.started").exists, timeout=60, what="the first script to run")

    cases = host_queue_cases(running)
    for case in cases:
        inject(redis_url, QUEUE, case)
    # The worker takes them after the first script and before the second: the run is mid-way.
    (tmp_path / "first.go").touch()
    wait_until((tmp_path / "second.started").exists, timeout=120,
               what="the second script, after the hostile messages")
    wait_until(lambda: len(rejected_entries(redis_client)) >= len(cases), timeout=30,
               what="every hostile message to be recorded")
    (tmp_path / "second.go").touch()

    store = RedisRunStore(redis_client)
    wait_until(lambda: (record := store.get(running)) is not None and record.is_final,
               timeout=120, what="the legitimate run to end", interval=0.3)
    record = store.get(running)
    assert record is not None and record.state == RunState.SUCCEEDED, record
    assert [step.name for step in record.steps] == ["script:first", "script:second", "upload"]
    assert record.error is None and not record.notes, record

    log = worker.log_text()
    entries = rejected_entries(redis_client)
    assert len(entries) == len(cases), "\n".join(entries)
    for case in cases:
        assert_refused_once(log, entries, case)
    assert "Traceback" not in log, log[-5000:]
    assert [r.run_id for r in store.recent(None, 100)] == [running]
    assert not (tmp_path / "staging" / "etc").exists()
    peak = vm_peak_rss_mib(worker.pid)
    assert peak < PEAK_RSS_LIMIT_MIB, f"worker peak RSS {peak:.0f} MiB"
    assert worker.alive
    assert aws.alerts(1, timeout=3) == []


@pytest.mark.slow
def test_control_worker_alerts_only_for_runs_recorded_failed(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        redis_client: redis.Redis, redis_url: str, aws: Any) -> None:
    # the watchdog would report the failed record made below: it does not tick in this test
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo ok > x"}}},
                          "hali": {"scripts": {"s": {"bash": "exit 3"}}}},
                         watchdog={"every": "1h"})
    start_worker(config, HOST)
    start_worker(config, "hali")
    control = start_control(config)
    done = run_offsite("backup", HOST, "--type", "full", "--wait", config=config, timeout=120)
    assert done.returncode == 0, describe(done)
    succeeded = done.stdout.split()[1]
    store = RedisRunStore(redis_client)
    hali_failed = "hali-full-20261129T110000Z"
    store.create(RunRecord(run_id=hali_failed, host="hali", type=BackupType.FULL,
                           state=RunState.FAILED))
    running = f"{HOST}-incr-20261129T113000Z"
    store.create(RunRecord(run_id=running, host=HOST, type=BackupType.INCR,
                           state=RunState.RUNNING))
    store.create(RunRecord(run_id=f"{HOST}-full-20261129T110000Z", host="hali",
                           type=BackupType.FULL, state=RunState.FAILED))
    cases = [
        Case("succeeded-run", NOTIFY_FAILURE, ("t1",), {"host": HOST, "run_id": succeeded}),
        Case("running-run", NOTIFY_FAILURE, ("t2",), {"host": HOST, "run_id": running}),
        Case("no-such-run", NOTIFY_FAILURE, ("t3",), {"host": HOST, "run_id": RUN}),
        Case("failed-run-other-host", NOTIFY_FAILURE, ("t4",),
             {"host": HOST, "run_id": f"{HOST}-full-20261129T110000Z"}),
        Case("host-of-another-run", NOTIFY_FAILURE, ("t5",), {"host": HOST, "run_id": hali_failed}),
        Case("huge-task-id", NOTIFY_FAILURE, ("z" * 10_000,), {"host": HOST, "run_id": succeeded}),
        Case("missing-run-id", NOTIFY_FAILURE, ("t6",), {"host": HOST}),
        Case("positional-host", NOTIFY_FAILURE, ("t7", HOST, succeeded)),
        Case("backup-task", START_BACKUP, (HOST, "full", RUN)),
        Case("pickle", NOTIFY_FAILURE, ("t8",), {"host": HOST, "run_id": succeeded},
             {"serializer": "pickle"}),
    ]
    for case in cases:
        inject(redis_url, "offsite.control", case)
    wait_until(lambda: len(lines_naming(control.log_text(), REFUSING)) >= len(cases),
               timeout=60, what="the control worker to refuse every report")
    log, entries = control.log_text(), rejected_entries(redis_client)
    for case in cases:
        assert_refused_once(log, entries, case)
    assert "Traceback" not in log, log[-5000:]
    assert aws.alerts(1, timeout=5) == []
    assert store.get(succeeded).state == RunState.SUCCEEDED  # type: ignore[union-attr]
    assert store.get(RUN) is None

    # the same path still alerts for a run that did fail
    failed = run_offsite("backup", "hali", "--type", "full", "--wait", config=config, timeout=120)
    assert failed.returncode == 1, describe(failed)
    alerts = aws.alerts(1, timeout=60)
    assert len(alerts) == 1 and "hali" in alerts[0]["Message"], alerts


# ------------------------------------------------------------------ the pure checks


_FLEET = {"target": {"url": "file:///srv/backups"},
          "hosts": {HOST: {"scripts": {"s": {"bash": "true"}}},
                    "hali": {"scripts": {"s": {"bash": "true"}}}}}


def fleet() -> Any:
    return parse_config(_FLEET)


@pytest.mark.parametrize("run_id", [
    RUN, f"{HOST}-incr-{STAMP}", f"{HOST}-full-{STAMP}{RERUN_SUFFIX}",
])
def test_run_ids_offsite_makes_are_accepted(run_id: str) -> None:
    message = validate_message(START_BACKUP, [HOST, run_id.split("-")[1], run_id], {},
                               fleet(), HOST)
    assert message.run_id == run_id  # type: ignore[union-attr]


def test_a_promoted_incremental_keeps_its_id_and_runs_as_full() -> None:
    incr = f"{HOST}-incr-{STAMP}"
    message = validate_message(RUN_SCRIPT, [HOST, incr, "s", "full"], {}, fleet(), HOST)
    assert message.backup_type == BackupType.FULL  # type: ignore[union-attr]
    with pytest.raises(MalformedMessage):
        validate_message(RUN_SCRIPT, [HOST, RUN, "s", "incr"], {}, fleet(), HOST)


@pytest.mark.parametrize("run_id", [
    f"{RUN}{RERUN_SUFFIX}{RERUN_SUFFIX}", f"{RUN}-again", f"{HOST}-full-2026", f"{HOST}--full",
    f"{HOST}x-full-{STAMP}", f"{HOST}-full-{STAMP}\n", f" {RUN}", f"{HOST}-full-20260230T000000Z",
])
def test_run_ids_of_another_form_are_refused(run_id: str) -> None:
    with pytest.raises(MalformedMessage) as refused:
        validate_message(START_BACKUP, [HOST, "full", run_id], {}, fleet(), HOST)
    assert "\n" not in str(refused.value)


def test_message_checks_agree_with_the_tasks_they_guard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signatures offsite.wire.messages binds against are the tasks' own (this loads the app, in
    this process, with a config of its own)."""
    import inspect

    from offsite.wire.messages import SIGNATURES
    from workers.app import app
    from workers.context import current_config
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump({"broker_url": "redis://127.0.0.1:1/0",
                                    "target": {"url": "file:///srv/backups"},
                                    "hosts": {HOST: {"scripts": {"s": {"bash": "true"}}}}}))
    monkeypatch.setenv("OFFSITE_CONFIG", str(path))
    current_config.cache_clear()
    app.loader.import_default_modules()
    for name, signature in SIGNATURES.items():
        own = inspect.signature(app.tasks[name].run)
        assert [(p.name, p.kind, p.default is None) for p in own.parameters.values()] == \
               [(p.name, p.kind, p.default is None) for p in signature.parameters.values()], name
    assert RERUN_SUFFIX == "-rerun"


def test_roles_and_envelopes() -> None:
    with pytest.raises(WrongWorker):
        validate_message(NOTIFY_FAILURE, ["t"], {"host": HOST, "run_id": RUN}, fleet(), HOST)
    with pytest.raises(WrongWorker):
        validate_message(UPLOAD, [HOST, RUN, "full"], {}, fleet(), None)
    assert check_envelope("application/json", 10, {"task": UPLOAD, "id": "a"}, HOST) \
        == UPLOAD
    with pytest.raises(MalformedMessage):
        check_envelope("application/x-python-serialize", 10, {"task": UPLOAD}, HOST)
    with pytest.raises(MalformedMessage):
        check_envelope("application/json", HUGE, {"task": UPLOAD, "id": "a"}, HOST)
    with pytest.raises(WrongWorker):   # drills of the host run on control, not its own worker
        validate_message(VERIFY, [HOST, f"{HOST}-verify-{STAMP}"], {}, fleet(), HOST)
    verify = validate_message(VERIFY, [HOST, f"{HOST}-verify-{STAMP}"],
                              {"at": "2026-11-01T00:00:00+00:00"}, fleet(), None)
    assert verify.host == HOST and verify.at is not None  # type: ignore[union-attr]
    assert len(shown("x" * HUGE)) < 100


def test_a_failure_report_needs_a_failed_or_lost_record() -> None:
    for state in RunState:
        record = RunRecord(run_id=RUN, host=HOST, type=BackupType.FULL, state=state)
        if state in (RunState.FAILED, RunState.LOST):
            assert require_failed_run(record, HOST, RUN) is record
        else:
            with pytest.raises(NotAFailedRun):
                require_failed_run(record, HOST, RUN)
    with pytest.raises(NotAFailedRun):
        require_failed_run(None, HOST, RUN)
    with pytest.raises(NotAFailedRun):
        require_failed_run(RunRecord(run_id=RUN, host="hali", type=BackupType.FULL,
                                     state=RunState.FAILED), HOST, RUN)


def test_the_rejected_list_stays_bounded(redis_client: redis.Redis) -> None:
    started = time.monotonic()
    for index in range(MAX_REJECTED_ENTRIES + 50):
        refuse(redis_client, utcnow(), "w", "t", str(index), "x" * 5000 if index == 0 else "y")
    entries = rejected_entries(redis_client)
    assert len(entries) == MAX_REJECTED_ENTRIES
    assert entries[-1].endswith(f"[{MAX_REJECTED_ENTRIES + 49}]: y")
    assert all(len(entry) <= MAX_ENTRY_CHARS + 40 for entry in entries)
    assert time.monotonic() - started < 60


def test_worker_settings_hold_no_redis_url_but_the_masked_ones() -> None:
    """Celery masks broker_url and result_backend when a worker shows its settings; RedBeat's
    URL belongs to beat alone."""
    from workers.settings import beat_settings, celery_settings
    config = parse_config({"broker_url": "redis://:s3cret@hub:6379/0",
                           "target": {"url": "file:///srv/backups"},
                           "hosts": {HOST: {"scripts": {"s": {"bash": "true"}}}}})
    shown_by_workers = {key: value for key, value in celery_settings(config).items()
                        if key not in ("broker_url", "result_backend")}
    assert "s3cret" not in repr(shown_by_workers)
    assert "s3cret" in beat_settings(config)["redbeat_redis_url"]


def test_each_queue_is_bound_to_its_own_exchange_and_key() -> None:
    """Not all to the default exchange and key, where one message would reach every queue."""
    from workers.settings import celery_settings
    for queue in celery_settings(fleet())["task_queues"]:
        assert queue.exchange.name == queue.name == queue.routing_key


def _entry(**changes: Any) -> str:
    entry = {"run_id": RUN, "host": HOST, "task": START_BACKUP, "args": [HOST, "full", RUN],
             "kwargs": {}, "queue": QUEUE, "due": 0, "waiting_for": None, "nonce": "n"}
    return json.dumps({**entry, **changes})


@pytest.mark.parametrize("what,value", [
    ("not json", "{{{"),
    ("a list", "[1, 2]"),
    ("deep nesting", "[" * 50_000 + "]" * 50_000),
    ("too large", _entry(kwargs={"x": "y" * MAX_ENTRY_BYTES})),
    ("a field missing", json.dumps({"run_id": RUN})),
    ("an extra field", _entry(extra=1)),
    ("a run id that is not a string", _entry(run_id=7)),
    ("another task", _entry(task=NOTIFY_FAILURE)),
    ("args that are not a list", _entry(args="carcosa")),
    ("filed under another run id", _entry(run_id=f"{HOST}-full-20261129T120001Z")),
    ("routed to another host's queue", _entry(queue="backup.hali")),
    ("routed to the control queue", _entry(queue="offsite.control")),
    ("a host the config does not hold", _entry(host="yhtill", args=["yhtill", "full", RUN])),
    ("args naming another host", _entry(args=["hali", "full", RUN])),
    ("args that are not the task's", _entry(args=[HOST, "full", RUN, "rm -rf /"])),
    ("a verify for the host's queue", _entry(task=VERIFY, args=[HOST, RUN])),
])
def test_hostile_unsent_entries_are_dropped_without_sending_anything(
        redis_client: redis.Redis, redis_url: str, what: str, value: str) -> None:
    store = RedisRunStore(redis_client)
    queue_run(store, HOST, RunType.FULL, RUN)
    redis_client.hset(UNSENT_KEY, RUN, value)
    config = parse_config({**_FLEET, "broker_url": redis_url})
    sent = resend_due(redis_client, store, RedisHostLease(redis_client, 60), config, utcnow())
    assert sent == [], what
    assert not redis_client.exists(UNSENT_KEY) and not redis_client.exists(QUEUE), what
    # an entry that decodes but is not a message offsite would send is refused as a worker
    # refuses one: listed, and the run it names failed (which alerts), not left queued
    refused = what.startswith(("routed", "a host the", "args naming", "args that are not the",
                               "a verify for"))
    record = store.get(RUN)
    assert record is not None
    assert (record.state == RunState.FAILED and record.error is not None
            and record.error.failure_class == "message_refused") == refused, what
    assert bool(rejected_entries(redis_client)) == refused, what
