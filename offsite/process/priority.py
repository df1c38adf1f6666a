"""CPU and I/O priority of the commands a run starts (scripts and duplicity): `nice` and the
I/O scheduling class, set by the command's own reaper before it starts the command
(offsite.process.reaper), so a backup yields to the host's own work. Best effort: where the
kernel refuses (an I/O class on a scheduler without classes) the command still runs. Imports
only ctypes and os: the reaper, started for every command, imports this module."""
from __future__ import annotations

import ctypes
import os

_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IO_CLASSES = {"idle": 3, "best-effort": 2}
_BEST_EFFORT_LOWEST = 7


class Priority:
    """nice: 0 (normal) to 19 (lowest); io: normal, best-effort (its lowest level), idle.
    Immutable (a plain class: a dataclass would cost every command's reaper ~10 ms)."""
    __slots__ = ("nice", "io")
    nice: int
    io: str

    def __init__(self, nice: int = 0, io: str = "normal") -> None:
        object.__setattr__(self, "nice", nice)
        object.__setattr__(self, "io", io)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Priority is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Priority) and (self.nice, self.io) == (other.nice, other.io)

    def __hash__(self) -> int:
        return hash((self.nice, self.io))

    def __repr__(self) -> str:
        return f"Priority(nice={self.nice}, io={self.io!r})"

    @property
    def lowered(self) -> bool:
        return self.nice > 0 or self.io != "normal"


def apply_in_child(priority: Priority) -> None:
    """Lower this process's CPU and I/O priority (the reaper's, which its command inherits)."""
    if priority.nice > 0:
        try:
            os.nice(priority.nice)
        except OSError:
            pass
    io_class = IO_CLASSES.get(priority.io)
    number = _IOPRIO_SET.get(os.uname().machine)
    if io_class is None or number is None:
        return
    level = _BEST_EFFORT_LOWEST if priority.io == "best-effort" else 0
    try:
        ctypes.CDLL(None, use_errno=True).syscall(
            number, _IOPRIO_WHO_PROCESS, 0, (io_class << _IOPRIO_CLASS_SHIFT) | level)
    except (OSError, AttributeError):
        pass
