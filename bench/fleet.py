"""The watchdog and beat at fleet scale: false and true alerts, tick cost, send time, drift.

Starts its own redis-server, a real `offsite beat` and `offsite control`, writes a history of
past runs through offsite's ledger code, then simulates N healthy hosts (heartbeats, and every
slot's run taken from what beat queued and finished through the run store and the host lease)
plus three unhealthy ones: one misses a slot, one has a dead worker, one never succeeds
(stale). It runs until the unhealthy hosts must all have been reported, then prints:

- false alerts (must be 0) and true alerts (must be 3);
- the watchdog tick's wall and CPU time (median and max over the ticks seen);
- beat's send time for its first batch (2 entries per host, all due at start);
- slot drift: each interval slot's distance from the grid, and how late sends went out;
- Redis bytes per host (offsite's keys) and per run record.

    .venv/bin/python -m bench.fleet [--hosts 1000] [--period 60] [--history 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import redis

from bench.fleet_sim import (DEAD, EXPECTED, MISSED, STALE, Simulator, Timing, healthy_hosts,
                             ledger_bytes, raised_alerts, slot_offsets, wait_for, watch_ticks,
                             write_config, write_history)
from bench.services import OFFSITE, BenchError, Service, child_env, start_redis
from offsite.constants import BackupType
from offsite.ledger.records import RedisRunStore
from offsite.schedule.specs import utcnow

SENT_BATCH = re.compile(r"beat: sent (\d+) due entries in ([0-9.]+)s")


def start_service(stack: ExitStack, name: str, command: str, config: Path, work: Path,
                  env: dict[str, str]) -> Service:
    service = Service(name, [OFFSITE, "--config", str(config), command, "--loglevel", "INFO"],
                      work / f"{name}.log", env)
    stack.callback(service.stop)
    return service


def run(args: argparse.Namespace, work: Path, stack: ExitStack) -> dict[str, Any]:
    timing = Timing(args.period)
    broker_url = start_redis(stack, work)
    client = redis.Redis.from_url(broker_url)
    stack.callback(client.close)
    hosts = healthy_hosts(args.hosts)
    config = write_config(work, broker_url, args.hosts, timing)
    began = time.monotonic()
    write_history(client, hosts + [MISSED, STALE, DEAD], args.history)
    history_s = time.monotonic() - began
    env = child_env(work / "home")

    # beat first: every slot the watchdog judges comes after beat started
    beat = start_service(stack, "beat", "beat", config, work, env)
    beat.wait_until(lambda: beat.logged("beat: Acquired lock"), 120)
    simulator = Simulator(client, hosts, timing)
    thread = threading.Thread(target=simulator.run, name="simulator", daemon=True)
    thread.start()
    stack.callback(simulator.stop.set)
    control = start_service(stack, "control", "control", config, work, env)
    control.wait_until(lambda: bool(client.exists("offsite:watchdog:tick")), 120)
    since = utcnow()
    simulator.missed_after = since

    ticks: dict[str, tuple[float, float]] = {}
    must_run_until = time.monotonic() + 2 * timing.period_s + 4 * timing.watchdog_every_s + 2

    def finished() -> bool:
        watch_ticks(client, ticks)
        if beat.proc.poll() is not None or control.proc.poll() is not None:
            raise BenchError("beat or control exited early")
        return time.monotonic() > must_run_until and \
            EXPECTED <= set(raised_alerts(client))
    wait_for(finished, 6 * timing.period_s + 120, "every unhealthy host reported")
    simulator.stop.set()
    thread.join(30)

    alert_keys: list[str] = []
    alerts = raised_alerts(client, alert_keys)
    (work / "alert-keys.txt").write_text("\n".join(sorted(alert_keys)))
    batches = [(int(n), float(s)) for n, s in SENT_BATCH.findall(beat.log_path.read_text())]
    store = RedisRunStore(client)
    incr = [r for host in hosts for r in store.recent(host, 10)
            if r.type == BackupType.INCR and r.scheduled_for and r.scheduled_for > since]
    late = [r.late_by_s for r in incr if r.late_by_s is not None]
    offsets = slot_offsets(incr, timing.period_s, since)
    total_bytes, records = ledger_bytes(client)
    walls = [wall for wall, _ in ticks.values()]
    cpus = [cpu for _, cpu in ticks.values()]
    all_hosts = len(hosts) + 3
    return {
        "hosts": all_hosts, "history_runs": records, "history_write_s": round(history_s, 1),
        "false_alerts": [a for a in alerts if a not in EXPECTED],
        "true_alerts": [a for a in alerts if a in EXPECTED], "expected_true": len(EXPECTED),
        "ticks_seen": len(ticks),
        "tick_wall_s": {"median": median(walls), "max": max(walls)} if walls else None,
        "tick_cpu_s": {"median": median(cpus), "max": max(cpus)} if cpus else None,
        "full_batches": [seconds for count, seconds in batches if count >= 2 * args.hosts],
        "batches": len(batches),
        "slot_grid_offset_max_s": max(offsets, default=None),
        "sends_late_by_s": {"median": median(late), "max": max(late)} if late else None,
        "slots_checked": len(incr),
        "redis_bytes_per_host": round(total_bytes / all_hosts),
        "redis_bytes_per_record": round(total_bytes / max(1, records)),
        "simulator_errors": simulator.errors[:5],
        "unhealthy": {"missed": MISSED, "dead": DEAD, "stale": STALE},
    }


def print_report(result: dict[str, Any]) -> None:
    full = result["full_batches"]
    wall, cpu = result["tick_wall_s"], result["tick_cpu_s"]
    late = result["sends_late_by_s"]
    lines = [
        f"hosts: {result['hosts']} ({result['history_runs']} run records in Redis)",
        f"false alerts: {len(result['false_alerts'])} {result['false_alerts'][:5] or ''}",
        f"true alerts: {len(result['true_alerts'])} of {result['expected_true']} "
        f"{result['true_alerts']}",
        f"watchdog tick: wall median {wall['median']:.3f}s max {wall['max']:.3f}s, "
        f"CPU median {cpu['median']:.3f}s max {cpu['max']:.3f}s "
        f"({result['ticks_seen']} ticks)" if wall and cpu else "watchdog tick: none seen",
        f"beat: {2 * (result['hosts'] - 3)}+ due entries sent in median {median(full):.3f}s, "
        f"max {max(full):.3f}s ({len(full)} such batches)" if full
        else "beat: no batch of 2 entries per host seen",
        f"slot drift: max distance from the grid {result['slot_grid_offset_max_s']}s over "
        f"{result['slots_checked']} slots; sends late by median {late['median']:.3f}s, max "
        f"{late['max']:.3f}s" if late else "slot drift: no slots sent",
        f"Redis: {result['redis_bytes_per_host']} bytes per host, "
        f"{result['redis_bytes_per_record']} bytes per run record",
    ]
    if result["simulator_errors"]:
        lines.append(f"simulator errors: {result['simulator_errors']}")
    print("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000, help="healthy hosts simulated")
    parser.add_argument("--period", type=int, default=60,
                        help="the incremental interval in seconds (watchdog settings follow)")
    parser.add_argument("--history", type=int, default=20, help="past runs per host")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="offsite-fleet-"))
    try:
        with ExitStack() as stack:
            result = run(args, work, stack)
    except (BenchError, TimeoutError) as error:
        print(f"bench: {error} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_report(result)
    ok = not result["false_alerts"] and len(result["true_alerts"]) == len(EXPECTED)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
