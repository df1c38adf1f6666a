"""`offsite hosts` as a person reads it: one line per host, fixed columns, worst first."""
from __future__ import annotations

from datetime import datetime

from offsite.bounded import printable
from offsite.fleet.summary import FleetSummary, Health, HostRow, RunBrief

HOST_WIDTH_MAX = 28
RUN_WIDTH = 16
AGE_WIDTH = 9
CONDITIONS_WIDTH = 24
WHY_WIDTH = 50
HEADER = ("HEALTH", "HOST", "LAST FULL", "LAST INCR", "LAST VERIFY", "SUCCESS", "NEWEST",
          "CONDITIONS", "WHY")


def short_age(seconds: float | None) -> str:
    """Two units at most: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "never"
    value = max(0, int(seconds))
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m"
    if value < 86400:
        return f"{value // 3600}h{value % 3600 // 60:02d}m"
    return f"{value // 86400}d{value % 86400 // 3600:02d}h"


def _run_cell(run: RunBrief | None, now: datetime) -> str:
    if run is None:
        return "-"
    return f"{run.state.value} {short_age((now - run.at).total_seconds())}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def _cells(row: HostRow, now: datetime, host_width: int) -> list[str]:
    conditions = sorted({c.condition for c in row.conditions})
    if row.config_drift and "config_drift" not in conditions:
        conditions.append("config_drift")
    return [row.health.value, _cut(row.host, host_width),
            _run_cell(row.last.get("full"), now), _run_cell(row.last.get("incr"), now),
            _run_cell(row.last.get("verify"), now), short_age(row.success_age_s(now)),
            row.newest.state.value if row.newest else "-",
            _cut(",".join(conditions) or "-", CONDITIONS_WIDTH), _cut(row.reason, WHY_WIDTH)]


def format_hosts(summary: FleetSummary) -> str:
    counts = summary.counts()
    lines = [f"{len(summary.rows)} host(s): " + ", ".join(
        f"{counts[health]} {health.value}" for health in Health)
        + f"; {summary.outbox_pending} alert(s) waiting for delivery"]
    if summary.drift is not None or summary.drifted_nodes:
        nodes = ", ".join(summary.drifted_nodes) or "see the alert"
        lines.append(f"config drift: these nodes run with another config than this one: "
                     f"{nodes} (restart them or update their copy of the file)")
    host_width = min(HOST_WIDTH_MAX, max([len("HOST")] + [len(r.host) for r in summary.rows]))
    widths = [8, host_width, RUN_WIDTH, RUN_WIDTH, RUN_WIDTH, AGE_WIDTH, 9, CONDITIONS_WIDTH, 0]
    lines.append("  ".join(cell.ljust(width) for cell, width in zip(HEADER, widths)).rstrip())
    for row in summary.rows:
        # a script's stderr: escapes neutralised
        cells = [printable(cell) for cell in _cells(row, summary.at, host_width)]
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
        if row.replicas:   # each replica's newest set (offsite.run.replicas)
            lines.append(" " * 10 + "replicas: " + ", ".join(
                f"{name} {replica.newest_set or 'none'} ({replica.state})"
                for name, replica in row.replicas.items()))
    return "\n".join(lines)
