"""The commands that prove and show what the target holds: `verify` and `list`."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

from offsite.config import Config
from offsite.constants import RunState
from offsite.records import RunRecord

EXIT_OK, EXIT_FAILED = 0, 1


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from offsite import cli
    from offsite.restore import parse_backup_time
    from offsite.status import format_outcome
    config.host(args.host)
    at = parse_backup_time(args.time, datetime.now(timezone.utc), args.host) if args.time \
        else None
    if args.local:
        from offsite.verify_run import verify_local
        record = verify_local(config, args.host, at)
        if record.state == RunState.FAILED:
            cli._alert_locally(config, record)
    else:
        from tasks.dispatch import enqueue_verify, verify_queue
        store = cli._store(config)
        queued = enqueue_verify(config, store, args.host, at)
        print(f"queued {queued.run_id} on queue {verify_queue(config, args.host)}")
        if not args.wait:
            return EXIT_OK
        record = cli._wait_for(store, queued.run_id, args.timeout)
    print(format_outcome(record))
    _print_verify_summary(record)
    return EXIT_OK if record.state == RunState.SUCCEEDED else EXIT_FAILED


def _print_verify_summary(record: RunRecord) -> None:
    if record.verify is None:
        return
    result = record.verify
    print(f"set {result.backup_set}: {result.files_checked} file(s), {result.bytes_read} "
          f"byte(s) checked, {result.mismatch_count} mismatch(es)")
    for problem in result.mismatches:
        print(f"  {problem}")


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from offsite.catalog import format_stamp, read_catalog
    config.host(args.host)
    catalog = read_catalog(config, args.host)
    if args.json:
        print(json.dumps([chain.as_json() for chain in catalog.chains], indent=2))
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
        print(f"not in a chain: incr {format_stamp(orphan.time)} (a set before it is missing)")
    for unfinished in catalog.unfinished:
        print(f"unfinished: {unfinished.kind} {format_stamp(unfinished.time)}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    verify = sub.add_parser("verify", parents=[common],
                            help="prove HOST's backup restores from the target alone")
    verify.add_argument("host")
    verify.add_argument("--time", help="the set as of this time (default: the latest)")
    verify.add_argument("--wait", action="store_true", help="wait for the outcome")
    verify.add_argument("--timeout", type=float, default=None, help="with --wait: give up after")
    verify.add_argument("--local", action="store_true", help="run here, without the broker")
    verify.set_defaults(action=cmd_verify)

    listing = sub.add_parser("list", parents=[common],
                             help="the backup chains and sets in the target")
    listing.add_argument("host")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(action=cmd_list)
