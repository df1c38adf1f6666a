"""The watchdog's replica check: from each host's latest backup record that carries replica
states (offsite.run.replicas), one `replica_behind` alert per host and replica when the replica
has lacked a set of the primary for longer than `watchdog.replica_behind_after`, one
`replica_failed` alert when a copy failed its check; each clears with one recovery message when
a later run finds the replica current.

Only hosts with replicas are read (a few records each, on every tick)."""
from __future__ import annotations

from datetime import datetime

from offsite.config.model import Config
from offsite.config.targets import host_replicas
from offsite.durations import format_duration
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import ReplicaRecord
from offsite.watch.alerts import condition_alert, recovery_alert
from offsite.watch.conditions import Conditions

RECENT_RUNS = 10


def latest_replica_states(store: RunStore, host: str) -> dict[str, ReplicaRecord]:
    for record in store.recent(host, limit=RECENT_RUNS):
        if record.replicas:
            return dict(record.replicas)
    return {}


def check_replicas(store: RunStore, config: Config, conditions: Conditions, active: set[str],
                   now: datetime) -> None:
    limit = config.watchdog.replica_behind_after
    for host in config.hosts:
        names = host_replicas(config, host)
        if not names:
            continue
        states = latest_replica_states(store, host)
        for name in names:
            state = states.get(name)
            if state is None:
                continue
            behind = (state.state != "current" and state.behind_since is not None
                      and (now - state.behind_since).total_seconds() > limit)
            _switch(conditions, active, now, f"replica_behind:{host}:{name}", behind,
                    host, "replica_behind",
                    f"Replica {name} of host {host} has lacked a set of the primary since "
                    f"{state.behind_since.isoformat() if state.behind_since else '?'} (more "
                    f"than {format_duration(limit)}); its newest set is "
                    f"{state.newest_set or 'none'}. Last problem: {state.problem or 'none'}. "
                    "The next backup copies what it lacks once it answers.",
                    f"Replica {name} of host {host} holds every set of the primary again.")
            _switch(conditions, active, now, f"replica_failed:{host}:{name}",
                    state.state == "failed", host, "replica_failed",
                    f"A copy to replica {name} of host {host} failed its check (size and "
                    f"SHA-256 against the primary): {state.problem}. The next backup copies "
                    "it again; `offsite verify HOST --local --target NAME` proves the replica.",
                    f"Copies to replica {name} of host {host} pass their check again.")


def _switch(conditions: Conditions, active: set[str], now: datetime, key: str, on: bool,
            host: str, failure: str, text: str, recovered: str) -> None:
    if on and key not in active:
        conditions.raise_(key, condition_alert(host, "replicate", failure, text), now)
    elif not on and key in active:
        conditions.clear(key, recovery_alert(host, "replicate", failure, recovered), now)
