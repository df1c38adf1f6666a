"""A host's backup end to end: CLI -> Redis -> host worker chain -> duplicity -> S3 (moto),
failures -> control worker -> SNS -> SQS. Every part is the real one."""
from __future__ import annotations

import filecmp
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from celery import Celery

from tests.helpers import describe, find_leaks, ledger_json, wait_until
from tests.seaweed import S3_SERVERS

HOSTS = ("carcosa", "nyarlathotep")


def copy_script(source: Path) -> dict[str, str]:
    return {"bash": f"cp -a {source}/. ."}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def backup(run_offsite: Callable[..., Any], config: Path, host: str, kind: str,
           expect_rc: int = 0) -> dict[str, Any]:
    """Run `offsite backup --wait` and return the run's record from `offsite status --json`."""
    result = run_offsite("backup", host, "--type", kind, "--wait", "--timeout", "90",
                         config=config)
    assert result.returncode == expect_rc, describe(result)
    run_id = result.stdout.split()[1]
    return record_of(run_offsite, config, host, run_id)


def record_of(run_offsite: Callable[..., Any], config: Path, host: str,
              run_id: str) -> dict[str, Any]:
    """The run's record as `offsite status HOST --json` shows it (read in-process: tests.helpers
    .ledger_json)."""
    records = {record["run_id"]: record for record in ledger_json(config, host)}
    return records[run_id]


def same_tree(left: Path, right: Path) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(left / sub, right / sub) for sub in comparison.common_dirs)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    roots = {}
    for host in HOSTS:
        root = tmp_path / "data" / host
        write_tree(root, {"db/dump.sql": f"-- {host}\n".encode() * 1000,
                          "blob.bin": os.urandom(300_000),
                          "deep/a/b/c.txt": host.encode()})
        roots[host] = root
    return roots


@pytest.fixture
def fleet(make_config: Any, sources: dict[str, Path], tmp_path: Path) -> Path:
    """Two hosts with two scripts each (bash and python)."""
    hosts = {host: {"scripts": {
        "files": copy_script(sources[host]),
        "meta": {"python": "import os; open('host.txt', 'w').write(os.environ['OFFSITE_HOST'])"},
    }} for host in HOSTS}
    return make_config(hosts)


@pytest.mark.slow
@pytest.mark.parametrize("target_store", S3_SERVERS, indirect=True)
def test_full_incremental_restore_round_trip_across_two_hosts(
        fleet: Path, sources: dict[str, Path], start_worker: Any, run_offsite: Any,
        target_store: Any, tmp_path: Path) -> None:
    for host in HOSTS:
        start_worker(fleet, host)

    fulls = {host: backup(run_offsite, fleet, host, "full") for host in HOSTS}
    time.sleep(1.1)  # duplicity names backups by the second
    between = int(time.time())
    time.sleep(1.1)
    (sources["carcosa"] / "db/dump.sql").write_text("-- changed\n")
    (sources["carcosa"] / "new.txt").write_text("added after the full\n")
    incr = backup(run_offsite, fleet, "carcosa", "incr")

    for host, record in fulls.items():
        assert record["state"] == "succeeded"
        assert record["type"] == "full"
        assert [step["name"] for step in record["steps"]] == ["script:files", "script:meta",
                                                              "upload"]
        assert all(step["worker"].startswith(f"{host}@") for step in record["steps"]), record
        assert all(step["exit_code"] == 0 for step in record["steps"])
        assert record["bytes_uploaded"] > 100_000
        assert record["stats"]["source_files"] >= 4
    assert incr["state"] == "succeeded" and incr["type"] == "incr"
    assert 0 < incr["bytes_uploaded"] < fulls["carcosa"]["bytes_uploaded"] / 10

    for host, newest in (*[(h, r) for h, r in fulls.items() if h != "carcosa"],
                         ("carcosa", incr)):   # what the target holds, as the run listed it
        assert newest["stored_bytes"] == target_store.stored_bytes(f"{host}/"), host
    keys = target_store.object_keys()
    for host in HOSTS:
        own = [key for key in keys if key.startswith(f"{host}/")]
        assert any(".manifest" in key for key in own), keys
    assert all(key.split("/", 1)[0] in HOSTS for key in keys), keys
    assert any(".manifest.gpg" in key or key.endswith(".gpg") for key in keys)

    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=fleet)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", sources["carcosa"])
    assert (restored / "meta/host.txt").read_text() == "carcosa"

    older = tmp_path / "older"
    result = run_offsite("restore", "carcosa", str(older), "--time", str(between), config=fleet)
    assert result.returncode == 0, describe(result)
    assert (older / "files/db/dump.sql").read_text().startswith("-- carcosa")
    assert not (older / "files/new.txt").exists()

    other = tmp_path / "other"
    assert run_offsite("restore", "nyarlathotep", str(other), config=fleet).returncode == 0
    assert same_tree(other / "files", sources["nyarlathotep"])

    staging = tmp_path / "staging"
    assert not any(staging.iterdir()) if staging.exists() else True


@pytest.mark.slow
def test_failing_script_stops_the_chain_and_alerts_once(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {
        "first": {"bash": "echo fine > ok.txt"},
        "broken": {"bash": "echo 'pg_dump: connection refused' >&2; false"},
        "never": {"bash": "touch never-ran"},
    }}})
    start_worker(config, "carcosa")
    start_control(config)

    record = backup(run_offsite, config, "carcosa", "full", expect_rc=1)

    assert record["state"] == "failed"
    assert record["error"]["step"] == "script:broken"
    assert record["error"]["exit_code"] == 1
    assert "pg_dump: connection refused" in record["error"]["stderr_tail"]
    assert [step["name"] for step in record["steps"]] == ["script:first", "script:broken"]
    assert aws.object_keys() == [], "the upload must not run after a failed script"
    assert not (tmp_path / "staging" / "carcosa").exists()

    alerts = aws.alerts(1, timeout=20)
    alerts = aws.alerts(2, timeout=3)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert "carcosa" in alert["Subject"] and "full" in alert["Subject"]
    assert len(alert["Subject"]) <= 100
    assert record["run_id"] in alert["Message"]
    assert "script:broken" in alert["Message"]
    assert "pg_dump: connection refused" in alert["Message"]
    assert alert["MessageAttributes"]["host"]["Value"] == "carcosa"


