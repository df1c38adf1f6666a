"""The deployment commands of `offsite`: install-units, config-schema, completion, flower
(registered by offsite.cli.main)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from offsite.config.model import Config, config_path
from offsite.errors import OffsiteError

EXIT_OK = 0
FLOWER_COLUMNS = "name,uuid,state,args,result,received,runtime,worker"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def cmd_install_units(args: argparse.Namespace, config: Config) -> int:
    from offsite.deploy.units import (DEFAULT_DEST, DEFAULT_ENV_DIR, WORKER_TEMPLATE, Installation, UnitError,
                               build_units, installed_offsite, write_units)
    if args.host is not None:
        config.host(args.host)     # a host not in the config (or a path) is refused here
    try:
        install = Installation(
            offsite=installed_offsite(),
            config=config_path(getattr(args, "config", None)).absolute(),
            writable=(config.staging_root, config.cache_dir),
            env_dir=Path(args.env_dir) if args.env_dir else DEFAULT_ENV_DIR,
            service_user=args.user, worker_user=args.worker_user)
        units = build_units(install, host_only=args.host is not None)
        written = write_units(units, Path(args.dest) if args.dest else DEFAULT_DEST)
    except UnitError as error:
        raise OffsiteError(f"cannot write the units: {error}", step="install-units") from None
    for path in written:
        print(f"wrote {path}")
    template = WORKER_TEMPLATE.replace("@.", f"@{args.host or 'HOST'}.")
    enable = [template] if args.host else [template, "offsite-beat.service",
                                           "offsite-control.service", "offsite-flower.service"]
    print("then: systemctl daemon-reload && systemctl enable --now " + " ".join(enable))
    print(f"secrets: {install.env_dir}/<host>.env, control.env, flower.env (mode 0600, "
          "owned by root); see docs/operations.md, Deploying")
    from offsite.deploy.service_user import user_advice
    for advice in user_advice(config, args.user, args.worker_user, args.host is not None):
        print(f"before starting: {advice}")
    for loose in loose_env_files(install.env_dir):
        print(f"warning: {loose} is readable or writable by group or others: run "
              f"`chmod 600 {loose}`", file=sys.stderr)
    return EXIT_OK


def loose_env_files(folder: Path) -> list[Path]:
    """The environment files in folder that others than their owner may read or write."""
    try:
        candidates = sorted(folder.glob("*.env"))
    except OSError:
        return []
    loose = []
    for path in candidates:
        try:
            if path.is_file() and path.stat().st_mode & 0o077:
                loose.append(path)
        except OSError:
            continue
    return loose


def cmd_config_schema(args: argparse.Namespace) -> int:
    from offsite.config.schema import markdown_table, schema_text
    sys.stdout.write(markdown_table() if args.markdown else schema_text())
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete
    del args
    sys.stdout.write(argcomplete.shellcode(["offsite"], shell="bash"))
    return EXIT_OK


def is_loopback(address: str) -> bool:
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_auth_configured(env: dict[str, str] | os._Environ[str]) -> bool:
    """Flower reads FLOWER_BASIC_AUTH (user:password[,user:password]) or FLOWER_AUTH (an
    e-mail pattern for OAuth) from its environment, so no password sits on a command line."""
    return any(env.get(name, "").strip() for name in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH"))


def flower_argv(address: str, port: int) -> list[str]:
    return ["flower", f"--address={address}", f"--port={port}",
            f"--tasks_columns={FLOWER_COLUMNS}"]


def cmd_flower(args: argparse.Namespace, config: Config) -> int:
    """Flower on the app's own settings (the broker's visibility timeout included): started
    any other way it would shrink the timeout for every client."""
    del config
    if not is_loopback(args.address) and not flower_auth_configured(os.environ):
        raise OffsiteError(f"Flower would listen on {args.address} without authentication: set "
                           "FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH) in its environment "
                           "file, or listen on 127.0.0.1", step="flower")
    import importlib.util
    if importlib.util.find_spec("flower") is None:
        raise OffsiteError("Flower is not installed here: pip install 'offsite[monitor]' (or "
                           "bin/setup)", step="flower")
    from workers.app import app
    from workers.flower_guard import guard_flower_monitoring
    guard_flower_monitoring()   # /metrics and /healthcheck behind Flower's auth
    app.start(flower_argv(args.address, args.port))
    return EXIT_OK


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a port from 1 to 65535")
    return int(text)


def add_ops_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    units = sub.add_parser("install-units", parents=[common],
                           help="write the systemd units of this installation")
    units.add_argument("--host", help="a host node: only the worker template (HOST checked "
                                      "against the config)")
    units.add_argument("--dest", help="folder to write into (default /etc/systemd/system)")
    units.add_argument("--env-dir", help="folder of the units' environment files (default "
                                         "/etc/offsite)")
    units.add_argument("--user", default="offsite",
                       help="user of beat, control and Flower (default offsite)")
    units.add_argument("--worker-user", default="root",
                       help="user of the workers (default root: dump scripts read the data)")
    units.set_defaults(action=cmd_install_units)

    schema = sub.add_parser("config-schema", parents=[common],
                            help="print the config's JSON Schema (or --markdown: the key table)")
    schema.add_argument("--markdown", action="store_true",
                        help="the table of every key, as in docs/configuration.md")
    schema.set_defaults(action=cmd_config_schema, needs_config=False)

    completion = sub.add_parser("completion", parents=[common],
                                help="print the bash completion script")
    completion.add_argument("shell", choices=["bash"])
    completion.set_defaults(action=cmd_completion, needs_config=False)

    flower = sub.add_parser("flower", parents=[common],
                            help="run Flower with the app's settings (auth beyond loopback)")
    flower.add_argument("--address", default="127.0.0.1",
                        help="listen address (default 127.0.0.1; any other needs "
                             "FLOWER_BASIC_AUTH)")
    flower.add_argument("--port", type=_port, default=5555)
    flower.set_defaults(action=cmd_flower)
