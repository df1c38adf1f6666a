"""What the host's duplicity cache holds: when its last full was made (compared with the target's
chain, which decides: see offsite.chain_check)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path


_FULL_MANIFEST = re.compile(r"^duplicity-full\.(\d{8}T\d{6}Z)\.manifest(\.gpg)?$")


def last_full_time(archive_dir: Path, name: str) -> datetime | None:
    """The newest completed full backup in the cache (a `.part` manifest is an unfinished one)."""
    folder = archive_dir / name
    times = [datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
             for entry in (folder.iterdir() if folder.is_dir() else [])
             if (match := _FULL_MANIFEST.match(entry.name))]
    return max(times, default=None)
