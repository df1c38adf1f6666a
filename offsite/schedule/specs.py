"""Schedule specs from the config: a cron string or `{every: 6h}`, and their next run times."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from offsite.schedule.cron import cron_fields, next_fire, previous_fire
from offsite.durations import parse_duration, format_duration


@dataclass(frozen=True)
class CronSpec:
    expression: str
    offset: int = 0     # seconds every fire is shifted by (a host's spread, schedule.spread)

    def fields(self) -> list[str]:
        return self.expression.split()

    def describe(self) -> str:
        return self.expression + (f" +{format_duration(self.offset)}" if self.offset else "")


@dataclass(frozen=True)
class EverySpec:
    """Slots on a fixed grid: anchor + k * seconds (anchor in epoch seconds, UTC), so a slot
    never drifts with the beat loop or with how late the previous send was."""
    seconds: int
    anchor: float = 0.0

    def describe(self) -> str:
        return f"every {format_duration(self.seconds)}"


ScheduleSpec = CronSpec | EverySpec


MAX_CRON_CHARS = 200


def parse_schedule_spec(value: Any) -> ScheduleSpec:
    """A cron string (5 fields) or a mapping `{every: DURATION}`; raises ValueError otherwise,
    also for a cron that can never fire (`0 0 31 2 *`)."""
    if isinstance(value, (CronSpec, EverySpec)):
        return value
    if isinstance(value, dict):
        if set(value) != {"every"}:
            unexpected = sorted(str(key)[:40] for key in set(value) - {"every"})
            raise ValueError(f"an interval schedule is written {{every: 6h}}; "
                             f"unexpected keys {unexpected}")
        return EverySpec(parse_duration(value["every"]))
    if not isinstance(value, str):
        raise ValueError('expected a cron string like "0 4 * * 1" or {every: 6h}')
    if len(value) > MAX_CRON_CHARS or not value.isascii() or not value.isprintable():
        raise ValueError(f"cron {value[:40]!r} must be at most {MAX_CRON_CHARS} printable "
                         "ASCII characters")
    spec = CronSpec(" ".join(value.split()))
    if len(spec.fields()) != 5:
        raise ValueError(f"cron {value!r} must have 5 fields (minute hour day month weekday)")
    try:
        cron_fields(spec.expression)
    except ValueError as exc:
        raise ValueError(f"cron {value!r} is invalid: {exc}") from None
    try:
        next_run(spec, "UTC", datetime(2000, 1, 1, tzinfo=timezone.utc))
    except ValueError:
        raise ValueError(f"cron {value!r} never fires (no such day)") from None
    return spec


def next_run(spec: ScheduleSpec, tz: str, after: datetime) -> datetime:
    """The first slot strictly after `after`, as an aware datetime in `tz`."""
    zone = ZoneInfo(tz)
    if isinstance(spec, EverySpec):
        index = math.floor((after.timestamp() - spec.anchor) / spec.seconds) + 1
        return _grid_slot(spec, index).astimezone(zone)
    shift = timedelta(seconds=spec.offset)
    return (next_fire(spec.expression, tz, after - shift) + shift).astimezone(zone)


def latest_slot(spec: ScheduleSpec, tz: str, at: datetime) -> datetime | None:
    """The last slot at or before `at`, as an aware datetime in `tz` (None: none in years)."""
    zone = ZoneInfo(tz)
    if isinstance(spec, EverySpec):
        index = math.floor((at.timestamp() - spec.anchor) / spec.seconds)
        return _grid_slot(spec, index).astimezone(zone)
    shift = timedelta(seconds=spec.offset)
    found = previous_fire(spec.expression, tz, at - shift)
    return (found + shift).astimezone(zone) if found else None


def _grid_slot(spec: EverySpec, index: int) -> datetime:
    return datetime.fromtimestamp(spec.anchor + index * spec.seconds, tz=timezone.utc)


def due_after(spec: ScheduleSpec, tz: str, last_run_at: datetime) -> datetime:
    """The slot that became due after the entry last ran: the one a (late) send stands for."""
    return next_run(spec, tz, last_run_at)


def slots_between(spec: ScheduleSpec, tz: str, first: datetime, until: datetime,
                  limit: int = 1000) -> int:
    """How many slots fall in [first, until]: the ones a catch-up run collapses."""
    count, moment = 0, first
    while moment <= until and count < limit:
        count += 1
        moment = next_run(spec, tz, moment)
    return count


def period_s(spec: ScheduleSpec, tz: str, around: datetime) -> float:
    if isinstance(spec, EverySpec):
        return float(spec.seconds)
    first = next_run(spec, tz, around)
    return (next_run(spec, tz, first) - first).total_seconds()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def describe_lateness(spec: ScheduleSpec, tz: str, slot: datetime,
                      sent_at: datetime) -> tuple[float, str | None]:
    """Seconds between the slot and its send, and a note when that is late for this schedule."""
    late_s = max(0.0, (sent_at - slot).total_seconds())
    if late_s <= min(60.0, period_s(spec, tz, slot) / 2):
        return late_s, None
    collapsed = slots_between(spec, tz, slot, sent_at)
    slot_utc = slot.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    note = f"ran late by {format_duration(late_s)} (slot {slot_utc})"
    if collapsed > 1:
        note += f"; {collapsed} missed slots collapsed into this run"
    return late_s, note
