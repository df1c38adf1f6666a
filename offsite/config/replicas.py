"""Replicas: second (third, ...) targets every host's sets are copied to, the 3-2-1 rule.

A top-level `replicas:` mapping `NAME: {url, endpoint_url, region, ...}` takes the same fields
and checks as `target:`; `hosts.X.replicas: [NAME, ...]` selects a host's replicas (absent: all
of them; `[]`: none). The credentials of a replica come from the node's environment,
`<NAME>_AWS_ACCESS_KEY_ID` / `_SECRET_ACCESS_KEY` / `_SESSION_TOKEN` (the name upper-cased:
`SECOND_AWS_...` for a replica named `second`), else boto3's default chain; a role other than
the upload's (PRUNE, RECOVER) reads `<NAME>_<ROLE>_AWS_*` first. They are never in the config,
a message or the ledger.

A per-target command sees a replica through `target_view`: the same Config with the replica as
its `target` (and its own duplicity cache), so everything that reads `config.target` works on it.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from offsite.config.rules import PathProblem
from offsite.errors import UsageError

if TYPE_CHECKING:
    from offsite.config.model import Config
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


def replica_problems(config: Config) -> list[PathProblem]:
    """Hosts naming replicas that are not configured, a name twice, and two targets that are
    one place (a copy of a set onto itself would prove nothing)."""
    problems: list[PathProblem] = []
    for host, host_config in config.hosts.items():
        chosen = host_config.replicas or []
        for name in sorted(set(chosen) - set(config.replicas)):
            configured = ", ".join(sorted(config.replicas)) or "none"
            problems.append(PathProblem(f"hosts.{host}.replicas", (
                f"{name[:64]!r} is not a configured replica (configured: {configured})")))
        if len(set(chosen)) != len(chosen):
            problems.append(PathProblem(f"hosts.{host}.replicas", "names a replica twice"))
    for name in sorted(set(config.verify.targets or []) - {PRIMARY, *config.replicas}):
        problems.append(PathProblem("verify.targets", (
            f"{name[:64]!r} is neither primary nor a configured replica")))
    seen = {_place(config.target): "target"}
    for name, replica in config.replicas.items():
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


def host_replicas(config: Config, host: str) -> list[str]:
    """The replicas the host's sets are copied to, in the config's order."""
    chosen = config.host(host).replicas
    if chosen is None:
        return list(config.replicas)
    return [name for name in config.replicas if name in chosen]


def target_names(config: Config, host: str | None = None) -> list[str]:
    """`primary` and the replicas (of the host, when given)."""
    return [PRIMARY, *(host_replicas(config, host) if host else config.replicas)]


def target_view(config: Config, name: str | None) -> Config:
    """The config with replica `name` as its target (the config itself for None or primary);
    raises UsageError naming the configured targets."""
    if name in (None, PRIMARY):
        return config
    assert name is not None
    replica = config.replicas.get(name)
    if replica is None:
        known = ", ".join([PRIMARY, *config.replicas])
        raise UsageError(f"no target named {name[:64]!r}: the targets are {known}")
    target = replica.model_copy()
    target._identity = name.upper()
    return config.model_copy(update={"target": target,
                                     "cache_root": config.cache_dir / f"replica-{name}"})


def identity_prefix(target: TargetConfig, role: str) -> str:
    """The environment prefix (before `_AWS_ACCESS_KEY_ID`) of `role`'s keys on this target:
    the role itself on the primary; on a replica `<NAME>_<ROLE>` when set, else `<NAME>`."""
    name = target.identity
    if name is None:
        return role
    if role != "DUPLICITY" and os.environ.get(f"{name}_{role}_AWS_ACCESS_KEY_ID"):
        return f"{name}_{role}"
    return name
