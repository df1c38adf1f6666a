"""A run holds its host lease for as long as it runs, whatever it does: a keeper thread renews
it (offsite.ledger.renewer), re-takes a lapsed lease nobody holds, and gives it up, stopping the
run, when another run holds it. Real Redis; the end-to-end case runs a real worker, control
node and duplicity with a 2 s lease over steps with no child process far longer than that."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.constants import LEASE_KEY, RunState
from offsite.ledger.lease import RedisHostLease
from offsite.ledger.renewer import LeaseKeeper, RenewingLease
from tests.helpers import describe, wait_until

SHORT_LEASE = {"every": "1s", "start_grace": "15m", "lease_ttl": "2s",
               "worker_timeout": "1h", "stale_after": "1h"}


class LeaseWatch:
    """Reads a host's lease key every 20 ms in a thread: who held it, and when nobody did."""

    def __init__(self, client: redis.Redis, host: str) -> None:
        self.client = client
        self.key = LEASE_KEY + host
        self.holders: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        raw = self.client.get(self.key)
        holder = raw.decode() if isinstance(raw, bytes) else raw
        if not self.holders or self.holders[-1] != holder:
            self.holders.append(holder)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()


def test_a_kept_lease_outlives_many_periods_and_is_freed_at_release(
        redis_client: redis.Redis) -> None:
    lease = RenewingLease(RedisHostLease(redis_client, 2), 2)
    with LeaseWatch(redis_client, "carcosa") as watch, \
            lease.working("carcosa", "carcosa-full-20261204T000000Z"):
        assert lease.acquire("carcosa", "carcosa-full-20261204T000000Z")
        deadline = time.monotonic() + 7   # three and a half lease periods, no renew() called
        while time.monotonic() < deadline:
            assert redis_client.pttl(LEASE_KEY + "carcosa") > 0
            time.sleep(0.1)
        assert lease.renew("carcosa", "carcosa-full-20261204T000000Z")
        lease.release("carcosa", "carcosa-full-20261204T000000Z")
    assert watch.holders == [None, "carcosa-full-20261204T000000Z", None]
    assert lease.running() == 0


def test_a_run_idle_here_for_a_whole_lease_is_left_to_lapse(redis_client: redis.Redis) -> None:
    """Between two tasks of a run the keeper renews at most lease_ttl: a run whose next task
    never comes lapses and the watchdog finds it lost."""
    lease = RenewingLease(RedisHostLease(redis_client, 2), 2)
    busy, idle = "carcosa-full-20261204T000000Z", "other-full-20261204T000000Z"
    with lease.working("carcosa", busy):
        assert lease.acquire("carcosa", busy)
        assert lease.acquire("other", idle)
        wait_until(lambda: redis_client.get(LEASE_KEY + "other") is None, timeout=10,
                   what="the idle run's lease to lapse")
        assert lease.renew("carcosa", busy) and not lease.renew("other", idle)
        assert redis_client.get(LEASE_KEY + "carcosa") == busy
    lease.release("carcosa", busy)
    lease.release("other", idle)


def test_a_lapsed_lease_nobody_holds_is_retaken(redis_client: redis.Redis) -> None:
    inner = RedisHostLease(redis_client, 2)
    run_id = "carcosa-full-20261204T000000Z"
    assert inner.acquire("carcosa", run_id)
    keeper = LeaseKeeper(inner, "carcosa", run_id, 2, lambda _: RunState.RUNNING)
    redis_client.delete(LEASE_KEY + "carcosa")   # as after a stall longer than the lease
    keeper.renew_once()
    assert keeper.alive and keeper.retaken == 1
    assert inner.holder("carcosa") == run_id


def test_a_lease_another_run_holds_is_given_up_and_the_run_told(
        redis_client: redis.Redis) -> None:
    inner = RedisHostLease(redis_client, 2)
    lease = RenewingLease(inner, 2, lambda _: RunState.RUNNING)
    run_id, other = "carcosa-full-20261204T000000Z", "carcosa-verify-20261204T000001Z"
    assert lease.acquire("carcosa", run_id)
    redis_client.set(LEASE_KEY + "carcosa", other, px=60_000)
    wait_until(lambda: not lease.renew("carcosa", run_id), timeout=5,
               what="the keeper to give the lease up")
    keeper = lease.keeper("carcosa", run_id)
    assert keeper is not None and keeper.lost == f"lost its host lease to run {other}"
    lease.release("carcosa", run_id)
    assert inner.holder("carcosa") == other   # the other run's lease is left alone


def test_a_settled_run_does_not_retake_its_lapsed_lease(redis_client: redis.Redis) -> None:
    inner = RedisHostLease(redis_client, 2)
    keeper = LeaseKeeper(inner, "carcosa", "carcosa-full-20261204T000000Z", 2,
                         lambda _: RunState.LOST)
    keeper.renew_once()
    assert keeper.lost == "is already lost"
    assert inner.holder("carcosa") is None


def test_a_lease_shorter_than_two_seconds_is_refused(make_config: Any,
                                                     run_offsite: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         watchdog={"lease_ttl": "1s"})
    result = run_offsite("check", config=config)
    assert result.returncode == 2, describe(result)
    assert "watchdog.lease_ttl" in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_backup_whose_in_process_steps_outlive_the_lease_succeeds_and_keeps_the_host(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """Hashing a 400 MB sparse dump for the digest manifest (no child process) takes several
    2 s lease periods here; the run must end succeeded, never lost, never re-run, and nobody
    else may hold the host meanwhile. Then a drill of it, whose compare is as long."""
    config = make_config(
        {"carcosa": {"scripts": {"dump": {"bash": "truncate -s 400M dump.bin; echo x > a"}}}},
        watchdog=SHORT_LEASE, target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    start_control(config)
    for kind in ("backup", "verify"):
        args = ("--type", "full") if kind == "backup" else ()
        with LeaseWatch(redis_client, "carcosa") as watch:
            done = run_offsite(kind, "carcosa", *args, "--wait", "--timeout", "240",
                               config=config, timeout=260)
            # the run frees the host just after its final record, which wakes the wait
            # (offsite.run.steps.end_run): the next run's window starts with the host free
            wait_until(lambda: redis_client.get(LEASE_KEY + "carcosa") is None, timeout=30,
                       what=f"the {kind} run to free its host")
        assert done.returncode == 0, describe(done)
        run_id = done.stdout.split()[1]
        assert [holder for holder in watch.holders if holder] == [run_id], watch.holders
    status = run_offsite("status", "carcosa", "--json", config=config)
    records: list[dict[str, Any]] = json.loads(status.stdout)
    assert sorted(record["state"] for record in records) == ["succeeded", "succeeded"], records
    assert not any("rerun" in record["run_id"] for record in records)

