"""A big host, measured with a real worker and control node at default settings (lease_ttl 60 s).

`.venv/bin/python -m bench.bighost [--dump-mb 1000] [--compare-files 200000]
 [--drill-files 20000] [--tree-files 100000] [--repeat 3] [--phases dump,compare,drill]
 [--keep]` (the phase `paths` runs only when named)

Phases, each printed side by side with its baseline (medians of the repeats, min-max):
- dump: a dump host (a script `cp -a`s a tree, half random, half text, into staging): a full,
  then an incremental after rewriting 1% of the bytes, through `offsite backup --wait` and its
  worker, against plain duplicity with offsite's own command line on the tree itself. The
  upload step is shown apart (the incremental's goal is on it). While offsite runs, the host's
  lease is read 10 times a second: its lowest remaining time against lease_ttl.
- paths: a `paths:` host of N files of 2-8 KB read in place: a full, then an incremental after
  rewriting 1% of the files, through `offsite backup --wait`, against plain duplicity with
  offsite's own command line on the tree itself (no selection); the upload step is shown apart.
- compare: a drill's compare of a restored tree of N small files, the streaming compare
  (offsite.proof.compare) against the dict-and-list one it replaced, each in a fresh process:
  seconds and peak RSS.
- drill: a `paths:` host of N files of 2-8 KB backed up, then `offsite verify --wait` run by the
  control node; the drill's seconds, the control node's peak RSS, the lease's lowest remaining
  time, against plain `duplicity restore` of the same set.
Worker and control peak RSS are their processes' VmHWM (duplicity is a child, counted apart).
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import redis
import yaml

from bench.bighost_compare import make as make_small_files, measure as measure_compare
from bench.overhead import plain_config
from bench.overhead_data import MB, TextSource, change_tree, generate_tree
from bench.overhead_runs import PASSPHRASE, run_offsite, run_plain
from bench.services import OFFSITE, Service, child_env, start_redis, start_worker
from offsite.config.model import load_config
from offsite.constants import LEASE_KEY, BackupType
from offsite.duplicity.command import duplicity_env, restore_argv
from offsite.host.settings import resolve_host
from offsite.target.catalog import read_catalog

DUMP_HOST, TREE_HOST = "dump", "tree"


class LeaseWatch:
    """The lowest remaining time (PTTL) of a host's lease while it is held, read every 0.1 s."""

    def __init__(self, broker_url: str, host: str) -> None:
        self.client = redis.Redis.from_url(broker_url)
        self.key = LEASE_KEY + host
        self.lowest_ms: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            remaining = int(self.client.pttl(self.key))
            if remaining > 0 and (self.lowest_ms is None or remaining < self.lowest_ms):
                self.lowest_ms = remaining


