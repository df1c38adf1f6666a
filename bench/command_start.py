"""What starting a command costs: offsite.process.execute.run_command (every command under its
own reaper, offsite.process.reaper) beside a bare subprocess.run of the same command, as wall
seconds and CPU seconds (this process and its children) per command. Medians of --repeat
batches of --count commands, with min and max. Asserts nothing.

    .venv/bin/python -m bench.command_start [--repeat 5] [--count 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from typing import Callable

from offsite.process.execute import run_command

COMMAND = ["true"]


def _bare() -> None:
    subprocess.run(COMMAND, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _offsite() -> None:
    run_command(COMMAND, timeout_s=30, host=None, step="bench")


def _batch(start: Callable[[], None], count: int) -> tuple[float, float]:
    """(wall, cpu) seconds per command over one batch."""
    before, wall = os.times(), time.perf_counter()
    for _ in range(count):
        start()
    after, wall = os.times(), time.perf_counter() - wall
    cpu = sum(after[:4]) - sum(before[:4])
    return wall / count, cpu / count


def _line(name: str, figures: list[float]) -> str:
    ms = [f * 1000 for f in figures]
    return f"{name:<28} {statistics.median(ms):8.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.command_start",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    results: dict[str, tuple[list[float], list[float]]] = {}
    for name, start in (("subprocess.run", _bare), ("run_command", _offsite)):
        batches = [_batch(start, args.count) for _ in range(max(args.repeat, 3))]
        results[name] = ([w for w, _ in batches], [c for _, c in batches])
    print(f"per command, medians of {max(args.repeat, 3)} batches of {args.count}; "
          f"load {os.getloadavg()[0]:.2f}")
    for name, (walls, cpus) in results.items():
        print(_line(f"{name} wall", walls))
        print(_line(f"{name} cpu", cpus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
