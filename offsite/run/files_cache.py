"""The host's files cache: what the digest manifest of the last confirmed upload hashed, so an
incremental re-hashes only the staged files that changed (as borg and restic keep one).

Kept beside duplicity's archive in the host's cache folder, `offsite-files.sqlite`: one row per
staged regular file, (path as bytes, size, mtime_ns, sha256). Looked up one path at a time and
written as the manifest is, so neither costs memory with the number of files.

The policy, and why it is correct:
- **What counts as unchanged**: a staged file whose path, size and mtime (to the nanosecond)
  are those recorded by the previous manifest keeps that manifest's SHA-256, unread. Inode and
  ctime are not part of the key (borg's default includes them): staging is emptied after each
  run and the scripts write it again, so every file has a new inode and ctime on every run,
  and a key with them would never hit. A script that copies with its source's times
  (`cp -a`, `rsync -a`, `tar x`) keeps its unchanged files' mtime; a dump written anew gets a
  new mtime and is hashed.
- **Never blinder than duplicity**: duplicity's incremental takes a file as unchanged when its
  type, permissions and whole-second mtime are those of its signatures (it does not even compare
  the size). A file our key calls unchanged is therefore one duplicity does not upload again:
  the set restores its previous content, the manifest keeps the previous digest, and the two
  agree (verify passes and proves what restore returns). Our key is finer than duplicity's
  (size, nanoseconds), so where they differ it is our side that hashes: a file rewritten with
  another size in the same second is hashed anew while duplicity keeps the old one, and
  verify reports that mismatch — the restore would not return what was staged.
- **Only the last confirmed upload's digests**: the cache read is the one committed after the
  previous upload was confirmed in the target; a run's new rows become the cache only once its
  own upload is confirmed (`commit`), so a failed run never leaves digests that no set holds.
- **A full reads everything**: duplicity reads every byte of a full, so a full re-hashes every
  file (it still writes the cache for the incrementals after it).
- **Known blind spot**, the same as duplicity's and rsync's quick check: content changed in
  place with size and mtime set back (`touch -r`, `os.utime`) is neither uploaded by duplicity
  nor re-hashed: the backup holds the previous content, and says so consistently.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

CACHE_NAME = "offsite-files.sqlite"
_NEXT_SUFFIX = ".next"
_SCHEMA = ("CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL, "
           "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID")


class FilesCache:
    """The previous manifest's digests (read) and this run's (written), see the module."""

    def __init__(self, folder: Path, reuse: bool) -> None:
        self.path = folder / CACHE_NAME
        self.next_path = folder / (CACHE_NAME + _NEXT_SUFFIX)
        self.hits = 0
        self.misses = 0
        self._previous = _open_read(self.path) if reuse else None
        self.next_path.unlink(missing_ok=True)
        descriptor = os.open(self.next_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)   # private before sqlite writes anything into it
        self._next: sqlite3.Connection | None = sqlite3.connect(self.next_path)
        self._next.execute("PRAGMA journal_mode=OFF")
        self._next.execute("PRAGMA synchronous=OFF")
        self._next.execute(_SCHEMA)

    def __enter__(self) -> FilesCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def known(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The SHA-256 the previous manifest recorded for this file, if it is unchanged."""
        if self._previous is None:
            return None
        try:
            row = self._previous.execute(
                "SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
                (os.fsencode(path), size, mtime_ns)).fetchone()
        except sqlite3.DatabaseError:
            self._previous = None   # a damaged cache is no cache: everything is hashed
            return None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return str(row[0])

    def record(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        assert self._next is not None, "the cache was committed or closed"
        self._next.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                           (os.fsencode(path), size, mtime_ns, sha256))

    def commit(self) -> None:
        """This run's digests become the cache (call once its upload is confirmed)."""
        if self._next is None:
            return
        self._next.commit()
        self._next.close()
        self._next = None
        os.replace(self.next_path, self.path)

    def close(self) -> None:
        """Without commit: this run's digests are dropped, the previous cache stays."""
        if self._previous is not None:
            self._previous.close()
            self._previous = None
        if self._next is not None:
            self._next.close()
            self._next = None
            self.next_path.unlink(missing_ok=True)


def _open_read(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(path)
        connection.execute("SELECT 1 FROM files LIMIT 1")
        return connection
    except sqlite3.DatabaseError:
        return None   # not a cache we wrote: everything is hashed, and a new one written