def spread(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    scaled = [value / scale for value in values]
    return f"{median(scaled):.2f} {unit} ({min(scaled):.2f}-{max(scaled):.2f})"


def write_config(work: Path, broker_url: str, dump_src: Path, tree_src: Path) -> Path:
    passphrase_file = work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    hosts = {DUMP_HOST: {"scripts": {"data": {"bash": f"cp -a {dump_src}/. ."}}},
             TREE_HOST: {"scripts": {"stamp": {"bash": "date > stamp"}},
                         "paths": {"data": str(tree_src)}}}
    data = {"broker_url": broker_url, "staging_root": str(work / "offsite" / "staging"),
            "cache_root": str(work / "offsite" / "cache"),
            "target": {"url": f"file://{work / 'target' / 'offsite'}"},
            "encryption": {"passphrase_file": str(passphrase_file)}, "hosts": hosts}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def phase_dump(args: argparse.Namespace, work: Path, config_path: Path, broker_url: str,
               env: dict[str, str], worker: Service) -> list[str]:
    rng = random.Random(5)
    text = TextSource(rng)
    tree = generate_tree(work / "src" / "dump", int(args.dump_mb * MB), rng, text)
    config = load_config(config_path)
    rows: dict[str, list[float]] = {}
    lowest: list[int] = []
    for repeat in range(args.repeat):
        plain = plain_config(config, work / f"plain{repeat}",
                             f"file://{work / 'target' / f'plain{repeat}'}")
        for kind in (BackupType.FULL, BackupType.INCR):
            if kind == BackupType.INCR:
                change_tree(tree, int(tree.total_bytes * 0.01), rng, text)
            base = run_plain(plain, DUMP_HOST, kind, tree.root, env, work)
            with LeaseWatch(broker_url, DUMP_HOST) as watch:
                ours = run_offsite(config_path, DUMP_HOST, kind, env)
            if watch.lowest_ms is not None:
                lowest.append(watch.lowest_ms)
            rows.setdefault(f"{kind.value} offsite run", []).append(ours.run_s)
            rows.setdefault(f"{kind.value} offsite upload step", []).append(ours.upload_s)
            rows.setdefault(f"{kind.value} plain duplicity", []).append(base.seconds)
            rows.setdefault(f"{kind.value} ratio upload/plain", []).append(
                ours.upload_s / base.seconds)
            print(f"  dump {kind.value} #{repeat + 1}: offsite {ours.run_s:.1f} s (upload "
                  f"{ours.upload_s:.1f} s), plain {base.seconds:.1f} s", flush=True)
    ttl_ms = config.watchdog.lease_ttl * 1000
    lines = [f"dump host: {len(tree.files)} files, {tree.total_bytes / MB:.0f} MB "
             f"(half random, half text)"]
    lines += [f"  {name:<28} {spread(values, '' if 'ratio' in name else 's')}"
              for name, values in rows.items()]
    if lowest:
        lines.append(f"  lease lowest remaining       {min(lowest) / 1000:.1f} s of "
                     f"{ttl_ms / 1000:.0f} s ({min(lowest) / ttl_ms:.2f} of lease_ttl)")
    lines.append(f"  worker peak RSS (VmHWM)      {(worker.peak_rss_kib() or 0) / 1024:.0f} MiB")
    return lines


def phase_paths(args: argparse.Namespace, work: Path, config_path: Path,
                env: dict[str, str]) -> list[str]:
    source = work / "src" / "tree"
    shutil.rmtree(source, ignore_errors=True)
    make_small_files(source, args.tree_files)
    shutil.rmtree(source / ".offsite")   # the tree is read in place: no manifest of its own
    files = sorted(path for path in source.rglob("f*") if path.is_file())
    config = load_config(config_path)
    rng = random.Random(7)
    rows: dict[str, list[float]] = {}
    for repeat in range(args.repeat):
        plain = plain_config(config, work / f"plain-tree{repeat}",
                             f"file://{work / 'target' / f'plain-tree{repeat}'}")
        for kind in (BackupType.FULL, BackupType.INCR):
            if kind == BackupType.INCR:
                for path in rng.sample(files, k=max(1, len(files) // 100)):
                    path.write_bytes(rng.randbytes(path.stat().st_size))
            base = run_plain(plain, DUMP_HOST, kind, source, env, work)
            ours = run_offsite(config_path, TREE_HOST, kind, env)
            rows.setdefault(f"{kind.value} offsite upload step", []).append(ours.upload_s)
            rows.setdefault(f"{kind.value} plain duplicity", []).append(base.seconds)
            rows.setdefault(f"{kind.value} ratio upload/plain", []).append(
                ours.upload_s / base.seconds)
            print(f"  paths {kind.value} #{repeat + 1}: offsite upload {ours.upload_s:.1f} s, "
                  f"plain {base.seconds:.1f} s", flush=True)
    lines = [f"paths: host: {len(files)} files of 2-8 KB read in place"]
    lines += [f"  {name:<28} {spread(values, '' if 'ratio' in name else 's')}"
              for name, values in rows.items()]
    return lines


def phase_compare(args: argparse.Namespace, work: Path) -> list[str]:
    root = work / "compare"
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


def phase_drill(args: argparse.Namespace, work: Path, config_path: Path, broker_url: str,
                env: dict[str, str], control: Service) -> list[str]:
    source = work / "src" / "tree"
    shutil.rmtree(source, ignore_errors=True)
    make_small_files(source, args.drill_files)
    shutil.rmtree(source / ".offsite")   # the tree is read in place: no manifest of its own
    run_offsite(config_path, TREE_HOST, BackupType.FULL, env)
    config = load_config(config_path)
    drills, plains, lowest = [], [], []
    for _ in range(args.repeat):
        with LeaseWatch(broker_url, TREE_HOST) as watch:
            started = time.monotonic()
            result = subprocess.run([OFFSITE, "--config", str(config_path), "verify", TREE_HOST,
                                     "--wait", "--timeout", "3600"], env=env,
                                    capture_output=True, text=True)
            drills.append(time.monotonic() - started)
        if result.returncode != 0:
            raise RuntimeError(f"the drill failed:\n{result.stdout}\n{result.stderr}")
        if watch.lowest_ms is not None:
            lowest.append(watch.lowest_ms)
        plains.append(_plain_restore(config, work, env))
    ttl_ms = config.watchdog.lease_ttl * 1000
    lines = [f"drill of a paths: host of {args.drill_files} files of 2-8 KB (control node)",
             f"  offsite verify --wait        {spread(drills)}",
             f"  plain duplicity restore      {spread(plains)} (no compare)",
             f"  control peak RSS (VmHWM)     {(control.peak_rss_kib() or 0) / 1024:.0f} MiB"]
    if lowest:
        lines.append(f"  lease lowest remaining       {min(lowest) / 1000:.1f} s of "
                     f"{ttl_ms / 1000:.0f} s ({min(lowest) / ttl_ms:.2f} of lease_ttl)")
    return lines


def _plain_restore(config: Any, work: Path, env: dict[str, str]) -> float:
    settings = resolve_host(config, TREE_HOST)
    dest, cache = work / "plain-restore", work / "plain-restore-cache"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    newest = max((s for chain in read_catalog(settings).chains for s in chain.sets),
                 key=lambda backup_set: backup_set.time)
    argv = restore_argv(settings, dest, cache, None, None, newest.data_prefix)
    started = time.monotonic()
    subprocess.run(argv, check=True, env=duplicity_env(settings, PASSPHRASE, env),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bighost", description=__doc__.split("\n")[0])
    parser.add_argument("--dump-mb", type=float, default=1000)
    parser.add_argument("--compare-files", type=int, default=200_000)
    parser.add_argument("--drill-files", type=int, default=20_000)
    parser.add_argument("--tree-files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", default="dump,compare,drill")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))
    work = Path(tempfile.mkdtemp(prefix="offsite-bighost-"))
    report: list[str] = []
    try:
        with ExitStack() as stack:
            broker_url = start_redis(stack, work)
            env = child_env(work / "home")
            config_path = write_config(work, broker_url, work / "src" / "dump",
                                       work / "src" / "tree")
            worker = start_worker(stack, config_path, DUMP_HOST, work, env)
            start_worker(stack, config_path, TREE_HOST, work, env)
            control = Service("control", [OFFSITE, "--config", str(config_path), "control"],
                              work / "control.log", env)
            stack.callback(control.stop)
            control.wait_until(lambda: control.logged("ready."), 60)
            if "dump" in phases:
                report += phase_dump(args, work, config_path, broker_url, env, worker)
            if "paths" in phases:
                report += phase_paths(args, work, config_path, env)
            if "compare" in phases:
                report += phase_compare(args, work)
            if "drill" in phases:
                report += phase_drill(args, work, config_path, broker_url, env, control)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{_machine()}, {args.repeat} repeats, file:// target")
    print("\n".join(report))
    return 0


def _machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    cores = len(re.findall(r"^processor", Path("/proc/cpuinfo").read_text(), re.MULTILINE))
    return f"{cores} cores {cpu.group(1) if cpu else ''}".strip()


if __name__ == "__main__":
    sys.exit(main())
