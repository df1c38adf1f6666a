"""The watchdog's config-drift check: every live node publishes the digest of the config it
runs with (offsite.watch.config_digest, in its heartbeat); when any differs from what the control
node's own config says it should be, one `config_drift` alert names those nodes, and one
recovery follows when they agree again."""
from __future__ import annotations

from datetime import datetime
from typing import cast

import redis

from offsite.watch.alerts import condition_alert, recovery_alert
from offsite.watch.conditions import Conditions
from offsite.config.model import Config
from offsite.watch.config_digest import drifted_nodes, fleet_nodes
from offsite.ledger.heartbeat import HEARTBEATS_KEY, parse_beat

DRIFT_KEY = "config_drift"
FLEET = "fleet"


def live_drifted_nodes(client: redis.Redis, config: Config, now: datetime) -> list[str]:
    """Nodes that beat within watchdog.worker_timeout and run another config (one HMGET);
    a silent node is worker_down's business, not drift's."""
    nodes = fleet_nodes(config)
    raw = cast("list[bytes | None]", client.hmget(HEARTBEATS_KEY, nodes))
    limit = config.watchdog.worker_timeout
    alive = {}
    for node, value in zip(nodes, raw):
        beat = parse_beat(value)
        if beat is not None and (now - beat).total_seconds() <= limit:
            alive[node] = value
    return drifted_nodes(config, alive)


def check_drift(client: redis.Redis, config: Config, conditions: Conditions, active: set[str],
                now: datetime) -> list[str]:
    """Raise or clear config_drift to match what the heartbeats say; returns the drifted
    nodes."""
    drifted = live_drifted_nodes(client, config, now)
    if drifted and DRIFT_KEY not in active:
        shown = ", ".join(drifted[:50]) + (f" and {len(drifted) - 50} more"
                                           if len(drifted) > 50 else "")
        conditions.raise_(DRIFT_KEY, condition_alert(
            FLEET, "any", DRIFT_KEY,
            f"These nodes run with another config than the control node's: {shown}. Every "
            "node should read the same YAML: copy the control node's file to them (a host "
            "worker re-reads it when it changes; restart beat or control after an edit). "
            "`offsite hosts` shows which.", hint="offsite hosts"), now)
    elif not drifted and DRIFT_KEY in active:
        conditions.clear(DRIFT_KEY, recovery_alert(
            FLEET, "any", DRIFT_KEY, "Every live node runs with the control node's config "
                                     "again."), now)
    return drifted
