"""Run records as a person reads them: a table, and a one-line outcome."""
from __future__ import annotations

from datetime import datetime

from offsite.records import RunRecord


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
    for note in record.notes:
        line += f" ({note})"
    return line


def format_table(records: list[RunRecord]) -> str:
    if not records:
        return "no runs recorded yet"
    header = ("RUN ID", "TYPE", "STATE", "STARTED", "FINISHED", "UPLOADED", "ERROR")
    rows = [header] + [
        (r.run_id, r.type.value, r.state.value, _when(r.started_at), _when(r.finished_at),
         _bytes(r.bytes_uploaded), (r.error.message[:60] if r.error else ""))
        for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)
