"""The run's `replicate` step: once the primary's upload is confirmed, the host's worker copies
to each of the host's replicas whatever of its sets they lack (offsite.target.replicate), oldest
first, and records each replica's state in the run record. A replica that is down or refuses
leaves the run succeeded: its state is `behind` (caught up by the next run); a copy that fails
its check is `failed`. Neither raises: the backup in the primary is whole either way.

The step holds the host lease (renewed after every object) and runs before the run is marked
succeeded, so `backup --wait` returns with the replicas' states; a worker that dies during it
leaves a confirmed upload, which the watchdog finishes as succeeded.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from offsite.host.targets import on_target
from offsite.ledger.run_record import ReplicaRecord, RunRecord, StepRecord
from offsite.run.context import RunContext
from offsite.schedule.specs import utcnow
from offsite.target.replicate import ReplicaOutcome, replicate_host

log = logging.getLogger(__name__)

REPLICATE_STEP = "replicate"
RECENT_RUNS = 10   # how far back a host's latest replica states are looked for


def replicate_step(ctx: RunContext,
                   renew: Callable[[], None] | None = None) -> dict[str, ReplicaRecord]:
    """Copy to every replica of the host; record and return each replica's state. Never
    raises for a replica's problem (logged, recorded, alerted by the watchdog)."""
    names = list(ctx.settings.replicas)
    if not names:
        return {}
    started = utcnow()
    previous = _previous_states(ctx)
    records: dict[str, ReplicaRecord] = {}
    for name in names:
        try:
            outcome = replicate_host(ctx.settings, on_target(ctx.settings, name), name,
                                     on_object=renew)
        except Exception as exc:  # noqa: BLE001 - the primary unreadable, or a bug: not fatal
            outcome = ReplicaOutcome(name, state="behind",
                                     problem=f"{type(exc).__name__}: {exc}")
        records[name] = replica_record(outcome, previous.get(name), started)
        if outcome.state != "current":
            log.warning("run %s: replica %s is %s: %s", ctx.run_id, name, outcome.state,
                        outcome.problem)

    def store(record: RunRecord) -> None:
        step = StepRecord(name=REPLICATE_STEP, worker=ctx.worker, started_at=started,
                          finished_at=utcnow(), exit_code=0)
        step.duration_s = (step.finished_at - started).total_seconds()   # type: ignore[operator]
        record.steps = [s for s in record.steps if s.name != REPLICATE_STEP] + [step]
        record.replicas = records
        for name, replica in records.items():
            if replica.state != "current":
                record.notes.append(f"replica {name} {replica.state}: {replica.problem}")
    ctx.store.update(ctx.run_id, store)
    return records


def replica_record(outcome: ReplicaOutcome, before: ReplicaRecord | None,
            now: datetime) -> ReplicaRecord:
    """The replica's state; `behind_since` is when it first lacked a set the primary held (kept
    across runs until it is current again), what replica_behind is judged by."""
    behind_since = None
    if outcome.state != "current":
        candidates = [datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=now.tzinfo)
                      for stamp in outcome.lacking[:1]]
        if before is not None and before.behind_since is not None:
            candidates.append(before.behind_since)
        behind_since = min(candidates) if candidates else now
    newest = outcome.newest_set or (before.newest_set if before is not None and
                                    outcome.state == "behind" else None)
    return ReplicaRecord(state=outcome.state, newest_set=newest, behind_since=behind_since,
                         copied_sets=len(outcome.copied_sets),
                         copied_objects=outcome.copied_objects, recopied=len(outcome.recopied),
                         lacking=len(outcome.lacking), problem=outcome.problem or "",
                         checked_at=now)


def _previous_states(ctx: RunContext) -> dict[str, ReplicaRecord]:
    """Each replica's state in the host's latest earlier backup run that recorded one."""
    try:
        for record in ctx.store.recent(ctx.host, limit=RECENT_RUNS):
            if record.run_id != ctx.run_id and record.replicas:
                return dict(record.replicas)
    except Exception as exc:  # noqa: BLE001 - the ledger unreachable: start afresh
        log.warning("run %s: cannot read earlier replica states: %s", ctx.run_id, exc)
    return {}

