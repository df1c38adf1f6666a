"""What duplicity's selection costs a `paths:` host: one tree backed up three ways, side by side.

`.venv/bin/python -m bench.selection [--files 100000] [--repeat 3] [--profile]`

- tree: plain duplicity with offsite's own flags, the tree itself as the source root;
- `/`+selection: plain duplicity from `/` with offsite's selection of a `paths:` host
  (`--include <staging> --include <tree> --exclude '**'`, offsite.host.sources);
- patched: the same command through offsite's launcher (offsite.duplicity.launch), whose
  selection decides the same at the tree's cost (offsite.duplicity.selection).
Each a full of N files of 2-8 KB, then an incremental after 1% of the files are rewritten
(medians of the repeats, min-max; each repeat its own chains, the order rotated). `--profile`
also runs the full from `/` under cProfile, plain and patched, and prints the top functions.
"""
from __future__ import annotations

import argparse
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import yaml

from bench.bighost import _machine
from bench.bighost_watch import spread
from bench.bighost_compare import make as make_small_files
from bench.overhead_runs import PASSPHRASE
from bench.services import BenchError, child_env, run_waited, tail
from offsite.config.model import load_config
from offsite.constants import BackupType
from offsite.duplicity.command import backup_argv, duplicity_env, upload_tempdir
from offsite.duplicity.launch import launch_argv
from offsite.host.settings import HostSettings, resolve_host
from offsite.host.sources import Sources, host_cache, host_sources, prepare_host_staging

HOST = "tree"
WAYS = ("tree", "/+selection", "patched")
_SELECTION_NAMES = {"Select", "select", "test_fn", "test", "Log", "Debug", "dir_scanner",
                    "listpath", "<built-in method posix.access>", "<built-in method posix.lstat>",
                    "<method 'match' of 're.Pattern' objects>", "Iterate", "setdata"}


def write_config(work: Path, tree: Path) -> Path:
    passphrase_file = work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    data = {"staging_root": str(work / "staging"), "cache_root": str(work / "cache"),
            "target": {"url": f"file://{work / 'target'}"},
            "encryption": {"passphrase_file": str(passphrase_file)},
            "hosts": {HOST: {"scripts": {"stamp": {"bash": "date > stamp"}},
                             "paths": {"data": str(tree)}}}}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def argv_for(settings: HostSettings, way: str, kind: BackupType, chain: Path) -> list[str]:
    """The duplicity command of one way, with a cache and a target of its own (`chain`)."""
    archive_dir = chain / "cache"
    archive_dir.mkdir(parents=True, exist_ok=True)
    upload_tempdir(archive_dir).mkdir(exist_ok=True)
    sources = host_sources(settings)
    if way == "tree":
        sources = Sources(root=Path(sources.paths["data"]), selection=(), paths={},
                          staging=sources.staging)
    argv = backup_argv(settings, kind, archive_dir, sources)
    argv[-1] = f"file://{chain / 'target'}"
    return launch_argv(argv) if way == "patched" else argv


