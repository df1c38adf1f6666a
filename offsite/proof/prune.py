"""A prune of one host: planned from the target, applied under the host lease (never while a
backup or a drill of the host runs) and recorded as a run of type `prune`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.target.bucket import list_host_objects
from offsite.host.settings import HostSettings
from offsite.constants import RunState, RunType
from offsite.errors import OffsiteError, UsageError
from offsite.ledger.lease import HostLease
from offsite.ledger.renewer import keep_working
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord
from offsite.proof.replica_prune import prune_replicas
from offsite.proof.retention import PrunePlan, PruneRefused, delete_objects, plan_prune
from offsite.run.context import queue_manual_run, queue_run
from offsite.schedule.specs import utcnow

log = logging.getLogger(__name__)
PRUNE_STEP = "prune"


@dataclass(frozen=True)
class PruneOutcome:
    plan: PrunePlan
    record: RunRecord | None   # the run, when applied
    replicas: dict[str, PrunePlan] = field(default_factory=dict)   # each replica's plan
    replica_problems: list[str] = field(default_factory=list)


def newest_verified_set(store: RunStore, host: str) -> datetime | None:
    """The set of the host's newest successful verify: the one proven to restore."""
    stamp = store.verified_set(host)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def keep_count(settings: HostSettings) -> int:
    host, keep = settings.name, settings.keep_full_chains
    if keep is None:
        raise UsageError("no retention for this host: set retention.keep_full_chains (fleet) "
                         f"or hosts.{host}.retention.keep_full_chains", host=host, step="prune")
    return keep


def prune_host(settings: HostSettings, store: RunStore, lease: HostLease, *, apply: bool,
               run_id: str | None = None) -> PruneOutcome:
    """Plan (and with `apply`, carry out) the host's prune; raises OffsiteError on failure,
    after recording it in the run when applied."""
    host = settings.name
    keep = keep_count(settings)
    if not apply:
        verified = newest_verified_set(store, host)
        catalog = read_keyed_catalog(settings)
        plan = plan_prune(catalog, keep, verified, host)
        replicas, problems = prune_replicas(settings, keep, verified, catalog, plan, False)
        return PruneOutcome(plan, None, replicas, problems)
    record = (queue_run(store, host, RunType.PRUNE, run_id) if run_id
              else queue_manual_run(store, host, RunType.PRUNE, utcnow()))
    run_id = record.run_id
    if record.state != RunState.QUEUED:
        raise OffsiteError(f"prune {run_id} is already {record.state.value}", host=host,
                           step=PRUNE_STEP)
    if not lease.acquire(host, run_id):
        holder = lease.holder(host)
        _settle(store, run_id, RunState.SKIPPED, note=f"skipped: the host is busy with run "
                                                        f"{holder}; nothing deleted")
        return PruneOutcome(PrunePlan(host=host), store.get(run_id))
    try:
        _settle(store, run_id, RunState.RUNNING)
        with keep_working(lease, host, run_id):   # its lease keeper renews the whole prune
            verified = newest_verified_set(store, host)
            catalog = read_keyed_catalog(settings)
            plan = plan_prune(catalog, keep, verified, host)
            if plan.refused:
                raise PruneRefused("prune refused, nothing deleted: " + "; ".join(plan.refused),
                                   host=host, step=PRUNE_STEP)
            delete_objects(settings, plan.objects, on_batch=lambda: lease.renew(host, run_id))
            replicas, problems = prune_replicas(settings, keep, verified, catalog, plan, True,
                                                on_batch=lambda: lease.renew(host, run_id))
    except OffsiteError as error:
        _settle(store, run_id, RunState.FAILED, error=ErrorRecord(
            step=PRUNE_STEP, message=error.one_line(),
            failure_class=error.failure_class or "prune_failed"))
        raise
    finally:
        lease.release(host, run_id)
    note = (f"deleted {len(plan.objects)} object(s) of {len(plan.dropped)} chain(s) and "
            f"{len(plan.stray)} stray set(s), {plan.bytes_freed} byte(s) of volumes; kept "
            f"{len(plan.kept)} chain(s)")
    for name, replica in replicas.items():
        note += (f"; replica {name}: deleted {len(replica.objects)} object(s) of "
                 f"{len(replica.dropped)} chain(s), kept {len(replica.kept)}")
    for problem in problems:
        note += f"; {problem}"
    _settle(store, run_id, RunState.SUCCEEDED, note=note, stored=_stored_bytes(settings))
    log.info("prune %s: %s", run_id, note)
    return PruneOutcome(plan, store.get(run_id), replicas, problems)


def _stored_bytes(settings: HostSettings) -> int | None:
    """What the host's objects in the target hold after the prune (the fleet page's bytes
    stored); None when the listing fails (the prune itself is done)."""
    try:
        return sum(found.size for found in list_host_objects(settings))
    except OffsiteError as exc:
        log.warning("prune of %s: cannot list what the target holds now: %s", settings.name,
                    exc.one_line())
        return None


def _settle(store: RunStore, run_id: str, state: RunState, note: str | None = None,
            error: ErrorRecord | None = None, stored: int | None = None) -> None:
    def change(record: RunRecord) -> None:
        if record.is_final:
            return   # a final state (the watchdog's `lost`) is never written over
        now = utcnow()
        record.state = state
        if state == RunState.RUNNING:
            record.started_at = now
        else:
            record.finished_at = now
        if note:
            record.notes.append(note)
        if error is not None:
            record.error = error
        if stored is not None:
            record.stored_bytes = stored
    store.update(run_id, change)
