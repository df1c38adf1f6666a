"""The `offsite` command: parses arguments, loads the config, calls one action, maps exit codes.
Each group of commands lives in its own module and registers its subcommands here."""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import redis
from kombu.exceptions import OperationalError

from offsite.cli import fleet, listing, ops, prune, runs, security, services, verify
from offsite.cli.common import EXIT_FAILED, EXIT_USAGE, masked_url
from offsite.config.model import Config, config_path, load_config
from offsite.errors import BrokerUnavailable, ConfigError, OffsiteError
from offsite.process.logbounds import bound_handlers

_SERVICES = frozenset({"worker", "control", "beat"})
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command killed by SIGPIPE
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Action = Callable[[argparse.Namespace, Config], int]
COMMAND_GROUPS: tuple[Callable[[Any, argparse.ArgumentParser], None], ...] = (
    services.register, runs.register, fleet.register, verify.register, listing.register,
    prune.register, security.add_security_commands, ops.add_ops_commands)


def _bind_app_to(path: Path) -> None:
    """The Celery app reads its settings from $OFFSITE_CONFIG: point it at our file."""
    os.environ["OFFSITE_CONFIG"] = str(path.resolve())


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a log level: use one of "
                                         f"{', '.join(LOG_LEVELS)}")
    return level


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

    for register in COMMAND_GROUPS:
        register(sub, common)
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
