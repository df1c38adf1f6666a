"""The many-small-files phases of the big-host benchmark.

- paths: a `paths:` host of N files of 2-8 KB read in place: a full, then an incremental after
  rewriting 1% of the files, through `offsite backup --wait`, against plain duplicity with
  offsite's own command line on the tree itself (no selection).
- compare: a drill's compare of N restored files, the streaming compare against the dict-and-
  list one it replaced, each in a fresh process (bench.bighost_compare).
- drill: `offsite verify --wait` of the `paths:` host on the control node, against plain
  `duplicity restore` of a plain chain of the same tree + a digest compare with the source.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from bench.bighost_compare import make as make_small_files, measure as measure_compare
from bench.bighost_dump import DumpRuns, rss_lines
from bench.bighost_plain import clean_host, clean_plain, plain_restore_check
from bench.bighost_setup import DUMP_HOST, TREE_HOST, Bench, lease_line, verdict
from bench.bighost_watch import DiskWatch, spread
from bench.overhead import plain_config
from bench.overhead_data import MB, Tree
from bench.overhead_runs import run_plain
from offsite.constants import BackupType


def _make_tree(bench: Bench, files: int) -> Tree:
    """The tree of `files` small files, made unless the last phase left one of that count."""
    source = bench.tree_src
    if bench.state.get("tree_files") != files or not source.is_dir():
        shutil.rmtree(source, ignore_errors=True)
        print(f"making {files} files of 2-8 KB ...", flush=True)
        make_small_files(source, files)
        shutil.rmtree(source / ".offsite")   # read in place: no manifest of its own
        bench.state.pop("tree_backed_up", None)
        bench.state["tree_files"] = files
    paths = sorted(path for path in source.rglob("f*") if path.is_file())
    return Tree(source, paths, [])


def phase_paths(bench: Bench) -> list[str]:
    args, work = bench.args, bench.work
    tree = _make_tree(bench, args.tree_files)
    rng = random.Random(7)
    runs = DumpRuns(bench, TREE_HOST)
    with DiskWatch(work) as disk:
        for repeat in range(args.repeat):
            clean_host(bench.config, TREE_HOST)
            plain_root = work / f"plain-tree{repeat}"
            plain = plain_config(bench.config, plain_root,
                                 f"file://{work / 'target' / f'plain-tree{repeat}'}")
            for kind in (BackupType.FULL, BackupType.INCR):
                if kind == BackupType.INCR:
                    for path in rng.sample(tree.random_files,
                                           k=max(1, len(tree.random_files) // 100)):
                        path.write_bytes(rng.randbytes(path.stat().st_size))
                if repeat % 2:
                    base = runs.plain(plain, kind, tree)
                    ours = runs.offsite(kind)
                else:
                    ours = runs.offsite(kind)
                    base = runs.plain(plain, kind, tree)
                runs.add(f"{kind.value} ratio upload/plain", ours.upload_s / base.seconds)
                print(f"  paths {kind.value} #{repeat + 1}: offsite {ours.run_s:.1f} s (upload "
                      f"{ours.upload_s:.1f} s), plain {base.seconds:.1f} s", flush=True)
            clean_plain(plain, plain_root)
    bench.state["tree_backed_up"] = 1   # the drill may verify the chain left here
    incr = median(runs.rows["incr ratio upload/plain"])
    lines = [f"paths: host: {len(tree.files)} files of 2-8 KB read in place"]
    lines += runs.table()
    lines.append(f"  incr upload/plain {incr:.2f} ({verdict(incr, 1.2)})")
    lines.append(lease_line(runs.lowest_ms, bench.config.watchdog.lease_ttl))
    lines += rss_lines(bench, TREE_HOST, runs)[:2]
    lines.append(f"  peak disk over the phase      +{disk.peak_growth / MB:.0f} MB")
    return lines


def phase_compare(bench: Bench) -> list[str]:
    args = bench.args
    root = bench.work / "compare"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "bench.bighost_compare", "make", str(root),
                    str(args.compare_files)], check=True, cwd=Path(__file__).parent.parent)
    print(f"  {args.compare_files} files made in {time.monotonic() - started:.0f} s", flush=True)
    results: dict[str, list[tuple[float, int, int]]] = {"new": [], "before": []}
    for _ in range(args.repeat):
        for how in ("new", "before"):
            results[how].append(measure_compare(root, how))
    shutil.rmtree(root)
    lines = [f"drill compare of {args.compare_files} restored files (fresh process each)"]
    for how, label in (("new", "streaming (offsite now)"), ("before", "dict + list (before)")):
        samples = results[how]
        lines.append(f"  {label:<28} {spread([s[0] for s in samples])}, peak RSS "
                     f"{spread([s[1] for s in samples], 'MiB', 1024)}, "
                     f"mismatches {samples[0][2]}")
    return lines


def phase_drill(bench: Bench) -> list[str]:
    args, work = bench.args, bench.work
    tree = _make_tree(bench, args.drill_files)
    runs = DumpRuns(bench, TREE_HOST)
    if not bench.state.get("tree_backed_up"):
        clean_host(bench.config, TREE_HOST)
        runs.offsite(BackupType.FULL)
        bench.state["tree_backed_up"] = 1
    plain_root = work / "plain-drill"
    plain = plain_config(bench.config, plain_root, f"file://{work / 'target' / 'plain-drill'}")
    run_plain(plain, DUMP_HOST, BackupType.FULL, tree.root, bench.env, work)   # no selection
    drills, checks = [], []
    with DiskWatch(work) as disk:
        for repeat in range(args.repeat):
            drills.append(runs.verify())
            checks.append(plain_restore_check(plain, DUMP_HOST, tree.root, work, bench.env))
            print(f"  drill #{repeat + 1}: offsite verify {drills[-1]:.1f} s, plain restore "
                  f"{checks[-1].restore_s:.1f} s + digest compare {checks[-1].digest_s:.1f} s "
                  f"({checks[-1].mismatches} mismatches)", flush=True)
    clean_plain(plain, plain_root)
    clean_host(bench.config, TREE_HOST)
    bench.state.pop("tree_backed_up", None)
    ratio = [d / c.seconds for d, c in zip(drills, checks)]
    control = bench.control.peak_rss_kib() or 0
    return [f"drill of the paths: host, {len(tree.files)} files of 2-8 KB (control node)",
            f"  offsite verify --wait        {spread(drills)}",
            f"  plain duplicity restore      {spread([c.restore_s for c in checks])} + digest "
            f"compare {spread([c.digest_s for c in checks])} = "
            f"{spread([c.seconds for c in checks])}; mismatches "
            f"{max(c.mismatches for c in checks)}",
            f"  ratio verify / (restore + compare) {spread(ratio, '')}",
            f"  control peak RSS (VmHWM, since it started) {control / 1024:.0f} MiB "
            f"({verdict(control / 1024, 150)}); its duplicity "
            f"{runs.control_duplicity_rss_kib / 1024:.0f} MiB",
            lease_line(runs.lowest_ms, bench.config.watchdog.lease_ttl),
            f"  peak disk over the drills    +{disk.peak_growth / MB:.0f} MB"]
