"""What the host's duplicity cache says about its backup chain: when the last full was made."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from offsite.durations import format_duration

_FULL_MANIFEST = re.compile(r"^duplicity-full\.(\d{8}T\d{6}Z)\.manifest(\.gpg)?$")


def last_full_time(archive_dir: Path, name: str) -> datetime | None:
    """The newest completed full backup in the cache (a `.part` manifest is an unfinished one)."""
    folder = archive_dir / name
    times = [datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
             for entry in (folder.iterdir() if folder.is_dir() else [])
             if (match := _FULL_MANIFEST.match(entry.name))]
    return max(times, default=None)


def promotion_reason(archive_dir: Path, name: str, max_full_interval_s: int,
                     now: datetime) -> str | None:
    """Why an incremental must become a full, or None when the chain is fresh enough."""
    last_full = last_full_time(archive_dir, name)
    if last_full is None:
        return "promoted to full: the host has no full backup chain yet"
    age = (now - last_full).total_seconds()
    if age > max_full_interval_s:
        return (f"promoted to full: the last full is {format_duration(age)} old "
                f"(max_full_interval {format_duration(max_full_interval_s)})")
    return None
