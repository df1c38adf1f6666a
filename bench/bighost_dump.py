"""The dump host's phases of the big-host benchmark.

- dump: a full, then an incremental after rewriting 1% of the bytes, through `offsite backup
  --wait` and its worker (each step of its run record), against plain duplicity with offsite's
  own flags on the tree and (fulls) `tar | gpg`; then `offsite verify --wait` of the newest set on
  the control node against plain `duplicity restore` + a digest compare with the source.
- fit: fulls at several sizes, offsite against plain duplicity, offsite - plain = a + b*size.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import time
from statistics import median

from bench.bighost_plain import clean_host, clean_plain, plain_restore_check, tar_gpg
from bench.bighost_setup import DUMP_HOST, Bench, lease_line, verdict
from bench.bighost_watch import DescendantRss, DiskWatch, LeaseWatch, spread
from bench.overhead import plain_config
from bench.overhead_data import MB, TextSource, Tree, change_tree, generate_tree
from bench.overhead_runs import OffsiteResult, PlainResult, run_offsite, run_plain
from bench.services import OFFSITE, BenchError
from offsite.config.model import Config
from offsite.constants import BackupType

class DumpRuns:
    """One host's offsite runs and plain duplicity runs, with what was sampled around them."""

    def __init__(self, bench: Bench, host: str) -> None:
        self.bench, self.host = bench, host
        self.rows: dict[str, list[float]] = {}
        self.lowest_ms: list[int] = []
        self.duplicity_rss_kib = 0       # duplicity under the worker (sampled)
        self.plain_rss_kib = 0           # plain duplicity's own (wait4)
        self.control_duplicity_rss_kib = 0

    def add(self, name: str, value: float) -> None:
        self.rows.setdefault(name, []).append(value)

    def offsite(self, kind: BackupType) -> OffsiteResult:
        bench = self.bench
        with LeaseWatch(bench.broker_url, self.host) as lease, \
                DescendantRss(bench.workers[self.host].proc.pid) as rss:
            result = run_offsite(bench.config_path, self.host, kind, bench.env)
        if lease.lowest_ms is not None:
            self.lowest_ms.append(lease.lowest_ms)
        self.duplicity_rss_kib = max(self.duplicity_rss_kib, rss.peak_kib)
        self.add(f"{kind.value} offsite whole run", result.run_s)
        for step, seconds in result.steps.items():
            self.add(f"{kind.value}   step {step}", seconds)
        return result

    def plain(self, config: Config, kind: BackupType, tree: Tree) -> PlainResult:
        """Plain duplicity with the dump host's command line (no selection) on the tree."""
        result = run_plain(config, DUMP_HOST, kind, tree.root, self.bench.env, self.bench.work)
        self.plain_rss_kib = max(self.plain_rss_kib, result.peak_rss_kib)
        self.add(f"{kind.value} plain duplicity", result.seconds)
        return result

    def verify(self) -> float:
        bench = self.bench
        with LeaseWatch(bench.broker_url, self.host) as lease, \
                DescendantRss(bench.control.proc.pid) as rss:
            started = time.monotonic()
            result = subprocess.run([OFFSITE, "--config", str(bench.config_path), "verify",
                                     self.host, "--wait", "--timeout", "14400"], env=bench.env,
                                    capture_output=True, text=True)
            seconds = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(f"the drill of {self.host} failed:\n{result.stdout}\n"
                             f"{result.stderr[-3000:]}")
        if lease.lowest_ms is not None:
            self.lowest_ms.append(lease.lowest_ms)
        self.control_duplicity_rss_kib = max(self.control_duplicity_rss_kib, rss.peak_kib)
        return seconds

    def table(self) -> list[str]:
        return [f"  {name:<34} {spread(values, '' if 'ratio' in name else 's')}"
                for name, values in self.rows.items()]


