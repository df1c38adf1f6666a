"""A host's settings seen through one of its targets: `primary` (its own settings) or one of its
replicas (offsite.config.replicas), as the copy, the drills, prune and the per-target commands
read them. A replica's view has the replica as its `target` (keys `<NAME>_AWS_*`) and its own
duplicity cache, so a restore from it never disturbs the primary's."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from offsite.config.replicas import PRIMARY
from offsite.errors import UsageError
from offsite.host.settings import HostSettings


def on_target(settings: HostSettings, name: str | None) -> HostSettings:
    """The settings with target `name` (None or primary: unchanged); raises UsageError naming
    the host's targets."""
    if name in (None, PRIMARY):
        return settings
    assert name is not None
    target = settings.replicas.get(name)
    if target is None:
        known = ", ".join([PRIMARY, *settings.replicas])
        raise UsageError(f"host {settings.name} has no target named {name[:64]!r}: its "
                         f"targets are {known}", host=settings.name)
    return replace(settings, target=target, cache_root=settings.cache_root / f"replica-{name}",
                   replicas=MappingProxyType({}))


def host_targets(settings: HostSettings) -> list[str]:
    """`primary` and the host's replicas, in the config's order."""
    return [PRIMARY, *settings.replicas]
