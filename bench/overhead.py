"""offsite's overhead against plain duplicity, on the same data, target kind and flags.

Stages a generated tree (half random, half text), then in one run backs it up twice per phase:
through a real worker (`offsite backup --wait`, a redis-server and `offsite worker` started
here) and with plain `duplicity` built by the same `backup_argv` on a copy of the tree. Phases:
a full, an incremental after changing ~1% of the bytes, and the same two on a one-file tree,
whose difference is offsite's fixed cost per run. Prints figures; asserts nothing.

    .venv/bin/python -m bench.overhead [--size-mb 200] [--target file|s3] [--repeat N] [--keep]
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Sequence

import yaml

from offsite.config import Config, load_config
from offsite.constants import BackupType
from offsite.duplicity import backup_argv, duplicity_env, parse_stats, upload_tempdir
from offsite.staging import host_cache

from bench.services import (FAKE_KEY, OFFSITE, REGION, VENV_BIN, BenchError, Service,
                            child_env, free_port, start_redis, tail)

BIG, TINY, SCRIPT = "bench", "tiny", "data"
MB = 1_000_000
CHANGED_FRACTION = 0.01
TINY_APPEND = 200
PASSPHRASE = "bench-passphrase-not-a-secret"


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Tree:
    root: Path
    random_files: list[Path]
    text_files: list[Path]

    @property
    def files(self) -> list[Path]:
        return self.random_files + self.text_files

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Change:
    paths: list[Path]
    bytes_changed: int


class TextSource:
    """Word-like text with a Zipf vocabulary: compresses about as well as logs or source."""

    def __init__(self, rng: random.Random, pool_bytes: int = 4 * 1024 * 1024) -> None:
        vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10)))
                 for _ in range(5000)]
        weights = [1 / (rank + 1) for rank in range(len(vocab))]
        words = rng.choices(vocab, weights=weights, k=pool_bytes // 5)
        lines = (" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
        pool = "\n".join(lines).encode()
        self.size = len(pool)
        self._doubled = pool + pool
        self._rng = rng

    def take(self, size: int) -> bytes:
        parts = []
        while size > 0:
            chunk = min(size, self.size)
            start = self._rng.randrange(self.size)
            parts.append(self._doubled[start:start + chunk])
            size -= chunk
        return b"".join(parts)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(max(low + 1, high)))))


def _sizes(rng: random.Random, budget: int, low: int, high: int) -> list[int]:
    sizes: list[int] = []
    while budget > 0:
        size = min(budget, _log_uniform(rng, low, high))
        sizes.append(size)
        budget -= size
    return sizes


def generate_tree(root: Path, total_bytes: int, rng: random.Random, text: TextSource) -> Tree:
    """Half random bytes (16 KB to 8 MB a file), half text (4 KB to 1 MB), 25 files a folder."""
    cap = max(64 * 1024, total_bytes // 20)
    kinds = ([("bin", size) for size in _sizes(rng, total_bytes // 2, 16_000, min(8 * MB, cap))]
             + [("txt", size) for size in _sizes(rng, total_bytes - total_bytes // 2, 4_000,
                                                 min(MB, cap, text.size))])
    rng.shuffle(kinds)
    random_files: list[Path] = []
    text_files: list[Path] = []
    for index, (kind, size) in enumerate(kinds):
        path = root / f"d{index // 25:03d}" / f"f{index:05d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "bin":
            path.write_bytes(rng.randbytes(size))
            random_files.append(path)
        else:
            path.write_bytes(text.take(size))
            text_files.append(path)
    return Tree(root, random_files, text_files)


def tiny_tree(root: Path, text: TextSource) -> Tree:
    path = root / "only.txt"
    root.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.take(1000))
    return Tree(root, [], [path])


def change_tree(tree: Tree, budget: int, rng: random.Random, text: TextSource) -> Change:
    """Rewrite whole random files with up to half the budget, append text with the rest."""
    changed: list[Path] = []
    rewritten = 0
    for path in rng.sample(tree.random_files, k=len(tree.random_files)):
        size = path.stat().st_size
        if size <= budget // 2 - rewritten:
            path.write_bytes(rng.randbytes(size))
            changed.append(path)
            rewritten += size
    texts = rng.sample(tree.text_files, k=min(20, len(tree.text_files)))
    per_file = max(1, (budget - rewritten) // len(texts))
    for path in texts:
        with path.open("ab") as handle:
            handle.write(text.take(per_file))
        changed.append(path)
    return Change(changed, rewritten + per_file * len(texts))


def mirror(change: Change, source: Path, copy: Path) -> None:
    """Bring the plain-duplicity copy of the tree to the same content."""
    for path in change.paths:
        shutil.copy2(path, copy / path.relative_to(source))


# --------------------------------------------------------------------------- processes


def start_moto(stack: ExitStack, work: Path, env: dict[str, str]) -> str:
    """moto_server on a free loopback port with one bucket; returns its endpoint URL."""
    port = free_port()
    server = Service("moto_server", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                     str(port)], work / "moto.log", env)
    stack.callback(server.stop)

    def answers() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
    server.wait_until(answers, 30)
    return f"http://127.0.0.1:{port}"


def create_bucket(endpoint_url: str, bucket: str) -> None:
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION,
                          aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_KEY)
    try:
        client.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
    finally:
        client.close()


def start_worker(stack: ExitStack, config_path: Path, host: str, work: Path,
                 env: dict[str, str]) -> Service:
    worker = Service(f"worker {host}", [OFFSITE, "--config", str(config_path), "worker", host],
                     work / f"worker-{host}.log", env)
    stack.callback(worker.stop)
    worker.wait_until(lambda: worker.logged(" ready."), 60)
    return worker


# --------------------------------------------------------------------------- configs


def write_config(work: Path, broker_url: str, target: dict[str, str | None],
                 sources: dict[str, Path]) -> Path:
    passphrase_file = work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    hosts = {host: {"scripts": {SCRIPT: {"bash": f"cp -a {shlex.quote(str(src))}/. ."}}}
             for host, src in sources.items()}
    data = {"broker_url": broker_url, "staging_root": str(work / "offsite" / "staging"),
            "cache_root": str(work / "offsite" / "cache"), "target": target,
            "encryption": {"passphrase_file": str(passphrase_file)}, "hosts": hosts}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plain_config(config: Config, root: Path, url: str) -> Config:
    """The same settings with their own staging-like source, cache and target prefix."""
    target = config.target.model_copy(update={"url": url})
    return config.model_copy(update={"staging_root": root / "staging",
                                     "cache_root": root / "cache", "target": target})


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class OffsiteResult:
    end_to_end_s: float   # `offsite backup --wait`, as the user waits for it
    run_s: float          # record created -> finished
    queue_s: float        # record created -> started (message delivery)
    script_s: float
    upload_s: float
    bytes_uploaded: int


@dataclass(frozen=True)
class PlainResult:
    seconds: float
    bytes_uploaded: int
    peak_rss_kib: int


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _run_cli(argv: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env, timeout=4 * 3600)
    if result.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n"
                         f"{result.stderr[-3000:]}")
    return result.stdout


def run_offsite(config_path: Path, host: str, backup_type: BackupType,
                env: dict[str, str]) -> OffsiteResult:
    base = [OFFSITE, "--config", str(config_path)]
    started = time.monotonic()
    out = _run_cli(base + ["backup", host, "--type", backup_type.value, "--wait"], env)
    end_to_end = time.monotonic() - started
    match = re.search(r"queued (\S+)", out)
    if match is None:
        raise BenchError(f"no run id in the output of offsite backup:\n{out}")
    records = json.loads(_run_cli(base + ["status", host, "--json", "--limit", "5"], env))
    record = next((r for r in records if r["run_id"] == match.group(1)), None)
    if record is None or record["state"] != "succeeded":
        raise BenchError(f"run {match.group(1)} did not succeed: {record}")
    steps = {step["name"]: step["duration_s"] or 0.0 for step in record["steps"]}
    return OffsiteResult(end_to_end_s=end_to_end,
                         run_s=_seconds(record["created_at"], record["finished_at"]),
                         queue_s=_seconds(record["created_at"], record["started_at"]),
                         script_s=steps.get(f"script:{SCRIPT}", 0.0),
                         upload_s=steps.get("upload", 0.0),
                         bytes_uploaded=int(record["bytes_uploaded"] or 0))


def run_plain(config: Config, host: str, backup_type: BackupType, env: dict[str, str],
              log_dir: Path) -> PlainResult:
    """duplicity with offsite's own command line and environment, waited for directly."""
    archive_dir = host_cache(config, host)
    upload_tempdir(archive_dir).mkdir(exist_ok=True)
    argv = backup_argv(config, host, backup_type, archive_dir)
    out_path, err_path = log_dir / "plain.out", log_dir / "plain.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=duplicity_env(config, PASSPHRASE, env))
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own peak RSS
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} exited {proc.returncode}:\n{tail(err_path)}")
    stats = parse_stats(out_path.read_text())
    return PlainResult(seconds, stats.bytes_uploaded, usage.ru_maxrss)


