"""The dead man's switch, run by the control worker: it notices what a dead host cannot report.

Each tick: runs whose lease expired become `lost` (one alert, one re-run); failed runs nobody
reported are reported; slots that did not start within the grace period, runs past their
maximum duration, hosts without a recent success and silent workers raise a condition (one
alert) that clears with a recovery message; and pending alerts are delivered.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, cast

import redis

from offsite.wire.outgoing import resend_due
from offsite.watch.alerts import Alert, AlertSink, condition_alert, recovery_alert
from offsite.watch.conditions import CONDITIONS_KEY, Conditions
from offsite.config.model import Config
from offsite.constants import KEY_PREFIX, LEASE_KEY, BackupType, RunState, RunType
from offsite.watch.drift import check_drift
from offsite.watch.replica_watch import check_replicas
from offsite.watch.stuck import check_consuming, check_stuck
from offsite.watch.tampered import check_tampered
from offsite.durations import format_duration
from offsite.ledger.heartbeat import BEAT_NODE, HEARTBEATS_KEY, parse_beat, worker_node
from offsite.ledger.facts import ATTENTION_KEY, HOST_FACTS_KEY, RUNNING_KEY, HostFacts, RunningRun
from offsite.ledger.lease import HostLease
from offsite.watch.alerts import (STREAK_KEY, adopt_legacy_streak, report_failed_run,
                                  review_streak, streak_key, streak_keys)
from offsite.watch.alerts import AlertOutbox
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord
from offsite.run.steps import complete_record, upload_confirmed
from offsite.schedule.specs import ScheduleSpec, latest_slot, period_s

log = logging.getLogger(__name__)

SINCE_KEY = KEY_PREFIX + "watchdog:since"
TICK_KEY = KEY_PREFIX + "watchdog:tick"      # hash: the last tick's wall and CPU seconds
RERUN_SUFFIX = "-rerun"

AlertText = Callable[[], Alert]


@dataclass(frozen=True)
class FleetView:
    """Everything one tick judges, read in one pipelined round trip."""
    facts: dict[str, HostFacts]
    heartbeats: dict[str, datetime | None]
    beat: datetime | None            # beat's own heartbeat
    streaks: list[tuple[str, str]]   # (host, kind of run) with a failure streak
    active: set[str]
    running: list[RunningRun]


def read_fleet(client: redis.Redis, hosts: list[str]) -> FleetView:
    with client.pipeline(transaction=False) as pipe:
        for host in hosts:
            pipe.hgetall(HOST_FACTS_KEY + host)
        pipe.hmget(HEARTBEATS_KEY, [worker_node(host) for host in hosts] + [BEAT_NODE])
        pipe.mget([streak_key(host, kind) for host, kind in streak_keys(hosts)])
        pipe.mget([STREAK_KEY + host for host in hosts])   # written before streaks per kind
        pipe.hkeys(CONDITIONS_KEY)
        pipe.hgetall(RUNNING_KEY)
        replies = pipe.execute()
    facts_raw, (beats, streaks, legacy, active, running) = (replies[:len(hosts)],
                                                            replies[len(hosts):])
    for host, raw in zip(hosts, legacy):
        if raw:
            adopt_legacy_streak(client, host)   # seen per kind from the next tick on
    return FleetView(
        facts={host: HostFacts.parse(raw) for host, raw in zip(hosts, facts_raw)},
        heartbeats={host: parse_beat(raw) for host, raw in zip(hosts, beats)},
        beat=parse_beat(beats[-1]),
        streaks=[pair for pair, raw in zip(streak_keys(hosts), streaks) if raw],
        active={key.decode() for key in active},
        running=[RunningRun.parse(run_id, raw) for run_id, raw in running.items()])


@dataclass(frozen=True)
class Watchdog:
    config: Config
    store: RunStore
    client: redis.Redis
    lease: HostLease
    outbox: AlertOutbox
    sink: AlertSink
    redispatch: Callable[[RunRecord, str], None]

    @property
    def conditions(self) -> Conditions:
        return Conditions(self.client, self.outbox)

    def tick(self, now: datetime) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        since = self._since(now)
        hosts = list(self.config.hosts)
        view = read_fleet(self.client, hosts)
        running = self.find_lost_runs(view.running, now)
        self.handle_attention(now)
        resend_due(self.client, self.store, self.lease, self.config, now)   # wire.outgoing
        observed: dict[str, tuple[bool, AlertText, AlertText]] = {}
        self.check_overdue(running, view.active, observed, now)
        check_stuck(self.client, self.store, self.config, view.active, observed, now)
        check_consuming(self.client, self.config, view.heartbeats, observed, now)
        slots: dict[tuple[ScheduleSpec, str], datetime | None] = {}
        periods: dict[ScheduleSpec, float] = {}
        for host in hosts:
            facts = view.facts[host]
            self.check_missed(host, facts, since, now, slots, observed,
                              self._missed_cause(host, view, now))
            self.check_stale(host, facts, since, now, periods, observed)
            self.check_unproven(host, facts, since, now, periods, observed)
            self.check_worker(host, view.heartbeats[host], since, now, observed)
            check_tampered(self.store, host, facts, observed)   # see offsite.watch.tampered
        self.apply(observed, view.active, now)
        check_drift(self.client, self.config, self.conditions, view.active, now)
        check_replicas(self.store, self.config, self.conditions, view.active, now)
        for host, kind in view.streaks:
            review_streak(self.store, self.client, self.outbox, host, kind, now)
        self.outbox.deliver_due(self.sink, now)
        self.client.hset(TICK_KEY, mapping={
            "at": now.isoformat(), "hosts": len(hosts),
            "wall_s": f"{time.perf_counter() - wall:.4f}",
            "cpu_s": f"{time.thread_time() - cpu:.4f}"})

    def _since(self, now: datetime) -> datetime:
        """When the watchdog first watched: slots and silences before that are not judged."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(SINCE_KEY, now.isoformat(), nx=True)
            pipe.get(SINCE_KEY)
            raw = pipe.execute()[1]
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))

    def apply(self, observed: dict[str, tuple[bool, AlertText, AlertText]], active: set[str],
              now: datetime) -> None:
        """Raise or clear only the conditions whose state changed; only their texts are built."""
        for key, (is_active, alert, recovery) in observed.items():
            if is_active and key not in active:
                self.conditions.raise_(key, alert(), now)
            elif not is_active and key in active:
                self.conditions.clear(key, recovery(), now)

    def find_lost_runs(self, running: list[RunningRun], now: datetime) -> list[RunningRun]:
        """Mark running runs whose lease is gone as lost; returns the runs still running."""
        if not running:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for run in running:
                pipe.get(LEASE_KEY + run.host)
            holders = pipe.execute()
        alive = []
        for run, holder in zip(running, holders):
            if (holder.decode() if isinstance(holder, bytes) else holder) == run.run_id:
                alive.append(run)
                continue
            record = self.store.get(run.run_id)
            if record is not None and not self._mark_lost(record, now) \
                    and record.state == RunState.RUNNING:
                alive.append(run)
        return alive

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
                message=(f"{_runner(current)} stopped renewing the run's lease during "
                         f"{step or 'the run'}: killed, crashed or cut off from Redis"))
            if not current.run_id.endswith(RERUN_SUFFIX):
                current.notes.append(f"re-run queued as {current.run_id}{RERUN_SUFFIX}")
        self.store.update(record.run_id, mark)
        return changed

    def handle_attention(self, now: datetime) -> None:
        """Failed and lost runs: report the ones whose errback never came (a lost message, a
        control worker that was down) and re-run each lost run once (a re-run is not re-run
        again). Derived from the ledger on every tick, so a control worker that died mid-tick
        still does it next time; a run leaves the set only when both are done."""
        for raw in cast("set[bytes]", self.client.smembers(ATTENTION_KEY)):
            run_id = raw.decode()
            record = self.store.get(run_id)
            if record is not None and record.state in (RunState.FAILED, RunState.LOST):
                report_failed_run(self.store, self.client, self.outbox, record.host, run_id, now)
                rerun_id = run_id + RERUN_SUFFIX
                if record.state == RunState.LOST and not run_id.endswith(RERUN_SUFFIX) \
                        and self.store.get(rerun_id) is None:
                    self.redispatch(record, rerun_id)
                    log.warning("run %s lost; re-run queued as %s", run_id, rerun_id)
            self.client.srem(ATTENTION_KEY, run_id)

    def check_overdue(self, running: list[RunningRun], active: set[str],
                      observed: dict[str, tuple[bool, AlertText, AlertText]],
                      now: datetime) -> None:
        still_running = set()
        for run in running:
            still_running.add(run.run_id)
            limit = timedelta(seconds=self.config.max_run_s(run.host)) \
                if run.host in self.config.hosts else None
            if limit is None or now - run.started_at <= limit:
                continue
            observed[f"overdue:{run.run_id}"] = (True, _overdue_alert(run, limit), _never)
        for key in active:
            run_id = key.removeprefix("overdue:")
            if key.startswith("overdue:") and run_id not in still_running:
                record = self.store.get(run_id)
                if record is None or record.is_final:
                    observed[key] = (False, _never, _overdue_recovery(run_id, record))

    def check_missed(self, host: str, facts: HostFacts, since: datetime, now: datetime,
                     slots: dict[tuple[ScheduleSpec, str], datetime | None],
                     observed: dict[str, tuple[bool, AlertText, AlertText]],
                     cause: str = "") -> None:
        grace = timedelta(seconds=self.config.watchdog.start_grace)
        zone = self.config.schedule.timezone
        for kind in BackupType:
            spec = self.config.host_schedule(host, kind)
            if (spec, zone) not in slots:
                slots[(spec, zone)] = latest_slot(spec, zone, now - grace)
            slot = slots[(spec, zone)]
            if slot is None or slot < since:
                continue
            latest = facts.latest_start({kind, BackupType.FULL})
            started = latest is not None and latest[0] >= slot - timedelta(seconds=1)
            observed[f"missed:{host}:{kind.value}"] = (
                not started, _missed_alert(host, kind, slot, grace, cause),
                _missed_recovery(host, kind, latest[1] if latest else "?"))

    def _missed_cause(self, host: str, view: FleetView, now: datetime) -> str:
        """What the heartbeats say about a missed slot: which of beat and the worker is down,
        or that both are alive (then beat's log and the worker's queue are the next places)."""
        limit = self.config.watchdog.worker_timeout
        down = [f"{who} has sent no heartbeat {f'since {seen.isoformat()}' if seen else 'at all'}"
                f": start {how}" for who, seen, how in (
                    ("beat", view.beat, "`offsite beat` (one per fleet)"),
                    (f"the worker of host {host}", view.heartbeats[host],
                     f"`offsite worker {host}` there"))
                if seen is None or (now - seen).total_seconds() > limit]
        if down:
            return "; ".join(down) + "."
        return (f"beat and the worker of host {host} are both alive: see `offsite hosts` "
                "(a worker that does not read its queue, a run stuck queued) and beat's log.")

    def check_stale(self, host: str, facts: HostFacts, since: datetime, now: datetime,
                    periods: dict[ScheduleSpec, float],
                    observed: dict[str, tuple[bool, AlertText, AlertText]]) -> None:
        configured = self.config.watchdog.stale_after
        stale_after = float(configured) if configured is not None else 2 * self._period(
            self.config.host_schedule(host, BackupType.INCR), periods, now)
        last = max(since, facts.success[0]) if facts.success else since
        observed[f"stale:{host}"] = (
            (now - last).total_seconds() > stale_after,
            lambda: condition_alert(host, "any", "backup_stale",
                                    f"Host {host} has had no successful backup since "
                                    f"{last.isoformat()} (more than "
                                    f"{format_duration(stale_after)})."),
            lambda: recovery_alert(host, "any", "backup_stale",
                                   f"Host {host} has a successful backup again."))

    def _period(self, spec: ScheduleSpec, periods: dict[ScheduleSpec, float],
                now: datetime) -> float:
        """The schedule's period, computed once per tick for all the hosts that share it."""
        if spec not in periods:
            periods[spec] = period_s(spec, self.config.schedule.timezone, now)
        return periods[spec]

    def check_unproven(self, host: str, facts: HostFacts, since: datetime, now: datetime,
                       periods: dict[ScheduleSpec, float],
                       observed: dict[str, tuple[bool, AlertText, AlertText]]) -> None:
        """A host with scheduled drills whose last successful verify is older than twice the
        drill interval: its backups are not proven to restore (a failing drill keeps it so)."""
        spec = self.config.verify_schedule(host)
        if spec is None:
            return
        limit = 2 * self._period(spec, periods, now)
        last = max(since, facts.verified[0]) if facts.verified else since
        observed[f"unproven:{host}"] = (
            (now - last).total_seconds() > limit,
            lambda: condition_alert(host, "verify", "restore_unproven",
                                    f"No restore drill of host {host} has succeeded since "
                                    f"{last.isoformat()} (more than {format_duration(limit)}, "
                                    "twice its drill interval): its backups are not proven to "
                                    "restore. See `offsite status " + host + "` for the drills."),
            lambda: recovery_alert(host, "verify", "restore_unproven",
                                   f"A restore drill of host {host} succeeded again."))

    def check_worker(self, host: str, beat: datetime | None, since: datetime, now: datetime,
                     observed: dict[str, tuple[bool, AlertText, AlertText]]) -> None:
        seen = beat or since
        observed[f"worker_down:{host}"] = (
            (now - seen).total_seconds() > self.config.watchdog.worker_timeout,
            lambda: condition_alert(host, "any", "worker_down",
                                    f"The worker of host {host} has not sent a heartbeat since "
                                    f"{seen.isoformat()}: start `offsite worker {host}` there."),
            lambda: recovery_alert(host, "any", "worker_down",
                                   f"The worker of host {host} answers again."))


