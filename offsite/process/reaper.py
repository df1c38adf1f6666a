"""What a command leaves behind is ended with it: the worker adopts orphans (child subreaper)
and, when a command ends, kills its process group, every process it left running (`cmd &`,
`nohup`, `setsid`, double forks, gpg-agent daemons) and their descendants, then reaps them."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_TERM_GRACE_S = 1.0
_SWEEP_DEADLINE_S = 10.0
_POLL_S = 0.05

_lock = threading.Lock()
_subreaper = False
_running: set[int] = set()   # main pids of the commands running now in this process


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    zombie: bool


def become_subreaper() -> bool:
    """Make this process adopt its descendants' orphans instead of init (once per process)."""
    global _subreaper
    with _lock:
        if not _subreaper:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            if not _subreaper:
                log.warning("cannot become a child subreaper (errno %d): processes a command "
                            "leaves behind may outlive it", ctypes.get_errno())
        return _subreaper


def process_table() -> dict[int, ProcessInfo]:
    """Every process visible in /proc, by pid."""
    table: dict[int, ProcessInfo] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = ProcessInfo(int(entry.name), int(fields[1]), int(fields[2]),
                                             fields[0] in ("Z", "X"))
    return table


def my_children() -> set[int]:
    me = os.getpid()
    return {info.pid for info in process_table().values() if info.ppid == me}


def command_started(pid: int) -> None:
    with _lock:
        _running.add(pid)


def command_ended(pid: int) -> None:
    with _lock:
        _running.discard(pid)


def _leftovers(main_pid: int, children_before: set[int]) -> tuple[set[int], set[int]]:
    """(processes to kill, adopted children to reap): the command's group, the orphans adopted
    since it started (not another running command), and all their descendants."""
    me = os.getpid()
    table = process_table()
    with _lock:
        others = _running - {main_pid}
    adopted = {info.pid for info in table.values() if info.ppid == me and info.pid != main_pid
               and info.pid not in children_before and info.pid not in others}
    roots = adopted | {info.pid for info in table.values() if info.pgid == main_pid}
    doomed = set(roots)
    grew = True
    while grew:
        more = {info.pid for info in table.values() if info.ppid in doomed} - doomed
        doomed |= more
        grew = bool(more)
    alive = {pid for pid in doomed if not table[pid].zombie and pid != main_pid}
    return alive, adopted


def end_leftovers(main_pid: int, children_before: set[int]) -> int:
    """Kill (TERM, then KILL after a grace) and reap what the command `main_pid` left behind.

    Call it while the main process is exited but not yet reaped, so its pid (the group id)
    cannot have been reused. Returns how many processes were ended."""
    deadline = time.monotonic() + _SWEEP_DEADLINE_S
    term_sent: dict[int, float] = {}
    ended: set[int] = set()
    while time.monotonic() < deadline:
        alive, adopted = _leftovers(main_pid, children_before)
        _reap(adopted)
        if not alive:
            break
        now = time.monotonic()
        for pid in alive:
            first = term_sent.setdefault(pid, now)
            _signal(pid, signal.SIGTERM if first == now else
                    signal.SIGKILL if now - first >= _TERM_GRACE_S else 0)
        ended |= alive
        time.sleep(_POLL_S)
    else:
        log.warning("processes left by command %d still alive after %.0fs", main_pid,
                    _SWEEP_DEADLINE_S)
    if ended:
        log.info("ended %d process(es) left behind by command %d", len(ended), main_pid)
    return len(ended)


def _signal(pid: int, sig: int) -> None:
    if sig:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
