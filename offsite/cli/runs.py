"""The commands that run and show backups: `backup`, `status`, `restore`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from offsite.cli.common import (EXIT_FAILED, EXIT_OK, alert_locally, ledger_store, path_or_none,
                                reachable_ledger, wait_for, add_target_argument, targeted)
from offsite.config.model import Config
from offsite.constants import BackupType, RunState
from offsite.durations import parse_duration
from offsite.errors import OffsiteError, UsageError
from offsite.ledger.run_record import record_as_json
from offsite.ledger.status import format_outcome, format_table

MAX_STATUS_LIMIT = 1000


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    backup_type = BackupType(args.type)
    config.host(args.host)
    if args.local:
        from offsite.run.local_backup import run_local
        record = run_local(config, args.host, backup_type)
        if record.state == RunState.FAILED:
            alert_locally(config, record)
        print(format_outcome(record))
        return EXIT_OK if record.state in (RunState.SUCCEEDED, RunState.WARNING) else EXIT_FAILED
    from tasks.dispatch import enqueue_backup
    store = ledger_store(config)
    record = enqueue_backup(config, store, args.host, backup_type)
    print(f"queued {record.run_id} on queue backup.{args.host}")
    if not args.wait:
        return EXIT_OK
    final = wait_for(store, record.run_id, args.timeout)
    print(format_outcome(final))
    return EXIT_OK if final.state in (RunState.SUCCEEDED, RunState.WARNING) else EXIT_FAILED


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    if args.host:
        config.host(args.host)
    records = ledger_store(config).recent(args.host, args.limit)
    if args.json:
        print(json.dumps([record_as_json(record) for record in records], indent=2))
    else:
        print(format_table(records))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from offsite.cli.progress import folder_progress, progress_line
    from offsite.host.settings import resolve_host
    from offsite.proof.restore import restore_host
    from offsite.proof.restore_record import recorded_restore
    from offsite.target.catalog import format_stamp
    settings = resolve_host(targeted(config, args), args.host)
    chosen: list[Any] = []
    store, _ = reachable_ledger(config)   # recorded there when the broker answers
    asked = " ".join([f"restore into {args.dest}"] + [f"{flag} {value}" for flag, value in (
        ("--time", args.time), ("--path", args.path), ("--target", args.target)) if value])
    try:
        with recorded_restore(store, args.host, alert=args.alert, request=asked) as restore, \
                progress_line(folder_progress(f"restoring {args.host}", Path(args.dest))):
            thawing = restore_host(settings, Path(args.dest), time=args.time,
                                   path=args.path, thaw_days=args.days if args.thaw else None,
                                   secret_keys_file=path_or_none(args.secret_keys_file),
                                   chosen=chosen)
            restore.skipped = f"archived volumes requested: {thawing}" if thawing else None
            restore.notes += [f"restored the {backup.kind} set of {format_stamp(backup.time)}"
                              for backup in chosen[:1] if not thawing]
    except UsageError:
        raise   # not a restore: nothing to record
    except OffsiteError:
        if store is None:
            print("not recorded in the ledger: the broker does not answer", file=sys.stderr)
        if store is None and args.alert and restore.failed is not None:
            alert_locally(config, restore.failed)
        raise
    if store is None:
        print("not recorded in the ledger: the broker does not answer", file=sys.stderr)
    which = f" (the {chosen[0].kind} set of {format_stamp(chosen[0].time)})" if chosen else ""
    print(f"not restored yet: {thawing}" if thawing
          else f"restored {args.host}{which} into {args.dest}")
    return EXIT_OK


def _status_limit(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_STATUS_LIMIT:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of runs from 1 to "
                                         f"{MAX_STATUS_LIMIT}")
    return int(text)


def _wait_timeout(text: str) -> int:
    """Seconds, written as in the config (15s, 10m, 1h30m) or as a plain number of seconds."""
    try:
        return parse_duration(int(text) if text.strip().isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    backup = sub.add_parser("backup", parents=[common], help="back up HOST now")
    backup.add_argument("host")
    backup.add_argument("--type", choices=[t.value for t in BackupType], required=True)
    backup.add_argument("--wait", action="store_true", help="wait for the outcome")
    backup.add_argument("--timeout", type=_wait_timeout, default=None,
                        help="with --wait: give up after this long (90s, 15m, 2h)")
    backup.add_argument("--local", action="store_true", help="run here, without the broker")
    backup.set_defaults(action=cmd_backup, preload=("tasks.dispatch", "kombu.transport.redis"))

    status = sub.add_parser("status", parents=[common], help="recent runs, newest first")
    status.add_argument("host", nargs="?")
    status.add_argument("--json", action="store_true")
    status.add_argument("--limit", type=_status_limit, default=20,
                        help=f"how many runs (1 to {MAX_STATUS_LIMIT}, default 20)")
    status.set_defaults(action=cmd_status)

    restore = sub.add_parser("restore", parents=[common], help="restore HOST's backup into DEST")
    restore.add_argument("host")
    restore.add_argument("dest")
    restore.add_argument("--time", help="as of this time (duplicity time format, e.g. 2h, "
                                        "2026-11-01T00:00:00Z)")
    restore.add_argument("--path", help="only this path, relative to the host's backup; "
                         "restored as DEST/PATH")
    restore.add_argument("--thaw", action="store_true",
                         help="request archived (Glacier) volumes it needs, then come back")
    restore.add_argument("--days", type=int, default=7, help="with --thaw: keep thawed copies")
    restore.add_argument("--secret-keys-file", help="public-key mode: the secret key (else "
                                                    "GNUPGHOME); never kept on a host")
    restore.add_argument("--alert", action="store_true",
                         help="alert a failure like a scheduled run's (sent by the control "
                              "node when the broker answers, else from here); without it a "
                              "restore alerts no one")
    add_target_argument(restore)
    restore.set_defaults(action=cmd_restore)
