"""`/host/NAME`: one host's run history from the ledger, newest first (its run index, then one
MGET of the records): id, type, state, when it started, how long it took, bytes uploaded, the
failure class and the error's first line. Every text from the ledger is escaped; the caller has
checked that NAME is a configured host."""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import cast

import redis

from offsite.constants import HOST_RUNS_KEY
from offsite.fleet.page import REFRESH_S, STYLE
from offsite.fleet.summary import RunBrief, load_briefs
from offsite.fleet.table import short_age
from offsite.ledger.status import _bytes

HISTORY_RUNS = 100
ERROR_CHARS = 300


def read_history(client: redis.Redis, host: str, most: int = HISTORY_RUNS) -> list[RunBrief]:
    raws = cast("list[bytes | str]", client.zrevrange(HOST_RUNS_KEY + host, 0, most - 1))
    run_ids = [raw.decode() if isinstance(raw, bytes) else raw for raw in raws]
    found = load_briefs(client, run_ids)
    return [found[run_id] for run_id in run_ids if run_id in found]


def _moment(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z" if moment else "-"


def _run_row(run: RunBrief) -> str:
    state = escape(run.state.value)
    duration = run.duration_s
    error = run.error
    message = error.message.splitlines()[0][:ERROR_CHARS] if error and error.message else ""
    return "".join([
        f'<tr data-run="{escape(run.run_id)}">',
        f'<td class="id">{escape(run.run_id)}</td><td>{escape(run.type)}</td>',
        f'<td><span class="state-{state}">{state}</span></td>',
        f"<td>{escape(_moment(run.started_at or run.created_at))}</td>",
        f"<td>{short_age(duration) if duration is not None else '-'}</td>",
        f"<td>{escape(_bytes(run.bytes_uploaded))}</td>",
        f"<td>{escape(error.failure_class) if error else '-'}</td>",
        f'<td class="why">{escape(message)}</td></tr>'])


def history_html(host: str, runs: list[RunBrief], now: datetime) -> str:
    rows = "\n".join(_run_row(run) for run in runs) or \
        '<tr><td colspan="8">no runs in the ledger</td></tr>'
    name = escape(host)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_S}">'
            f"<title>offsite: {name}</title><style>{STYLE}</style></head><body>"
            f'<p><a href="/">&larr; fleet</a></p><h1>{name}</h1>'
            f'<p id="tally">its last {len(runs)} run(s) in the ledger, newest first; as of '
            f"{escape(now.strftime('%Y-%m-%d %H:%M:%S'))}Z</p>"
            '<table id="runs"><thead><tr><th>Run</th><th>Type</th><th>State</th>'
            "<th>Started (UTC)</th><th>Duration</th><th>Uploaded</th><th>Failure class</th>"
            f"<th>Error</th></tr></thead><tbody>\n{rows}\n</tbody></table></body></html>")


def render_host_page(client: redis.Redis, host: str) -> bytes:
    return history_html(host, read_history(client, host), datetime.now(timezone.utc)).encode()
