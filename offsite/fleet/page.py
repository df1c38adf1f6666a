"""`/`: the fleet page, server-rendered HTML with one row per host, worst first, and a small SVG
chart per host of bytes uploaded (bars) and duration (line) over its last backups, each with its
scale. No script: the page is complete as sent and reloads itself every REFRESH_S (a meta
refresh). It fits a 1280 px screen: long texts wrap. Each host links to its run history
(offsite.fleet.host_page). Every text that comes from the config or the ledger is escaped.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from threading import Lock
from urllib.parse import quote

import redis

from offsite.config.model import Config
from offsite.fleet.summary import FleetSummary, Health, HostRow, RunBrief, read_summary
from offsite.fleet.table import short_age
from offsite.ledger.facts import SERIES_KEY
from offsite.ledger.status import _bytes

CHART_W, CHART_H = 180, 48
LABEL_H = 10          # the chart's top band: its two scales' labels
REFRESH_S = 60        # the page reloads itself (meta refresh)
STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:1em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
table{border-collapse:collapse;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
td{white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0;font-weight:600}
.host,.cond,.why,.id{white-space:normal;overflow-wrap:anywhere}
.host{min-width:9em;max-width:20em}
.cond{max-width:10em}
.why{color:#555;font-size:.9em;max-width:28em}
.age{color:#666}
.chart text{font:9px system-ui,sans-serif}
.health-failed td:first-child{background:#f8d0d0}
.health-lost td:first-child{background:#f8dcc0}
.health-stale td:first-child{background:#f8ecb0}
.health-unproven td:first-child{background:#e4e0f8}
.health-healthy td:first-child{background:#d8f0d8}
.state-failed,.state-lost{color:#b00;font-weight:bold}
.drift{background:#fff0c0;padding:.4em .8em;margin:.5em 0}
"""


@dataclass(frozen=True)
class Point:
    finished: float
    duration_s: float
    uploaded: int
    state: str
    kind: str


def read_series(client: redis.Redis, hosts: list[str]) -> dict[str, tuple[str, ...]]:
    """Each host's last backups as stored (offsite.ledger.facts series), in one pipelined round
    trip."""
    with client.pipeline(transaction=False) as pipe:
        for host in hosts:
            pipe.lrange(SERIES_KEY + host, 0, -1)
        replies = pipe.execute()
    return {host: tuple(raw.decode() if isinstance(raw, bytes) else raw for raw in entries)
            for host, entries in zip(hosts, replies)}


def parse_series(entries: tuple[str, ...]) -> list[Point]:
    points = []
    for entry in entries:
        parts = entry.split(" ")
        if len(parts) == 5:
            points.append(Point(float(parts[0]), float(parts[1]), int(parts[2]), parts[3],
                                parts[4]))
    return points


class ChartCache:
    """A host's chart changes only when one of its backups ends: each is drawn once per
    series content, and the cache is bounded (emptied when full)."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self.drawn: dict[tuple[str, tuple[str, ...]], str] = {}
        self.lock = Lock()

    def get(self, host: str, entries: tuple[str, ...]) -> str:
        key = (host, entries)
        with self.lock:
            found = self.drawn.get(key)
        if found is None:
            found = chart(host, parse_series(entries))
            with self.lock:
                if len(self.drawn) >= self.limit:
                    self.drawn.clear()
                self.drawn[key] = found
        return found


_charts = ChartCache()


def chart(host: str, points: list[Point]) -> str:
    """Bars: bytes uploaded per run (scale on the left); line: duration per run (scale on the
    right); oldest left. The top band labels the top of each scale with its unit; the plot's
    bottom line is zero."""
    if not points:
        return '<span class="age">no runs yet</span>'
    slot = CHART_W / len(points)
    top_bytes = max(point.uploaded for point in points) or 1
    top_seconds = max(point.duration_s for point in points) or 1.0
    plot = CHART_H - LABEL_H - 1
    parts = [f'<svg class="chart" width="{CHART_W}" height="{CHART_H}" '
             f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
             f'aria-label="last {len(points)} backups of {escape(host)}: up to '
             f'{escape(_bytes(top_bytes))} uploaded, up to {top_seconds:.0f} s">',
             f'<text class="scale-bytes" x="0" y="8" fill="#4a7fc1">'
             f"{escape(_bytes(top_bytes))}</text>",
             f'<text class="scale-seconds" x="{CHART_W}" y="8" text-anchor="end" '
             f'fill="#e08a00">{escape(_seconds(top_seconds))}</text>',
             f'<line x1="0" y1="{LABEL_H}" x2="{CHART_W}" y2="{LABEL_H}" stroke="#ddd"/>',
             f'<line x1="0" y1="{CHART_H - 0.5}" x2="{CHART_W}" y2="{CHART_H - 0.5}" '
             'stroke="#999"/>']
    line = []
    for index, point in enumerate(points):
        height = max(1.0, plot * point.uploaded / top_bytes)
        color = "#c33" if point.state in ("failed", "lost") else "#4a7fc1"
        tip = escape(f"{point.kind} {point.state}: {_bytes(point.uploaded)} in "
                     f"{point.duration_s:.0f}s")
        parts.append(f'<rect x="{index * slot + 1:.1f}" y="{CHART_H - height:.1f}" '
                     f'width="{max(1.0, slot - 2):.1f}" height="{height:.1f}" fill="{color}">'
                     f'<title>{tip}</title></rect>')
        y = CHART_H - 1 - plot * point.duration_s / top_seconds
        line.append(f"{index * slot + slot / 2:.1f},{y:.1f}")
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#e08a00" '
                 'stroke-width="1.5"/></svg>')
    return "".join(parts)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def host_href(host: str) -> str:
    """The path of the host's run history (offsite.fleet.host_page)."""
    return "/host/" + quote(host, safe="")


