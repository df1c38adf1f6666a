"""offsite's overhead against the right baselines, side by side in one run.

A generated tree (half random, half text) is backed up per phase four ways: through a real
worker with a dump script copying the tree into staging (`script`), through a real worker
reading it in place as a `paths:` source (`paths`), with plain duplicity on the tree itself
(`plain`), and by hand: copy the tree into a staging folder, then duplicity on it (`by hand`).
Phases: a full, an incremental after changing ~1% of the bytes, and a full and an incremental
of an empty host, whose difference from plain duplicity on an empty folder is offsite's fixed
cost per run. Medians of the repeats, with min and max. Prints figures; asserts nothing.

Goals: fixed cost <= 0.3 s (issue 18; it was 0.5 s before); the fleet-scale issue's ratios
at this size, which issue 18 replaced with bench.bighost's at real size: script full <= 1.05 x
by hand, paths incremental <= 1.1 x plain.

    .venv/bin/python -m bench.overhead [--size-mb 200] [--target file|s3] [--repeat 3] [--keep]
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Callable, Sequence

import yaml

from bench.overhead_data import MB, TextSource, Tree, change_tree, generate_tree
from bench.overhead_runs import PASSPHRASE, OffsiteResult, PlainResult, run_offsite, run_plain
from bench.services import (REGION, BenchError, Service, child_env, create_bucket,
                            start_moto, start_redis, start_worker, status_kib)
from offsite.config.model import Config, load_config
from offsite.constants import BackupType

SCRIPT_HOST, PATHS_HOST, EMPTY_HOST = "bench", "bench-paths", "empty"
# A script that writes nothing makes its run a warning (nothing of it backed up), so the
# "empty" host's script and the plain baseline's folder hold one 2-byte file.
STAMP = "echo x > stamp"
CHANGED_FRACTION = 0.01
WAYS = ("script", "paths", "plain", "by hand")


@dataclass(frozen=True)
class Sample:
    phase: str
    way: str
    seconds: float
    bytes_uploaded: int
    detail: OffsiteResult | PlainResult


def write_config(work: Path, broker_url: str, target: dict[str, str | None],
                 source: Path) -> Path:
    passphrase_file = work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    hosts = {SCRIPT_HOST: {"scripts": {"data": {"bash": f"cp -a {source}/. ."}}},
             PATHS_HOST: {"scripts": {"stamp": {"bash": STAMP}}, "paths": {"data": str(source)}},
             EMPTY_HOST: {"scripts": {"stamp": {"bash": STAMP}}}}
    data = {"broker_url": broker_url, "staging_root": str(work / "offsite" / "staging"),
            "cache_root": str(work / "offsite" / "cache"), "target": target,
            "encryption": {"passphrase_file": str(passphrase_file)}, "hosts": hosts}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plain_config(config: Config, root: Path, url: str) -> Config:
    """The same settings with their own cache and target prefix: a chain of its own."""
    target = config.target.model_copy(update={"url": url})
    return config.model_copy(update={"staging_root": root / "staging",
                                     "cache_root": root / "cache", "target": target})


@dataclass(frozen=True)
class Setup:
    config_path: Path
    plain: Config
    by_hand: Config
    empty: Config
    env: dict[str, str]
    work: Path
    tree: Tree


def measure_phase(setup: Setup, phase: str, kind: BackupType, flip: bool) -> list[Sample]:
    """The four ways of one phase; their order flips between repeats to cancel cache effects."""
    tree = setup.tree.root

    def offsite(host: str, way: str) -> Callable[[], Sample]:
        def run() -> Sample:
            result = run_offsite(setup.config_path, host, kind, setup.env)
            return Sample(phase, way, result.end_to_end_s, result.bytes_uploaded, result)
        return run

    def plain(config: Config, way: str, source: Path, copy: bool) -> Callable[[], Sample]:
        def run() -> Sample:
            result = run_plain(config, SCRIPT_HOST, kind, source, setup.env, setup.work,
                               copy_from=tree if copy else None)
            return Sample(phase, way, result.seconds, result.bytes_uploaded, result)
        return run
    runs = [offsite(SCRIPT_HOST, "script"), offsite(PATHS_HOST, "paths"),
            plain(setup.plain, "plain", tree, False),
            plain(setup.by_hand, "by hand", setup.work / "by-hand" / "staging" / "data", True)]
    samples = [run() for run in (reversed(runs) if flip else runs)]
    print("  " + "   ".join(f"{s.way} {s.seconds:.2f}s" for s in samples) + f"  [{phase}]",
          flush=True)
    return samples


def measure_empty(setup: Setup, kind: BackupType) -> list[Sample]:
    phase = f"empty {kind.value}"
    result = run_offsite(setup.config_path, EMPTY_HOST, kind, setup.env)
    empty = setup.work / "empty-source"
    empty.mkdir(exist_ok=True)
    (empty / "stamp").write_text("x\n")
    plain = run_plain(setup.empty, EMPTY_HOST, kind, empty, setup.env, setup.work)
    print(f"  offsite {result.end_to_end_s:.2f}s   plain {plain.seconds:.2f}s  [{phase}]",
          flush=True)
    return [Sample(phase, "offsite", result.end_to_end_s, result.bytes_uploaded, result),
            Sample(phase, "plain", plain.seconds, plain.bytes_uploaded, plain)]


def run_benchmark(args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
    rng = random.Random(args.seed)
    text = TextSource(rng)
    print(f"generating {args.size_mb:g} MB in {work} ...", flush=True)
    tree = generate_tree(work / "src" / "tree", int(args.size_mb * MB), rng, text)
    env = child_env(work / "home")
    broker_url = start_redis(stack, work)
    if args.target == "s3":
        endpoint = start_moto(stack, work, env)
        create_bucket(endpoint, "offsite-bench")
        target: dict[str, str | None] = {"url": "boto3+s3://offsite-bench/offsite",
                                         "endpoint_url": endpoint, "region": REGION}
        base_url = "boto3+s3://offsite-bench"
    else:
        target = {"url": f"file://{work / 'target' / 'offsite'}"}
        base_url = f"file://{work / 'target'}"
    config_path = write_config(work, broker_url, target, tree.root)
    config = load_config(config_path)
    setup = Setup(config_path, plain_config(config, work / "plain", f"{base_url}/plain"),
                  plain_config(config, work / "by-hand", f"{base_url}/by-hand"),
                  plain_config(config, work / "empty", f"{base_url}/empty"), env, work, tree)
    workers = [start_worker(stack, config_path, host, work, env)
               for host in (SCRIPT_HOST, PATHS_HOST, EMPTY_HOST)]
    idle_rss = [_rss_kib(worker, "VmRSS") for worker in workers]
    print(f"{len(tree.files)} files, {tree.total_bytes / MB:.1f} MB; target {args.target}; "
          f"workers ready (idle RSS {', '.join(f'{k / 1024:.0f} MiB' for k in idle_rss)})",
          flush=True)
    measure_empty(setup, BackupType.FULL)   # warm-up, not counted
    samples: list[Sample] = []
    for repeat in range(args.repeat):
        flip = repeat % 2 == 1
        samples += measure_phase(setup, f"full {args.size_mb:g}MB", BackupType.FULL, flip)
        changed = change_tree(tree, int(tree.total_bytes * CHANGED_FRACTION), rng, text)
        samples += measure_phase(setup, "incr 1%", BackupType.INCR, flip)
        samples += measure_empty(setup, BackupType.FULL)
        samples += measure_empty(setup, BackupType.INCR)
        print(f"  (changed {changed.bytes_changed / MB:.2f} MB)", flush=True)
    print_report(samples, args.repeat, idle_rss, [_rss_kib(w, "VmHWM") for w in workers])


def _rss_kib(service: Service, field: str) -> int:
    return status_kib(service.proc.pid, field) or 0


# --------------------------------------------------------------------------- the report


def _spread(values: list[float], unit: str = "s") -> str:
    return f"{median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def _of(samples: list[Sample], phase_start: str, way: str) -> list[Sample]:
    return [s for s in samples if s.phase.startswith(phase_start) and s.way == way]


def _ratio(samples: list[Sample], phase: str, way: str, base: str) -> list[float]:
    return [a.seconds / b.seconds for a, b in zip(_of(samples, phase, way),
                                                  _of(samples, phase, base))]


def _verdict(value: float, goal: float) -> str:
    return f"goal <= {goal:g}: {'met' if value <= goal else 'MISSED'}"


def print_report(samples: list[Sample], repeat: int, idle_rss: list[int],
                 peak_rss: list[int]) -> None:
    print(f"\nmedian of {repeat} (min-max); seconds as the user waits (offsite: `offsite "
          "backup --wait`; by hand: copy + duplicity); MB uploaded")
    phases = list(dict.fromkeys(s.phase for s in samples if not s.phase.startswith("empty")))
    for phase in phases:
        cells = []
        for way in WAYS:
            group = _of(samples, phase, way)
            cells.append(f"{way} {_spread([s.seconds for s in group])} "
                         f"{median([s.bytes_uploaded for s in group]) / MB:.2f}MB")
        print(f"{phase:<12} " + " | ".join(cells))
    full = _ratio(samples, "full", "script", "by hand")
    print(f"full, script / by hand: {_spread(full, '')} ({_verdict(median(full), 1.05)})")
    full_paths = _ratio(samples, "full", "paths", "plain")
    print(f"full, paths / plain: {_spread(full_paths, '')}")
    incr = _ratio(samples, "incr", "paths", "plain")
    print(f"incr 1%, paths / plain: {_spread(incr, '')} ({_verdict(median(incr), 1.1)})")
    incr_script = _ratio(samples, "incr", "script", "by hand")
    print(f"incr 1%, script / by hand: {_spread(incr_script, '')}")
    for kind in ("full", "incr"):
        offsite = _of(samples, f"empty {kind}", "offsite")
        plain = _of(samples, f"empty {kind}", "plain")
        costs = [a.seconds - b.seconds for a, b in zip(offsite, plain)]
        print(f"fixed cost, empty host {kind}: offsite {_spread([s.seconds for s in offsite])}"
              f" - plain {_spread([s.seconds for s in plain])} = {_spread(costs)} "
              f"({_verdict(median(costs), 0.3)})")
        details = [s.detail for s in offsite if isinstance(s.detail, OffsiteResult)]
        print("  where: client start, dispatch and wake-up "
              f"{_spread([d.end_to_end_s - d.run_s for d in details])}, queue "
              f"{_spread([d.queue_s for d in details])}, scripts "
              f"{_spread([d.script_s for d in details])}, upload step "
              f"{_spread([d.upload_s for d in details])}")
    print("worker RSS: idle " + ", ".join(f"{k / 1024:.0f} MiB" for k in idle_rss)
          + f" (goal <= 80: {'met' if max(idle_rss) <= 80 * 1024 else 'MISSED'}); peak "
          + ", ".join(f"{k / 1024:.0f} MiB" for k in peak_rss))


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200.0,
                        help="size of the generated tree in MB (default 200)")
    parser.add_argument("--target", choices=["file", "s3"], default="file",
                        help="file:// in the temp dir, or a moto_server S3 started here")
    parser.add_argument("--repeat", type=int, default=3, help="measure every phase N times")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: every started process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1 or args.size_mb <= 0:
        build_parser().error("--repeat and --size-mb must be positive")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-"))
    try:
        with ExitStack() as stack:
            run_benchmark(args, work, stack)
        return 0
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