def _never() -> Alert:
    raise AssertionError("this condition has no message in this direction")


def _overdue_alert(run: RunningRun, limit: timedelta) -> AlertText:
    return lambda: condition_alert(
        run.host, run.type.value, "run_overdue",
        f"Run {run.run_id} of host {run.host} has been running since "
        f"{run.started_at.isoformat()}, longer than its maximum of "
        f"{format_duration(limit.total_seconds())} (all script timeouts plus the upload "
        "timeout).")


def _overdue_recovery(run_id: str, record: RunRecord | None) -> AlertText:
    host, kind = (record.host, record.type.value) if record else ("?", "any")
    state = record.state.value if record else "no longer recorded"
    return lambda: recovery_alert(host, kind, "run_overdue",
                                  f"Overdue run {run_id} of host {host} ended: {state}.")


def _missed_alert(host: str, kind: BackupType, slot: datetime, grace: timedelta,
                  cause: str) -> AlertText:
    return lambda: condition_alert(
        host, kind.value, "backup_missed",
        f"The {kind.value} backup of host {host} due at {slot.isoformat()} did not start "
        f"within {format_duration(grace.total_seconds())}: {cause}")


def _missed_recovery(host: str, kind: BackupType, run_id: str) -> AlertText:
    return lambda: recovery_alert(host, kind.value, "backup_missed",
                                  f"Host {host} is backing up again: run {run_id} started.")


def _runner(record: RunRecord) -> str:
    """Who runs the run, in words: a drill or a prune is not the host worker's doing."""
    worker = next((s.worker for s in reversed(record.steps) if s.worker), None)
    named = f" ({worker})" if worker else ""
    if record.type == RunType.VERIFY:
        return f"the node running the drill{named}"
    if record.type == RunType.PRUNE:
        return f"the node running the prune{named}"
    if record.type == RunType.RESTORE:
        return f"the operator's restore{named}"
    return f"the host worker{named}"
