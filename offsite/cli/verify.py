"""`offsite verify`: prove a host's backup restores from the target alone, here or as a run."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from offsite.cli.common import (EXIT_FAILED, EXIT_OK, add_target_argument, alert_locally,
                                ledger_store, reachable_ledger, targeted, wait_for)
from offsite.config.model import Config
from offsite.constants import RunState
from offsite.errors import UsageError
from offsite.ledger.run_record import RunRecord, record_as_json


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from offsite.proof.restore import parse_backup_time
    from offsite.ledger.status import format_outcome
    config.host(args.host)
    now = datetime.now(timezone.utc)
    at = parse_backup_time(args.time, now, args.host, "verify") if args.time else None
    if args.local:
        from offsite.cli.progress import progress_line
        from offsite.proof.verify import verify_local
        store, broker = reachable_ledger(config)
        with progress_line(lambda elapsed: f"verifying {args.host}: {elapsed:.0f}s"):
            targeted(config, args)   # an unknown target is a usage error before any work
            record = verify_local(config, args.host, at, Path(args.secret_keys_file)
                                  if args.secret_keys_file else None, target=args.target,
                                  broker=broker, store=store, alert=args.alert)
        if store is None:
            print("not recorded in the ledger: the broker does not answer", file=sys.stderr)
            if record.state == RunState.FAILED and args.alert:
                alert_locally(config, record)
    else:
        if args.target is not None:
            _check_drill_target(config, args.host, args.target)
        from tasks.dispatch import enqueue_verify, verify_queue
        store = ledger_store(config)
        queued = enqueue_verify(config, store, args.host, at, target=args.target)
        if not args.json:
            print(f"queued {queued.run_id} on queue {verify_queue(config, args.host)}")
        if not args.wait:
            if args.json:
                print(json.dumps(record_as_json(queued), indent=2))
            return EXIT_OK
        record = wait_for(store, queued.run_id, args.timeout)
    if args.json:   # the run record, its `verify` field holding files, bytes and mismatches
        print(json.dumps(record_as_json(record), indent=2))
    else:
        print(format_outcome(record))
        _print_verify_summary(record)
    return EXIT_OK if record.state == RunState.SUCCEEDED else EXIT_FAILED


def _check_drill_target(config: Config, host: str, target: str) -> None:
    """A queued drill names one of the host's targets (the drill node checks it again)."""
    from offsite.config.targets import target_names
    known = target_names(config, host)
    if target not in known:
        raise UsageError(f"host {host} has no target named {target[:64]!r}: its targets are "
                         f"{', '.join(known)}", host=host)


def _print_verify_summary(record: RunRecord) -> None:
    if record.verify is None:
        return
    result = record.verify
    print(f"set {result.backup_set}: {result.files_checked} file(s), {result.bytes_read} "
          f"byte(s) checked, {result.mismatch_count} mismatch(es)")
    for problem in result.mismatches:
        print(f"  {problem}")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    verify = sub.add_parser("verify", parents=[common],
                            help="prove HOST's backup restores from the target alone")
    verify.add_argument("host")
    verify.add_argument("--time", help="the set as of this time (default: the latest)")
    verify.add_argument("--wait", action="store_true", help="wait for the outcome")
    verify.add_argument("--timeout", type=float, default=None, help="with --wait: give up after")
    verify.add_argument("--local", action="store_true",
                        help="run here (recorded in the ledger when the broker answers)")
    verify.add_argument("--alert", action="store_true",
                        help="with --local: alert a failure like a scheduled drill's (sent by "
                             "the control node; from here only when the broker does not "
                             "answer); without it a manual drill alerts no one")
    verify.add_argument("--secret-keys-file", default=None,
                        help="with --local, public-key mode: the secret key to read the backup "
                             "(else this machine's GNUPGHOME)")
    verify.add_argument("--json", action="store_true",
                        help="print the run record (with --wait or --local: the outcome)")
    add_target_argument(verify)
    verify.set_defaults(action=cmd_verify)
