"""A small fleet in known states, written through offsite's own ledger code (RedisRunStore and
the conditions hash as the watchdog writes it): for `offsite hosts`, /api/hosts, /metrics and
the fleet page."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import redis

from offsite.watch.alerts import condition_alert
from offsite.watch.conditions import Conditions
from offsite.constants import BackupType, RunState, RunType
from offsite.watch.alerts import AlertOutbox
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord

HOSTS = {"healthy-1": {"scripts": {"s": {"bash": "true"}}},
         "failing-1": {"scripts": {"s": {"bash": "true"}}},
         "stale-1": {"scripts": {"s": {"bash": "true"}}}}
# worst first, as every view must order them
EXPECTED_ORDER = ["failing-1", "stale-1", "healthy-1"]
STORED_HEALTHY = 21_042_000   # bytes in the target after healthy-1's six backups
FAILURE_MESSAGE = ("host failing-1 step upload: duplicity exited 50: the bucket does not "
                   "exist <script>alert(1)</script> & more")


def record(host: str, kind: RunType | BackupType, state: RunState, began: datetime,
           seconds: float, uploaded: int, error: ErrorRecord | None = None,
           stored: int | None = None) -> RunRecord:
    return RunRecord(run_id=f"{host}-{kind.value}-{began:%Y%m%dT%H%M%S}", host=host,
                     type=RunType(kind.value), state=state, created_at=began,
                     started_at=began, finished_at=began + timedelta(seconds=seconds),
                     bytes_uploaded=uploaded, error=error, stored_bytes=stored)


def write_fleet(client: redis.Redis, now: datetime | None = None) -> dict[str, list[RunRecord]]:
    """healthy-1: fulls and incrementals that succeed (the target holds what they uploaded,
    STORED_HEALTHY bytes after the last), and a successful drill; failing-1: succeeded once
    (5,000,000 bytes), then its newest incremental failed at upload; stale-1: succeeded 20
    days ago, with the watchdog's backup_stale condition open."""
    now = now or datetime.now(timezone.utc)
    store = RedisRunStore(client)
    written: dict[str, list[RunRecord]] = {host: [] for host in HOSTS}

    def add(run: RunRecord) -> None:
        assert store.create(run)
        written[run.host].append(run)
    for day in range(6, 0, -1):
        kind = BackupType.FULL if day == 6 else BackupType.INCR
        add(record("healthy-1", kind, RunState.SUCCEEDED, now - timedelta(days=day),
                   30 + 10 * day, 1_000_000 * day,
                   stored=sum(1_000_000 * d for d in range(day, 7)) + 7_000 * (7 - day)))
    add(record("healthy-1", RunType.VERIFY, RunState.SUCCEEDED, now - timedelta(hours=12), 20,
               0))
    add(record("failing-1", BackupType.FULL, RunState.SUCCEEDED, now - timedelta(days=2), 60,
               5_000_000))
    add(record("failing-1", BackupType.INCR, RunState.FAILED, now - timedelta(hours=1), 12, 0,
               ErrorRecord(step="upload", exit_code=50, message=FAILURE_MESSAGE,
                           failure_class="upload_failed")))
    add(record("stale-1", BackupType.FULL, RunState.SUCCEEDED, now - timedelta(days=20), 90,
               7_000_000))
    Conditions(client, AlertOutbox(client)).raise_(
        "stale:stale-1", condition_alert("stale-1", "any", "backup_stale", "no success"), now)
    return written
