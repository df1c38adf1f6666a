"""`@working`: a run's step (or its start) works under its lease keeper for as long as it runs,
including what it does after its recorded step (tagging, finishing); see
offsite.ledger.renewer.RenewingLease.working."""
from __future__ import annotations

from functools import wraps
from typing import Callable, Concatenate, ParamSpec, TypeVar

from offsite.ledger.renewer import keep_working
from offsite.run.context import RunContext

P = ParamSpec("P")
R = TypeVar("R")


def working(step: Callable[Concatenate[RunContext, P], R]
            ) -> Callable[Concatenate[RunContext, P], R]:
    @wraps(step)
    def run(ctx: RunContext, *args: P.args, **kwargs: P.kwargs) -> R:
        with keep_working(ctx.lease, ctx.host, ctx.run_id):
            return step(ctx, *args, **kwargs)
    return run