def phase_dump(bench: Bench) -> list[str]:
    args, work = bench.args, bench.work
    rng = random.Random(5)
    text = TextSource(rng)
    shutil.rmtree(bench.dump_src, ignore_errors=True)
    print(f"dump: generating {args.dump_mb:g} MB ...", flush=True)
    tree = generate_tree(bench.dump_src, int(args.dump_mb * MB), rng, text)
    size_mb = tree.total_bytes / MB
    runs = DumpRuns(bench, DUMP_HOST)
    rates: dict[str, list[float]] = {}
    written: dict[str, list[float]] = {}   # MB a full wrote: the same compression?
    checks, verifies = [], []
    with DiskWatch(work) as disk:
        for repeat in range(args.repeat):
            clean_host(bench.config, DUMP_HOST)
            plain_root = work / f"plain{repeat}"
            plain = plain_config(bench.config, plain_root,
                                 f"file://{work / 'target' / f'plain{repeat}'}")
            flip = repeat % 2 == 1
            for kind in (BackupType.FULL, BackupType.INCR):
                if kind == BackupType.INCR:
                    change_tree(tree, int(tree.total_bytes * 0.01), rng, text)
                if flip:   # the order flips between repeats: cache effects cancel
                    base = runs.plain(plain, kind, tree)
                    ours = runs.offsite(kind)
                else:
                    ours = runs.offsite(kind)
                    base = runs.plain(plain, kind, tree)
                runs.add(f"{kind.value} ratio upload/plain", ours.upload_s / base.seconds)
                line = f"offsite {ours.run_s:.1f} s (upload {ours.upload_s:.1f} s), plain " \
                       f"{base.seconds:.1f} s"
                if kind == BackupType.FULL:
                    out = work / "target" / "tar" / "dump.tar.gpg"
                    tar_s = tar_gpg(tree.root, out, bench.passphrase_file, work / "gnupg-tar",
                                    bench.env)
                    written.setdefault("tar | gpg", []).append(out.stat().st_size / MB)
                    written.setdefault("plain duplicity", []).append(base.bytes_uploaded / MB)
                    written.setdefault("offsite", []).append(ours.bytes_uploaded / MB)
                    out.unlink()
                    runs.add("full tar | gpg", tar_s)
                    for name, seconds in (("tar | gpg", tar_s), ("plain duplicity", base.seconds),
                                          ("offsite upload step", ours.upload_s),
                                          ("offsite whole run", ours.run_s)):
                        rates.setdefault(name, []).append(size_mb / seconds)
                    line += f", tar | gpg {tar_s:.1f} s"
                print(f"  dump {kind.value} #{repeat + 1}: {line}", flush=True)
            verifies.append(runs.verify())
            checks.append(plain_restore_check(plain, DUMP_HOST, tree.root, work, bench.env))
            clean_plain(plain, plain_root)
            print(f"  dump verify #{repeat + 1}: offsite {verifies[-1]:.1f} s, plain restore "
                  f"{checks[-1].restore_s:.1f} s + digest compare {checks[-1].digest_s:.1f} s "
                  f"({checks[-1].files} files, {checks[-1].mismatches} mismatches)", flush=True)
        clean_host(bench.config, DUMP_HOST)
    shutil.rmtree(bench.dump_src, ignore_errors=True)
    lines = [f"dump host: {len(tree.files)} files, {size_mb:.0f} MB (half random, half text); "
             "offsite's steps from its run record"]
    lines += runs.table()
    full_ratio = median(runs.rows["full ratio upload/plain"])
    incr_ratio = median(runs.rows["incr ratio upload/plain"])
    lines.append(f"  full upload/plain {full_ratio:.2f} ({verdict(full_ratio, 1.03)}); incr "
                 f"upload/plain {incr_ratio:.2f} ({verdict(incr_ratio, 1.5)})")
    lines.append("  full throughput: " + ", ".join(f"{name} {spread(values, 'MB/s')}"
                                                   for name, values in rates.items()))
    lines.append("  full MB written: " + ", ".join(f"{name} {spread(values, 'MB')}"
                                                  for name, values in written.items()))
    plain_tar = [p / t for p, t in zip(rates["plain duplicity"], rates["tar | gpg"])]
    ours_plain = [o / p for o, p in zip(rates["offsite upload step"], rates["plain duplicity"])]
    lines.append(f"  plain duplicity / tar | gpg MB/s {spread(plain_tar, '')} "
                 f"({verdict(median(plain_tar), 0.83, at_most=False)}); offsite upload step / "
                 f"plain MB/s {spread(ours_plain, '')} "
                 f"({verdict(median(ours_plain), 0.95, at_most=False)})")
    verify_ratio = [v / c.seconds for v, c in zip(verifies, checks)]
    lines += [f"  verify of the newest set (incr): offsite verify --wait {spread(verifies)}",
              f"    plain duplicity restore {spread([c.restore_s for c in checks])} + digest "
              f"compare {spread([c.digest_s for c in checks])} = "
              f"{spread([c.seconds for c in checks])}; mismatches "
              f"{max(c.mismatches for c in checks)}",
              f"    ratio verify / (restore + compare) {spread(verify_ratio, '')} "
              f"({verdict(median(verify_ratio), 1.05)})",
              lease_line(runs.lowest_ms, bench.config.watchdog.lease_ttl)]
    lines += rss_lines(bench, DUMP_HOST, runs)
    lines.append(f"  plain duplicity restore peak RSS (wait4) "
                 f"{max(c.peak_rss_kib for c in checks) / 1024:.0f} MiB")
    lines.append(f"  peak disk over the phase      +{disk.peak_growth / MB:.0f} MB (source "
                 f"{size_mb:.0f} MB, staging, targets, restores)")
    return lines