# --------------------------------------------------------------------------- one benchmark


@dataclass(frozen=True)
class Sample:
    phase: str
    offsite: OffsiteResult
    plain: PlainResult
    bytes_changed: int


@dataclass(frozen=True)
class Setup:
    config_path: Path
    plain: Config
    env: dict[str, str]
    work: Path


def measure(setup: Setup, phase: str, host: str, backup_type: BackupType, bytes_changed: int,
            plain_first: bool) -> Sample:
    """Both runs of one phase; the order alternates between repeats to cancel cache effects."""
    def offsite() -> OffsiteResult:
        return run_offsite(setup.config_path, host, backup_type, setup.env)

    def plain() -> PlainResult:
        return run_plain(setup.plain, host, backup_type, setup.env, setup.work)
    if plain_first:
        plain_result = plain()
        offsite_result = offsite()
    else:
        offsite_result = offsite()
        plain_result = plain()
    sample = Sample(phase, offsite_result, plain_result, bytes_changed)
    first = "duplicity" if plain_first else "offsite"
    print(f"  {phase:<12} offsite {offsite_result.end_to_end_s:6.2f} s "
          f"(upload step {offsite_result.upload_s:6.2f} s)   duplicity {plain_result.seconds:6.2f}"
          f" s   ({first} first)", flush=True)
    return sample


