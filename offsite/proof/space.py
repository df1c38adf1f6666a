"""Free space before a restore: a drill (and `verify --local`) restores a whole set into its
scratch folder (`verify.scratch`), `offsite restore` into DEST; either is checked against the
set's size before duplicity starts, and refused in one line naming the folder, the bytes needed
and the bytes free, rather than filling the disk (on a control node that often also holds
Redis' files) halfway through.

The size is what the set restores to, not what it stores: the digest manifest's files and
bytes at backup time, recorded in the set's seal (`restored`, offsite.target.seal). The stored
size (compressed, encrypted volumes) says little about it: a dump of text restores to several
times its volumes. A set sealed before seals recorded it is judged by the stored size of the
sets the restore reads, a lower bound, and the message says so.

Needed = restored bytes + one filesystem block per file (each file's last block is partly
empty) + twice the largest volume the restore reads (duplicity downloads one volume at a time
into its temp folder) + a fixed margin for duplicity's signatures and the filesystem's own
reserve.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from offsite.errors import NoRestoreSpace
from offsite.target.catalog import BackupSet

MARGIN_BYTES = 64 * 1024 * 1024
BLOCK_BYTES = 4096


@dataclass(frozen=True)
class RestoreSize:
    bytes: int
    files: int
    recorded: bool   # from the seal's record; else the stored size of the sets (a lower bound)


def restore_size(sets: Sequence[BackupSet]) -> RestoreSize:
    """What restoring the last of `sets` (a chain up to the set chosen) writes."""
    chosen = sets[-1].seal if sets else None
    if chosen is not None and chosen.restored_bytes is not None:
        return RestoreSize(chosen.restored_bytes, chosen.restored_files or 0, True)
    return RestoreSize(sum(size for backup_set in sets for size in backup_set.sizes.values()),
                       0, False)


def tree_bytes(size: RestoreSize) -> int:
    """The restored tree on disk: its bytes and a block per file."""
    return size.bytes + size.files * BLOCK_BYTES


def work_bytes(sets: Sequence[BackupSet]) -> int:
    """duplicity's own while it restores `sets`: twice their largest volume, and the margin."""
    largest = max((backup_set.sizes.get(name, 0) for backup_set in sets
                   for name in backup_set.volume_names), default=0)
    return 2 * largest + MARGIN_BYTES


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def require_space(needs: Sequence[tuple[Path, int]], size: RestoreSize, what: str,
                  host: str, step: str, fix: str) -> None:
    """Each (folder, bytes) must fit in its filesystem's free space, folders on one filesystem
    counted together; raises NoRestoreSpace naming the folder, the bytes needed and free,
    `what` is restored and `fix` (what to do)."""
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, needed in needs:
        device = os.stat(_existing(folder)).st_dev
        first, total = by_device.get(device, (folder, 0))
        by_device[device] = (first, total + needed)
    for folder, needed in by_device.values():
        free = shutil.disk_usage(_existing(folder)).free
        if needed > free:
            basis = (f"{size.bytes} bytes in {size.files} files as recorded in its seal"
                     if size.recorded else
                     f"at least {size.bytes} bytes, its stored size: its seal predates the "
                     "record of restored sizes")
            raise NoRestoreSpace(
                f"not enough free space in {folder} to restore {what}: needs {needed} bytes "
                f"({_human(needed)}; the set restores to {basis}, plus duplicity's temp), "
                f"{free} bytes ({_human(free)}) available; {fix}", host=host, step=step)


def _human(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"
