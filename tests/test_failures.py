"""Every failure reaches a person exactly once: failure classes, the alert outbox, the watchdog,
killed workers and a restarted Redis. Faults are injected for real."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import record_as_json
from tests.faults import SwitchableProxy, mount_tiny_filesystem, unmount
from tests.helpers import MotoServer, describe, offsite_argv, wait_until
from tests.procfs import duplicity_uploading
from tests.test_backup_flow import record_of, same_tree

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

FAST_WATCHDOG = {"every": "1s", "start_grace": "2s", "lease_ttl": "3s",
                 "worker_timeout": "1h", "stale_after": "1h"}


def records(run_offsite: Any, config: Path, host: str | None = None) -> list[dict[str, Any]]:
    args = ("status", host, "--json") if host else ("status", "--json")
    result = run_offsite(*args, "--limit", "100", config=config)
    assert result.returncode == 0, describe(result)
    return list(json.loads(result.stdout))


class Ledger:
    """The runs' records as `offsite status --json` prints them (record_as_json), read from
    Redis in this process: a wait polls these, not an `offsite status` process per poll."""

    def __init__(self, client: redis.Redis) -> None:
        self.store = RedisRunStore(client)

    def record(self, run_id: str) -> dict[str, Any] | None:
        """The run's record; None while it does not exist or Redis does not answer (a test
        restarting it)."""
        try:
            found = self.store.get(run_id)
        except redis.ConnectionError:
            return None
        return record_as_json(found) if found is not None else None

    def ended(self, run_id: str) -> bool:
        record = self.record(run_id)
        return record is not None and record["state"] not in ("queued", "running")

    def records(self, host: str | None = None) -> list[dict[str, Any]]:
        """The newest 100 records (of `host`), as `offsite status [HOST] --limit 100`."""
        try:
            return [record_as_json(found) for found in self.store.recent(host, limit=100)]
        except redis.ConnectionError:
            return []


def backup(run_offsite: Any, config: Path, host: str, kind: str, expect_rc: int = 0,
           ledger: Ledger | None = None) -> dict[str, Any]:
    """Run `offsite backup --wait` and return the run's record: read from the ledger in this
    process when one is given, else from `offsite status --json`."""
    result = run_offsite("backup", host, "--type", kind, "--wait", "--timeout", "90",
                         config=config)
    assert result.returncode == expect_rc, describe(result)
    run_id = result.stdout.split()[1]
    if ledger is None:
        return record_of(run_offsite, config, host, run_id)
    record = ledger.record(run_id)
    assert record is not None, (run_id, describe(result))
    return record


def only_alert(aws: Any, timeout: float = 30) -> dict[str, Any]:
    aws.alerts(1, timeout=timeout)
    alerts = aws.alerts(2, timeout=3)
    assert len(alerts) == 1, [a["Subject"] for a in alerts]
    return alerts[0]


def holds_a_file(folder: Path) -> bool:
    """Whether a file is anywhere under folder (which may be changing under our feet)."""
    try:
        return any(path.is_file() for path in folder.rglob("*"))
    except OSError:
        return False


def attributes(alert: dict[str, Any]) -> dict[str, str]:
    return {name: value["Value"] for name, value in alert["MessageAttributes"].items()}


def assert_alert_fields(alert: dict[str, Any], host: str, kind: str, failure: str,
                        run_id: str) -> None:
    assert attributes(alert) == {"host": host, "type": kind, "class": failure}
    subject = alert["Subject"]
    assert host in subject and kind in subject and failure.replace("_", " ") in subject
    for field in (f"run id: {run_id}", "failed step:", "exit code:", "duration:",
                  f"offsite status {host}"):
        assert field in alert["Message"], alert["Message"]


@pytest.fixture
def proxy(moto: Any) -> Iterator[SwitchableProxy]:
    switch = SwitchableProxy(moto.port)
    switch.up()
    try:
        yield switch
    finally:
        switch.down()


def test_script_failure_alert_has_subject_attributes_and_fields(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, redis_client: redis.Redis) -> None:
    config = make_config({"carcosa": {"scripts": {
        "pg": {"bash": "echo 'FATAL: role does not exist' >&2; exit 2"}}}})
    start_worker(config, "carcosa")
    start_control(config)
    record = backup(run_offsite, config, "carcosa", "incr", expect_rc=1,
                    ledger=Ledger(redis_client))
    alert = only_alert(aws)
    assert_alert_fields(alert, "carcosa", record["type"], "script_failed", record["run_id"])
    assert "exit code: 2" in alert["Message"]
    assert "FATAL: role does not exist" in alert["Message"]


def failed_upload(make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
                  endpoint_url: str, bucket: str, retries: int, retry_delay: str,
                  ledger: Ledger) -> dict[str, Any]:
    """The record of a full whose upload failed, with one host worker and the control worker."""
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo x > x"}}}},
                         target={"url": f"boto3+s3://{bucket}", "endpoint_url": endpoint_url,
                                 "region": "eu-west-1", "retries": retries,
                                 "retry_delay": retry_delay})
    start_worker(config, "carcosa")
    start_control(config)
    record = backup(run_offsite, config, "carcosa", "full", expect_rc=1, ledger=ledger)
    record["upload_s"] = next(s for s in record["steps"] if s["name"] == "upload")["duration_s"]
    record["config"] = config
    return record


def test_missing_bucket_fails_the_upload_without_retries(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, redis_client: redis.Redis) -> None:
    record = failed_upload(make_config, start_worker, start_control, run_offsite,
                           aws.endpoint_url, "offsite-no-such-bucket", 3, "5s",
                           Ledger(redis_client))
    assert record["upload_s"] < 5, "a missing bucket must not be retried"
    assert "does not exist" in record["error"]["message"]
    assert "not retried" in record["error"]["message"]
    alert = only_alert(aws)
    assert_alert_fields(alert, "carcosa", "full", "upload_failed", record["run_id"])
    assert "offsite-no-such-bucket" in alert["Message"]
    check = run_offsite("check", "--connect", config=record["config"])
    assert check.returncode == 1
    assert "does not exist" in check.stderr


def test_bad_credentials_fail_the_upload_without_retries(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path, redis_client: redis.Redis) -> None:
    strict = MotoServer(tmp_path / "strict-moto", env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    strict.start()
    try:
        s3 = strict.client("s3")
        try:
            s3.create_bucket(Bucket="strict-bucket",
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        finally:
            s3.close()
        record = failed_upload(make_config, start_worker, start_control, run_offsite,
                               strict.endpoint_url, "strict-bucket", 3, "5s",
                               Ledger(redis_client))
        assert record["upload_s"] < 5, "bad credentials must not be retried"
        assert "access denied" in record["error"]["message"]
        alert = only_alert(aws)
        assert_alert_fields(alert, "carcosa", "full", "upload_failed", record["run_id"])
    finally:
        strict.stop()


def test_unreachable_endpoint_is_retried_then_fails(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, proxy: SwitchableProxy, redis_client: redis.Redis) -> None:
    proxy.down()
    record = failed_upload(make_config, start_worker, start_control, run_offsite,
                           proxy.url, aws.bucket, 2, "2s", Ledger(redis_client))
    assert record["upload_s"] >= 2, "the backend must be retried before the upload fails"
    assert record["error"]["exit_code"] == 50
    alert = only_alert(aws)
    assert_alert_fields(alert, "carcosa", "full", "upload_failed", record["run_id"])


def test_staging_disk_full_is_its_own_class(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path, redis_client: redis.Redis) -> None:
    staging = tmp_path / "staging"
    if not mount_tiny_filesystem(staging, 512):
        pytest.skip("this machine does not allow mounting a tmpfs (needs root)")
    try:
        config = make_config({"carcosa": {"scripts": {
            "big": {"bash": "head -c 2000000 /dev/zero > big.bin"}}}})
        start_worker(config, "carcosa")
        start_control(config)
        record = backup(run_offsite, config, "carcosa", "full", expect_rc=1,
                        ledger=Ledger(redis_client))
        assert record["error"]["failure_class"] == "disk_full"
        assert "No space left on device" in record["error"]["stderr_tail"]
        alert = only_alert(aws)
        assert_alert_fields(alert, "carcosa", "full", "disk_full", record["run_id"])
    finally:
        unmount(staging)


def test_alert_survives_sns_outage_and_arrives_once(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, proxy: SwitchableProxy, redis_client: redis.Redis) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "exit 9"}}}},
                         alerts={"sns_topic_arn": aws.topic_arn, "endpoint_url": proxy.url,
                                 "region": "eu-west-1"},
                         watchdog=FAST_WATCHDOG)
    start_worker(config, "carcosa")
    control = start_control(config)
    proxy.down()
    record = backup(run_offsite, config, "carcosa", "full", expect_rc=1,
                    ledger=Ledger(redis_client))
    wait_until(lambda: "not delivered" in control.log_text(), timeout=20,
               what="a failed delivery attempt")
    assert aws.alerts(1, timeout=3) == []
    assert redis_client.zcard("offsite:alerts:pending") == 1
    proxy.up()
    alert = only_alert(aws, timeout=40)
    assert record["run_id"] in alert["Message"]
    wait_until(lambda: redis_client.zcard("offsite:alerts:pending") == 0, timeout=10,
               what="the outbox to empty")


def test_repeated_identical_failures_alert_once_then_recover(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path, redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    healthy = tmp_path / "healthy"
    config = make_config({"carcosa": {"scripts": {
        "s": {"bash": f"test -e {healthy} || {{ echo broken >&2; exit 4; }}"}}}},
        watchdog=FAST_WATCHDOG)
    start_worker(config, "carcosa")
    start_control(config)
    failed = [backup(run_offsite, config, "carcosa", "incr", expect_rc=1, ledger=ledger)
              for _ in range(3)]
    first = only_alert(aws)
    assert failed[0]["run_id"] in first["Message"]
    later = record_of(run_offsite, config, "carcosa", failed[2]["run_id"])
    wait_until(lambda: any("held back" in note for note in (ledger.record(
        failed[2]["run_id"]) or {"notes": []})["notes"]), timeout=10,
        what="the third failure to be summarised")
    assert later["state"] == "failed"
    healthy.touch()
    backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    alerts = aws.alerts(2, timeout=20)
    assert len(alerts) == 2, [a["Subject"] for a in alerts]
    recovery = alerts[1]
    assert attributes(recovery)["class"] == "recovered"
    assert "succeeded after 3 backup failure(s) since the last successful backup" in \
        recovery["Message"]
    assert "1 alerted, 2 held back" in recovery["Message"]


def test_worker_killed_during_upload_is_lost_once_and_rerun(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path, redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    data = tmp_path / "data"
    data.mkdir()
    for index in range(4):   # ten volumes of 5 MB: the kill comes once the first is written
        (data / f"part{index}.bin").write_bytes(os.urandom(12_000_000))
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         watchdog=FAST_WATCHDOG,
                         target={"url": f"boto3+s3://{aws.bucket}",
                                 "endpoint_url": aws.endpoint_url, "region": "eu-west-1",
                                 "volsize": 5})
    worker = start_worker(config, "carcosa")
    start_control(config)
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert queued.returncode == 0, describe(queued)
    run_id = queued.stdout.split()[1]
    wait_until(lambda: any(step["name"] == "upload" for step in (
        ledger.record(run_id) or {"steps": []})["steps"]), timeout=60, what="the upload")
    leftovers = tmp_path / "cache" / "carcosa" / ".upload-tmp"
    # duplicity itself is running under the worker and has written a volume in its temp folder
    wait_until(lambda: duplicity_uploading(worker.pid) and holds_a_file(leftovers),
               timeout=60, what="duplicity's upload under the worker")
    worker.kill(signal.SIGKILL)

    alert = only_alert(aws, timeout=30)
    lost = record_of(run_offsite, config, "carcosa", run_id)
    assert lost["state"] == "lost"
    assert lost["error"]["step"] == "upload"
    assert_alert_fields(alert, "carcosa", "full", "run_lost", run_id)

    assert any(leftovers.iterdir()), "the killed duplicity leaves its temporary volumes"
    worker.restart()
    rerun_id = run_id + "-rerun"
    wait_until(lambda: ledger.ended(rerun_id), timeout=120, what="the re-run to finish")
    assert record_of(run_offsite, config, "carcosa", rerun_id)["state"] == "succeeded"
    runs = [r["run_id"] for r in records(run_offsite, config, "carcosa")]
    assert sorted(runs) == sorted([run_id, rerun_id]), runs
    assert not leftovers.exists() or not any(leftovers.iterdir()), \
        sorted(str(p) for p in leftovers.rglob("*"))   # the re-run cleared them
    time.sleep(4)  # a few more watchdog ticks: nothing more is re-run or alerted
    assert len(records(run_offsite, config, "carcosa")) == 2
    alerts = aws.alerts(2, timeout=2)
    assert [attributes(a)["class"] for a in alerts] == ["run_lost", "recovered"]

    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)


def test_missed_slot_alerts_once_and_recovers_when_the_worker_starts(
        make_config: Any, start_process: Any, start_control: Any, start_worker: Any,
        run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    config = make_config({"ghost": {"scripts": {"s": {"bash": "echo hi > hi"}},
                                    "schedule": {"incr": {"every": "3s"},
                                                 "full": "0 0 1 1 *"}}},
                         watchdog=FAST_WATCHDOG,
                         target={"url": f"file://{tmp_path}/target"})
    start_control(config)
    start_process("beat", offsite_argv(config, "beat"), "Acquired lock")
    alerts = aws.alerts(1, timeout=30)
    missed = [a for a in alerts if attributes(a)["class"] == "backup_missed"]
    assert len(missed) == 1, [a["Subject"] for a in alerts]
    assert attributes(missed[0])["host"] == "ghost"
    assert "offsite worker ghost" in missed[0]["Message"]

    start_worker(config, "ghost")
    alerts = aws.alerts(2, timeout=40)
    recovered = [a for a in alerts if attributes(a)["class"] == "recovered"]
    assert len(recovered) == 1, [a["Subject"] for a in alerts]
    assert "missed" in recovered[0]["Subject"]
    time.sleep(3)
    assert len([a for a in aws.alerts(3, timeout=1)
                if attributes(a)["class"] == "backup_missed"]) == 1


def test_silent_worker_is_reported_down_then_back(
        make_config: Any, start_worker: Any, start_control: Any, aws: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         watchdog={**FAST_WATCHDOG, "worker_timeout": "3s"})
    worker = start_worker(config, "carcosa")
    start_control(config)
    time.sleep(3)
    assert aws.alerts(1, timeout=1) == []
    worker.kill(signal.SIGKILL)
    down = only_alert(aws, timeout=30)
    assert attributes(down) == {"host": "carcosa", "type": "any", "class": "worker_down"}
    worker.restart()
    alerts = aws.alerts(2, timeout=30)
    assert attributes(alerts[1])["class"] == "recovered"


def test_redis_restart_during_a_run_is_survived(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        redis_server: Any, tmp_path: Path, redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    started = tmp_path / "started"
    config = make_config({"carcosa": {"scripts": {
        "slow": {"bash": f"touch {started}; sleep 6; echo done > out.txt"}}}},
        watchdog={**FAST_WATCHDOG, "lease_ttl": "20s"},
        target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    start_control(config)
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    run_id = queued.stdout.split()[1]
    wait_until(started.exists, timeout=30, what="the script to start")
    redis_server.restart(save=True, down_for=2.0)
    wait_until(lambda: ledger.ended(run_id), timeout=90, what="the run to end")
    assert record_of(run_offsite, config, "carcosa", run_id)["state"] == "succeeded"
    second = backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    assert second["state"] == "succeeded", "workers must reconnect after the restart"


def test_beat_and_workers_ride_out_a_redis_restart_without_doubling_slots(
        make_config: Any, start_process: Any, start_worker: Any, start_control: Any,
        run_offsite: Any, redis_server: Any, tmp_path: Path,
        redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo x > x"}},
                                      "schedule": {"incr": {"every": "2s"},
                                                   "full": "0 0 1 1 *"}}},
                         watchdog={**FAST_WATCHDOG, "lease_ttl": "20s"},
                         target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    start_control(config)
    beat = start_process("beat", offsite_argv(config, "beat"), "Acquired lock")
    wait_until(lambda: len(ledger.records()) >= 2, timeout=30, what="first runs")
    redis_server.restart(save=True, down_for=3.0)
    # two more successes than before the restart (counting only successes: a slot skipped or
    # expired meanwhile must not raise the bar the successes have to reach)
    before = len([r for r in records(run_offsite, config) if r["state"] == "succeeded"])
    wait_until(lambda: len([r for r in ledger.records()
                            if r["state"] == "succeeded"]) >= before + 2,
               timeout=60, what="runs after the restart")
    assert beat.alive, "beat must reconnect, not exit"
    runs = records(run_offsite, config)
    slots = [r["scheduled_for"] for r in runs]
    assert len(slots) == len(set(slots)), "a slot was scheduled twice"
    assert not {r["state"] for r in runs} & {"failed", "lost"}, runs