def copy_tree(tree: Tree, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tree.root, dest, copy_function=shutil.copy2)


def run_benchmark(args: argparse.Namespace, work: Path, stack: ExitStack) -> list[Sample]:
    rng = random.Random(args.seed)
    text = TextSource(rng)
    print(f"generating {args.size_mb:g} MB in {work} ...", flush=True)
    big = generate_tree(work / "src" / BIG, int(args.size_mb * MB), rng, text)
    small = tiny_tree(work / "src" / TINY, text)
    env = child_env(work / "home")
    broker_url = start_redis(stack, work)
    if args.target == "s3":
        endpoint = start_moto(stack, work, env)
        create_bucket(endpoint, "offsite-bench")
        target: dict[str, str | None] = {"url": "boto3+s3://offsite-bench/offsite",
                                         "endpoint_url": endpoint, "region": REGION}
        plain_url = "boto3+s3://offsite-bench/plain"
    else:
        target = {"url": f"file://{work / 'target' / 'offsite'}"}
        plain_url = f"file://{work / 'target' / 'plain'}"
    config_path = write_config(work, broker_url, target, {BIG: big.root, TINY: small.root})
    plain = plain_config(load_config(config_path), work / "plain", plain_url)
    for tree, host in ((big, BIG), (small, TINY)):
        copy_tree(tree, plain.staging_root / host / SCRIPT)
    workers = [start_worker(stack, config_path, host, work, env) for host in (BIG, TINY)]
    setup = Setup(config_path, plain, env, work)
    print(f"{len(big.files)} files, {big.total_bytes / MB:.1f} MB; target {args.target}; "
          f"workers ready", flush=True)
    print("warm-up (not counted):", flush=True)
    measure(setup, "warm-up", TINY, BackupType.FULL, small.total_bytes, False)
    samples: list[Sample] = []
    for repeat in range(args.repeat):
        flip = repeat % 2 == 1
        samples.append(measure(setup, f"full {args.size_mb:g}MB", BIG, BackupType.FULL,
                               big.total_bytes, flip))
        change = change_tree(big, int(big.total_bytes * CHANGED_FRACTION), rng, text)
        mirror(change, big.root, plain.staging_root / BIG / SCRIPT)
        samples.append(measure(setup, "incr 1%", BIG, BackupType.INCR, change.bytes_changed, flip))
        samples.append(measure(setup, "full 1 file", TINY, BackupType.FULL, small.total_bytes,
                               flip))
        change = change_tree(small, TINY_APPEND, rng, text)
        mirror(change, small.root, plain.staging_root / TINY / SCRIPT)
        samples.append(measure(setup, "incr 1 file", TINY, BackupType.INCR,
                               change.bytes_changed, flip))
    print_report(samples, args.repeat, [w.peak_rss_kib() for w in workers])
    return samples


# --------------------------------------------------------------------------- the report


def _by_phase(samples: list[Sample]) -> dict[str, list[Sample]]:
    phases: dict[str, list[Sample]] = {}
    for sample in samples:
        phases.setdefault(sample.phase, []).append(sample)
    return phases


