"""The `offsite` command: parses arguments, loads the config, calls one action, maps exit codes."""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import redis
from kombu.exceptions import OperationalError

from offsite.config import Config, config_path, load_config
from offsite.constants import BackupType, RunState
from offsite.durations import parse_duration
from offsite.errors import BrokerUnavailable, ConfigError, OffsiteError
from offsite.logbounds import bound_handlers
from offsite.records import RedisRunStore, RunRecord, record_as_json
from offsite.status import format_outcome, format_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_SERVICES = frozenset({"worker", "control", "beat"})
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command killed by SIGPIPE
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_STATUS_LIMIT = 1000

Action = Callable[[argparse.Namespace, Config], int]


def masked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _store(config: Config) -> RedisRunStore:
    return RedisRunStore(redis.Redis.from_url(config.broker_url, socket_connect_timeout=5,
                                              socket_timeout=30))


def _bind_app_to(path: Path) -> None:
    """The Celery app reads its settings from $OFFSITE_CONFIG: point it at our file."""
    os.environ["OFFSITE_CONFIG"] = str(path.resolve())


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from offsite.check import (check_connections, describe_hosts, detect_role,
                               host_of_this_node, hosts_as_json)
    from offsite.passphrase import check_passphrase
    role = args.role or (detect_role(os.environ) if args.connect else "all")
    host = host_of_this_node(config, args.host) if role == "host" else None
    if role == "host" or role == "all":
        findings = check_passphrase(config, host)
        problems = [f"passphrase: {problem}" for problem in findings.problems]
        warnings = list(findings.warnings)
    else:   # control: its drills' passphrase is checked with --connect; operator: none
        problems, warnings = [], []
    if args.connect:
        problems += check_connections(config, role, host)
    if args.json:
        print(json.dumps({"role": role, "host": host, "connect": args.connect,
                          "hosts": hosts_as_json(config), "problems": problems,
                          "warnings": warnings}, indent=2))
    else:
        print(describe_hosts(config))
        if args.connect:
            print(f"checked as role {role}" + (f" (host {host})" if host else ""))
            if role in ("control", "all"):
                from offsite.deadman import describe_switch
                print(describe_switch(config.alerts.heartbeat_url))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    config.host(args.host)
    from workers.start import start_host_worker
    start_host_worker(config, args.host, args.loglevel)
    return EXIT_OK


def cmd_beat(args: argparse.Namespace, config: Config) -> int:
    from workers.start import start_beat
    start_beat(config, args.loglevel)
    return EXIT_OK


def cmd_control(args: argparse.Namespace, config: Config) -> int:
    from workers.start import start_control_worker
    start_control_worker(config, args.loglevel)
    return EXIT_OK


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    backup_type = BackupType(args.type)
    config.host(args.host)
    if args.local:
        from offsite.runner import run_local
        record = run_local(config, args.host, backup_type)
        if record.state == RunState.FAILED:
            _alert_locally(config, record)
        print(format_outcome(record))
        return EXIT_OK if record.state in (RunState.SUCCEEDED, RunState.WARNING) else EXIT_FAILED
    from tasks.dispatch import enqueue_backup
    store = _store(config)
    record = enqueue_backup(config, store, args.host, backup_type)
    print(f"queued {record.run_id} on queue backup.{args.host}")
    if not args.wait:
        return EXIT_OK
    final = _wait_for(store, record.run_id, args.timeout)
    print(format_outcome(final))
    return EXIT_OK if final.state in (RunState.SUCCEEDED, RunState.WARNING) else EXIT_FAILED


def _alert_locally(config: Config, record: RunRecord) -> None:
    from offsite.alerts import failure_alert, sink_for
    try:
        sink_for(config).send(failure_alert(record))
    except Exception as exc:  # an alert failure must never hide the backup's own failure
        logging.getLogger(__name__).error("could not send the alert: %s", exc)


def _wait_for(store: RedisRunStore, run_id: str, timeout_s: float | None) -> RunRecord:
    """Woken by the run's end (pub/sub on the ledger), not by polling; on a terminal a status
    line shows the run's step meanwhile (offsite.progress)."""
    from offsite.progress import progress_line, run_progress
    with progress_line(run_progress(store, run_id)):
        record = store.wait_final(run_id, timeout_s)
    if record is None:
        current = store.get(run_id)
        state = current.state.value if current else "unknown"
        raise OffsiteError(f"run {run_id} still {state} after {timeout_s or 0:.0f}s; "
                           f"follow it with `offsite status`", step="wait")
    return record


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    if args.host:
        config.host(args.host)
    records = _store(config).recent(args.host, args.limit)
    if args.json:
        print(json.dumps([record_as_json(record) for record in records], indent=2))
    else:
        print(format_table(records))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from offsite.progress import folder_progress, progress_line
    from offsite.restore import restore_host
    config.host(args.host)
    with progress_line(folder_progress(f"restoring {args.host}", Path(args.dest))):
        thawing = restore_host(config, args.host, Path(args.dest), time=args.time,
                               path=args.path, thaw_days=args.days if args.thaw else None,
                               secret_keys_file=_path_or_none(args.secret_keys_file))
    print(f"not restored yet: {thawing}" if thawing else f"restored {args.host} into {args.dest}")
    return EXIT_OK


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a log level: use one of "
                                         f"{', '.join(LOG_LEVELS)}")
    return level


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


