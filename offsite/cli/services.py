"""The long-running commands `worker`, `beat` and `control` (the Celery face in workers/), and
`check`, which says whether a node is ready to run one of them."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from offsite.cli.common import EXIT_FAILED, EXIT_OK
from offsite.config.model import Config


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from offsite.deploy.check import (check_connections, describe_hosts, detect_role,
                               host_of_this_node, hosts_as_json)
    from offsite.crypto.passphrase import check_passphrase
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
        if role == "all" and not any(p.startswith("broker unreachable") for p in problems):
            # a node of every role is also the control node: said, not failed, as before
            from offsite.deploy.check import persistence_problems
            warnings += persistence_problems(config)
    if args.json:
        print(json.dumps({"role": role, "host": host, "connect": args.connect,
                          "hosts": hosts_as_json(config), "problems": problems,
                          "warnings": warnings}, indent=2))
    else:
        print(describe_hosts(config))
        if args.connect:
            print(f"checked as role {role}" + (f" (host {host})" if host else ""))
            if role in ("control", "all"):
                from offsite.watch.deadman import describe_switch
                print(describe_switch(config.alerts.heartbeat_url))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    config.host(args.host)
    from workers.start import start_host_worker
    return start_host_worker(config, args.host, args.loglevel)


def cmd_beat(args: argparse.Namespace, config: Config) -> int:
    from workers.start import start_beat
    return start_beat(config, args.loglevel)


def cmd_control(args: argparse.Namespace, config: Config) -> int:
    from workers.start import start_control_worker
    return start_control_worker(config, args.loglevel)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
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