def format_table(samples: list[Sample]) -> str:
    header = (f"{'phase':<12} {'offsite s':>9} {'upload s':>8} {'script s':>8} {'dupl. s':>8} "
              f"{'e2e/dup':>7} {'upl/dup':>7} {'changed MB':>10} {'up off MB':>9} "
              f"{'up dup MB':>9} {'up/chg off':>10} {'up/chg dup':>10}")
    lines = [header, "-" * len(header)]
    for phase, group in _by_phase(samples).items():
        e2e = median([s.offsite.end_to_end_s for s in group])
        upload = median([s.offsite.upload_s for s in group])
        script = median([s.offsite.script_s for s in group])
        dup = median([s.plain.seconds for s in group])
        e2e_ratio = median([s.offsite.end_to_end_s / s.plain.seconds for s in group])
        upload_ratio = median([s.offsite.upload_s / s.plain.seconds for s in group])
        changed = median([s.bytes_changed for s in group])
        up_off = median([s.offsite.bytes_uploaded for s in group])
        up_dup = median([s.plain.bytes_uploaded for s in group])
        lines.append(f"{phase:<12} {e2e:9.2f} {upload:8.2f} {script:8.2f} {dup:8.2f} "
                     f"{e2e_ratio:7.3f} {upload_ratio:7.3f} {changed / MB:10.3f} "
                     f"{up_off / MB:9.3f} {up_dup / MB:9.3f} {up_off / changed:10.3f} "
                     f"{up_dup / changed:10.3f}")
    return "\n".join(lines)


def format_fixed_cost(samples: list[Sample]) -> str:
    """Where the time of a one-file run goes, beyond what plain duplicity needs."""
    lines = []
    costs = []
    for phase, group in _by_phase(samples).items():
        if "1 file" not in phase:
            continue
        cost = median([s.offsite.end_to_end_s - s.plain.seconds for s in group])
        costs.append(cost)
        cli = median([s.offsite.end_to_end_s - s.offsite.run_s for s in group])
        queue = median([s.offsite.queue_s for s in group])
        script = median([s.offsite.script_s for s in group])
        upload_extra = median([s.offsite.upload_s - s.plain.seconds for s in group])
        rest = cost - cli - queue - script - upload_extra
        lines.append(f"  {phase:<12} +{cost:.2f} s = CLI start, dispatch and --wait poll {cli:.2f}"
                     f" + queue {queue:.2f} + script {script:.2f} + upload step beyond duplicity "
                     f"{upload_extra:.2f} + other worker steps {rest:.2f}")
    mean = sum(costs) / len(costs)
    verdict = "met" if mean < 2.0 else "missed"
    return "\n".join([f"fixed cost per run (offsite end-to-end minus plain duplicity, 1-file "
                      f"tree): {mean:.2f} s (goal < 2 s: {verdict})", *lines])


def format_full_goal(samples: list[Sample]) -> str:
    group = [s for s in samples if s.phase.startswith("full") and "1 file" not in s.phase]
    e2e = median([s.offsite.end_to_end_s / s.plain.seconds for s in group])
    upload = median([s.offsite.upload_s / s.plain.seconds for s in group])
    verdict = "met" if e2e <= 1.05 else "missed"
    return (f"full: offsite end-to-end / plain duplicity = {e2e:.3f} (goal <= 1.05: {verdict}); "
            f"upload step alone / plain duplicity = {upload:.3f}")


def print_report(samples: list[Sample], repeat: int, worker_rss: list[int | None]) -> None:
    note = f" (median of {repeat})" if repeat > 1 else ""
    print(f"\nper phase{note}: offsite s = `offsite backup --wait` wall clock; "
          "upload s / script s = the run's upload and `cp -a` staging steps")
    print(format_table(samples))
    print()
    print(format_full_goal(samples))
    print(format_fixed_cost(samples))
    rss = ", ".join(f"{host} {kib / 1024:.0f} MiB" if kib else f"{host} ?"
                    for host, kib in zip((BIG, TINY), worker_rss))
    dup_rss = max(s.plain.peak_rss_kib for s in samples) / 1024
    print(f"peak RSS: worker processes {rss} (excluding their duplicity children); "
          f"plain duplicity {dup_rss:.0f} MiB")


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200.0,
                        help="size of the generated tree in MB (default 200)")
    parser.add_argument("--target", choices=["file", "s3"], default="file",
                        help="file:// in the temp dir, or a moto_server S3 started here")
    parser.add_argument("--repeat", type=int, default=1, help="measure every phase N times")
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
