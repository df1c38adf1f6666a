"""Which config each node runs with: a digest per node of the config parts it uses, published
in its heartbeat, so the control node's watchdog can tell when nodes disagree (`config_drift`).

Every node reads the same YAML, each from its own copy. A host's worker uses the fleet-wide
settings and its own host's entry; beat and the control node use all of it. `broker_url` is
left out: each node may reach the same Redis by its own address (and it holds the password).
The control node computes, from its own config, the digest each node should publish; a node
that publishes another one runs with another config (an older file, or a copy not updated).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from threading import Lock
from typing import Any, Mapping

from offsite.config.model import Config
from offsite.ledger.heartbeat import BEAT_NODE, CONTROL_NODE, parse_digest, worker_node

DIGEST_CHARS = 16
_LEFT_OUT = frozenset({"broker_url"})


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class NodeDigests:
    """The digest each node of the fleet should publish under this config."""
    fleet: str                 # beat and control: everything
    hosts: dict[str, str]      # worker:<host>: the fleet-wide settings and that host's entry

    def expected(self, node: str) -> str | None:
        """None for a node this config does not know (a removed host's worker)."""
        if node in (BEAT_NODE, CONTROL_NODE):
            return self.fleet
        if node.startswith("worker:"):
            return self.hosts.get(node.removeprefix("worker:"))
        return None


def _compute(config: Config) -> NodeDigests:
    data = config.model_dump(mode="json", exclude=set(_LEFT_OUT))
    hosts = data.pop("hosts")
    common = _canonical(data)
    fleet = hashlib.sha256(common + _canonical(hosts)).hexdigest()[:DIGEST_CHARS]
    per_host = {name: hashlib.sha256(common + _canonical({name: entry})).hexdigest()
                [:DIGEST_CHARS] for name, entry in hosts.items()}
    return NodeDigests(fleet=fleet, hosts=per_host)


_cache: tuple[Config, NodeDigests] | None = None
_cache_lock = Lock()


def node_digests(config: Config) -> NodeDigests:
    """Computed once per loaded config (a config object is never changed in place)."""
    global _cache
    with _cache_lock:
        if _cache is None or _cache[0] is not config:
            _cache = (config, _compute(config))
        return _cache[1]


def digest_for(config: Config, node: str) -> str:
    """What `node` publishes: the digest of the parts of `config` it uses."""
    found = node_digests(config).expected(node)
    if found is None:
        raise ValueError(f"node {node!r} is not part of this config")
    return found


def drifted_nodes(config: Config, beats: Mapping[str, bytes | str | None]) -> list[str]:
    """The nodes (among `beats`, their heartbeat values) that published a digest other than
    the one this config says they should: they run with another config. Nodes that publish
    none (older versions, simulated fleets) and nodes this config does not know are left out."""
    digests = node_digests(config)
    drifted = []
    for node, raw in beats.items():
        published, wanted = parse_digest(raw), digests.expected(node)
        if published is not None and wanted is not None and published != wanted:
            drifted.append(node)
    return sorted(drifted)


def fleet_nodes(config: Config) -> list[str]:
    return [BEAT_NODE, CONTROL_NODE] + [worker_node(host) for host in config.hosts]
