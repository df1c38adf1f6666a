"""A simulated fleet for bench.fleet: healthy hosts that beat and run every slot, and one host
each that misses a slot, whose worker is dead, and that never succeeds (stale).

The hosts' side is written through offsite's own code (the run store, the host lease, the
heartbeat), never as hand-made keys; the other side is real `offsite beat` and `offsite
control` processes, so what the watchdog concludes is what it would conclude in production.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import redis
import yaml

from offsite.constants import KEY_PREFIX, BackupType, RunState
from offsite.ledger.heartbeat import beat_many, worker_node
from offsite.ledger.lease import RedisHostLease
from offsite.watch.alerts import ALERT_KEY
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord
from offsite.run.context import new_run_id, queue_run
from offsite.schedule.specs import EverySpec, latest_slot, utcnow

MISSED, DEAD, STALE = "missed-1", "dead-1", "stale-1"
EXPECTED = {(MISSED, "backup_missed"), (DEAD, "worker_down"), (STALE, "backup_stale")}
THREADS = 8


@dataclass(frozen=True)
class Timing:
    """The scenario's clock: the incremental period and the watchdog's settings from it."""
    period_s: int

    @property
    def grace_s(self) -> int:
        return max(3, self.period_s // 3)

    @property
    def watchdog_every_s(self) -> int:
        return max(1, self.period_s // 12)

    @property
    def worker_timeout_s(self) -> int:
        return self.period_s


def healthy_hosts(count: int) -> list[str]:
    return [f"h{index:05d}" for index in range(count)]


def write_config(work: Path, broker_url: str, hosts: int, timing: Timing) -> Path:
    script = {"s": {"bash": "true"}}
    fleet: dict[str, Any] = {name: {"scripts": script} for name in healthy_hosts(hosts)}
    fleet[MISSED] = {"scripts": script}
    fleet[STALE] = {"scripts": script}
    # cron schedules far apart: the dead worker's host has no slot due while it is watched
    fleet[DEAD] = {"scripts": script, "schedule": {"full": "0 0 1 1 *", "incr": "0 4 1 1 *"}}
    data = {"broker_url": broker_url, "staging_root": str(work / "staging"),
            "target": {"url": f"file://{work}/target"},
            "schedule": {"min_interval": "1s", "full": {"every": f"{2 * timing.period_s}s"},
                         "incr": {"every": f"{timing.period_s}s"}},
            "watchdog": {"every": f"{timing.watchdog_every_s}s",
                         "start_grace": f"{timing.grace_s}s", "lease_ttl": "60s",
                         "worker_timeout": f"{timing.worker_timeout_s}s"},
            "hosts": fleet}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_history(client: redis.Redis, hosts: list[str], runs_per_host: int) -> None:
    """Past successful runs, one a day, as the ledger holds them after weeks of service."""
    store = RedisRunStore(client)
    now = utcnow()

    def write(host: str) -> None:
        for day in range(runs_per_host, 0, -1):
            began = now - timedelta(days=day)
            store.create(RunRecord(
                run_id=new_run_id(host, BackupType.INCR, began), host=host,
                type=BackupType.INCR, state=RunState.SUCCEEDED, scheduled_for=began,
                created_at=began, started_at=began, finished_at=began + timedelta(seconds=5),
                bytes_uploaded=1000))
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(write, hosts))


@dataclass
class Simulator:
    """The hosts' side: heartbeats, and each slot's runs taken from what beat queued and
    finished. Fulls fall every other incremental slot, so beat has 2 entries per host due
    together every other slot."""
    client: redis.Redis
    hosts: list[str]
    timing: Timing
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    missed_slot: datetime | None = None
    missed_after: datetime | None = None   # set once the watchdog watches

    def run(self) -> None:
        store, lease = RedisRunStore(self.client), RedisHostLease(self.client, 60)
        specs = {BackupType.INCR: EverySpec(self.timing.period_s),
                 BackupType.FULL: EverySpec(2 * self.timing.period_s)}
        first = latest_slot(specs[BackupType.INCR], "UTC", utcnow())
        assert first is not None
        done: set[str] = set()
        beating = [worker_node(host) for host in self.hosts + [MISSED, STALE]]
        with ThreadPoolExecutor(THREADS) as pool:
            while not self.stop.is_set():
                now = utcnow()
                beat_many(self.client, beating)
                for kind, spec in specs.items():
                    slot = latest_slot(spec, "UTC", now)
                    if slot is not None and slot >= first:
                        self._run_slot(pool, store, lease, kind, slot, first, now, done)
                self.stop.wait(0.2)

    def _run_slot(self, pool: ThreadPoolExecutor, store: RedisRunStore, lease: RedisHostLease,
                  kind: BackupType, slot: datetime, first: datetime, now: datetime,
                  done: set[str]) -> None:
        """Run what beat queued for this slot. The missed host runs its first incremental
        that is not also a full slot only after the watchdog had time to see it missing."""
        wanted = {new_run_id(host, kind, slot): host for host in self.hosts + [MISSED, STALE]}
        wanted = {run_id: host for run_id, host in wanted.items() if run_id not in done}
        if kind == BackupType.INCR and self.missed_slot is None and self.missed_after and \
                slot > self.missed_after and slot.timestamp() % (2 * self.timing.period_s):
            self.missed_slot = slot
        late = (self.missed_slot or slot) + timedelta(
            seconds=self.timing.grace_s + 2 * self.timing.watchdog_every_s)
        if kind == BackupType.INCR and slot == self.missed_slot and now < late:
            wanted = {run_id: host for run_id, host in wanted.items() if host != MISSED}
        queued = store.get_many(list(wanted))   # only what beat has sent so far
        jobs = [(run_id, wanted[run_id]) for run_id in queued]
        done.update(run_id for run_id, _ in jobs)

        def finish(job: tuple[str, str]) -> None:
            run_id, host = job
            try:
                simulate_run(store, lease, host, kind, run_id, slot,
                             RunState.SKIPPED if host == STALE else RunState.SUCCEEDED)
            except Exception as exc:  # reported with the results, never silent
                self.errors.append(f"{run_id}: {exc!r}")
        list(pool.map(finish, jobs))


def simulate_run(store: RedisRunStore, lease: RedisHostLease, host: str, kind: BackupType,
                 run_id: str, slot: datetime, outcome: RunState) -> None:
    """What a worker writes for one run: claim, lease, running, outcome, release."""
    queue_run(store, host, kind, run_id, scheduled_for=slot)
    while not lease.acquire(host, run_id):   # the host's other run of this slot is finishing
        time.sleep(0.01)

    def start(record: RunRecord) -> None:
        record.state, record.started_at = RunState.RUNNING, utcnow()

    def end(record: RunRecord) -> None:
        record.state, record.finished_at, record.bytes_uploaded = outcome, utcnow(), 0
    store.update(run_id, start)
    store.update(run_id, end)
    lease.release(host, run_id)


def raised_alerts(client: redis.Redis, keys: list[str] | None = None) -> list[tuple[str, str]]:
    """(host, class) of every alert the control node queued, recoveries aside."""
    found = []
    for key in client.scan_iter(ALERT_KEY + "*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.endswith(":sending"):
            continue
        raw = client.get(name)
        if raw is None:
            continue
        attributes = json.loads(raw)["alert"]["attributes"]
        if keys is not None:
            keys.append(name)
        if attributes.get("class") != "recovered":
            found.append((attributes.get("host", "?"), attributes.get("class", "?")))
    return sorted(found)


def ledger_bytes(client: redis.Redis) -> tuple[int, int]:
    """Bytes held by offsite's own keys (ledger, facts, alerts, beat state; not the broker's
    queues), and how many run records there are."""
    total, records = 0, 0
    keys = [key for key in client.scan_iter(KEY_PREFIX + "*", count=2000)]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    for key, size in zip(keys, sizes):
        total += int(size or 0)
        records += key.startswith(b"offsite:run:")
    return total, records


def watch_ticks(client: redis.Redis, samples: dict[str, tuple[float, float]]) -> None:
    raw = client.hgetall(KEY_PREFIX + "watchdog:tick")
    if raw:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        samples[fields["at"]] = (float(fields["wall_s"]), float(fields["cpu_s"]))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout:g}s")
        time.sleep(0.1)


def slot_offsets(records: list[RunRecord], period_s: int, after: datetime) -> list[float]:
    """Each sent slot's distance from the grid (0 when on it)."""
    return [((r.scheduled_for or after).timestamp() % period_s) for r in records
            if r.scheduled_for and r.scheduled_for > after]


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
