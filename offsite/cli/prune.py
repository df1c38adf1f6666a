"""`offsite prune`: the retention plan of each host, applied with --apply."""
from __future__ import annotations

import argparse
import json
from typing import Any

from offsite.cli.common import EXIT_FAILED, EXIT_OK
from offsite.config.model import Config
from offsite.constants import RunState


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    from offsite.host.settings import resolve_host
    from offsite.ledger.records import MemoryRunStore, RedisRunStore, RunStore
    from offsite.proof.prune import prune_host
    from offsite.run.local import local_lease, reachable_broker
    hosts = [args.host] if args.host else [h for h in config.hosts
                                           if config.keep_full_chains(h) is not None]
    resolved = [resolve_host(config, host) for host in hosts]   # an unknown host: before any
    # with no broker at hand (the embedded default) the prune is recorded in this process only
    client = reachable_broker(config)
    store: RunStore = RedisRunStore(client) if client is not None else MemoryRunStore()
    failed = False
    report: list[dict[str, Any]] = []
    for settings in resolved:
        host = settings.name
        lease = local_lease(config, settings, client)   # the host lock the workers take
        outcome = prune_host(settings, store, lease, apply=args.apply)
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
                       "state": state.value if state else None,
                       "notes": outcome.replica_problems, "plan": outcome.plan.as_json(),
                       "replicas": {name: plan.as_json()
                                    for name, plan in outcome.replicas.items()}})
        if not args.json:
            print(f"{host}: {'pruned' if args.apply else 'plan (nothing deleted without --apply)'}")
            for line in outcome.plan.describe():
                print(f"  {line}")
            for name, plan in outcome.replicas.items():
                print(f"  replica {name}:")
                for line in plan.describe():
                    print(f"    {line}")
            for problem in outcome.replica_problems:
                print(f"  {problem}")
    if args.json:
        print(json.dumps(report, indent=2))
    elif not hosts:
        print("no host has retention.keep_full_chains set: nothing to prune")
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    prune = sub.add_parser("prune", parents=[common],
                           help="delete chains beyond retention (dry run without --apply)")
    prune.add_argument("host", nargs="?")
    prune.add_argument("--apply", action="store_true", help="delete (default: print the plan)")
    prune.add_argument("--json", action="store_true",
                       help="a list of {host, applied, state, notes, plan}")
    prune.set_defaults(action=cmd_prune)
