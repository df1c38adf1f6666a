"""`offsite hosts`: the per-host summary from the ledger's facts, worst first; and the cause in
`offsite status`'s error column."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from offsite.constants import RunState, RunType
from offsite.ledger.facts import HOST_FACTS_KEY
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord
from tests.fleet_states import EXPECTED_ORDER, HOSTS, record, write_fleet
from tests.helpers import describe


def test_hosts_json_orders_three_hosts_worst_first_with_their_facts(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    config = make_config(HOSTS)
    write_fleet(redis_client)
    result = run_offsite("hosts", "--json", config=config)
    assert result.returncode == 0, describe(result)
    rows = json.loads(result.stdout)
    assert [row["host"] for row in rows] == EXPECTED_ORDER
    failing, stale, healthy = rows
    assert (failing["health"], stale["health"], healthy["health"]) == \
        ("failed", "stale", "healthy")
    assert failing["last_incr"]["state"] == "failed"
    assert failing["last_full"]["state"] == "succeeded"
    assert failing["newest_run"]["state"] == "failed"
    assert "upload" in failing["reason"]
    assert stale["conditions"] == ["backup_stale"]
    assert stale["last_success_age_s"] > 19 * 86400
    assert stale["last_incr"] is None and stale["last_verify"] is None
    assert healthy["last_verify"]["state"] == "succeeded"
    assert healthy["last_verify"]["last_success"] is not None
    assert healthy["last_full"]["bytes_uploaded"] == 6_000_000
    assert healthy["last_incr"]["duration_s"] == 40.0
    assert healthy["conditions"] == [] and healthy["config_drift"] is False
    for row in rows:
        assert set(row) >= {"host", "health", "last_full", "last_incr", "last_verify",
                            "last_success", "last_success_age_s", "conditions", "newest_run"}


def test_hosts_table_has_one_aligned_line_per_host_worst_first(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    config = make_config(HOSTS)
    write_fleet(redis_client)
    result = run_offsite("hosts", config=config)
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 host(s): 1 failed, 0 lost, 1 stale, 0 unproven, 1 healthy")
    header, *rows = lines[1:]
    assert [row.split()[1] for row in rows] == EXPECTED_ORDER
    for column in ("LAST FULL", "LAST INCR", "LAST VERIFY", "SUCCESS", "NEWEST"):
        start = header.index(column)
        assert all(row[start - 2:start] == "  " for row in rows), (column, rows)
    assert "backup_stale" in rows[1]


def test_hosts_table_stays_one_line_per_host_at_200_hosts(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    hosts = {f"web-{index:03d}.example.internal": {"scripts": {"s": {"bash": "true"}}}
             for index in range(200)}
    config = make_config(hosts)
    store = RedisRunStore(redis_client)
    now = datetime.now(timezone.utc)
    for index, host in enumerate(hosts):
        state = RunState.FAILED if index % 50 == 7 else RunState.SUCCEEDED
        store.create(record(host, RunType.INCR, state, now - timedelta(hours=index % 24), 5, 10))
    result = run_offsite("hosts", config=config)
    assert result.returncode == 0, describe(result)
    header, *rows = result.stdout.splitlines()[1:]
    assert len(rows) == 200
    assert [row.split()[0] for row in rows[:4]] == ["failed"] * 4
    assert max(len(row) for row in rows) <= 200


def test_hosts_with_the_broker_down_exits_1_with_one_line(
        make_config: Any, run_offsite: Any) -> None:
    config = make_config(HOSTS, broker_url="redis://127.0.0.1:1/0")
    result = run_offsite("hosts", config=config)
    assert result.returncode == 1, describe(result)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach the broker" in result.stderr


@pytest.mark.slow
def test_status_error_column_shows_the_cause_not_its_prefix(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    config = make_config(HOSTS)
    write_fleet(redis_client)
    result = run_offsite("status", "failing-1", config=config)
    assert result.returncode == 0, describe(result)
    failed = next(line for line in result.stdout.splitlines() if " failed " in line)
    assert "upload: duplicity exited 50: the bucket does not exist" in failed
    assert "host failing-1 step upload" not in failed
    assert "& more" in failed   # 90 characters of cause, more than the old 60


def test_runs_are_counted_once_when_they_end(redis_client: redis.Redis) -> None:
    store = RedisRunStore(redis_client)
    now = datetime.now(timezone.utc)
    run = record("carcosa", RunType.FULL, RunState.RUNNING, now, 1, 0)
    store.create(run.model_copy(update={"finished_at": None}))

    def finish(current: RunRecord) -> None:
        current.state, current.finished_at = RunState.SUCCEEDED, now

    def note(current: RunRecord) -> None:
        current.notes.append("looked at again")
    store.update(run.run_id, finish)
    store.update(run.run_id, note)   # a later write of a final record counts nothing more
    facts = redis_client.hgetall(HOST_FACTS_KEY + "carcosa")
    assert facts["count:full:succeeded"] == "1"
    assert "count:full:running" not in facts
    assert facts["finished:full:run"] == run.run_id
    assert facts["success:full:run"] == run.run_id


@pytest.mark.slow
def test_all_five_classes_sort_failed_lost_stale_unproven_healthy(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis) -> None:
    from offsite.watch.alerts import condition_alert
    from offsite.watch.conditions import Conditions
    from offsite.watch.alerts import AlertOutbox
    hosts = dict(HOSTS)
    hosts.update({"lost-1": HOSTS["healthy-1"], "unproven-1": HOSTS["healthy-1"],
                  "overdue-1": HOSTS["healthy-1"]})
    config = make_config(hosts)
    now = datetime.now(timezone.utc)
    write_fleet(redis_client, now)
    store = RedisRunStore(redis_client)
    for host in ("lost-1", "unproven-1", "overdue-1"):
        store.create(record(host, RunType.INCR, RunState.SUCCEEDED, now - timedelta(hours=2),
                            5, 10))
    running = record("overdue-1", RunType.FULL, RunState.RUNNING, now - timedelta(hours=1), 0,
                     0).model_copy(update={"finished_at": None})
    store.create(running)
    conditions = Conditions(redis_client, AlertOutbox(redis_client))
    for key, host, kind in (("worker_down:lost-1", "lost-1", "worker_down"),
                            ("unproven:unproven-1", "unproven-1", "restore_unproven"),
                            (f"overdue:{running.run_id}", "overdue-1", "run_overdue")):
        conditions.raise_(key, condition_alert(host, "any", kind, "x"), now)
    result = run_offsite("hosts", "--json", config=config)
    assert result.returncode == 0, describe(result)
    rows = json.loads(result.stdout)
    assert [(row["host"], row["health"]) for row in rows] == [
        ("failing-1", "failed"), ("lost-1", "lost"), ("stale-1", "stale"),
        ("overdue-1", "stale"), ("unproven-1", "unproven"), ("healthy-1", "healthy")]
    overdue = next(row for row in rows if row["host"] == "overdue-1")
    assert overdue["conditions"] == ["run_overdue"]
    assert overdue["newest_run"]["state"] == "running"
