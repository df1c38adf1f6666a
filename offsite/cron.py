"""Next and previous fire times of a cron expression read in a time zone, by arithmetic on the
expression's field sets (days, then the day's hours and minutes), never by stepping minutes.

Meaning: the cron fires at every instant whose wall-clock reading in the zone matches the
fields. So a wall time skipped by a spring change does not fire that day, and a wall time
repeated by an autumn change fires at both instants. Day of month and day of week must both
match (as in celery's crontab). Fields are read by offsite.cron_parse.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterator
from zoneinfo import ZoneInfo

from offsite.cron_parse import parse_cron

UTC = timezone.utc
_SEARCH_DAYS = 366 * 9   # long enough for "29 February on a Monday" style rarities
_SHIFT = timedelta(hours=3)  # more than any zone's offset change


@dataclass(frozen=True)
class CronFields:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]   # 0 = Sunday, as cron

    def day_matches(self, day: date) -> bool:
        return (day.month in self.months and day.day in self.days
                and day.isoweekday() % 7 in self.weekdays)

    def walls(self) -> tuple[tuple[int, int], ...]:
        return tuple((hour, minute) for hour in self.hours for minute in self.minutes)


@lru_cache(maxsize=512)
def cron_fields(expression: str) -> CronFields:
    minutes, hours, days, months, weekdays = parse_cron(expression)
    return CronFields(minutes=tuple(sorted(minutes)), hours=tuple(sorted(hours)), days=days,
                      months=months, weekdays=weekdays)


def _instants(day: date, hour: int, minute: int, zone: ZoneInfo) -> Iterator[datetime]:
    """The instants (fold 0 then fold 1) at which the zone's clock reads this wall time: none
    in a spring gap, two in an autumn repeat."""
    seen = None
    for fold in (0, 1):
        wall = datetime(day.year, day.month, day.day, hour, minute, fold=fold, tzinfo=zone)
        instant = wall.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) != wall.replace(tzinfo=None):
            continue   # not a time this zone's clock shows that day
        if instant != seen:
            seen = instant
            yield instant


@lru_cache(maxsize=4096)
def next_fire(expression: str, tz: str, after: datetime) -> datetime:
    """The first fire instant strictly after `after` (aware), in UTC."""
    fields, zone = cron_fields(expression), ZoneInfo(tz)
    lowest = (after.astimezone(zone) - _SHIFT).replace(tzinfo=None)
    walls = fields.walls()
    found: list[datetime] = []
    for offset in range(_SEARCH_DAYS):
        day = lowest.date() + timedelta(days=offset)
        if not fields.day_matches(day):
            continue
        for hour, minute in walls:
            if datetime(day.year, day.month, day.day, hour, minute) < lowest:
                continue
            for fold, instant in enumerate(_instants(day, hour, minute, zone)):
                if instant > after:
                    found.append(instant)
                    if fold == 0:   # fold-0 instants rise with the wall: nothing later is nearer
                        return min(found)
    if found:
        return min(found)
    raise ValueError(f"cron {expression!r} never fires")


@lru_cache(maxsize=4096)
def previous_fire(expression: str, tz: str, at: datetime) -> datetime | None:
    """The last fire instant at or before `at` (aware), in UTC; None if none in the search
    window."""
    fields, zone = cron_fields(expression), ZoneInfo(tz)
    highest = (at.astimezone(zone) + _SHIFT).replace(tzinfo=None)
    walls = tuple(reversed(fields.walls()))
    found: list[datetime] = []
    for offset in range(_SEARCH_DAYS):
        day = highest.date() - timedelta(days=offset)
        if not fields.day_matches(day):
            continue
        for hour, minute in walls:
            if datetime(day.year, day.month, day.day, hour, minute) > highest:
                continue
            instants = list(_instants(day, hour, minute, zone))
            found += [instant for instant in instants if instant <= at]
            if instants and instants[-1] <= at:   # the latest instant of this wall: the
                return max(found)                 # walls before it are all earlier
    return max(found) if found else None
