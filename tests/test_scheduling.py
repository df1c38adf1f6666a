"""Scheduling end to end: real `offsite beat` and `offsite worker` processes on a real Redis.

Schedules of a few seconds (`{every: 3s}`) stand in for the crons; records are read back with
`offsite status --json`. Targets are file:// under tmp_path: S3 is not what these tests are about.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from offsite.constants import LEASE_KEY, REJECTED_KEY
from offsite.ledger.records import RedisRunStore
from offsite.schedule.specs import utcnow
from tests.helpers import (VENV_BIN, ManagedProcess, describe, ledger_json, offsite_argv,
                           run_command, wait_until)

BEAT_LOCKED = "beat: Acquired lock"
BEAT_STARTING = "beat: Starting..."
BEAT_RELEASED = "beat: Releasing lock"
SENT = "Scheduler: Sending due task"

Record = dict[str, Any]
StartProcess = Callable[..., ManagedProcess]


# ------------------------------------------------------------------ helpers


def script(prefix: str = "") -> dict[str, Any]:
    """One tiny dump script; `prefix` is bash run before it (a sleep, a hang)."""
    return {"data": {"bash": f"{prefix}echo \"$OFFSITE_RUN_ID\" > run.txt"}}


def file_config(make_config: Any, tmp_path: Path, hosts: dict[str, Any], **overrides: Any) -> Path:
    return make_config(hosts, target={"url": f"file://{tmp_path}/target"}, alerts=None,
                       **overrides)


def start_beat(start_process: StartProcess, config: Path, name: str = "beat",
               ready: str = BEAT_LOCKED) -> ManagedProcess:
    return start_process(name, offsite_argv(config, "beat"), ready)


def records(run_offsite: Any, config: Path) -> list[Record]:
    return ledger_json(config, limit=500)


def when(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def of(rows: list[Record], host: str | None = None, kind: str | None = None,
       state: str | None = None) -> list[Record]:
    """The records matching, oldest slot first."""
    chosen = [r for r in rows if (host is None or r["host"] == host)
              and (kind is None or r["run_id"].split("-")[-2] == kind)
              and (state is None or r["state"] == state)]
    return sorted(chosen, key=lambda r: r["scheduled_for"] or r["created_at"])


def entry_of(record: Record) -> str:
    """`carcosa-full` for `carcosa-full-20261201T000000Z`: the beat entry that sent it."""
    return record["run_id"].rsplit("-", 1)[0]


def busy_span(record: Record) -> tuple[datetime, datetime] | None:
    """From the first step's start to the last step's end: when the run occupied its host."""
    steps = record["steps"]
    if not steps:
        return None
    return (min(when(s["started_at"]) for s in steps),
            max(when(s["finished_at"]) for s in steps))


def assert_never_overlapping(rows: list[Record]) -> None:
    spans = sorted((span, r["run_id"]) for r in rows if (span := busy_span(r)))
    for (earlier, first), (later, second) in zip(spans, spans[1:]):
        assert earlier[1] <= later[0], f"{first} {earlier} overlaps {second} {later}"


def store_rows(store: RedisRunStore) -> list[Record]:
    """The records straight from Redis, for polling (the assertions use `offsite status`)."""
    return [json.loads(r.to_json()) for r in store.recent(None, 500)]


def all_final(store: RedisRunStore) -> bool:
    rows = store.recent(None, 500)
    return bool(rows) and all(r.is_final for r in rows)


def log_times(log: str, marker: str) -> list[datetime]:
    """Times of the Celery log lines containing marker (`[2026-11-29 00:57:49,821: INFO/...`)."""
    return [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            for line in log.splitlines() if marker in line
            and (m := re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):", line))]


def stop_beat_between_sends(beat: ManagedProcess) -> datetime:
    """SIGTERM right after a send, while beat sleeps until its next slot, so the stop never
    cuts a send in half (the counts below compare log lines, records and messages); returns
    when beat stopped."""
    sends = beat.log_text().count(SENT)
    wait_until(lambda: beat.log_text().count(SENT) > sends, timeout=10, what="beat's next send")
    time.sleep(0.3)  # a full and an incr of the same tick go out a few ms apart
    beat.stop()
    return datetime.now().astimezone()


def run_id_of(output: str) -> str:
    match = re.search(r"queued (\S+) on queue", output)
    assert match, output
    return match.group(1)


# ------------------------------------------------------------------ the tests


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_two_hosts_runs_arrive_on_their_own_queue_one_at_a_time(
        make_config: Any, tmp_path: Path, start_process: StartProcess, start_worker: Any,
        run_offsite: Any, redis_client: redis.Redis) -> None:
    config = file_config(
        make_config, tmp_path,
        {"carcosa": {"scripts": script("sleep 0.3; ")},
         "nyarlathotep": {"scripts": script("sleep 0.3; "),
                          "schedule": {"incr": {"every": "4s"}}}},
        schedule={"full": {"every": "7s"}, "incr": {"every": "3s"}})
    store = RedisRunStore(redis_client)
    for host in ("carcosa", "nyarlathotep"):
        start_worker(config, host)
    beat = start_beat(start_process, config)

    wait_until(lambda: len(of(store_rows(store), state="succeeded")) >= 6, timeout=45,
               what="six succeeded runs", interval=0.5)
    beat.stop()
    wait_until(lambda: all_final(store), timeout=45, what="every run to end", interval=0.5)

    rows = records(run_offsite, config)
    assert {r["host"] for r in rows} == {"carcosa", "nyarlathotep"}
    for host in ("carcosa", "nyarlathotep"):
        mine = of(rows, host)
        assert len(of(mine, state="succeeded")) >= 2, mine
        for record in mine:
            assert record["run_id"].startswith(f"{host}-")
            assert record["state"] in ("succeeded", "skipped", "expired"), record
            if record["state"] != "succeeded":
                assert record["notes"], record  # never dropped without a reason
                assert not record["steps"], record
                continue
            assert [s["name"] for s in record["steps"]] == ["script:data", "upload"]
            for step in record["steps"]:
                assert step["worker"].startswith(f"{host}@"), (record["run_id"], step)
                assert step["exit_code"] == 0
        assert_never_overlapping(mine)
        # the host override applies: nyarlathotep's incrementals are 4 s apart, carcosa's 3 s
        slots = [when(r["scheduled_for"]) for r in of(mine, kind="incr")]
        gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:])]
        expected = 4 if host == "nyarlathotep" else 3
        assert gaps and all(abs(gap - expected) < 1 for gap in gaps), gaps
    assert redis_client.llen(REJECTED_KEY) == 0


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_two_beats_at_once_send_each_slot_once(
        make_config: Any, tmp_path: Path, start_process: StartProcess, run_offsite: Any,
        redis_client: redis.Redis) -> None:
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script()}},
                         schedule={"full": {"every": "3s"}, "incr": {"every": "2s"}})
    first = start_beat(start_process, config, "beat-a")
    second = start_beat(start_process, config, "beat-b", ready=BEAT_STARTING)

    time.sleep(5)
    assert BEAT_LOCKED not in second.log_text(), "the standby beat took the lock too"
    assert SENT not in second.log_text()
    stop_beat_between_sends(first)  # a clean stop releases the lock: the standby takes over
    second.wait_for(BEAT_LOCKED, timeout=20)
    time.sleep(4)
    stop_beat_between_sends(second)

    rows = records(run_offsite, config)
    sent = first.log_text().count(SENT) + second.log_text().count(SENT)
    # every send made one record and one message: no slot was sent twice
    assert len(rows) == sent
    assert redis_client.llen("backup.carcosa") == sent
    assert len({r["run_id"] for r in rows}) == len(rows)
    assert first.log_text().count(BEAT_LOCKED) == 1
    assert second.log_text().count(BEAT_LOCKED) == 1
    assert log_times(second.log_text(), SENT)[0] >= log_times(first.log_text(), BEAT_RELEASED)[0]
    for kind, period in (("full", 3), ("incr", 2)):
        slots = [when(r["scheduled_for"]) for r in of(rows, "carcosa", kind)]
        gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:])]
        assert len(slots) >= 4, slots
        assert all(gap >= period - 0.5 for gap in gaps), f"{kind} slots sent twice: {gaps}"


_SEND_SLOT_TWICE = """
from datetime import datetime, timezone
from offsite.constants import BackupType
from tasks.dispatch import send_slot
from workers.context import current_config, run_store

