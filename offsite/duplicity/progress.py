"""The progress deadline of a restore (restore, verify, drills): a duplicity restore that
neither writes restored bytes nor downloads any for `target.restore_progress_timeout` is
stopped, and the error names the volume it was reading (from duplicity's `Processed volume N of
M` log records and the chain's volume names in restore order). The whole-run timeout
(`upload_timeout`, hours) stays as the outer bound."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable, Sequence

from offsite.duplicity.errors import read_log_tail
from offsite.errors import CommandTimedOut

_PROCESSED = re.compile(r"^INFO 2 (\d+) (\d+)\s*$", re.MULTILINE)


class RestoreStalled(CommandTimedOut):
    """A restore made no progress for its deadline; the volume it was reading is named."""


def tree_bytes(folders: Sequence[Path]) -> int:
    """Bytes of the files under the folders (a folder that does not exist counts 0)."""
    total = 0
    for folder in folders:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
    return total


def volume_being_read(log_text: str, volume_names: Sequence[str]) -> str:
    """The volume after the last one duplicity reports processed, by name when known."""
    processed = [(int(done), int(total)) for done, total in _PROCESSED.findall(log_text)]
    done, total = processed[-1] if processed else (0, len(volume_names) or 0)
    number = done + 1
    if 0 < number <= len(volume_names):
        return volume_names[number - 1]
    return f"volume {number} of {total}" if total else "the first volume"


class ProgressDeadline:
    """An on_tick for run_command: raises RestoreStalled when the folders stop growing for
    `limit_s`; checks at most every `check_s` (walking a large restore costs)."""

    def __init__(self, folders: Sequence[Path], limit_s: float, log_path: Path,
                 volume_names: Sequence[str], host: str | None, step: str,
                 then: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folders, self.limit_s, self.log_path = list(folders), limit_s, log_path
        self.volume_names, self.host, self.step, self.then = list(volume_names), host, step, then
        self.clock = clock
        self.check_s = max(1.0, min(10.0, limit_s / 5))
        self.last_bytes = -1
        self.last_change = self.next_check = clock()

    def __call__(self) -> None:
        if self.then is not None:
            self.then()
        now = self.clock()
        if now < self.next_check:
            return
        self.next_check = now + self.check_s
        size = tree_bytes(self.folders)
        if size != self.last_bytes:
            self.last_bytes, self.last_change = size, now
            return
        if now - self.last_change >= self.limit_s:
            volume = volume_being_read(read_log_tail(self.log_path), self.volume_names)
            raise RestoreStalled(
                f"no progress for {now - self.last_change:.0f}s (target.restore_progress_"
                f"timeout) while reading {volume}: stopped", host=self.host, step=self.step,
                exit_code=None, stderr_tail="")
