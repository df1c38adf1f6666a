"""The big-host benchmark's configuration (two hosts at default settings, a file:// target) and
what every phase is handed: the services it started and the paths it works in."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.overhead_runs import PASSPHRASE
from bench.services import Service
from offsite.config.model import Config

DUMP_HOST, TREE_HOST = "dump", "tree"


def write_config(work: Path, broker_url: str, dump_src: Path, tree_src: Path) -> Path:
    passphrase_file = work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    hosts = {DUMP_HOST: {"scripts": {"data": {"bash": f"cp -a {dump_src}/. ."}}},
             TREE_HOST: {"scripts": {"stamp": {"bash": "date > stamp"}},
                         "paths": {"data": str(tree_src)}}}
    data = {"broker_url": broker_url, "staging_root": str(work / "offsite" / "staging"),
            "cache_root": str(work / "offsite" / "cache"),
            "target": {"url": f"file://{work / 'target' / 'offsite'}"},
            "encryption": {"passphrase_file": str(passphrase_file)}, "hosts": hosts}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    config_path: Path
    config: Config
    broker_url: str
    env: dict[str, str]
    workers: dict[str, Service]
    control: Service
    state: dict[str, int] = field(default_factory=dict)   # what a phase left for the next

    @property
    def passphrase_file(self) -> Path:
        return self.work / "passphrase"

    @property
    def dump_src(self) -> Path:
        return self.work / "src" / "dump"

    @property
    def tree_src(self) -> Path:
        return self.work / "src" / "tree"


def lease_line(lowest_ms: list[int], ttl_s: int) -> str:
    if not lowest_ms:
        return "  lease lowest remaining       (never seen held)"
    low = min(lowest_ms) / 1000
    verdict = "met" if low >= ttl_s * 2 / 3 else "MISSED"
    return (f"  lease lowest remaining       {low:.1f} s of {ttl_s} s ({low / ttl_s:.2f} of "
            f"lease_ttl; goal >= 2/3: {verdict})")


def verdict(value: float, goal: float, at_most: bool = True) -> str:
    met = value <= goal if at_most else value >= goal
    return f"goal {'<=' if at_most else '>='} {goal:g}: {'met' if met else 'MISSED'}"
