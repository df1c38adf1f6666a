"""What the big-host benchmark samples while a run goes: the host lease's lowest remaining time,
the peak RSS of the duplicity a process starts, the disk used under the work folder; and the
figures' formatting (medians with min-max)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from statistics import median
from typing import Sequence, TypeVar

import redis

from bench.services import status_kib
from offsite.constants import LEASE_KEY

S = TypeVar("S", bound="_Sampler")


def spread(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    scaled = [value / scale for value in values]
    if not scaled:
        return "(none)"
    return f"{median(scaled):.2f} {unit} ({min(scaled):.2f}-{max(scaled):.2f})"


class _Sampler:
    """A daemon thread calling `sample()` every `period` seconds while entered."""

    period = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self: S) -> S:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError


class LeaseWatch(_Sampler):
    """The lowest remaining time (PTTL) of a host's lease while it is held, read every 0.1 s."""

    period = 0.1

    def __init__(self, broker_url: str, host: str) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(broker_url)
        self.key = LEASE_KEY + host
        self.lowest_ms: int | None = None

    def sample(self) -> None:
        remaining = int(self.client.pttl(self.key))
        if remaining > 0 and (self.lowest_ms is None or remaining < self.lowest_ms):
            self.lowest_ms = remaining


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _is_duplicity(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # offsite starts it as `python -m offsite.duplicity.launch ...` (offsite/duplicity/launch.py)
    return (any(os.path.basename(arg) == b"duplicity" for arg in argv[:2])
            or b"offsite.duplicity.launch" in argv[:3])


class DescendantRss(_Sampler):
    """The highest VmHWM of any duplicity process below `pid` (a worker, the control node),
    sampled twice a second from /proc: a duplicity that lives under half a second may be
    missed, a longer one is read at its high-water mark (VmHWM never falls)."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.peak_kib = 0

    def sample(self) -> None:
        children = _children_map()
        todo, seen = list(children.get(self.pid, [])), set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo += children.get(pid, [])
            if _is_duplicity(pid):
                self.peak_kib = max(self.peak_kib, status_kib(pid, "VmHWM") or 0)


def used_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


class DiskWatch(_Sampler):
    """The highest used bytes of the filesystem holding `path`, sampled twice a second, minus
    the level when entered (the machine is shared: other users' writes count too)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.start = used_bytes(path)
        self.peak = self.start

    def sample(self) -> None:
        self.peak = max(self.peak, used_bytes(self.path))

    @property
    def peak_growth(self) -> int:
        return max(0, self.peak - self.start)
