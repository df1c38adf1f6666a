"""Replicas: second (third, ...) targets every host's sets are copied to, the 3-2-1 rule.

A top-level `replicas:` mapping `NAME: {url, endpoint_url, region, ...}` takes the same fields
and checks as `target:`; `hosts.X.replicas: [NAME, ...]` selects a host's replicas (absent: all
of them; `[]`: none). The credentials of a replica come from the node's environment,
`<NAME>_AWS_ACCESS_KEY_ID` / `_SECRET_ACCESS_KEY` / `_SESSION_TOKEN` (the name upper-cased:
`SECOND_AWS_...` for a replica named `second`), else boto3's default chain; a role other than
the upload's (PRUNE, RECOVER) reads `<NAME>_<ROLE>_AWS_*` first. They are never in the config,
a message or the ledger.

A per-target command sees a replica through offsite.config.targets.target_view: the same Config
with the replica as its `target`, so everything that reads `config.target` works on it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from offsite.config.rules import PathProblem

if TYPE_CHECKING:
    from offsite.config.sections import TargetConfig

PRIMARY = "primary"   # the name of `target:` for --target
MAX_REPLICAS = 16
RESERVED = frozenset({"primary", "duplicity", "alert", "prune", "recover", "aws", "offsite"})
_REPLICA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_replica_name(value: str) -> str:
    """A name that makes a valid environment variable prefix and clashes with no identity."""
    if not _REPLICA_NAME.match(value):
        raise ValueError(f"{value[:64]!r} is not a replica name: lower-case letters, digits and "
                         "'_', starting with a letter, at most 32 (its credentials are read "
                         "from <NAME>_AWS_ACCESS_KEY_ID, so it must make a variable name)")
    if value in RESERVED:
        raise ValueError(f"{value!r} is reserved (primary names the target; DUPLICITY_, ALERT_, "
                         "PRUNE_, RECOVER_ are other identities' keys): choose another name")
    return value


ReplicaName = Annotated[str, AfterValidator(check_replica_name)]


def replica_problems(target: TargetConfig, replicas: Mapping[str, TargetConfig],
                     host_choices: Mapping[str, list[str] | None],
                     verify_targets: list[str] | None) -> list[PathProblem]:
    """Hosts naming replicas that are not configured, a name twice, drill targets that are not
    targets, and two targets that are one place (a copy of a set onto itself proves nothing)."""
    problems: list[PathProblem] = []
    for host, choice in host_choices.items():
        chosen = choice or []
        for name in sorted(set(chosen) - set(replicas)):
            configured = ", ".join(sorted(replicas)) or "none"
            problems.append(PathProblem(f"hosts.{host}.replicas", (
                f"{name[:64]!r} is not a configured replica (configured: {configured})")))
        if len(set(chosen)) != len(chosen):
            problems.append(PathProblem(f"hosts.{host}.replicas", "names a replica twice"))
    for name in sorted(set(verify_targets or []) - {PRIMARY, *replicas}):
        problems.append(PathProblem("verify.targets", (
            f"{name[:64]!r} is neither primary nor a configured replica")))
    seen = {_place(target): "target"}
    for name, replica in replicas.items():
        place = _place(replica)
        if place in seen:
            problems.append(PathProblem(f"replicas.{name}.url", (
                f"{replica.url} is the same place as {seen[place]}: a replica must be another "
                "bucket, folder or provider")))
        seen.setdefault(place, f"replicas.{name}")
    return problems


def _place(target: TargetConfig) -> tuple[str, str]:
    scheme, _, rest = target.url.partition("://")
    return (target.endpoint_url or "aws" if scheme != "file" else "file", rest.rstrip("/"))
