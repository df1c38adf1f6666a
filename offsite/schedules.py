"""Schedule specs from the config: a cron string or `{every: 6h}`, and their next run times."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab

from offsite.durations import parse_duration, format_duration


@dataclass(frozen=True)
class CronSpec:
    expression: str

    def fields(self) -> list[str]:
        return self.expression.split()

    def to_crontab(self, tz: str) -> crontab:
        minute, hour, day_of_month, month_of_year, day_of_week = self.fields()
        schedule = crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                           month_of_year=month_of_year, day_of_week=day_of_week)
        schedule.tz = ZoneInfo(tz)
        return schedule

    def describe(self) -> str:
        return self.expression


@dataclass(frozen=True)
class EverySpec:
    seconds: int

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
        spec.to_crontab("UTC")
    except Exception as exc:  # celery raises ValueError or its own ParseException
        raise ValueError(f"cron {value!r} is invalid: {exc}") from None
    try:
        next_run(spec, "UTC", datetime(2000, 1, 1, tzinfo=timezone.utc))
    except ValueError:
        raise ValueError(f"cron {value!r} never fires (no such day)") from None
    return spec


def next_run(spec: ScheduleSpec, tz: str, after: datetime) -> datetime:
    """The first slot strictly after `after`, as an aware datetime in `tz`."""
    zone = ZoneInfo(tz)
    after = after.astimezone(zone)
    if isinstance(spec, EverySpec):
        return after + timedelta(seconds=spec.seconds)
    minute_after = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    schedule = spec.to_crontab(tz)
    candidate = minute_after
    for _ in range(0, 366 * 24 * 60 * 5):  # safety bound: five years of minutes
        if _matches(schedule, candidate):
            return candidate
        candidate = _skip_to_candidate(schedule, candidate)
    raise ValueError(f"cron {spec.expression!r} never fires")


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


def _matches(schedule: crontab, moment: datetime) -> bool:
    return (moment.month in schedule.month_of_year
            and moment.day in schedule.day_of_month
            and moment.isoweekday() % 7 in schedule.day_of_week
            and moment.hour in schedule.hour
            and moment.minute in schedule.minute)


def _skip_to_candidate(schedule: crontab, moment: datetime) -> datetime:
    """Jump whole days or hours that cannot match, so a yearly cron is found quickly."""
    if (moment.month not in schedule.month_of_year or moment.day not in schedule.day_of_month
            or moment.isoweekday() % 7 not in schedule.day_of_week):
        return (moment + timedelta(days=1)).replace(hour=0, minute=0)
    if moment.hour not in schedule.hour:
        return (moment + timedelta(hours=1)).replace(minute=0)
    return moment + timedelta(minutes=1)


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