def run(argv: list[str], settings: HostSettings, env: dict[str, str],
        log: Path) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of duplicity and the children it waited for (gpg): on a
    shared machine the CPU time is the steadier figure."""
    started = time.monotonic()
    code, usage = run_waited(argv, duplicity_env(settings, PASSPHRASE, env), log)
    seconds = time.monotonic() - started
    if code != 0:
        raise BenchError(f"{argv[:3]} exited {code}:\n{tail(log)}")
    return seconds, usage.ru_utime + usage.ru_stime


def profile(settings: HostSettings, work: Path, env: dict[str, str]) -> list[str]:
    """The full from `/` under cProfile, plain and patched: the top functions by own time."""
    lines = []
    for way in ("/+selection", "patched"):
        chain = work / f"profile-{way.strip('/+')}"
        argv = argv_for(settings, way, BackupType.FULL, chain)
        out = work / f"{chain.name}.prof"
        if way == "patched":   # the launcher's module, run under cProfile
            argv = [argv[0], "-m", "cProfile", "-o", str(out), *argv[1:]]
        else:
            argv = [sys.executable, "-m", "cProfile", "-o", str(out), *argv]
        run(argv, settings, env, work / f"{chain.name}.log")
        stats = pstats.Stats(str(out))
        entries = stats.stats.items()   # type: ignore[attr-defined]
        rows = sorted(entries, key=lambda item: item[1][2], reverse=True)
        total = sum(row[1][2] for row in rows)
        lines.append(f"profile, full from / ({way}): {total:.1f} s of own time; top 12, then "
                     "selection's own functions:")
        named = [row for row in rows[12:] if row[0][2] in _SELECTION_NAMES]
        for (filename, line, name), (_, calls, own, cumulative, _) in rows[:12] + named:
            lines.append(f"  {own:6.2f} s own {cumulative:6.2f} s cum {calls:>9} calls  "
                         f"{Path(filename).name}:{line} {name}")
    return lines


def walk(settings: HostSettings, repeat: int) -> list[str]:
    """duplicity's selection alone, in this process at duplicity's default verbosity: its
    `Select` iterated over the tree as the root, from `/` with offsite's selection, and from
    `/` with the patched class (offsite.duplicity.selection); CPU seconds, medians of `repeat`."""
    from duplicity import log, selection
    from duplicity.path import Path as DupPath

    from offsite.duplicity.selection import install

    class Patched(selection.Select):
        pass

    log.setup()
    log.setverbosity(log.NOTICE)
    install(Patched, lambda: False)
    sources = host_sources(settings)
    ways = {"tree": (selection.Select, sources.paths["data"], ()),
            "/+selection": (selection.Select, "/", sources.selection),
            "patched": (Patched, "/", sources.selection)}
    rows: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for turn in range(repeat):
        for way in WAYS[turn % 3:] + WAYS[:turn % 3]:   # rotated: no way always runs first
            select_class, root, args = ways[way]
            started = time.process_time()
            select = select_class(DupPath(root))
            for option, pattern in zip(args[::2], args[1::2]):
                select.add_pattern(pattern, 1 if option == "--include" else 0)
            counts[way] = sum(1 for _ in select.set_iter())
            rows.setdefault(way, []).append(time.process_time() - started)
    base = rows["tree"]
    return [f"  selection walk alone {way:<13} {spread(values)} cpu, {counts[way]} paths   "
            f"x tree {spread([v / b for v, b in zip(values, base)], '')}"
            for way, values in ((way, rows[way]) for way in WAYS)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.selection", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--walk-only", action="store_true",
                        help="only the selection walk, in-process (no duplicity runs)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="offsite-selection-"))
    report: list[str] = []
    load = os.getloadavg()
    try:
        tree = work / "src" / "tree"
        make_small_files(tree, args.files)
        shutil.rmtree(tree / ".offsite")   # read in place: no manifest of its own
        files = sorted(path for path in tree.rglob("f*") if path.is_file())
        settings = resolve_host(load_config(write_config(work, tree)), HOST)
        host_cache(settings)
        (prepare_host_staging(settings) / "stamp" / "stamp").write_text("stamp\n")
        env = child_env(work / "home")
        walked = walk(settings, args.repeat)
        if args.walk_only:
            args.repeat = 0
        if args.profile:
            report += profile(settings, work, env)
        rows: dict[str, list[float]] = {}
        rng = random.Random(7)
        for repeat in range(args.repeat):
            order = WAYS[repeat % 3:] + WAYS[:repeat % 3]
            for kind in (BackupType.FULL, BackupType.INCR):
                if kind == BackupType.INCR:
                    for path in rng.sample(files, k=max(1, len(files) // 100)):
                        path.write_bytes(rng.randbytes(path.stat().st_size))
                for way in order:
                    chain = work / "chains" / f"{way.strip('/+')}{repeat}"
                    seconds, cpu = run(argv_for(settings, way, kind, chain), settings, env,
                                       work / "run.log")
                    rows.setdefault(f"{kind.value} {way}", []).append(seconds)
                    rows.setdefault(f"{kind.value} {way} cpu", []).append(cpu)
                    print(f"  {kind.value} {way} #{repeat + 1}: {seconds:.2f} s, "
                          f"cpu {cpu:.2f} s", flush=True)
        report.append(f"selection: {len(files)} files of 2-8 KB, `paths:` read in place")
        report += walked
        for kind in (BackupType.FULL, BackupType.INCR) if args.repeat else ():
            for figure in ("", " cpu"):
                base = rows[f"{kind.value} tree{figure}"]
                for way in WAYS:
                    values = rows[f"{kind.value} {way}{figure}"]
                    ratios = [value / reference for value, reference in zip(values, base)]
                    what = f"{kind.value} {way} {'cpu' if figure else 'wall'}"
                    report.append(f"  {what:<24} {spread(values)}   x tree {spread(ratios, '')}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {_machine()}, "
          f"{args.repeat} repeats, file:// target, load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end "
          + " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (a shared machine)")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
