"""The control node's HTTP server at fleet scale: `/metrics`, `/` (the fleet page) and
`/api/hosts` with 1,000 hosts in the config and 20,000 run records in the ledger.

Starts its own redis-server, writes the history through offsite's own ledger code (the run
store: records, indexes, per-host facts; one host in 50 with a failed newest run, one in 40
with an open condition), starts a real `offsite control` with `http.listen`, then requests
each path `--repeat` times in turn and prints, per path, the response time seen by the client
and the control process's CPU time per request (utime + stime from /proc, clock ticks),
medians with min and max, and the response size. Goal: < 200 ms.

    .venv/bin/python -m bench.http_fleet [--hosts 1000] [--history 20] [--repeat 5] [--json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import redis
import yaml

from bench.services import OFFSITE, BenchError, Service, child_env, free_port, start_redis
from offsite.watch.alerts import condition_alert
from offsite.watch.conditions import Conditions
from offsite.constants import BackupType, RunState
from offsite.watch.alerts import AlertOutbox
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import ErrorRecord, RunRecord
from offsite.run.context import new_run_id

PATHS = ("/metrics", "/", "/api/hosts")
GOAL_S = 0.2
THREADS = 8
CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def hosts(count: int) -> list[str]:
    return [f"host-{index:04d}" for index in range(count)]


def write_config(work: Path, broker_url: str, names: list[str], port: int) -> Path:
    data = {"broker_url": broker_url, "staging_root": str(work / "staging"),
            "target": {"url": f"file://{work}/target"},
            "schedule": {"full": {"every": "7d"}, "incr": {"every": "1d"}},
            # no tick during the measurement: what is measured is the HTTP server alone
            "watchdog": {"every": "1d"},
            "http": {"listen": f"127.0.0.1:{port}"},
            "hosts": {name: {"scripts": {"db": {"bash": "true"}}} for name in names}}
    path = work / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_history(client: redis.Redis, names: list[str], per_host: int) -> int:
    """A day a run, a full every seventh; sizes and durations that vary; one host in 50 whose
    newest run failed, one in 40 with backup_stale open."""
    store, now = RedisRunStore(client), datetime.now(timezone.utc)

    def write(item: tuple[int, str]) -> int:
        index, host = item
        for day in range(per_host, 0, -1):
            kind = BackupType.FULL if day % 7 == 0 else BackupType.INCR
            began = now - timedelta(days=day)
            failed = day == 1 and index % 50 == 0
            store.create(RunRecord(
                run_id=new_run_id(host, kind, began), host=host, type=kind,
                state=RunState.FAILED if failed else RunState.SUCCEEDED, scheduled_for=began,
                created_at=began, started_at=began,
                finished_at=began + timedelta(seconds=20 + (index * day) % 300),
                bytes_uploaded=0 if failed else (5 if kind == BackupType.FULL else 1)
                * (1 + (index + day) % 9) * 1_000_000,
                error=ErrorRecord(step="upload", exit_code=50, message="backend error")
                if failed else None))
        return per_host
    with ThreadPoolExecutor(THREADS) as pool:
        written = sum(pool.map(write, enumerate(names)))
    conditions = Conditions(client, AlertOutbox(client))
    for host in names[::40]:
        conditions.raise_(f"stale:{host}", condition_alert(host, "any", "backup_stale", "x"),
                          now)
    return written


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S


def fetch(port: int, path: str) -> tuple[int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def run(args: argparse.Namespace, work: Path, stack: ExitStack) -> dict[str, Any]:
    broker_url = start_redis(stack, work)
    client = redis.Redis.from_url(broker_url)
    stack.callback(client.close)
    names = hosts(args.hosts)
    began = time.monotonic()
    records = write_history(client, names, args.history)
    history_s = time.monotonic() - began
    port = free_port()
    config = write_config(work, broker_url, names, port)
    control = Service("control", [OFFSITE, "--config", str(config), "control"],
                      work / "control.log", child_env(work / "home"))
    stack.callback(control.stop)
    control.wait_until(lambda: control.logged(" ready."), 120)
    fetch(port, "/metrics")   # the first request loads what a request needs
    timings: dict[str, dict[str, list[float]]] = {p: {"wall": [], "cpu": []} for p in PATHS}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):
        for path in PATHS:
            cpu_before, wall_before = cpu_s(control.proc.pid), time.perf_counter()
            status, size = fetch(port, path)
            wall = time.perf_counter() - wall_before
            cpu = cpu_s(control.proc.pid) - cpu_before
            if status != 200:
                raise BenchError(f"GET {path} answered {status}")
            timings[path]["wall"].append(wall)
            timings[path]["cpu"].append(cpu)
            sizes[path] = size
    return {"hosts": len(names), "run_records": records, "history_write_s": round(history_s, 1),
            "repeat": args.repeat, "load_average": os.getloadavg(),
            "paths": {path: {"response_s": spread(t["wall"]), "cpu_s": spread(t["cpu"]),
                             "bytes": sizes[path]} for path, t in timings.items()}}


def print_report(result: dict[str, Any]) -> None:
    print(f"{result['hosts']} hosts, {result['run_records']} run records "
          f"(written in {result['history_write_s']}s), {result['repeat']} requests per path, "
          f"load average {', '.join(f'{x:.1f}' for x in result['load_average'])}")
    for path, figures in result["paths"].items():
        wall, cpu = figures["response_s"], figures["cpu_s"]
        print(f"GET {path:<10} response median {wall['median'] * 1000:.0f} ms "
              f"(min {wall['min'] * 1000:.0f}, max {wall['max'] * 1000:.0f}); control CPU "
              f"median {cpu['median'] * 1000:.0f} ms (min {cpu['min'] * 1000:.0f}, max "
              f"{cpu['max'] * 1000:.0f}); {figures['bytes']:,} bytes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.http_fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--history", type=int, default=20, help="run records per host")
    parser.add_argument("--repeat", type=int, default=5, help="requests per path (>= 3)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.repeat = max(3, args.repeat)
    work = Path(tempfile.mkdtemp(prefix="offsite-http-"))
    try:
        with ExitStack() as stack:
            result = run(args, work, stack)
    except BenchError as error:
        print(f"bench: {error} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    met = all(p["response_s"]["median"] < GOAL_S for p in result["paths"].values())
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
