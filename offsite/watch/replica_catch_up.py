"""The control node's replica catch-up: a replica that was down during a host's backup is
`behind` (offsite.run.replicas); the host's next backup copies what it lacks, and so does the
control node, every `watchdog.replica_catch_up`, without waiting for that backup.

For each host whose latest replica states say a replica is behind or failed (or has none yet),
the control node takes the host's lease (under `<host>-catch-up-<time>`, so it never copies
while a backup, drill or prune holds the host, and a backup asked for meanwhile waits),
copies to each such replica every set of the primary it lacks, oldest first, with the same
checks as a run's replicate step (offsite.target.replicate), and writes each replica's new
state into the host's latest record that carries replica states, with a note: `replica_behind`
and `replica_failed` clear on the next watchdog tick, and `offsite hosts` shows the new newest
set. The primary is read with this node's reading identity (READ_AWS_*), each replica written
with this node's `<NAME>_AWS_*` keys (offsite provision writes a copy identity for them into
control.env).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from offsite.config.model import Config
from offsite.config.targets import host_replicas
from offsite.constants import RunState, RunType
from offsite.host.settings import HostSettings, resolve_host
from offsite.host.targets import on_target
from offsite.ledger.lease import HostLease, catch_up_holder
from offsite.ledger.records import RunStore
from offsite.ledger.renewer import LeaseLost, keep_working
from offsite.ledger.run_record import ReplicaRecord, RunRecord
from offsite.run.replicas import RECENT_RUNS, replica_record
from offsite.target.replicate import ReplicaOutcome, replicate_host

log = logging.getLogger(__name__)

FIRST_CATCH_UP_S = 5.0
_DONE = (RunState.SUCCEEDED, RunState.WARNING)


def catch_up_record(store: RunStore, host: str) -> RunRecord | None:
    """The record whose replica states the catch-up continues: the host's latest that carries
    replica states, else its latest successful backup (a replica added since)."""
    recent = store.recent(host, limit=RECENT_RUNS)
    carrying = next((record for record in recent if record.replicas), None)
    if carrying is not None:
        return carrying
    return next((record for record in recent if record.state in _DONE
                 and record.type in (RunType.FULL, RunType.INCR)), None)


def lagging(settings: HostSettings, record: RunRecord) -> list[str]:
    """The host's replicas that the record does not show current."""
    states = record.replicas or {}
    return [name for name in settings.replicas
            if name not in states or states[name].state != "current"]


@dataclass(frozen=True)
class CatchUp:
    config: Config
    store: RunStore
    lease: HostLease

    def tick(self, now: datetime) -> dict[str, dict[str, ReplicaRecord]]:
        """Catch up every host that needs it; the changed states by host and replica. A host whose
        catch-up fails (the primary unreadable, the lease lost) is logged and left to the next
        tick or backup."""
        done: dict[str, dict[str, ReplicaRecord]] = {}
        for host in self.config.hosts:
            if not host_replicas(self.config, host):
                continue
            try:
                states = self.catch_up_host(resolve_host(self.config, host), now)
            except Exception:   # noqa: BLE001 - one host's trouble must not stop the others
                log.exception("replica catch-up of host %s failed; the next one retries", host)
                continue
            if states:
                done[host] = states
        return done

    def catch_up_host(self, settings: HostSettings,
                      now: datetime) -> dict[str, ReplicaRecord] | None:
        host = settings.name
        first = catch_up_record(self.store, host)
        if first is None or not lagging(settings, first):
            return None
        holder = catch_up_holder(host, now.strftime("%Y%m%dT%H%M%SZ"))
        if not self.lease.acquire(host, holder):
            log.info("replica catch-up of host %s waits: run %s holds it", host,
                     self.lease.holder(host))
            return None
        try:
            with keep_working(self.lease, host, holder):
                record = catch_up_record(self.store, host)   # a backup may have ended since
                if record is None:
                    return None
                states = self._copy(settings, record, holder, now)
                if states:   # written while the host is held: no backup's record in between
                    self.store.update(record.run_id,
                                      lambda current: _store(current, states, now))
        finally:
            self.lease.release(host, holder)
        return states

    def _copy(self, settings: HostSettings, record: RunRecord, holder: str,
              now: datetime) -> dict[str, ReplicaRecord]:
        host, previous = settings.name, dict(record.replicas or {})

        def renew() -> None:
            if not self.lease.renew(host, holder):
                raise LeaseLost(f"replica catch-up {holder} lost the host lease", host=host,
                                step="replicate")
        states: dict[str, ReplicaRecord] = {}
        for name in lagging(settings, record):
            outcome = replicate_host(settings, on_target(settings, name), name, on_object=renew)
            _log(host, outcome)
            before = previous.get(name)
            if outcome.copied_objects or before is None or before.state != outcome.state:
                # a replica still down changes nothing: the record is not rewritten each tick
                states[name] = replica_record(outcome, before, now)
        return states


def _store(record: RunRecord, states: dict[str, ReplicaRecord], now: datetime) -> None:
    record.replicas = {**(record.replicas or {}), **states}
    for name, state in states.items():
        record.notes.append(
            f"replica {name} caught up by the control node at {now.isoformat()}: "
            f"{state.state}, {state.copied_sets} set(s) and {state.copied_objects} object(s) "
            f"copied{'; ' + state.problem if state.problem else ''}")


def _log(host: str, outcome: ReplicaOutcome) -> None:
    if outcome.state == "current":
        log.info("replica %s of host %s caught up: %d set(s), %d object(s) copied",
                 outcome.name, host, len(outcome.copied_sets), outcome.copied_objects)
    else:
        log.warning("replica %s of host %s still %s: %s", outcome.name, host, outcome.state,
                    outcome.problem)


def watch_replicas(config: Config, store: RunStore, lease: HostLease,
                   stop: threading.Event) -> None:
    """Catch up soon after start, then every `watchdog.replica_catch_up`, until stopped."""
    every = config.watchdog.replica_catch_up
    if every is None or not config.replicas:
        return
    catch_up = CatchUp(config, store, lease)
    wait = min(FIRST_CATCH_UP_S, float(every))
    while not stop.wait(wait):
        wait = float(every)
        try:
            catch_up.tick(datetime.now(timezone.utc))
        except Exception:   # noqa: BLE001 - Redis away: the next tick tries again
            log.exception("replica catch-up failed; next in %ss", wait)
