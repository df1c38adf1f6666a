"""The targets of a fleet as commands see them: `primary` (the `target:`) and the replicas
(offsite.config.replicas), each host's selection of them, and a Config seen through one target.
"""
from __future__ import annotations

from offsite.config.model import Config
from offsite.config.replicas import PRIMARY
from offsite.errors import UsageError


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
