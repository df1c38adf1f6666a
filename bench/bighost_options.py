"""The `options` phase of the big-host benchmark: which of duplicity's own options move the
throughput ceiling of a dump host's full (gpg's single-threaded compression, the volume size,
asynchronous upload). Plain duplicity with offsite's command line, one option changed at a time,
each on a fresh cache and target, removed after it."""
from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path
from typing import Callable

from bench.bighost_watch import DiskWatch, spread
from bench.overhead import plain_config
from bench.overhead_data import MB, TextSource, generate_tree
from bench.overhead_runs import run_plain
from offsite.config.model import Config
from offsite.constants import BackupType

Edit = Callable[[list[str]], list[str]]


def _gpg_option(extra: str) -> Edit:
    """Append to offsite's --gpg-options value (or add one)."""
    def edit(argv: list[str]) -> list[str]:
        argv = list(argv)
        if "--gpg-options" in argv:
            index = argv.index("--gpg-options") + 1
            argv[index] = f"{argv[index]} {extra}"
        else:
            argv[2:2] = ["--gpg-options", extra]
        return argv
    return edit


def _flag(*flags: str) -> Edit:
    def edit(argv: list[str]) -> list[str]:
        return argv[:2] + list(flags) + argv[2:]
    return edit


def _volsize(size: int) -> Edit:
    def edit(argv: list[str]) -> list[str]:
        argv = list(argv)
        argv[argv.index("--volsize") + 1] = str(size)
        return argv
    return edit


def variants(default_volsize: int) -> dict[str, Edit | None]:
    other = 50 if default_volsize != 50 else 200
    return {f"defaults (offsite's flags, volsize {default_volsize})": None,
            "--asynchronous-upload": _flag("--asynchronous-upload"),
            "gpg --compress-algo none": _gpg_option("--compress-algo none"),
            "gpg --compress-level 1": _gpg_option("--compress-level 1"),
            f"--volsize {other}": _volsize(other)}


def phase_options(args: argparse.Namespace, work: Path, config: Config, host: str,
                  env: dict[str, str]) -> list[str]:
    rng = random.Random(13)
    tree = generate_tree(work / "src" / "options", int(args.options_mb * MB), rng,
                         TextSource(rng))
    size = tree.total_bytes
    table = variants(config.target.volsize)
    seconds: dict[str, list[float]] = {name: [] for name in table}
    uploaded: dict[str, list[float]] = {name: [] for name in table}
    rss: dict[str, list[float]] = {name: [] for name in table}
    with DiskWatch(work) as disk:
        for repeat in range(args.repeat):
            names = list(table) if repeat % 2 == 0 else list(reversed(table))
            for number, name in enumerate(names):
                folder = work / f"opt{repeat}-{number}"
                target = work / "target" / f"opt{repeat}-{number}"
                plain = plain_config(config, folder, f"file://{target}")
                result = run_plain(plain, host, BackupType.FULL, tree.root, env, work,
                                   edit=table[name])
                seconds[name].append(result.seconds)
                uploaded[name].append(result.bytes_uploaded)
                rss[name].append(result.peak_rss_kib)
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
                print(f"  options #{repeat + 1} {name}: {result.seconds:.1f} s, "
                      f"{size / MB / result.seconds:.1f} MB/s", flush=True)
    shutil.rmtree(tree.root, ignore_errors=True)
    base = next(iter(table))
    lines = [f"duplicity's options, plain full of {size / MB:.0f} MB ({len(tree.files)} files, "
             f"half random, half text), one option changed at a time, fresh target each",
             f"  {'variant':<44} {'seconds':<24} {'MB/s':<24} {'uploaded MB':>11}  "
             f"{'vs defaults':>11}  duplicity RSS"]
    for name in table:
        rates = [size / MB / value for value in seconds[name]]
        ratio = sorted(seconds[base])[len(seconds[base]) // 2] / sorted(
            seconds[name])[len(seconds[name]) // 2]
        lines.append(f"  {name:<44} {spread(seconds[name]):<24} {spread(rates, 'MB/s'):<24} "
                     f"{sorted(uploaded[name])[len(uploaded[name]) // 2] / MB:>11.0f}  "
                     f"{ratio:>10.2f}x  {max(rss[name]) / 1024:.0f} MiB")
    lines.append(f"  peak disk over the phase: +{disk.peak_growth / MB:.0f} MB")
    return lines
