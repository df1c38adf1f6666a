"""`offsite list`: the chains and sets the target holds for a host, read from the target alone."""
from __future__ import annotations

import argparse
import json
from typing import Any

from offsite.cli.common import EXIT_OK, add_target_argument, targeted
from offsite.config.model import Config
from offsite.host.settings import resolve_host


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from offsite.target.catalog import format_stamp, read_catalog
    catalog = read_catalog(resolve_host(targeted(config, args), args.host))
    if args.json:
        print(json.dumps(catalog.as_json(), indent=2))
        return EXIT_OK
    if not catalog.chains:
        print(f"{catalog.location}: no complete backup chain")
    for number, chain in enumerate(catalog.chains, 1):
        print(f"chain {number}: {format_stamp(chain.start)} .. {format_stamp(chain.end)}")
        for backup_set in chain.sets:
            line = (f"  {backup_set.kind:<4} {format_stamp(backup_set.time)}  "
                    f"{len(backup_set.volumes)} volume(s)  {backup_set.bytes} bytes")
            if backup_set.archived:
                line += f"  ({len(backup_set.archived)} archived)"
            print(line)
    for orphan in catalog.orphans:
        print(f"not in a chain: incr {format_stamp(orphan.time)} (a set before it is missing "
              "or does not restore)")
    for unfinished in catalog.unfinished:
        print(f"unfinished: {unfinished.kind} {format_stamp(unfinished.time)}: "
              f"{unfinished.reason or 'unfinished'}")
    for name, why in sorted(catalog.ignored.items()):
        print(f"ignored: {why}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    listing = sub.add_parser("list", parents=[common],
                             help="the backup chains and sets in the target")
    listing.add_argument("host")
    listing.add_argument("--json", action="store_true")
    add_target_argument(listing)
    listing.set_defaults(action=cmd_list)
