"""CPU and I/O priority of the commands a run starts (scripts and duplicity): `nice` and the
I/O scheduling class, set in the child before it executes (offsite.process.execute), so a
backup yields to the host's own work. Best effort: where the kernel refuses (an I/O class on a
scheduler without classes) the command still runs."""
from __future__ import annotations

import ctypes
import os
import platform
from typing import NamedTuple

_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IO_CLASSES = {"idle": 3, "best-effort": 2}
_BEST_EFFORT_LOWEST = 7


class Priority(NamedTuple):
    nice: int = 0             # 0 (normal) to 19 (lowest)
    io: str = "normal"        # normal, best-effort (lowest level), idle

    @property
    def lowered(self) -> bool:
        return self.nice > 0 or self.io != "normal"


def apply_in_child(priority: Priority) -> None:
    """In the child between fork and exec: lower its CPU and I/O priority."""
    if priority.nice > 0:
        try:
            os.nice(priority.nice)
        except OSError:
            pass
    io_class = IO_CLASSES.get(priority.io)
    number = _IOPRIO_SET.get(platform.machine())
    if io_class is None or number is None:
        return
    level = _BEST_EFFORT_LOWEST if priority.io == "best-effort" else 0
    try:
        ctypes.CDLL(None, use_errno=True).syscall(
            number, _IOPRIO_WHO_PROCESS, 0, (io_class << _IOPRIO_CLASS_SHIFT) | level)
    except (OSError, AttributeError):
        pass
