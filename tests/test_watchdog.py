"""The watchdog's judgement on a controlled clock, against real Redis and real SNS (moto)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import redis

from offsite.watch.alerts import SnsSink
from offsite.config.model import Config, parse_config
from offsite.constants import BackupType, RunState, RunType
from offsite.ledger.heartbeat import beat_once, worker_node
from offsite.ledger.lease import RedisHostLease
from offsite.watch.alerts import AlertOutbox
from offsite.watch.alerts import report_failed_run
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord, StepRecord
from offsite.schedule.specs import CronSpec, EverySpec
from offsite.fleet.summary import read_summary
from offsite.watch.watchdog import Watchdog, latest_slot

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)  # a Monday


@pytest.mark.parametrize(("spec", "at", "expected"), [
    (CronSpec("0 4 * * 1"), datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc),
     datetime(2026, 12, 7, 4, 0, tzinfo=timezone.utc)),
    (CronSpec("0 4 * * 1"), datetime(2026, 12, 7, 3, 59, tzinfo=timezone.utc),
     datetime(2026, 11, 30, 4, 0, tzinfo=timezone.utc)),
    (CronSpec("0 0 1 * *"), datetime(2026, 12, 15, tzinfo=timezone.utc),
     datetime(2026, 12, 1, tzinfo=timezone.utc)),
    # interval slots sit on the grid from the anchor (default 1970-01-01T00:00Z)
    (EverySpec(600), datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc),
     datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc)),
    (EverySpec(600), datetime(2026, 12, 7, 5, 9, 59, tzinfo=timezone.utc),
     datetime(2026, 12, 7, 5, 0, tzinfo=timezone.utc)),
])
def test_latest_slot(spec: Any, at: datetime, expected: datetime) -> None:
    assert latest_slot(spec, "UTC", at) == expected


@pytest.fixture
def config(aws: Any, redis_url: str) -> Config:
    return parse_config({
        "broker_url": redis_url,
        "target": {"url": "file:///nowhere", "upload_timeout": "1h"},
        "alerts": {"sns_topic_arn": aws.topic_arn, "endpoint_url": aws.endpoint_url,
                   "region": "eu-west-1"},
        "schedule": {"full": "0 0 1 * *", "incr": "0 4 * * 1"},
        "watchdog": {"start_grace": "15m", "lease_ttl": "60s", "worker_timeout": "5m"},
        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true", "timeout": "1h"}}}},
    })


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def dog(config: Config, client: redis.Redis, aws_credentials: None) -> Watchdog:
    reruns: list[str] = []
    # the worker's heartbeat is as recent as the controlled clock ever gets in these tests
    beat_once(client, worker_node("carcosa"), (T0 + timedelta(days=30)).timestamp())
    return Watchdog(config=config, store=RedisRunStore(client), client=client,
                    lease=RedisHostLease(client, config.watchdog.lease_ttl),
                    outbox=AlertOutbox(client), sink=SnsSink(config),
                    redispatch=lambda lost, rerun_id: reruns.append(rerun_id))


def classes(aws: Any, expected: int, *, ignore: tuple[str, ...] = ()) -> list[str]:
    found = [a["MessageAttributes"]["class"]["Value"] for a in aws.alerts(expected, timeout=5)]
    return [name for name in found if name not in ignore]


@pytest.mark.slow
def test_run_past_its_maximum_duration_alerts_once_and_clears(dog: Watchdog, aws: Any) -> None:
    store, lease = dog.store, dog.lease
    record = RunRecord(run_id="carcosa-full-x", host="carcosa", type=BackupType.FULL,
                       state=RunState.RUNNING, started_at=T0, created_at=T0)
    store.create(record)
    assert lease.acquire("carcosa", record.run_id)
    dog.tick(T0 + timedelta(hours=1))
    assert classes(aws, 1) == []
    dog.tick(T0 + timedelta(hours=2, minutes=1))
    dog.tick(T0 + timedelta(hours=2, minutes=3))
    assert classes(aws, 2, ignore=("backup_missed",)) == ["run_overdue"]

    def finish(current: RunRecord) -> None:
        current.state = RunState.SUCCEEDED
        current.finished_at = T0 + timedelta(hours=3)
    store.update(record.run_id, finish)
    dog.tick(T0 + timedelta(hours=3, minutes=1))
    assert classes(aws, 3, ignore=("backup_missed",)) == ["run_overdue", "recovered"]


def test_host_without_success_goes_stale(dog: Watchdog, aws: Any) -> None:
    dog.tick(T0)
    stale_after = timedelta(days=14)  # twice the weekly incremental interval
    dog.tick(T0 + stale_after - timedelta(hours=1))
    assert "backup_stale" not in classes(aws, 1)
    dog.tick(T0 + stale_after + timedelta(hours=1))
    assert "backup_stale" in classes(aws, 1)


@pytest.mark.slow
def test_missed_monday_slot_is_reported(dog: Watchdog, aws: Any) -> None:
    dog.tick(T0)                                    # watching starts before the 04:00 slot
    dog.tick(T0 + timedelta(hours=1, minutes=10))   # 04:10: within the grace period
    assert "backup_missed" not in classes(aws, 1)
    dog.tick(T0 + timedelta(hours=1, minutes=20))   # 04:20: the slot did not start
    alerts = aws.alerts(1, timeout=5)
    missed = [a for a in alerts if a["MessageAttributes"]["class"]["Value"] == "backup_missed"]
    assert len(missed) == 1
    assert "2026-12-07T04:00:00+00:00" in missed[0]["Message"]
    # the hint names what is silent (neither beat nor a worker ever beat here)
    assert "beat has sent no heartbeat at all: start `offsite beat`" in missed[0]["Message"]


@pytest.mark.slow
def test_identical_failures_are_held_back_and_summarised_daily(dog: Watchdog, aws: Any) -> None:
    outcomes = []
    for index in range(3):
        run_id = f"carcosa-incr-{index}"
        dog.store.create(RunRecord(
            run_id=run_id, host="carcosa", type=BackupType.INCR, state=RunState.FAILED,
            created_at=T0, error=ErrorRecord(step="script:s", exit_code=1, message="boom",
                                             failure_class="script_failed")))
        outcomes.append(report_failed_run(dog.store, dog.client, dog.outbox, "carcosa", run_id,
                                          T0 + timedelta(minutes=index)))
    assert outcomes == ["alerted", "summarised", "summarised"]
    assert report_failed_run(dog.store, dog.client, dog.outbox, "carcosa", "carcosa-incr-2",
                             T0) == "duplicate"
    dog.tick(T0 + timedelta(hours=1))
    assert classes(aws, 2, ignore=("backup_missed",)) == ["script_failed"]
    dog.tick(T0 + timedelta(hours=25))
    alerts = [a for a in aws.alerts(2, timeout=5)
              if a["MessageAttributes"]["class"]["Value"] == "script_failed"]
    assert len(alerts) == 2
    assert "3 failures since the last success" in alerts[1]["Message"]
    assert "2 alert(s) held back" in alerts[1]["Message"]
    assert "still failing" in alerts[1]["Message"]


def _failed(dog: Watchdog, run_id: str, kind: BackupType, failure: str, step: str,
            at: datetime) -> str:
    dog.store.create(RunRecord(
        run_id=run_id, host="carcosa", type=kind, state=RunState.FAILED, created_at=at,
        finished_at=at, error=ErrorRecord(step=step, exit_code=1, message="boom",
                                          failure_class=failure)))
    return report_failed_run(dog.store, dog.client, dog.outbox, "carcosa", run_id, at)


def test_repeats_are_held_from_the_first_alert_and_recovery_counts_every_failure(
        dog: Watchdog, aws: Any) -> None:
    sequence = [(BackupType.FULL, "script_failed", "script:s"),
                (BackupType.INCR, "script_failed", "script:s"),    # same problem, other type
                (BackupType.INCR, "upload_failed", "upload"),      # a second problem
                (BackupType.FULL, "script_failed", "script:s"),
                (BackupType.INCR, "upload_failed", "upload"),
                (BackupType.INCR, "script_failed", "script:s")]
    outcomes = [_failed(dog, f"carcosa-{kind.value}-{index}", kind, failure, step,
                        T0 + timedelta(minutes=index))
                for index, (kind, failure, step) in enumerate(sequence)]
    assert outcomes == ["alerted", "summarised", "alerted", "summarised", "summarised",
                        "summarised"]
    dog.store.create(RunRecord(run_id="carcosa-incr-ok", host="carcosa", type=BackupType.INCR,
                               state=RunState.SUCCEEDED, created_at=T0,
                               finished_at=T0 + timedelta(minutes=10)))
    dog.tick(T0 + timedelta(minutes=11))
    alerts = [a for a in aws.alerts(3, timeout=5)
              if a["MessageAttributes"]["class"]["Value"] != "backup_missed"]
    assert [a["MessageAttributes"]["class"]["Value"] for a in alerts] == [
        "script_failed", "upload_failed", "recovered"]
    recovery = alerts[-1]["Message"]
    assert "after 6 backup failure(s) since the last successful backup" in recovery
    assert f"the first at {T0.isoformat()}" in recovery
    assert "2 alerted, 4 held back" in recovery


def test_a_run_whose_upload_was_confirmed_is_finished_not_lost(dog: Watchdog, aws: Any) -> None:
    confirmed = RunRecord(
        run_id="carcosa-full-20261207T030000Z", host="carcosa", type=BackupType.FULL,
        state=RunState.RUNNING, created_at=T0, started_at=T0, backup_set="2026-12-07T03:00:05Z",
        steps=[StepRecord(name="upload", started_at=T0, finished_at=T0 + timedelta(minutes=1),
                          exit_code=0)])
    unconfirmed = RunRecord(
        run_id="carcosa-incr-20261207T030000Z", host="carcosa", type=BackupType.INCR,
        state=RunState.RUNNING, created_at=T0, started_at=T0,
        steps=[StepRecord(name="upload", started_at=T0)])
    for record in (confirmed, unconfirmed):
        dog.store.create(record)
    dog.tick(T0 + timedelta(minutes=2))    # neither holds the lease: their worker stopped
    finished = dog.store.get(confirmed.run_id)
    assert finished is not None and finished.state == RunState.SUCCEEDED
    assert any("finished by the watchdog" in note for note in finished.notes)
    lost = dog.store.get(unconfirmed.run_id)
    assert lost is not None and lost.state == RunState.LOST
    assert lost.error is not None and lost.error.step == "upload"
    assert classes(aws, 1, ignore=("backup_missed",)) == ["run_lost"]


def test_streaks_are_per_kind_a_good_drill_never_says_backups_recovered(
        dog: Watchdog, aws: Any) -> None:
    from offsite.constants import RunType
    assert _failed(dog, "carcosa-incr-1", BackupType.INCR, "script_failed", "script:s",
                   T0) == "alerted"
    assert _failed(dog, "carcosa-verify-1", RunType.VERIFY, "script_failed", "script:s",
                   T0 + timedelta(minutes=1)) == "alerted"   # its own streak: not a repeat
    dog.store.create(RunRecord(run_id="carcosa-verify-ok", host="carcosa", type=RunType.VERIFY,
                               state=RunState.SUCCEEDED, created_at=T0,
                               finished_at=T0 + timedelta(minutes=2)))
    dog.tick(T0 + timedelta(minutes=3))
    assert _failed(dog, "carcosa-incr-2", BackupType.INCR, "script_failed", "script:s",
                   T0 + timedelta(minutes=4)) == "summarised"   # the backup streak goes on
    dog.store.create(RunRecord(run_id="carcosa-full-ok", host="carcosa", type=BackupType.FULL,
                               state=RunState.SUCCEEDED, created_at=T0,
                               finished_at=T0 + timedelta(minutes=5)))
    dog.tick(T0 + timedelta(minutes=6))
    alerts = [a for a in aws.alerts(4, timeout=5)
              if a["MessageAttributes"]["class"]["Value"] != "backup_missed"]
    recoveries = [a for a in alerts if a["MessageAttributes"]["class"]["Value"] == "recovered"]
    assert [a["MessageAttributes"]["type"]["Value"] for a in recoveries] == ["verify", "full"]
    assert "1 drill failure(s)" in recoveries[0]["Message"]
    assert "carcosa-full-ok" in recoveries[1]["Message"]
    assert "2 backup failure(s)" in recoveries[1]["Message"]
    assert dog.client.keys("offsite:streak:*") == []


def test_a_streak_written_before_kinds_becomes_the_backup_streak(
        dog: Watchdog, aws: Any) -> None:
    import json
    dog.client.set("offsite:streak:carcosa", json.dumps({
        "count": 1, "held": 0, "first_at": T0.isoformat(), "first_run_id": "carcosa-incr-0",
        "alerted": {"script_failed|script:s": "carcosa-incr-0"},
        "summarised_at": T0.isoformat(), "last_at": T0.isoformat(),
        "last_run_id": "carcosa-incr-0", "last_signature": "script_failed|script:s"}))
    dog.tick(T0 + timedelta(minutes=1))
    assert dog.client.get("offsite:streak:carcosa") is None
    assert dog.client.exists("offsite:streak:carcosa:backup")
    assert _failed(dog, "carcosa-incr-1", BackupType.INCR, "script_failed", "script:s",
                   T0 + timedelta(minutes=2)) == "summarised"


def test_a_run_queued_past_start_grace_and_queued_grace_is_stuck_once_then_clears(
        dog: Watchdog, aws: Any) -> None:
    store = dog.store
    run_id = "carcosa-full-20261207T030000Z"
    store.create(RunRecord(run_id=run_id, host="carcosa", type=BackupType.FULL, created_at=T0))
    dog.tick(T0 + timedelta(minutes=15 + 59))      # start_grace 15m + queued_grace 1h default
    assert "run_stuck" not in classes(aws, 1)
    dog.tick(T0 + timedelta(minutes=15 + 61))
    dog.tick(T0 + timedelta(minutes=15 + 63))      # still stuck: no second alert
    alerts = [a for a in aws.alerts(1, timeout=5)
              if a["MessageAttributes"]["class"]["Value"] == "run_stuck"]
    assert len(alerts) == 1 and run_id in alerts[0]["Message"], alerts
    assert "queued_grace" in alerts[0]["Message"]
    (row,) = read_summary(dog.client, dog.config, T0 + timedelta(minutes=80)).rows
    assert "run_stuck" in [c.condition for c in row.conditions]

    def skip(current: RunRecord) -> None:
        current.state = RunState.SKIPPED
        current.finished_at = T0 + timedelta(hours=2)
    store.update(run_id, skip)
    dog.tick(T0 + timedelta(hours=2, minutes=1))
    found = classes(aws, 2, ignore=("backup_missed",))
    assert found == ["run_stuck", "recovered"], found
    assert dog.client.zcard("offsite:queued") == 0


def test_a_worker_that_beats_without_reading_its_queue_is_reported_then_clears(
        dog: Watchdog, aws: Any) -> None:
    at = T0 + timedelta(minutes=1)
    beat_once(dog.client, worker_node("carcosa"), at.timestamp(), queues=["backup.hali"])
    dog.tick(at)
    dog.tick(at + timedelta(seconds=30))
    alerts = [a for a in aws.alerts(1, timeout=5)
              if a["MessageAttributes"]["class"]["Value"] == "worker_not_consuming"]
    assert len(alerts) == 1 and "backup.carcosa" in alerts[0]["Message"], alerts
    assert "backup.hali" in alerts[0]["Message"]
    (row,) = read_summary(dog.client, dog.config, at + timedelta(seconds=30)).rows
    assert [c.condition for c in row.conditions] == ["worker_not_consuming"]
    assert row.health.value == "lost" and "does not read its queue" in row.reason
    beat_once(dog.client, worker_node("carcosa"), (at + timedelta(minutes=1)).timestamp(),
              queues=["backup.carcosa"])
    dog.tick(at + timedelta(minutes=1))
    assert classes(aws, 2) == ["worker_not_consuming", "recovered"]


def test_a_lost_drill_is_blamed_on_the_node_running_it_not_the_host_worker(
        dog: Watchdog, aws: Any) -> None:
    drill = RunRecord(
        run_id="carcosa-verify-20261207T030000Z", host="carcosa", type=RunType.VERIFY,
        state=RunState.RUNNING, created_at=T0, started_at=T0,
        steps=[StepRecord(name="verify", worker="control@node", started_at=T0)])
    dog.store.create(drill)
    dog.tick(T0 + timedelta(minutes=2))    # it does not hold the lease: its node stopped
    lost = dog.store.get(drill.run_id)
    assert lost is not None and lost.state == RunState.LOST and lost.error is not None
    assert lost.error.message.startswith("the node running the drill (control@node) stopped")
    assert "host worker" not in lost.error.message
