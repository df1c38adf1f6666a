"""A big host at the sizes of issue 18, with a real worker per host and a real control node at
default settings (lease_ttl 60 s), file:// target; figures side by side, medians of the
repeats (min-max). Prints figures and their goals; asserts nothing.

`.venv/bin/python -m bench.bighost [--phases dump,paths,compare,drill,options,fit]
 [--dump-mb 8000] [--tree-files 500000] [--drill-files 500000] [--compare-files 500000]
 [--options-mb 1000] [--fit-mb 200,2000,8000] [--repeat 3] [--keep]`

Phases (default: all; each cleans its targets and restores after every repeat):
- dump: a dump host (a script `cp -a`s a tree, half random, half text, into staging): a full,
  then an incremental after rewriting 1% of the bytes, through `offsite backup --wait` and its
  worker (every step of the run record), against plain duplicity with offsite's own command
  line on the tree and, for the full, `tar | gpg` (gpg's defaults, the same passphrase): seconds,
  MB/s and the goals' ratios; then `offsite verify --wait` of the newest set on the control node
  against plain `duplicity restore` + a sha256 compare of every restored file with the source.
- paths: a `paths:` host of N files of 2-8 KB read in place, full then incremental after
  rewriting 1% of the files, against plain duplicity on the tree.
- compare: a drill's compare of N restored files, streaming against the dict-and-list one it
  replaced, each in a fresh process: seconds and peak RSS.
- drill: `offsite verify --wait` of the `paths:` host (the tree `paths` left when its size is
  the same) against plain restore + digest compare.
- options: plain duplicity fulls of a dump tree, one of duplicity's options changed at a time
  (asynchronous upload, gpg compression off or level 1, another volume size): what moves the
  throughput ceiling.
- fit: fulls at several sizes, offsite - plain = a + b*size (b as % of plain's per-GB time).
Everywhere: the host lease's lowest remaining time (read 10x/s), the worker's and the control
node's peak RSS (VmHWM), duplicity's own (sampled below them 2x/s from /proc), and the peak
disk used under the work folder over each phase (sampled 2x/s, minus its starting level).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from bench.bighost_dump import phase_dump, phase_fit
from bench.bighost_options import phase_options
from bench.bighost_setup import DUMP_HOST, TREE_HOST, Bench, write_config
from bench.bighost_tree import phase_compare, phase_drill, phase_paths
from bench.overhead_data import MB
from bench.services import OFFSITE, BenchError, Service, child_env, start_redis, start_worker
from offsite.config.model import load_config

__all__ = ["main", "write_config"]

PHASES: dict[str, Callable[[Bench], list[str]]] = {
    "dump": phase_dump, "paths": phase_paths, "compare": phase_compare, "drill": phase_drill,
    "options": lambda bench: phase_options(bench.args, bench.work, bench.config, DUMP_HOST,
                                           bench.env),
    "fit": phase_fit}

# Rates behind the estimate: a quiet 2-core machine, from issue 18's own figures (8 GB: plain
# duplicity full 252 s, tar | gpg 210 s; 500,000 files: restore ~109 s, compare ~31 s, rmtree
# ~68 s). The small runs on the shared machine (load 5-9) went 2-3x slower for bytes, up to 10x
# for small files.
GEN_MBPS = 60.0        # generating the dump tree
DUP_MBPS = 32.0        # duplicity full of the dump tree (gpg's zlib is the ceiling)
TAR_MBPS = 38.0        # tar | gpg
RESTORE_MBPS = 50.0    # duplicity restore
HASH_MBPS = 300.0      # sha256 of a tree, both sides
FILES_MADE_PS = 10000.0    # small files made
FILES_BACKUP_PS = 2000.0   # small files through a duplicity full
FILES_RESTORE_PS = 2500.0  # small files restored and removed
FILES_COMPARE_PS = 16000.0  # small files compared (one compare process)
COMPRESSED = 0.55      # a set's size over its tree's (half random, half text)
SMALL_FILE = 5000      # bytes, 2-8 KB


def estimate(args: argparse.Namespace, phases: list[str]) -> dict[str, tuple[float, float]]:
    """Per phase: (seconds, peak disk bytes) from the sizes and the rates above."""
    out: dict[str, tuple[float, float]] = {}
    r = args.repeat
    size = args.dump_mb * MB
    mb = args.dump_mb
    if "dump" in phases:
        full = mb / 200 + 2 * mb / DUP_MBPS + mb / TAR_MBPS   # copy, offsite, plain, tar|gpg
        incr = mb / 200 + 2 * 0.05 * mb / DUP_MBPS + 10
        verify = 2 * (mb / RESTORE_MBPS + 2 * mb / HASH_MBPS)
        out["dump"] = (mb / GEN_MBPS + r * (full + incr + verify),
                       size * (3 + 3 * COMPRESSED))   # source, staging, restore; targets, tar
    tree = args.tree_files
    if "paths" in phases:
        # a full and an incremental (about half a full: every file is walked), offsite and plain
        out["paths"] = (tree / FILES_MADE_PS + r * 3 * tree / FILES_BACKUP_PS,
                        tree * SMALL_FILE * 3)
    if "compare" in phases:
        files = args.compare_files
        out["compare"] = (files / FILES_MADE_PS + r * 2 * files / FILES_COMPARE_PS,
                          files * SMALL_FILE * 1.2)
    if "drill" in phases:
        files = args.drill_files
        made = 0 if ("paths" in phases and files == tree) else files / FILES_MADE_PS
        out["drill"] = (made + 2 * files / FILES_BACKUP_PS
                        + r * 2 * (files / FILES_RESTORE_PS + files / FILES_COMPARE_PS),
                        files * SMALL_FILE * 4)
    if "options" in phases:
        out["options"] = (args.options_mb / GEN_MBPS + r * 5 * args.options_mb / DUP_MBPS,
                          args.options_mb * MB * (1 + COMPRESSED * 1.3))
    if "fit" in phases:
        sizes = [float(value) for value in args.fit_mb.split(",")]
        out["fit"] = (sum(s / GEN_MBPS + r * (s / 200 + 2 * s / DUP_MBPS) for s in sizes),
                      max(sizes) * MB * (2 + 2 * COMPRESSED))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bighost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, of {', '.join(PHASES)} (default: all)")
    parser.add_argument("--dump-mb", type=float, default=8000,
                        help="the dump host's tree, MB (default 8000)")
    parser.add_argument("--tree-files", type=int, default=500_000,
                        help="files of the paths: host (default 500000)")
    parser.add_argument("--drill-files", type=int, default=500_000,
                        help="files of the drilled paths: host (default 500000)")
    parser.add_argument("--compare-files", type=int, default=500_000,
                        help="files of the compare phase (default 500000)")
    parser.add_argument("--options-mb", type=float, default=1000,
                        help="the options phase's tree, MB (default 1000)")
    parser.add_argument("--fit-mb", default="200,2000,8000",
                        help="the fit phase's sizes, MB (default 200,2000,8000)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per phase (>= 3 for "
                        "the figures; default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to make the work folder (default: the temp dir)")
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: every started process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = [name for name in phases if name not in PHASES]
    if unknown or args.repeat < 1:
        parser.error(f"unknown phase {', '.join(unknown)} (of {', '.join(PHASES)})" if unknown
                     else "--repeat must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="offsite-bighost-", dir=args.dir))
    plan = estimate(args, phases)
    free = shutil.disk_usage(work).free
    print(f"estimate at a quiet 2-core machine's rates (2-3x that under load): about "
          f"{sum(s for s, _ in plan.values()) / 60:.0f} min, peak disk about "
          f"{max(d for _, d in plan.values()) / 1e9:.1f} GB ({free / 1e9:.0f} GB free under "
          f"{work})")
    for name, (seconds, disk) in plan.items():
        print(f"  {name:<8} ~{seconds / 60:.0f} min, ~{disk / 1e9:.1f} GB", flush=True)
    if max(d for _, d in plan.values()) > free * 0.9:
        print("bench: not enough free disk for these sizes", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report: list[str] = []
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    load = os.getloadavg()
    try:
        with ExitStack() as stack:
            broker_url = start_redis(stack, work)
            env = child_env(work / "home")
            config_path = write_config(work, broker_url, work / "src" / "dump",
                                       work / "src" / "tree")
            workers = {host: start_worker(stack, config_path, host, work, env)
                       for host in (DUMP_HOST, TREE_HOST)}
            control = Service("control", [OFFSITE, "--config", str(config_path), "control"],
                              work / "control.log", env)
            stack.callback(control.stop)
            control.wait_until(lambda: control.logged("ready."), 60)
            bench = Bench(args, work, config_path, load_config(config_path), broker_url, env,
                          workers, control)
            for name in phases:
                phase_started = time.monotonic()
                print(f"phase {name} ...", flush=True)
                lines = PHASES[name](bench)
                lines.append(f"  (phase {name}: {time.monotonic() - phase_started:.0f} s, "
                             f"load average now {os.getloadavg()[0]:.1f})")
                print("\n".join(lines), flush=True)   # again in the report at the end
                report += lines
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{started} to {time.strftime('%H:%M UTC', time.gmtime())}, {_machine()}, "
          f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"{args.repeat} repeats, file:// target, default settings (lease_ttl 60 s)")
    print("\n".join(report))
    return 0


def _machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    cores = len(re.findall(r"^processor", Path("/proc/cpuinfo").read_text(), re.MULTILINE))
    return f"{cores} cores {cpu.group(1) if cpu else ''}".strip()


if __name__ == "__main__":
    sys.exit(main())