now = datetime.now(timezone.utc)
slot = now.replace(microsecond=0)
for _ in range(2):  # what a beat that died between sending and saving the entry does
    print(send_slot(current_config(), run_store(), "carcosa", BackupType.FULL, slot, now).run_id)
"""


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_slot_sent_twice_runs_once(
        make_config: Any, tmp_path: Path, start_worker: Any, run_offsite: Any,
        offsite_env: Any, redis_client: redis.Redis) -> None:
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script("sleep 1; ")}})
    sent = run_command([str(VENV_BIN / "python"), "-c", _SEND_SLOT_TWICE],
                       env={**offsite_env, "OFFSITE_CONFIG": str(config)}, cwd=tmp_path,
                       timeout=60)
    assert sent.returncode == 0, describe(sent)
    first, second = sent.stdout.split()
    assert first == second
    assert redis_client.llen("backup.carcosa") == 2  # two messages, one run

    worker = start_worker(config, "carcosa")
    store = RedisRunStore(redis_client)
    wait_until(lambda: all_final(store), timeout=30, what="the run to end", interval=0.2)
    worker.wait_for(f"run {first} is already running; ignoring this message", timeout=10)

    (record,) = records(run_offsite, config)
    assert record["run_id"] == first
    assert record["state"] == "succeeded"
    assert [s["name"] for s in record["steps"]] == ["script:data", "upload"]
    manifests = [p.name for p in (tmp_path / "target" / "carcosa").iterdir()
                 if ".manifest" in p.name]
    assert len(manifests) == 1, manifests


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_beat_down_across_several_slots_catches_up_once_per_entry_marked_late(
        make_config: Any, tmp_path: Path, start_process: StartProcess, run_offsite: Any,
        redis_client: redis.Redis) -> None:
    periods = {"carcosa-full": 3, "carcosa-incr": 2}
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script()}},
                         schedule={"full": {"every": "3s"}, "incr": {"every": "2s"}})
    store = RedisRunStore(redis_client)
    beat = start_beat(start_process, config)
    wait_until(lambda: {r.type.value for r in store.recent("carcosa")} == {"full", "incr"},
               timeout=15, what="a run of each entry", interval=0.2)
    stopped = stop_beat_between_sends(beat)
    down_s = 8  # 2-3 full and 4 incr slots go by
    time.sleep(down_s)
    restarted = datetime.now().astimezone()
    beat.start()
    wait_until(lambda: len([r for r in store.recent("carcosa", 500)
                            if r.created_at > restarted]) >= 5,
               timeout=20, what="the catch-ups and the next slots", interval=0.2)
    stop_beat_between_sends(beat)

    rows = records(run_offsite, config)
    for entry, period in periods.items():
        mine = [r for r in of(rows) if entry_of(r) == entry]
        before = [r for r in mine if when(r["created_at"]) < stopped]
        after = [r for r in mine if when(r["created_at"]) > restarted]
        assert before and len(after) >= 2, mine
        assert len(before) + len(after) == len(mine)
        catch_up, *on_time = after
        # one run for the whole downtime: it stands for the first slot missed, says how late
        # it ran and how many slots it collapsed
        assert when(before[-1]["scheduled_for"]) < when(catch_up["scheduled_for"]) < restarted
        assert catch_up["late_by_s"] >= down_s - period - 0.5
        (note,) = catch_up["notes"]
        assert note.startswith("ran late by ")
        assert re.search(r"; \d+ missed slots collapsed into this run$", note), note
        # every other run, before the stop and after the catch-up, is on time and on schedule
        for record in before + on_time:
            assert record["late_by_s"] < 1 and record["notes"] == [], record
        slots = [when(r["scheduled_for"]) for r in on_time]
        # after the catch-up, the next slot is the grid's next (anchor + k*period), not one
        # period after the catch-up was sent: slots never drift
        assert slots[0] > when(catch_up["created_at"]) - timedelta(seconds=0.5)
        assert all(slot.timestamp() % period == 0 for slot in slots), slots
        gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:])]
        assert all(gap == period for gap in gaps), gaps


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_full_and_incr_due_together_run_one_and_skip_the_incr(
        make_config: Any, tmp_path: Path, start_process: StartProcess, start_worker: Any,
        run_offsite: Any, redis_client: redis.Redis) -> None:
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script("sleep 0.5; ")}},
                         schedule={"full": {"every": "4s"}, "incr": {"every": "4s"}})
    store = RedisRunStore(redis_client)
    start_worker(config, "carcosa")
    beat = start_beat(start_process, config)
    wait_until(lambda: len(of(store_rows(store), kind="incr", state="skipped")) >= 3,
               timeout=40, what="three skipped incrementals", interval=0.5)
    beat.stop()
    wait_until(lambda: all_final(store), timeout=45, what="every run to end", interval=0.5)

    rows = records(run_offsite, config)
    fulls, incrs = of(rows, kind="full"), of(rows, kind="incr")
    assert len(of(fulls, state="succeeded")) >= 3, fulls
    assert all(r["state"] == "skipped" for r in incrs), incrs
    for record in incrs:
        assert not record["steps"]
        assert re.search(r"full backup carcosa-full-\S+ of this host is \w+ and covers this "
                         r"incremental", " ".join(record["notes"])), record
    assert all(r["state"] in ("succeeded", "expired") for r in fulls), fulls
    assert_never_overlapping(rows)


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_full_that_finds_an_incr_running_waits_for_it(
        make_config: Any, tmp_path: Path, start_worker: Any, run_offsite: Any) -> None:
    slow_incr = 'if [ "$OFFSITE_BACKUP_TYPE" = incr ]; then sleep 4; fi; '
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script(slow_incr)}})
    start_worker(config, "carcosa")
    seeded = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "60",
                         config=config)
    assert seeded.returncode == 0, describe(seeded)

    incr = run_offsite("backup", "carcosa", "--type", "incr", config=config)
    assert incr.returncode == 0, describe(incr)
    incr_id = run_id_of(incr.stdout)
    full = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "60",
                       config=config)
    assert full.returncode == 0, describe(full)

    rows = {r["run_id"]: r for r in records(run_offsite, config)}
    full_record, incr_record = rows[run_id_of(full.stdout)], rows[incr_id]
    assert incr_record["state"] == "succeeded" and incr_record["type"] == "incr"
    assert full_record["state"] == "succeeded" and full_record["type"] == "full"
    assert f"waited: host busy with run {incr_id}; the full backup waits" in full_record["notes"]
    incr_span, full_span = busy_span(incr_record), busy_span(full_record)
    assert incr_span and full_span and incr_span[1] <= full_span[0]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_lease_of_a_killed_worker_expires_and_the_next_full_proceeds(
        make_config: Any, tmp_path: Path, start_worker: Any, run_offsite: Any,
        redis_client: redis.Redis) -> None:
    hang = tmp_path / "hang"
    hang.touch()
    config = file_config(
        make_config, tmp_path,
        {"carcosa": {"scripts": script(f"if [ -e {hang} ]; then rm {hang}; exec sleep 60; fi; ")}},
        watchdog={"lease_ttl": "10s"})
    store = RedisRunStore(redis_client)
    worker = start_worker(config, "carcosa")
    queued = run_offsite("backup", "carcosa", "--type", "full", config=config)
    assert queued.returncode == 0, describe(queued)
    dead_id = run_id_of(queued.stdout)
    wait_until(lambda: not hang.exists(), timeout=20, what="the script to hang")
    assert redis_client.get(LEASE_KEY + "carcosa") == dead_id

    worker.kill()  # SIGKILL to the worker's process group: nothing can release the lease
    worker.wait()
    killed_at = datetime.now().astimezone()
    assert redis_client.get(LEASE_KEY + "carcosa") == dead_id
    worker.start()
    full = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "60",
                       config=config)
    assert full.returncode == 0, describe(full)
    incr = run_offsite("backup", "carcosa", "--type", "incr", "--wait", "--timeout", "60",
                       config=config)
    assert incr.returncode == 0, describe(incr)

    rows = {r["run_id"]: r for r in records(run_offsite, config)}
    new = rows[run_id_of(full.stdout)]
    assert new["state"] == "succeeded"
    assert f"waited: host busy with run {dead_id}; the full backup waits" in new["notes"]
    assert when(new["started_at"]) >= killed_at + timedelta(seconds=10 - 3)
    assert [s["worker"].startswith("carcosa@") for s in new["steps"]] == [True, True]
    # the dead run's full does not cover later incrementals: only a live lease does
    after = rows[run_id_of(incr.stdout)]
    assert after["state"] == "succeeded" and after["type"] == "incr", after
    wait_until(lambda: redis_client.get(LEASE_KEY + "carcosa") is None, timeout=30,
               what="the incremental to free its host after its final record")
    assert store.get(dead_id) is not None


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_incr_is_promoted_without_a_chain_and_when_the_full_is_too_old(
        make_config: Any, tmp_path: Path, start_worker: Any, run_offsite: Any) -> None:
    config = file_config(make_config, tmp_path,
                         {"carcosa": {"scripts": script(),
                                      "schedule": {"max_full_interval": "20s"}},
                          "nyarlathotep": {"scripts": script()}})
    start_worker(config, "carcosa")

    def incr() -> Record:
        result = run_offsite("backup", "carcosa", "--type", "incr", "--wait", "--timeout", "60",
                             config=config)
        assert result.returncode == 0, describe(result)
        rows = {r["run_id"]: r for r in records(run_offsite, config)}
        return rows[run_id_of(result.stdout)]

    first = incr()
    assert first["state"] == "succeeded"
    assert first["type"] == "full"
    assert first["notes"] == [f"promoted to full: the target file://{tmp_path}/target/carcosa "
                              "holds no complete backup chain"]

    second = incr()
    assert second["state"] == "succeeded"
    assert second["type"] == "incr"
    assert second["notes"] == []

    wait_until(lambda: datetime.now().astimezone() > when(first["started_at"])
               + timedelta(seconds=21.5), timeout=40, what="the full to age", interval=0.2)
    third = incr()
    assert third["state"] == "succeeded"
    assert third["type"] == "full"
    (note,) = third["notes"]
    assert re.fullmatch(r"promoted to full: the last full is \d+s old "
                        r"\(max_full_interval 20s\)", note), note
    chain = sorted(p.name for p in (tmp_path / "target" / "carcosa").iterdir()
                   if p.name.endswith(".manifest.gpg"))
    assert [name.split(".")[0] for name in chain] == ["duplicity-full", "duplicity-full",
                                                      "duplicity-inc"]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_slots_queued_while_the_host_was_off_run_once_the_rest_expire(
        make_config: Any, tmp_path: Path, start_process: StartProcess, start_worker: Any,
        run_offsite: Any, redis_client: redis.Redis) -> None:
    config = file_config(make_config, tmp_path, {"carcosa": {"scripts": script()}},
                         schedule={"full": {"every": "2s"}, "incr": {"every": "2s"}},
                         watchdog={"start_grace": "1s"})
    store = RedisRunStore(redis_client)
    beat = start_beat(start_process, config)
    wait_until(lambda: len([r for r in store.recent("carcosa", 500) if r.type.value == "full"])
               >= 4, timeout=20, what="four full slots queued", interval=0.2)
    stop_beat_between_sends(beat)
    assert redis_client.llen("backup.carcosa") == len(store.recent("carcosa", 500))
    # The host stays off for longer than start_grace (1 s) after the newest slot was sent, so
    # that slot has waited in the queue however fast its worker starts.
    newest_sent = max(r.created_at for r in store.recent("carcosa", 500))
    wait_until(lambda: utcnow() - newest_sent > timedelta(seconds=1.5), timeout=10,
               what="the newest slot to be older than start_grace", interval=0.1)

    start_worker(config, "carcosa")
    wait_until(lambda: all_final(store), timeout=45, what="the backlog to drain", interval=0.5)

    rows = records(run_offsite, config)
    for kind, winner_state in (("full", "succeeded"), ("incr", "skipped")):
        mine = of(rows, "carcosa", kind)
        assert len(mine) >= 4
        *older, newest = mine
        assert newest["state"] == winner_state, newest
        if winner_state == "succeeded":
            assert any("waited in the queue" in note for note in newest["notes"]), newest
        for record in older:
            assert record["state"] == "expired", record
            assert not record["steps"]
            assert record["notes"] == [f"superseded by the newer slot {newest['run_id']}: "
                                       "only the latest waiting slot runs"]
    manifests = [p.name for p in (tmp_path / "target" / "carcosa").iterdir()
                 if ".manifest" in p.name]
    assert len(manifests) == 1, manifests  # one upload, not four


def _next_local(zone: ZoneInfo, now: datetime, matches: Callable[[datetime], bool]) -> datetime:
    """The first whole minute after now (in zone) that matches: the slow, obvious way."""
    moment = now.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not matches(moment):
        moment += timedelta(minutes=1)
    return moment


def test_check_prints_next_full_and_incr_per_host_in_the_configured_zone(
        make_config: Any, tmp_path: Path, run_offsite: Any) -> None:
    config = file_config(make_config, tmp_path,
                         {"carcosa": {"scripts": script()},
                          "nyarlathotep": {"scripts": script(),
                                           "schedule": {"incr": "0 5 * * 1"}}},
                         schedule={"timezone": "Europe/London"})
    zone = ZoneInfo("Europe/London")
    before = datetime.now().astimezone()

    result = run_offsite("check", config=config)

    assert result.returncode == 0, describe(result)
    first_of_month = _next_local(zone, before, lambda m: m.day == 1 and m.hour == m.minute == 0)
    monday = lambda hour: _next_local(  # noqa: E731
        zone, before, lambda m: m.weekday() == 0 and m.hour == hour and m.minute == 0)
    fmt = "%Y-%m-%d %H:%M %Z"
    assert "times in Europe/London" in result.stdout
    sections = dict(re.findall(r"^(\w+): scripts .*\n((?:  .*\n?)+)", result.stdout, re.M))
    assert set(sections) == {"carcosa", "nyarlathotep"}
    assert f"next full {first_of_month.strftime(fmt)}  (0 0 1 * *)" in sections["carcosa"]
    assert f"next incr {monday(4).strftime(fmt)}  (0 4 * * 1)" in sections["carcosa"]
    assert f"next full {first_of_month.strftime(fmt)}  (0 0 1 * *)" in sections["nyarlathotep"]
    assert f"next incr {monday(5).strftime(fmt)}  (0 5 * * 1)" in sections["nyarlathotep"]
    assert first_of_month.strftime("%Z") in ("GMT", "BST")
