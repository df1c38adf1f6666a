"""`offsite hosts` (the per-host summary of the ledger) and `offsite http-password`."""
from __future__ import annotations

import argparse
import json
from typing import Any

from offsite.cli.common import EXIT_FAILED, EXIT_OK
from offsite.config.model import Config


def cmd_hosts(args: argparse.Namespace, config: Config) -> int:
    """Exit 1 with one line when the broker is down (offsite.cli.main maps RedisError)."""
    from offsite.fleet.summary import read_summary
    from offsite.fleet.table import format_hosts
    from offsite.config.broker import broker_client
    client = broker_client(config.broker_url, config.broker_sentinel_master,
                           socket_connect_timeout=5, socket_timeout=30, decode_responses=True)
    summary = read_summary(client, config)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(format_hosts(summary))
    return EXIT_OK


def cmd_ledger_rebuild(args: argparse.Namespace, config: Config) -> int:
    """Rebuild the newest full and incremental records of hosts from the target (all hosts
    whose facts hold no success, or the hosts named); exit 1 when a host's target could not
    be read."""
    from offsite.ledger.records import RedisRunStore
    from offsite.watch.ledger_lost import forget_unrebuilt, hosts_without_success, rebuild_ledger
    from offsite.config.broker import broker_client
    client = broker_client(config.broker_url, config.broker_sentinel_master,
                           socket_connect_timeout=5, socket_timeout=30)
    for host in args.hosts:
        config.host(host)
    hosts = args.hosts or hosts_without_success(client, config)
    rebuilt = rebuild_ledger(config, RedisRunStore(client), hosts)
    forget_unrebuilt(client, rebuilt)   # the control node stops trying them (and pings again)
    for item in rebuilt:
        print(item.describe() + (f" (wrote {', '.join(item.created)})" if item.created else ""))
    if not rebuilt:
        print("every host's facts hold a success: nothing to rebuild (name hosts to force)")
    return EXIT_FAILED if any(item.problem for item in rebuilt) else EXIT_OK


def cmd_http_password(args: argparse.Namespace, config: Config) -> int:
    """Print the line for http.basic_auth_file; the password comes from the terminal (asked
    twice) or from the first line of standard input, never from the command line."""
    import getpass
    import sys
    from offsite.errors import UsageError
    from offsite.fleet.http_auth import hash_password
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

    rebuild = sub.add_parser("ledger-rebuild", parents=[common],
                             help="rebuild hosts' newest full/incremental records from the "
                                  "target after Redis lost the ledger")
    rebuild.add_argument("hosts", nargs="*", help="default: hosts without a recorded success")
    rebuild.set_defaults(action=cmd_ledger_rebuild)
