"""`offsite list`: the chains and sets the target holds for a host, read from the target alone;
`offsite ls` and `offsite find`: the files in those sets."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from offsite.cli.common import EXIT_FAILED, EXIT_OK, add_target_argument, targeted
from offsite.config.model import Config
from offsite.host.settings import resolve_host


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from offsite.target.catalog import format_stamp
    from offsite.crypto.manifest_count import read_keyed_catalog
    catalog = read_keyed_catalog(resolve_host(targeted(config, args), args.host))
    if args.json:
        print(json.dumps(catalog.as_json(), indent=2))
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
            if backup_set.judged:
                line += f"  ({backup_set.judged})"
            print(line)
    for orphan in catalog.orphans:
        print(f"not in a chain: incr {format_stamp(orphan.time)} (a set before it is missing "
              "or does not restore)")
    for unfinished in catalog.unfinished:
        print(f"unfinished: {unfinished.kind} {format_stamp(unfinished.time)}: "
              f"{unfinished.reason or 'unfinished'}")
    for name, why in sorted(catalog.ignored.items()):
        print(f"ignored: {why}")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, config: Config) -> int:
    """The files of one set, from duplicity's listing (no data volume decrypted)."""
    from offsite.proof.browse import list_set, now_utc
    from offsite.proof.restore import parse_backup_time
    from offsite.target.catalog import format_stamp
    settings = resolve_host(config, args.host)
    at = parse_backup_time(args.time, now_utc(), args.host, "ls") if args.time else None
    chosen, files = list_set(settings, at, args.path, _keys(args))
    if args.json:
        print(json.dumps({"set": format_stamp(chosen.time), "type": chosen.kind,
                          "files": [f.as_json() for f in files]}, indent=2))
        return EXIT_OK
    print(f"set {format_stamp(chosen.time)} ({chosen.kind}): {len(files)} path(s)")
    for listed in files:
        print(f"{listed.mtime}  {listed.path}")
    return EXIT_OK


def cmd_find(args: argparse.Namespace, config: Config) -> int:
    """Which sets hold a path matching the pattern, and in which its modification time
    changed; exit 1 when none does."""
    from offsite.proof.browse import find_in_sets
    found = find_in_sets(resolve_host(config, args.host), args.pattern, _keys(args))
    if args.json:
        print(json.dumps([entry.as_json() for entry in found], indent=2))
    else:
        for entry in found:
            changed = entry.changed_in()
            print(f"{entry.path}: in {len(entry.sets)} set(s), from {entry.sets[0]['set']} to "
                  f"{entry.sets[-1]['set']}; changed in {', '.join(changed)}")
        if not found:
            print(f"no path of {args.host} matches {args.pattern!r} in any set")
    return EXIT_OK if found else EXIT_FAILED


def _keys(args: argparse.Namespace) -> Path | None:
    return Path(args.secret_keys_file) if args.secret_keys_file else None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    ls = sub.add_parser("ls", parents=[common], help="the files of one backup set of HOST")
    ls.add_argument("host")
    ls.add_argument("path", nargs="?", default=None,
                    help="only what is under this path (as restore --path names it)")
    ls.add_argument("--time", help="the set a restore as of this time gives (default latest)")
    _add_key_and_json(ls)
    ls.set_defaults(action=cmd_ls)
    find = sub.add_parser("find", parents=[common],
                          help="which sets of HOST hold a path matching PATTERN")
    find.add_argument("host")
    find.add_argument("pattern", help="a glob on the file name ('*.sql') or the path "
                                      "('db/dump.*')")
    _add_key_and_json(find)
    find.set_defaults(action=cmd_find)
    listing = sub.add_parser("list", parents=[common],
                             help="the backup chains and sets in the target")
    listing.add_argument("host")
    listing.add_argument("--json", action="store_true")
    add_target_argument(listing)
    listing.set_defaults(action=cmd_list)


def _add_key_and_json(parser: Any) -> None:
    """What `ls` and `find` share: the secret key of public-key mode, and JSON output."""
    parser.add_argument("--secret-keys-file", default=None,
                        help="public-key mode: the secret key (else this machine's GNUPGHOME)")
    parser.add_argument("--json", action="store_true")