def rss_lines(bench: Bench, host: str, runs: DumpRuns) -> list[str]:
    worker = bench.workers[host].peak_rss_kib() or 0
    control = bench.control.peak_rss_kib() or 0
    return [f"  worker peak RSS (VmHWM)       {worker / 1024:.0f} MiB ({verdict(worker / 1024, 100)})",
            f"  duplicity under the worker    {runs.duplicity_rss_kib / 1024:.0f} MiB (VmHWM, "
            f"sampled 2x/s); plain duplicity {runs.plain_rss_kib / 1024:.0f} MiB (wait4)",
            f"  control node peak RSS (VmHWM, since it started) {control / 1024:.0f} MiB "
            f"({verdict(control / 1024, 150)}); its duplicity "
            f"{runs.control_duplicity_rss_kib / 1024:.0f} MiB"]


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b*x."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    return mean_y - slope * mean_x, slope


def phase_fit(bench: Bench) -> list[str]:
    args, work = bench.args, bench.work
    rng = random.Random(17)
    text = TextSource(rng)
    runs = DumpRuns(bench, DUMP_HOST)
    points: list[tuple[float, float, float, float]] = []   # GB, plain, upload step, whole run
    with DiskWatch(work) as disk:
        for size in [float(value) for value in args.fit_mb.split(",")]:
            shutil.rmtree(bench.dump_src, ignore_errors=True)
            print(f"fit: generating {size:g} MB ...", flush=True)
            tree = generate_tree(bench.dump_src, int(size * MB), rng, text)
            gigabytes = tree.total_bytes / 1e9
            for repeat in range(args.repeat):
                clean_host(bench.config, DUMP_HOST)
                plain_root = work / f"fit-plain{repeat}"
                plain = plain_config(bench.config, plain_root,
                                     f"file://{work / 'target' / f'fit-plain{repeat}'}")
                if repeat % 2:
                    base = runs.plain(plain, BackupType.FULL, tree)
                    ours = runs.offsite(BackupType.FULL)
                else:
                    ours = runs.offsite(BackupType.FULL)
                    base = runs.plain(plain, BackupType.FULL, tree)
                clean_plain(plain, plain_root)
                points.append((gigabytes, base.seconds, ours.upload_s, ours.run_s))
                print(f"  fit {size:g} MB #{repeat + 1}: offsite upload {ours.upload_s:.1f} s, "
                      f"run {ours.run_s:.1f} s, plain {base.seconds:.1f} s", flush=True)
            clean_host(bench.config, DUMP_HOST)
    shutil.rmtree(bench.dump_src, ignore_errors=True)
    xs = [p[0] for p in points]
    _, plain_per_gb = linear_fit(xs, [p[1] for p in points])
    lines = [f"overhead decomposition, dump host fulls at {args.fit_mb} MB, {args.repeat} each: "
             f"plain duplicity {plain_per_gb:.1f} s per GB"]
    for label, index in (("upload step", 2), ("whole run (the script's copy included)", 3)):
        a, b = linear_fit(xs, [p[index] - p[1] for p in points])
        share = 100 * b / plain_per_gb if plain_per_gb else float("nan")
        lines.append(f"  offsite {label} - plain = {a:.2f} s + {b:.2f} s/GB: b = {share:.1f}% "
                     f"of plain's per-GB time ({verdict(share, 2.0)})")
    for size in sorted(set(xs)):
        at = [p for p in points if p[0] == size]
        lines.append(f"  {size:.2f} GB: plain {spread([p[1] for p in at])}, upload step "
                     f"{spread([p[2] for p in at])}, whole run {spread([p[3] for p in at])}")
    lines.append(lease_line(runs.lowest_ms, bench.config.watchdog.lease_ttl))
    lines.append(f"  peak disk over the phase      +{disk.peak_growth / MB:.0f} MB")
    return lines
