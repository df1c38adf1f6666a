"""The dead man's switch, run by the control worker: it notices what a dead host cannot report.

Each tick: runs whose lease expired become `lost` (one alert, one re-run); failed runs nobody
reported are reported; slots that did not start within the grace period, runs past their
maximum duration, hosts without a recent success and silent workers raise a condition (one
alert) that clears with a recovery message; and pending alerts are delivered.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import redis

from offsite.alerts import AlertSink, condition_alert, recovery_alert
from offsite.conditions import Conditions
from offsite.config import Config
from offsite.constants import KEY_PREFIX, BackupType, RunState
from offsite.durations import format_duration
from offsite.lease import HostLease
from offsite.notify import report_failed_run, review_streak
from offsite.outbox import AlertOutbox
from offsite.records import ErrorRecord, RunRecord, RunStore
from offsite.runner import complete_record, upload_confirmed
from offsite.schedules import EverySpec, ScheduleSpec, next_run, period_s

log = logging.getLogger(__name__)

SINCE_KEY = KEY_PREFIX + "watchdog:since"
LAST_SEEN_KEY = KEY_PREFIX + "workers:last_seen"
RERUN_SUFFIX = "-rerun"
_STARTED = {RunState.RUNNING, RunState.SUCCEEDED, RunState.WARNING, RunState.FAILED,
            RunState.SKIPPED, RunState.LOST}
_RECENT = 200


@dataclass(frozen=True)
class Watchdog:
    config: Config
    store: RunStore
    client: redis.Redis
    lease: HostLease
    outbox: AlertOutbox
    sink: AlertSink
    ping: Callable[[], set[str]]
    redispatch: Callable[[RunRecord, str], None]

    @property
    def conditions(self) -> Conditions:
        return Conditions(self.client, self.outbox)

    def tick(self, now: datetime) -> None:
        since = self._since(now)
        records = self.store.recent(None, _RECENT)
        if self.find_lost_runs(records, now):
            records = self.store.recent(None, _RECENT)
        self.report_unreported_failures(records, now)
        self.rerun_lost_runs(records)
        for host in self.config.hosts:
            own = [record for record in records if record.host == host]
            self.check_overdue(host, own, now)
            self.check_missed(host, own, since, now)
            self.check_stale(host, own, since, now)
            review_streak(self.store, self.client, self.outbox, host, now)
        self.check_workers(since, now)
        self.outbox.deliver_due(self.sink, now)

    def _since(self, now: datetime) -> datetime:
        """When the watchdog first watched: slots and silences before that are not judged."""
        self.client.set(SINCE_KEY, now.isoformat(), nx=True)
        raw = self.client.get(SINCE_KEY)
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))

    def find_lost_runs(self, records: list[RunRecord], now: datetime) -> bool:
        """Mark running runs whose lease is gone as lost; True when any was."""
        suspects = [record for record in records if record.state == RunState.RUNNING
                    and self.lease.holder(record.host) != record.run_id]
        return any([self._mark_lost(record, now) for record in suspects])

    def _mark_lost(self, record: RunRecord, now: datetime) -> bool:
        step = next((s.name for s in reversed(record.steps) if not s.finished_at), None)
        changed = False

        def mark(current: RunRecord) -> None:
            nonlocal changed
            if current.state != RunState.RUNNING or self.lease.holder(current.host) == current.run_id:
                return
            changed = True
            if upload_confirmed(current):
                complete_record(current, now)
                current.notes.append("finished by the watchdog: the worker stopped after the "
                                     "upload was confirmed in the target")
                return
            current.state = RunState.LOST
            current.finished_at = now
            current.error = ErrorRecord(
                step=step, failure_class="run_lost",
                message=(f"the host worker stopped renewing the run's lease during "
                         f"{step or 'the run'}: killed, crashed or cut off from Redis"))
            if not current.run_id.endswith(RERUN_SUFFIX):
                current.notes.append(f"re-run queued as {current.run_id}{RERUN_SUFFIX}")
        self.store.update(record.run_id, mark)
        return changed

    def report_unreported_failures(self, records: list[RunRecord], now: datetime) -> None:
        """Failures whose errback never came (a lost message, a control worker that was down)."""
        for record in records:
            if record.state in (RunState.FAILED, RunState.LOST):
                report_failed_run(self.store, self.client, self.outbox, record.host,
                                  record.run_id, now)

    def rerun_lost_runs(self, records: list[RunRecord]) -> None:
        """One re-run per lost run (a re-run is not re-run again); derived from the records on
        every tick, so a control worker that died mid-tick still queues it next time."""
        for record in records:
            rerun_id = record.run_id + RERUN_SUFFIX
            if record.state != RunState.LOST or record.run_id.endswith(RERUN_SUFFIX) \
                    or self.store.get(rerun_id) is not None:
                continue
            self.redispatch(record, rerun_id)
            log.warning("run %s lost; re-run queued as %s", record.run_id, rerun_id)

    def check_overdue(self, host: str, records: list[RunRecord], now: datetime) -> None:
        limit = timedelta(seconds=self.config.max_run_s(host))
        for record in records:
            key = f"overdue:{record.run_id}"
            if record.state == RunState.RUNNING and record.started_at and \
                    now - record.started_at > limit:
                self.conditions.raise_(key, condition_alert(
                    host, record.type.value, "run_overdue",
                    f"Run {record.run_id} of host {host} has been running since "
                    f"{record.started_at.isoformat()}, longer than its maximum of "
                    f"{format_duration(limit.total_seconds())} (all script timeouts plus the "
                    "upload timeout)."), now)
            elif record.is_final and self.conditions.is_active(key):
                self.conditions.clear(key, recovery_alert(
                    host, record.type.value, "run_overdue",
                    f"Overdue run {record.run_id} of host {host} ended: {record.state.value}."),
                    now)

    def check_missed(self, host: str, records: list[RunRecord], since: datetime,
                     now: datetime) -> None:
        grace = timedelta(seconds=self.config.watchdog.start_grace)
        zone = self.config.schedule.timezone
        for kind in BackupType:
            spec = self.config.host_schedule(host, kind)
            slot = latest_slot(spec, zone, now - grace)
            if slot is None or slot < since:
                continue
            covering = {kind, BackupType.FULL}
            started = [r for r in records if r.type in covering and r.state in _STARTED
                       and (r.started_at or r.finished_at or r.created_at) >= slot
                       - timedelta(seconds=1)]
            self.conditions.update(
                f"missed:{host}:{kind.value}", not started,
                condition_alert(
                    host, kind.value, "backup_missed",
                    f"The {kind.value} backup of host {host} due at {slot.isoformat()} did "
                    f"not start within {format_duration(grace.total_seconds())}: is `offsite "
                    f"worker {host}` running and is `offsite beat` running?"),
                recovery_alert(
                    host, kind.value, "backup_missed",
                    f"Host {host} is backing up again: run "
                    f"{started[0].run_id if started else '?'} started."), now)

    def check_stale(self, host: str, records: list[RunRecord], since: datetime,
                    now: datetime) -> None:
        stale_after = self.config.watchdog.stale_after or 2 * period_s(
            self.config.host_schedule(host, BackupType.INCR), self.config.schedule.timezone, now)
        successes = [r.finished_at for r in records
                     if r.state in (RunState.SUCCEEDED, RunState.WARNING) and r.finished_at]
        last = max([since, *successes])
        self.conditions.update(
            f"stale:{host}", (now - last).total_seconds() > stale_after,
            condition_alert(host, "any", "backup_stale",
                            f"Host {host} has had no successful backup since "
                            f"{last.isoformat()} (more than {format_duration(stale_after)})."),
            recovery_alert(host, "any", "backup_stale",
                           f"Host {host} has a successful backup again."), now)

    def check_workers(self, since: datetime, now: datetime) -> None:
        answered = self.ping()
        for host in answered & set(self.config.hosts):
            self.client.hset(LAST_SEEN_KEY, host, now.isoformat())
        timeout = self.config.watchdog.worker_timeout
        for host in self.config.hosts:
            raw = self.client.hget(LAST_SEEN_KEY, host)
            seen = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw) \
                if raw else since
            self.conditions.update(
                f"worker_down:{host}", (now - seen).total_seconds() > timeout,
                condition_alert(host, "any", "worker_down",
                                f"The worker of host {host} has not answered a ping since "
                                f"{seen.isoformat()}: start `offsite worker {host}` there."),
                recovery_alert(host, "any", "worker_down",
                               f"The worker of host {host} answers again."), now)


def latest_slot(spec: ScheduleSpec, tz: str, at: datetime) -> datetime | None:
    """The last slot at or before `at`; for an interval, one interval before `at` (a run must
    have started since then)."""
    if isinstance(spec, EverySpec):
        return at - timedelta(seconds=spec.seconds)
    period = period_s(spec, tz, at)
    start = at - timedelta(seconds=2 * period)
    moment, latest = next_run(spec, tz, start), None
    while moment <= at:
        latest, moment = moment, next_run(spec, tz, moment)
    return latest
