"""Fleet load control: `schedule.spread: 1h` gives each host a fixed offset within that window,
added to its full and incremental slots, so fifty fulls do not start the same minute.

The offset is a pure function of the host's name (the first 8 bytes of its SHA-256, modulo the
window in seconds): the same on every node and across restarts, independent of the other hosts
(adding a host moves no other), and spread evenly over the window for many hosts."""
from __future__ import annotations

import hashlib
from dataclasses import replace

from offsite.schedule.specs import CronSpec, EverySpec, ScheduleSpec


def spread_offset(host: str, window_s: int | None) -> int:
    """Seconds in [0, window_s) for `host`; 0 without a window."""
    if not window_s:
        return 0
    digest = hashlib.sha256(host.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % int(window_s)


def spread(spec: ScheduleSpec, offset: int) -> ScheduleSpec:
    """The spec with its slots shifted by `offset` seconds."""
    if not offset:
        return spec
    if isinstance(spec, EverySpec):
        return replace(spec, anchor=spec.anchor + offset)
    assert isinstance(spec, CronSpec)
    return replace(spec, offset=offset)