def _path_or_none(text: str | None) -> Path | None:
    return Path(text) if text else None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default $OFFSITE_CONFIG or ./offsite.yaml)")
    common.add_argument("--loglevel", default=argparse.SUPPRESS, type=_log_level,
                        help=f"log level: {', '.join(LOG_LEVELS)} (default INFO for worker, "
                             "control and beat, WARNING for the other commands)")
    parser = argparse.ArgumentParser(prog="offsite", parents=[common],
                                     description="Scheduled, encrypted, off-site backups.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", parents=[common], help="validate the config, show next runs")
    check.add_argument("--connect", action="store_true", help="also reach broker, bucket, SNS")
    check.add_argument("--role", choices=["host", "control", "operator", "all"],
                       help="with --connect: check only what this node needs (default: from "
                            "the keys in the environment)")
    check.add_argument("--host", help="with --role host: this node's host (default: the "
                                      "machine's short hostname)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(action=cmd_check)

    worker = sub.add_parser("worker", parents=[common], help="run HOST's worker (its queue only)")
    worker.add_argument("host")
    worker.set_defaults(action=cmd_worker)

    beat = sub.add_parser("beat", parents=[common], help="run Celery beat (one per fleet)")
    beat.set_defaults(action=cmd_beat)

    control = sub.add_parser("control", parents=[common], help="run the control worker (alerts)")
    control.set_defaults(action=cmd_control)

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
    restore.add_argument("--path", help="only this path, relative to the host's backup")
    restore.add_argument("--thaw", action="store_true",
                         help="request archived (Glacier) volumes it needs, then come back")
    restore.add_argument("--days", type=int, default=7, help="with --thaw: keep thawed copies")
    restore.add_argument("--secret-keys-file", help="public-key mode: the secret key (else "
                                                    "GNUPGHOME); never kept on a host")
    restore.set_defaults(action=cmd_restore)

    from offsite import cli_proof
    cli_proof.register(sub, common)
    from offsite.security_cli import add_security_commands
    add_security_commands(sub, common)
    from offsite.cli_ops import add_ops_commands
    add_ops_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:   # a TAB in bash (`offsite completion bash`)
        import argcomplete
        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)  # usage errors: argparse exits 2
    # services log what they do; one-shot commands print their outcome and only warnings
    args.loglevel = getattr(args, "loglevel", "INFO" if args.command in _SERVICES else "WARNING")
    logging.basicConfig(level=getattr(logging, args.loglevel),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bound_handlers()
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `offsite check | head -1`: the reader left; say nothing more, anywhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, the traceback only at DEBUG
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        cause = " ".join(str(exc).split())[:500]  # one line, whatever the exception says
        print(f"offsite: internal error: {type(exc).__name__}: {cause}; run with "
              "--loglevel DEBUG for the traceback", file=sys.stderr)
        return EXIT_FAILED


def settle(preload: Sequence[str] = ()) -> None:
    """The command is loaded (with `preload`, the modules its action imports): freeze what
    was loaded out of the cyclic collector's view and turn the collector on (see
    offsite.entry, which turned it off)."""
    if gc.isenabled():
        return   # called in-process (tests, embedding): nothing was turned off
    for module in preload:
        importlib.import_module(module)
    gc.freeze()
    gc.enable()


def _run(args: argparse.Namespace) -> int:
    """Load the config, run the action, and turn offsite's own errors into one line each."""
    if not getattr(args, "needs_config", True):
        settle()
        return int(args.action(args))
    path = config_path(getattr(args, "config", None))
    config: Config | None = None
    try:
        config = load_config(path)
        _bind_app_to(path)
        settle(getattr(args, "preload", ()))
        return int(args.action(args, config))
    except ConfigError as error:
        print(f"offsite: invalid config {error.path}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except OffsiteError as error:
        print(f"offsite: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except (redis.RedisError, OperationalError) as error:
        where = masked_url(config.broker_url) if config else "the broker"
        broker = BrokerUnavailable(
            f"cannot reach the broker at {where} ({error}): start "
            "redis-server or fix broker_url / $OFFSITE_BROKER_URL")
        print(f"offsite: error: {broker.one_line()}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        where = f" {error.filename}" if error.filename else ""
        print(f"offsite: error:{where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
