"""Retention on the replicas: the same `keep_full_chains` applied to each replica's own catalog,
and never a set deleted from a replica while the primary still keeps it (a replica may be behind
or ahead of the primary's view; what the primary holds after its own prune is protected).

Each replica is pruned with its own keys (`<NAME>_PRUNE_AWS_*`, else `<NAME>_AWS_*`, else the
default chain). A replica that cannot be read or refuses a deletion is reported in the prune's
notes and does not fail the primary's prune (its extra sets cost space, not safety)."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from offsite.host.settings import HostSettings
from offsite.host.targets import on_target
from offsite.errors import OffsiteError
from offsite.proof.retention import PrunePlan, delete_objects, plan_prune
from offsite.target.catalog import Catalog, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog


def protected_sets(primary: Catalog, primary_plan: PrunePlan) -> set[datetime]:
    """The set times the primary holds after its prune."""
    deleted = {id(s) for chain in primary_plan.dropped for s in chain.sets}
    deleted |= {id(s) for s in primary_plan.stray}
    held = [s for chain in primary.chains for s in chain.sets] + primary.orphans
    return {s.time for s in [*held, *primary.unfinished] if id(s) not in deleted}


def replica_plan(catalog: Catalog, keep: int, verified: datetime | None, host: str,
                 protected: set[datetime]) -> PrunePlan:
    """plan_prune on the replica's catalog, then every chain or stray set holding a set the
    primary keeps moved back to `kept`; pure."""
    plan = plan_prune(catalog, keep, verified, host)
    for chain in list(plan.dropped):
        if any(s.time in protected for s in chain.sets):
            plan.dropped.remove(chain)
            plan.kept.append(chain)
            plan.reasons[format_stamp(chain.start)] = "the primary keeps it"
    plan.kept.sort(key=lambda chain: chain.start)
    plan.stray = [s for s in plan.stray if s.time not in protected]
    return plan


def prune_replicas(settings: HostSettings, keep: int, verified: datetime | None,
                   primary: Catalog, primary_plan: PrunePlan, apply: bool,
                   on_batch: Callable[[], object] | None = None
                   ) -> tuple[dict[str, PrunePlan], list[str]]:
    """Each replica's plan (applied with `apply`) and one note per replica problem."""
    protected = protected_sets(primary, primary_plan)
    plans: dict[str, PrunePlan] = {}
    problems: list[str] = []
    for name in settings.replicas:
        view = on_target(settings, name)
        try:
            plan = replica_plan(read_keyed_catalog(view), keep, verified, settings.name, protected)
            if apply:
                delete_objects(view, plan.objects, on_batch=on_batch)
        except OffsiteError as error:
            problems.append(f"replica {name} not pruned: {error.cause}")
            continue
        plans[name] = plan
    return plans, problems
