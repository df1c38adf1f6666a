"""Progress of the long commands (`backup --wait`, `verify --wait`, `restore`): one status
line on stderr, rewritten in place every second, when stderr is a terminal; nothing at all
when it is piped or redirected, so scripts and logs see only the outcome."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from offsite.ledger.records import RunStore
from offsite.ledger.run_record import RunRecord

TICK_S = 1.0
MAX_SIZE_FILES = 100_000   # a restore's size is summed over at most this many files a tick


def on_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_line(describe: Callable[[float], str], stream: TextIO | None = None,
                  tick_s: float = TICK_S) -> Iterator[None]:
    """While the block runs, shows describe(elapsed seconds) on the stream when it is a
    terminal; the line is cleared at the end, whatever the outcome."""
    out = stream if stream is not None else sys.stderr
    if not on_terminal(out):
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while True:
            try:
                text = describe(time.monotonic() - start)
            except Exception as exc:  # the progress line must never break the command
                text = f"(progress unavailable: {type(exc).__name__})"
            out.write("\r\x1b[K" + text[:200])
            out.flush()
            if stop.wait(tick_s):
                return

    thread = threading.Thread(target=tick, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        out.write("\r\x1b[K")
        out.flush()


def run_progress(store: RunStore, run_id: str) -> Callable[[float], str]:
    """`carcosa-full-…: running, step script:postgres, 12s`."""
    def describe(elapsed: float) -> str:
        record = store.get(run_id)
        if record is None:
            return f"{run_id}: not recorded yet, {elapsed:.0f}s"
        return f"{run_id}: {record.state.value}{_step(record)}, {elapsed:.0f}s"
    return describe


def _step(record: RunRecord) -> str:
    running = [step.name for step in record.steps if step.finished_at is None]
    return f", step {running[-1]}" if running else ""


def folder_progress(what: str, folder: Path) -> Callable[[float], str]:
    """`restoring carcosa: 34.5 MB in 120 files, 12s`: what has arrived in the folder."""
    def describe(elapsed: float) -> str:
        size, files = _folder_size(folder)
        return f"{what}: {size / 1e6:.1f} MB in {files} files, {elapsed:.0f}s"
    return describe


def _folder_size(folder: Path) -> tuple[int, int]:
    total = files = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            files += 1
            if files >= MAX_SIZE_FILES:
                return total, files
    return total, files