@pytest.mark.slow
def test_hanging_script_is_killed_with_its_children(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        aws: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    config = make_config({"carcosa": {"scripts": {
        "hang": {"bash": f"sleep 600 & echo $! > {pidfile}; wait", "timeout": "2s"},
    }}})
    start_worker(config, "carcosa")
    start_control(config)

    record = backup(run_offsite, config, "carcosa", "full", expect_rc=1)

    assert record["state"] == "failed"
    assert record["error"]["step"] == "script:hang"
    assert record["error"]["failure_class"] == "script_timeout"
    assert "timed out after 2s" in record["error"]["message"]
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not Path(f"/proc/{grandchild}").exists()
               or Path(f"/proc/{grandchild}/stat").read_text().split()[2] == "Z",
               timeout=10, what="the script's child to be killed")
    assert aws.object_keys() == []
    alerts = aws.alerts(1, timeout=20)
    assert len(aws.alerts(2, timeout=3)) == 1
    assert "timed out" in alerts[0]["Message"]


@pytest.mark.slow
def test_no_secret_reaches_redis_or_logs(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        offsite_env: Any, redis_client: redis.Redis, tmp_path: Path, aws: Any) -> None:
    fail_flag = tmp_path / "fail-now"
    config = make_config({"carcosa": {"scripts": {
        "ok": {"bash": "echo data > d.txt"},
        "env": {"bash": "env > seen-env.txt; test -z \"${PASSPHRASE:-}\""},
        "maybe": {"bash": f"if [ -e {fail_flag} ]; then echo failing >&2; exit 3; fi"},
    }}}, alerts=None)
    worker = start_worker(config, "carcosa")
    control = start_control(config)
    backup(run_offsite, config, "carcosa", "full")
    fail_flag.touch()
    backup(run_offsite, config, "carcosa", "incr", expect_rc=1)
    wait_until(lambda: "ALERT" in control.log_text(), timeout=15, what="the logged alert")

    secrets = [*offsite_env.secrets, make_config.passphrase]
    dump = []
    for key in redis_client.scan_iter("*"):
        kind = redis_client.type(key)
        dump.append(key)
        if kind == "string":
            dump.append(redis_client.get(key) or "")
        elif kind == "list":
            dump.extend(redis_client.lrange(key, 0, -1))
        elif kind == "hash":
            dump.extend(f"{k}={v}" for k, v in redis_client.hgetall(key).items())
        elif kind == "set":
            dump.extend(redis_client.smembers(key))
        elif kind == "zset":
            dump.extend(redis_client.zrange(key, 0, -1))
    assert len(dump) > 10
    assert find_leaks("\n".join(dump), secrets) == []
    logs = worker.log_text() + control.log_text()
    assert find_leaks(logs, secrets) == []


def test_unknown_host_is_a_usage_error(make_config: Any, run_offsite: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}})
    for args in (("backup", "carcosaa", "--type", "full"), ("worker", "carcosaa")):
        result = run_offsite(*args, config=config, timeout=30)
        assert result.returncode == 2, describe(result)
        assert "unknown host 'carcosaa'" in result.stderr
        assert "carcosa" in result.stderr.split("configured hosts:")[1]
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_message_for_another_host_is_rejected_and_recorded(
        make_config: Any, start_worker: Any, redis_client: redis.Redis,
        redis_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}},
                          "hali": {"scripts": {"s": {"bash": f"touch {marker}"}}}})
    worker = start_worker(config, "carcosa")
    rogue = Celery(broker=redis_url)
    rogue.conf.task_serializer = "json"
    try:
        rogue.send_task("tasks.backup.start_backup", args=("hali", "full", "hali-full-x"),
                        queue="backup.carcosa")
    finally:
        rogue.close()
    wait_until(lambda: redis_client.llen("offsite:rejected") == 1, timeout=15,
               what="the rejected message to be recorded")
    assert "hali" in redis_client.lindex("offsite:rejected", 0)
    assert "refusing" in worker.log_text()
    assert not marker.exists()
    assert redis_client.get("offsite:run:hali-full-x") is None


def test_broker_down_gives_one_clear_line(make_config: Any, run_offsite: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         broker_url="redis://127.0.0.1:1/0")
    result = run_offsite("backup", "carcosa", "--type", "full", config=config, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("offsite: error: cannot reach the broker")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_local_backup_and_restore_without_broker(
        make_config: Any, run_offsite: Any, sources: dict[str, Path], tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"files": copy_script(sources["carcosa"])}}},
                         broker_url="redis://127.0.0.1:1/0",
                         target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    assert "succeeded" in result.stdout
    (sources["carcosa"] / "later.txt").write_text("x")
    result = run_offsite("backup", "carcosa", "--type", "incr", "--local", config=config)
    assert result.returncode == 0, describe(result)
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", sources["carcosa"])


def test_restore_into_non_empty_folder_is_refused(make_config: Any, run_offsite: Any,
                                                 tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}})
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    result = run_offsite("restore", "carcosa", str(dest), config=config)
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert (dest / "keep.txt").read_text() == "mine"
