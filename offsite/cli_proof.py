"""The commands that prove, show and trim what the target holds: `verify`, `list`, `prune`; and
`hosts`, the per-host summary of the ledger."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from offsite.config import Config
from offsite.constants import RunState
from offsite.records import RunRecord, record_as_json

EXIT_OK, EXIT_FAILED = 0, 1


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from offsite import cli
    from offsite.restore import parse_backup_time
    from offsite.status import format_outcome
    config.host(args.host)
    now = datetime.now(timezone.utc)
    at = parse_backup_time(args.time, now, args.host, "verify") if args.time else None
    if args.local:
        from offsite.progress import progress_line
        from offsite.verify_run import verify_local
        with progress_line(lambda elapsed: f"verifying {args.host}: {elapsed:.0f}s"):
            record = verify_local(config, args.host, at, Path(args.secret_keys_file)
                                  if args.secret_keys_file else None)
        if record.state == RunState.FAILED:
            cli._alert_locally(config, record)
    else:
        from tasks.dispatch import enqueue_verify, verify_queue
        store = cli._store(config)
        queued = enqueue_verify(config, store, args.host, at)
        if not args.json:
            print(f"queued {queued.run_id} on queue {verify_queue(config, args.host)}")
        if not args.wait:
            if args.json:
                print(json.dumps(record_as_json(queued), indent=2))
            return EXIT_OK
        record = cli._wait_for(store, queued.run_id, args.timeout)
    if args.json:   # the run record, its `verify` field holding files, bytes and mismatches
        print(json.dumps(record_as_json(record), indent=2))
    else:
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


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    from offsite import cli
    from offsite.lease import RedisHostLease
    from offsite.prune_run import prune_host
    hosts = [args.host] if args.host else [h for h in config.hosts
                                           if config.keep_full_chains(h) is not None]
    for host in hosts:
        config.host(host)
    store = cli._store(config)
    lease = RedisHostLease(store.client, config.watchdog.lease_ttl)
    failed = False
    report: list[dict[str, Any]] = []
    for host in hosts:
        outcome = prune_host(config, store, lease, host, apply=args.apply)
        state = outcome.record.state if outcome.record is not None else None
        if state is not None and state != RunState.SUCCEEDED:
            failed = True
            notes = outcome.record.notes if outcome.record is not None else []
            report.append({"host": host, "applied": False, "state": state.value,
                           "notes": notes, "plan": None})
            if not args.json:
                print(f"{host}: {state.value}: {'; '.join(notes)}")
            continue
        report.append({"host": host, "applied": args.apply,
                       "state": state.value if state else None, "notes": [],
                       "plan": outcome.plan.as_json()})
        if not args.json:
            print(f"{host}: {'pruned' if args.apply else 'plan (nothing deleted without --apply)'}")
            for line in outcome.plan.describe():
                print(f"  {line}")
    if args.json:
        print(json.dumps(report, indent=2))
    elif not hosts:
        print("no host has retention.keep_full_chains set: nothing to prune")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_hosts(args: argparse.Namespace, config: Config) -> int:
    """Exit 1 with one line when the broker is down (offsite.cli maps RedisError)."""
    import redis
    from offsite.fleet import read_summary
    from offsite.fleet_table import format_hosts
    client = redis.Redis.from_url(config.broker_url, socket_connect_timeout=5, socket_timeout=30,
                                  decode_responses=True)
    summary = read_summary(client, config)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(format_hosts(summary))
    return EXIT_OK


def cmd_http_password(args: argparse.Namespace, config: Config) -> int:
    """Print the line for http.basic_auth_file; the password comes from the terminal (asked
    twice) or from the first line of standard input, never from the command line."""
    import getpass
    import sys
    from offsite.errors import UsageError
    from offsite.http_auth import hash_password
    del config
    if ":" in args.user or not args.user.strip() or not args.user.isprintable():
        raise UsageError(f"user {args.user[:40]!r} must be printable, without ':'")
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise UsageError("the password is shorter than 8 characters")
    print(f"{args.user}:{hash_password(password)}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    password = sub.add_parser("http-password", parents=[common],
                              help="print a USER:HASH line for http.basic_auth_file")
    password.add_argument("user")
    password.set_defaults(action=cmd_http_password)

    hosts = sub.add_parser("hosts", parents=[common],
                           help="one row per host, worst first: last runs, success, conditions")
    hosts.add_argument("--json", action="store_true")
    hosts.set_defaults(action=cmd_hosts)

    verify = sub.add_parser("verify", parents=[common],
                            help="prove HOST's backup restores from the target alone")
    verify.add_argument("host")
    verify.add_argument("--time", help="the set as of this time (default: the latest)")
    verify.add_argument("--wait", action="store_true", help="wait for the outcome")
    verify.add_argument("--timeout", type=float, default=None, help="with --wait: give up after")
    verify.add_argument("--local", action="store_true", help="run here, without the broker")
    verify.add_argument("--secret-keys-file", default=None,
                        help="with --local, public-key mode: the secret key to read the backup "
                             "(else this machine's GNUPGHOME)")
    verify.add_argument("--json", action="store_true",
                        help="print the run record (with --wait or --local: the outcome)")
    verify.set_defaults(action=cmd_verify)

    listing = sub.add_parser("list", parents=[common],
                             help="the backup chains and sets in the target")
    listing.add_argument("host")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(action=cmd_list)

    prune = sub.add_parser("prune", parents=[common],
                           help="delete chains beyond retention (dry run without --apply)")
    prune.add_argument("host", nargs="?")
    prune.add_argument("--apply", action="store_true", help="delete (default: print the plan)")
    prune.add_argument("--json", action="store_true",
                       help="a list of {host, applied, state, notes, plan}")
    prune.set_defaults(action=cmd_prune)
