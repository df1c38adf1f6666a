"""Which target a restore drill reads: drills rotate across the host's targets (`primary`, then
each replica of the host, or the names in `verify.targets`), so every copy is proven by a restore
from it alone. The next target follows the one the host's latest drill read (recorded in its run
record's `target`); a drill asked for one target (`verify --local --target NAME`) reads that one.
"""
from __future__ import annotations

from offsite.config.model import Config
from offsite.config.replicas import PRIMARY
from offsite.constants import RunType
from offsite.host.settings import HostSettings
from offsite.host.targets import host_targets
from offsite.ledger.records import RunStore

RECENT_RUNS = 50


def drill_targets(config: Config, settings: HostSettings) -> list[str]:
    """The targets the host's drills rotate over, in order (`verify.targets` is the fleet's)."""
    own = host_targets(settings)
    chosen = config.verify.targets
    if chosen is None:
        return own
    return [name for name in chosen if name in own] or [PRIMARY]


def next_drill_target(config: Config, settings: HostSettings, store: RunStore,
                      run_id: str) -> str:
    targets = drill_targets(config, settings)
    if len(targets) == 1:
        return targets[0]
    for record in store.recent(settings.name, limit=RECENT_RUNS):
        if record.type == RunType.VERIFY and record.run_id != run_id and record.target:
            if record.target in targets:
                return targets[(targets.index(record.target) + 1) % len(targets)]
            break
    return targets[0]
