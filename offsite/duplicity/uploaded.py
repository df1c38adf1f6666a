"""What duplicity uploaded, hashed as it uploaded it: the launcher (offsite.duplicity.launch)
hashes each file duplicity hands its backend (a volume, the manifest, the signatures: the
encrypted bytes exactly as they are stored) just before the transfer, and appends one JSON line
`{"name", "size", "sha256"}` here once the transfer succeeded. The seal of the set is made from
these (offsite.run.sealing), each confirmed in the target by its listed size, so sealing does not
read the set back: at 50 GB that read would double the upload's traffic.

Only the latest upload's record is kept (`upload` empties it first); an object not in it (a set
resumed from an earlier, interrupted upload; duplicity not run through the launcher) is read
back from the target as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

DIGESTS_ENV = "OFFSITE_UPLOAD_DIGESTS"   # where the launcher appends; no secret in it
RECORD_NAME = ".upload-digests.jsonl"    # a dot: no host (the --name folder beside it) has one
MAX_LINE_BYTES = 4096
_CHUNK = 1024 * 1024


def record_path(archive_dir: Path) -> Path:
    return archive_dir / RECORD_NAME


def file_digest(path: str) -> tuple[int, str]:
    """(size, SHA-256) of a local file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class UploadRecord:
    """The launcher's side: one line per transfer that succeeded (duplicity may upload from
    several threads with --asynchronous-upload)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, name: str, size: int, sha256: str) -> None:
        line = json.dumps({"name": name, "size": size, "sha256": sha256}) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def read_uploaded(archive_dir: Path) -> dict[str, tuple[int, str]]:
    """name -> (size, SHA-256) of what the latest upload transferred (the last transfer of a
    name wins); {} when there is no record. A line that is not one is skipped: that object is
    then read back from the target instead."""
    found: dict[str, tuple[int, str]] = {}
    try:
        handle = open(record_path(archive_dir), "rb")
    except FileNotFoundError:
        return found
    with handle:
        for raw in iter(lambda: handle.readline(MAX_LINE_BYTES), b""):
            try:
                item = json.loads(raw)
                name, size, sha256 = item["name"], item["size"], item["sha256"]
            except (ValueError, KeyError, TypeError):
                continue
            if (isinstance(name, str) and isinstance(size, int) and isinstance(sha256, str)
                    and len(sha256) == 64):
                found[name] = (size, sha256)
    return found
