"""Speed and memory goals that used to fail the suite, measured here as figures instead:

- wake-up: how long after a run's recorded end `offsite backup --wait` returns (it is woken by
  the run's end over pub/sub, not by polling). Goal: median < 0.3 s.
- idle worker: the resident set of a host worker that is connected and waiting. Goal: <= 80 MiB.
- big YAML: wall time and peak RSS of the real `offsite check` refusing the largest hostile
  files a 4 MiB limit lets through (the inputs of tests/test_hostile_config.py, which keeps
  the functional half: exit 2, no traceback). Goals: peak < 400 MiB, wall < 90 s.

Each figure is the median of --repeat runs (at least 3) with min and max, printed beside its
goal. Starts its own redis-server and workers (file:// target); asserts nothing; the exit code
says whether every median met its goal.

    .venv/bin/python -m bench.gates [--repeat 3] [--only wake,rss,yaml] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Callable

import redis
import yaml

from bench.services import OFFSITE, BenchError, child_env, start_redis, start_worker
from offsite.ledger.records import RedisRunStore

WAKE_GOAL_S = 0.3
IDLE_RSS_GOAL_MIB = 80.0
YAML_PEAK_GOAL_MIB = 400.0
YAML_WALL_GOAL_S = 90.0
KINDS = ("full", "incr", "incr")

BILLION_LAUGHS = ("a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
                  + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(
                      [f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)))


def big_inputs() -> dict[str, str]:
    """The same three files as tests/test_hostile_config.py's bounded time and memory test."""
    return {
        "billion-laughs": BILLION_LAUGHS,
        "flat-list-under-4mib": "x: [" + ",".join(["a"] * 1_400_000) + "]\n",
        "85k-hosts-4mib": "hosts:\n" + "".join(
            f"  h{i}: {{scripts: {{s: {{bash: 'echo {i}'}}}}}}\n" for i in range(85_000)),
    }


# A parent of its own per measurement: RUSAGE_CHILDREN's peak is over every child ever waited.
MEASURE_CHILD = """
import resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(done.returncode, time.monotonic() - started, peak_mib, sep="\\t")
"""


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    goal: float
    values: list[float]
    note: str = ""

    @property
    def met(self) -> bool:
        return median(self.values) <= self.goal

    def line(self) -> str:
        spread = (f"{median(self.values):.2f} {self.unit} "
                  f"(min {min(self.values):.2f}, max {max(self.values):.2f}, n={len(self.values)})")
        verdict = "met" if self.met else "MISSED"
        return f"{self.name:<34} {spread:<42} goal <= {self.goal:g} {self.unit}: {verdict}" + (
            f"  [{self.note}]" if self.note else "")


def write_config(work: Path, broker_url: str) -> Path:
    passphrase = work / "passphrase"
    passphrase.write_text("bench gates passphrase\n")
    passphrase.chmod(0o600)
    data = {"broker_url": broker_url, "staging_root": str(work / "staging"),
            "cache_root": str(work / "cache"), "target": {"url": f"file://{work}/target"},
            "encryption": {"mode": "symmetric", "passphrase_file": str(passphrase)},
            "schedule": {"min_interval": "1s"},
            "hosts": {"carcosa": {"scripts": {"s": {"bash": "echo hi > hi"}}}}}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure_wake(work: Path, repeat: int) -> Figure:
    """Lag between a run's finished_at and `backup --wait` returning: full, incr, incr per
    repeat, through one worker."""
    lags: list[float] = []
    with ExitStack() as stack:
        env = child_env(work / "home")
        broker = start_redis(stack, work)
        config = write_config(work, broker)
        start_worker(stack, config, "carcosa", work, env)
        client = redis.Redis.from_url(broker)
        stack.callback(client.close)
        store = RedisRunStore(client)
        for _ in range(repeat):
            for kind in KINDS:
                proc = subprocess.run([OFFSITE, "--config", str(config), "backup", "carcosa",
                                       "--type", kind, "--wait", "--timeout", "120"],
                                      env=env, cwd=work, capture_output=True, text=True,
                                      timeout=180)
                returned = datetime.now(timezone.utc)
                if proc.returncode != 0:
                    raise BenchError(f"backup --type {kind} exited {proc.returncode}:\n"
                                     f"{proc.stderr[-2000:]}")
                record = store.get(proc.stdout.split()[1])
                if record is None or record.finished_at is None:
                    raise BenchError(f"no finished record for {proc.stdout.strip()}")
                lags.append((returned - record.finished_at).total_seconds())
    return Figure("backup --wait wake-up after the run", "s", WAKE_GOAL_S, lags,
                  "full, incr, incr per repeat")


def measure_idle_rss(work: Path, repeat: int) -> Figure:
    """VmRSS of a freshly started host worker once it says it is ready."""
    values: list[float] = []
    with ExitStack() as stack:
        env = child_env(work / "home")
        config = write_config(work, start_redis(stack, work))
        for index in range(repeat):
            logs = work / f"start-{index}"   # a log of its own: "ready." must be this start's
            logs.mkdir()
            worker = start_worker(stack, config, "carcosa", logs, env)
            status = Path(f"/proc/{worker.proc.pid}/status").read_text()
            rss_kib = int(next(line.split()[1] for line in status.splitlines()
                               if line.startswith("VmRSS:")))
            values.append(rss_kib / 1024)
            worker.stop()
    return Figure("idle host worker RSS", "MiB", IDLE_RSS_GOAL_MIB, values)


def measure_yaml(work: Path, repeat: int) -> list[Figure]:
    """Wall and peak RSS of `offsite check` on each big input; notes its exit code (2)."""
    figures = []
    env = child_env(work / "home")
    for name, text in big_inputs().items():
        path = work / f"{name}.yaml"
        path.write_text(text)
        walls, peaks, codes = [], [], set()
        for _ in range(repeat):
            done = subprocess.run([sys.executable, "-c", MEASURE_CHILD, OFFSITE, "--config",
                                   str(path), "check"], env=env, cwd=work,
                                  capture_output=True, text=True, timeout=300)
            code, wall_s, peak_mib = done.stdout.split()
            codes.add(int(code))
            walls.append(float(wall_s))
            peaks.append(float(peak_mib))
        note = f"exit {', '.join(map(str, sorted(codes)))}"
        figures.append(Figure(f"check {name}: peak RSS", "MiB", YAML_PEAK_GOAL_MIB, peaks, note))
        figures.append(Figure(f"check {name}: wall", "s", YAML_WALL_GOAL_S, walls, note))
    return figures


MEASURES: dict[str, Callable[[Path, int], list[Figure]]] = {
    "wake": lambda work, repeat: [measure_wake(work / "wake", repeat)],
    "rss": lambda work, repeat: [measure_idle_rss(work / "rss", repeat)],
    "yaml": lambda work, repeat: measure_yaml(work / "yaml", repeat),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.gates", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (at least 3)")
    parser.add_argument("--only", default=",".join(MEASURES),
                        help="comma-separated: " + ", ".join(MEASURES))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3 (a median of fewer says little)")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in MEASURES]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-gates-"))
    figures: list[Figure] = []
    began = time.monotonic()
    try:
        for name in chosen:
            (work / name).mkdir()
            figures.extend(MEASURES[name](work, args.repeat))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([{"name": f.name, "unit": f.unit, "goal": f.goal,
                           "median": median(f.values), "min": min(f.values),
                           "max": max(f.values), "values": f.values, "met": f.met,
                           "note": f.note} for f in figures], indent=2))
    else:
        print(f"median of {args.repeat} (min, max); {time.monotonic() - began:.0f} s in all")
        for figure in figures:
            print(figure.line())
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
