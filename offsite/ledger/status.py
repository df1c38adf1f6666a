"""Run records as a person reads them: a table, and a one-line outcome."""
from __future__ import annotations

import re
from datetime import datetime

from offsite.bounded import printable
from offsite.ledger.run_record import ErrorRecord, RunRecord

ERROR_CELL_MAX = 160
# OffsiteError.one_line() puts "host H step S: " before the cause; the table has both columns
_WHERE = re.compile(r"^(?:host \S+ ?)?(?:step \S+)?: ")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def format_outcome(record: RunRecord) -> str:
    line = f"{record.run_id}: {record.state.value}"
    if record.bytes_uploaded is not None:
        line += f", {_bytes(record.bytes_uploaded)} uploaded"
    if record.error:
        line += f" at {record.error.step}: {record.error.message}"
    if record.replicas:   # each replica's newest set and state (offsite.run.replicas)
        line += "; replicas " + ", ".join(
            f"{name}: {replica.newest_set or 'none'} ({replica.state})"
            for name, replica in record.replicas.items())
    for note in record.notes:
        line += f" ({note})"
    return printable(line)   # a script's stderr may hold terminal escape sequences


def error_cause(error: ErrorRecord | None, limit: int = ERROR_CELL_MAX) -> str:
    """The cause of a failure in one line: the step it failed at and what went wrong, without
    the "host X step Y:" prefix, whitespace collapsed, cut at `limit` characters with "..."
    (`offsite status --json` has it whole)."""
    if error is None:
        return ""
    cause = " ".join(_WHERE.sub("", error.message.strip(), count=1).split())
    if error.step and not cause.startswith(error.step):
        cause = f"{error.step}: {cause}"
    return cause if len(cause) <= limit else cause[:limit - 3].rstrip() + "..."


def format_table(records: list[RunRecord]) -> str:
    if not records:
        return "no runs recorded yet"
    header = ("RUN ID", "TYPE", "STATE", "STARTED", "FINISHED", "UPLOADED", "ERROR")
    rows = [header] + [
        (r.run_id, r.type.value, r.state.value, _when(r.started_at), _when(r.finished_at),
         _bytes(r.bytes_uploaded), printable(error_cause(r.error)))   # escapes neutralised
        for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)
