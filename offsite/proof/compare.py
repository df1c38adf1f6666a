"""A drill's comparison of a restored tree with its digest manifest, in memory bounded whatever
the number of files (a 500,000-file host is compared with no list or dict of its entries).

1. The manifest is read one line at a time; each entry is looked up at its own path in the
   restored tree (lstat, then the file's SHA-256): what is missing or different is found there.
   A batch of entries is split into one slice per thread, not one task per entry: small files
   are checked at Python's speed (the GIL), where a future per file cost more than the check,
   and large files still hash on every core (hashlib lets go of the GIL).
2. One walk of the restored tree counts its files and links (os.scandir's file types, no stat
   of each file). Every manifest path is distinct and each one found was counted by the walk,
   so when the walk counts no more than step 1 found, nothing extra was restored.
3. Only when it counts more (something restored that the manifest does not hold) are the extras
   named: the manifest's paths go into an on-disk index (sqlite, in the drill's private
   folder) and a second walk looks each restored path up.

Memory is then a batch of entries and one directory listing at a time (os.walk lists one folder
at a time). `on_tick` is called every batch: the drill checks there that it still holds its host
lease.
"""
from __future__ import annotations

import os
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

from offsite.ledger.run_record import VerifyRecord
from offsite.run.manifest import (MANIFEST_DIR, Entry, ManifestUnreadable, file_digest,
                                  manifest_path, read_manifest, walk)

_BATCH = 256
_THREADS = max(1, min(4, os.cpu_count() or 1))
_INDEX_NAME = "manifest-index.sqlite"


@dataclass(frozen=True)
class _Checked:
    found: bool              # a file or a link (what the walk counts) is at the entry's path
    problem: str | None      # what is wrong with it (None: identical)
    size: int = 0            # bytes read to check it


def compare(restored: Path, outcome: VerifyRecord,
            on_tick: Callable[[], None] | None = None) -> None:
    """Every manifest entry must be restored identically, and nothing else restored."""
    found = 0
    try:
        entries = read_manifest(manifest_path(restored))
        with ThreadPoolExecutor(_THREADS) as pool:
            while batch := list(islice(entries, _BATCH)):
                if on_tick is not None:
                    on_tick()
                for entry, checked in zip(batch, _checked(pool, restored, batch)):
                    found += checked.found
                    if checked.problem:
                        outcome.add(checked.problem)
                    elif entry.kind == "file":
                        outcome.files_checked += 1
                        outcome.bytes_read += checked.size
    except ManifestUnreadable as problem:
        outcome.add(f"manifest: {problem}")
        return
    if _count(restored, on_tick) > found:
        _name_extras(restored, outcome, on_tick)


def _checked(pool: ThreadPoolExecutor, root: Path, batch: list[Entry]) -> list[_Checked]:
    """The batch's checks in its order, each thread taking every _THREADS-th entry (a few large
    files in a row are then spread over the threads)."""
    shares = [batch[start::_THREADS] for start in range(_THREADS)]
    results: list[_Checked] = [_Checked(False, None)] * len(batch)
    for start, checked in enumerate(pool.map(
            lambda share: [_check(root, wanted) for wanted in share], shares)):
        results[start::_THREADS] = checked
    return results


def _check(root: Path, wanted: Entry) -> _Checked:
    path = root / wanted.path
    try:
        info = path.lstat()
        kind = ("symlink" if stat.S_ISLNK(info.st_mode) else
                "file" if stat.S_ISREG(info.st_mode) else "folder or other")
        if kind != wanted.kind:
            return _Checked(kind != "folder or other", f"different: {wanted.path} is a {kind}, "
                                                       f"the manifest says {wanted.kind}")
        if kind == "symlink":
            target = os.readlink(path)
            return _Checked(True, None if target == wanted.target else (
                f"different: {wanted.path} links to {target}, the manifest says "
                f"{wanted.target}"))
        if info.st_size != wanted.size:
            return _Checked(True, f"different: {wanted.path} has {info.st_size} bytes, the "
                                  f"manifest says {wanted.size}")
        if wanted.sha256 is not None and file_digest(path) != wanted.sha256:
            return _Checked(True, f"different: {wanted.path} has another SHA-256 than the "
                                  "manifest")
        return _Checked(True, None, info.st_size)
    except FileNotFoundError:
        return _Checked(False, f"missing: {wanted.path} is in the manifest but not in the "
                               "restore")
    except OSError as exc:
        return _Checked(True, f"unreadable: {wanted.path}: {exc.strerror or exc}")


def _restored_entries(restored: Path, on_tick: Callable[[], None] | None) -> Iterator[Entry]:
    for number, entry in enumerate(walk(restored, digests=False)):
        if on_tick is not None and number % _BATCH == 0:
            on_tick()
        yield entry


def _count(restored: Path, on_tick: Callable[[], None] | None) -> int:
    """The files and links `walk` would list (not the manifest's own folder, not what it skips:
    sockets, fifos, folders it cannot read), from the folders' listings alone."""
    count, folders = 0, [str(restored)]
    while folders:
        if on_tick is not None:
            on_tick()
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                for item in listing:
                    if item.is_symlink() or item.is_file(follow_symlinks=False):
                        count += 1
                    elif item.is_dir(follow_symlinks=False) and not (
                            folder == str(restored) and item.name == MANIFEST_DIR):
                        folders.append(item.path)
        except OSError:
            continue   # as os.walk: a folder it cannot list is left out
    return count


def _name_extras(restored: Path, outcome: VerifyRecord,
                 on_tick: Callable[[], None] | None) -> None:
    """The restored paths the manifest does not hold, through an on-disk index of its paths."""
    index_path = restored.parent / _INDEX_NAME
    index = sqlite3.connect(index_path)
    try:
        index.execute("PRAGMA journal_mode=OFF")
        index.execute("CREATE TABLE paths (path BLOB PRIMARY KEY) WITHOUT ROWID")
        entries = read_manifest(manifest_path(restored))
        while batch := list(islice(entries, _BATCH)):
            index.executemany("INSERT OR IGNORE INTO paths VALUES (?)",
                              [(os.fsencode(entry.path),) for entry in batch])
        for entry in _restored_entries(restored, on_tick):
            if index.execute("SELECT 1 FROM paths WHERE path = ?",
                             (os.fsencode(entry.path),)).fetchone() is None:
                outcome.add(f"extra: {entry.path} is in the restore but not in the manifest")
    finally:
        index.close()
        index_path.unlink(missing_ok=True)
