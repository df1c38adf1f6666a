"""The security commands of `offsite`: provision and recover (registered by offsite.cli.main)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from offsite.cli.common import add_target_argument, targeted
from offsite.config.model import Config

EXIT_OK = 0


def cmd_provision(args: argparse.Namespace, config: Config) -> int:
    from offsite.deploy.provision import build_plan, plan_as_terraform, plan_as_text
    from offsite.deploy.replica_provision import replica_plans
    config = targeted(config, args)   # --target NAME: that replica's bucket and identities
    plan = build_plan(config)
    others = replica_plans(config) if args.target is None else {}
    if not args.apply:
        if args.format == "json":
            print(json.dumps({**plan.as_json(), "replicas": {
                name: other.as_json() for name, other in others.items()}}, indent=2))
        elif args.format == "terraform":
            print(plan_as_terraform(plan))
        else:
            print(plan_as_text(plan))
            for name, other in others.items():
                print(f"replica {name} (apply with --target {name} and that provider's "
                      "credentials):")
                print("\n".join(f"  {line}" for line in plan_as_text(other).splitlines()[:-1]))
        return EXIT_OK
    from offsite.deploy.provision_apply import apply_plan
    out = Path(args.credentials_out) if args.credentials_out else None
    lines = apply_plan(config, out)
    print("\n".join(lines) if lines else "no changes: everything matches the plan")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace, config: Config) -> int:
    from offsite.host.settings import resolve_host
    from offsite.proof.recover import recover_host
    print(recover_host(resolve_host(targeted(config, args), args.host), args.time,
                       args.apply))
    return EXIT_OK


def add_security_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    provision = sub.add_parser("provision", parents=[common],
                               help="the bucket and least-privilege identities (plan or apply)")
    provision.add_argument("--format", choices=["text", "json", "terraform"], default="text")
    provision.add_argument("--apply", action="store_true", help="create or update through boto3 "
                           "with your own AWS credentials")
    provision.add_argument("--credentials-out", help="with --apply: write DIR/<host>.env, "
                           "DIR/control.env, DIR/recover.env (mode 0600)")
    add_target_argument(provision)
    provision.set_defaults(action=cmd_provision)

    recover = sub.add_parser("recover", parents=[common],
                             help="put HOST's objects back to their versions at --time")
    recover.add_argument("host")
    recover.add_argument("--time", required=True, help="e.g. 2026-11-01T00:00:00Z or 3D")
    recover.add_argument("--apply", action="store_true", help="do it (default: print the plan)")
    add_target_argument(recover)
    recover.set_defaults(action=cmd_recover)