def _ago(moment: datetime, now: datetime) -> str:
    return (f'<span class="age" title="{escape(moment.strftime("%Y-%m-%d %H:%M:%S"))}Z">'
            f"{short_age((now - moment).total_seconds())} ago</span>")


def _run_cell(run: RunBrief | None, now: datetime, extra: str = "") -> str:
    if run is None:
        return "<td>-</td>"
    state = escape(run.state.value)
    return f'<td><span class="state-{state}">{state}</span><br>{_ago(run.at, now)}{extra}</td>'


def _good_cell(row: HostRow, now: datetime) -> str:
    """The latest successful backup: bytes uploaded and age (shown whatever came after)."""
    good = row.last_good
    if good is None:
        return '<td class="good">never</td>' if row.success_at is None else \
            f'<td class="good">-<br>{_ago(row.success_at, now)}</td>'
    return (f'<td class="good">{escape(_bytes(good.bytes_uploaded))} '
            f'<span class="age">{escape(good.type)}</span><br>{_ago(good.at, now)}</td>')


def _row(row: HostRow, now: datetime, drawn_chart: str) -> str:
    health = escape(row.health.value)
    conditions = sorted({c.condition for c in row.conditions})
    if row.config_drift and "config_drift" not in conditions:
        conditions.append("config_drift")
    verified = ""
    if row.verified_at and row.last.get("verify"):
        verified = f'<div class="age">last success {_ago(row.verified_at, now)}</div>'
    why = f'<div class="why">{escape(row.reason)}</div>' if row.reason else ""
    return "".join([
        f'<tr class="health-{health}" data-host="{escape(row.host)}" data-health="{health}">',
        f"<td>{health}</td>",
        f'<td class="host"><a href="{escape(host_href(row.host))}">{escape(row.host)}</a>'
        f"{why}</td>",
        _run_cell(row.last.get("full"), now), _run_cell(row.last.get("incr"), now),
        _run_cell(row.last.get("verify"), now, verified), _good_cell(row, now),
        f'<td class="stored">{escape(_bytes(row.stored_bytes))}</td>',
        f'<td class="cond">{escape(", ".join(conditions)) or "-"}</td>',
        f"<td>{drawn_chart}</td></tr>"])


def page_html(summary: FleetSummary, series: dict[str, tuple[str, ...]]) -> str:
    counts = summary.counts()
    tally = ", ".join(f"{counts[health]} {health.value}" for health in Health)
    drift = ""
    if summary.drift is not None or summary.drifted_nodes:
        nodes = ", ".join(summary.drifted_nodes) or escape(summary.drift.subject
                                                           if summary.drift else "")
        drift = (f'<p class="drift" id="config-drift">config drift: {escape(nodes)} run with '
                 "another config than the control node</p>")
    header = ("<tr><th>Health</th><th>Host</th><th>Last full</th><th>Last incr</th>"
              "<th>Last verify</th><th>Last good backup: uploaded</th>"
              "<th>Stored in target</th><th>Open conditions</th><th>Last backups, oldest "
              'left: <span style="color:#4a7fc1">bytes uploaded (bars, left scale)</span>, '
              '<span style="color:#e08a00">duration (line, right scale)</span></th></tr>')
    rows = "\n".join(_row(row, summary.at, _charts.get(row.host, series.get(row.host, ())))
                     for row in summary.rows)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_S}">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>offsite: {len(summary.rows)} hosts</title><style>{STYLE}</style></head>"
            f"<body><h1>offsite fleet</h1><p id=\"tally\">{len(summary.rows)} hosts: {tally}; "
            f"{summary.outbox_pending} alert(s) waiting for delivery; as of "
            f"{escape(summary.at.strftime('%Y-%m-%d %H:%M:%S'))}Z</p>{drift}"
            f'<table id="fleet"><thead>{header}</thead><tbody>\n{rows}\n</tbody></table>'
            "</body></html>")


def render_page(client: redis.Redis, config: Config) -> bytes:
    summary = read_summary(client, config)
    series = read_series(client, [row.host for row in summary.rows])
    return page_html(summary, series).encode()
