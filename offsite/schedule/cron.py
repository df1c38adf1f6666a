"""Next and previous fire times of a cron expression read in a time zone, by arithmetic on the
expression's field sets (days, then the day's hours and minutes), never by stepping minutes.

Meaning: the cron fires at every instant whose wall-clock reading in the zone matches the
fields. So a wall time skipped by a spring change does not fire that day, and a wall time
repeated by an autumn change fires at both instants. Day of month and day of week must both
match (as in celery's crontab). Fields are read by offsite.schedule.cron.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterator
from zoneinfo import ZoneInfo
import re


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


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_PART = re.compile(r"(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?")


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: dict[str, int]

    def number(self, text: str) -> int:
        value = int(text) if text.isdigit() else self._named(text)
        if value is None:
            raise ValueError(f"{self.name}: {text!r} is not a number"
                             + (f" or a name ({', '.join(self.names)})" if self.names else ""))
        if not self.low <= value <= self.high:
            raise ValueError(f"{self.name}: {value} is outside {self.low}-{self.high}")
        return value

    def _named(self, text: str) -> int | None:
        """`mon` or `monday` (a name or its abbreviation of at least three letters)."""
        short = text[:3].lower()
        if len(text) < 3 or short not in self.names:
            return None
        return self.names[short] if _FULL_NAMES[short].startswith(text.lower()) else None

    def expand(self, first: int, last: int) -> list[int]:
        if last >= first:
            return list(range(first, last + 1))
        return list(range(first, self.high + 1)) + list(range(self.low, last + 1))  # wraps

    def parse(self, text: str) -> frozenset[int]:
        values: set[int] = set()
        for part in text.split(","):
            match = _PART.fullmatch(part)
            if match is None:
                raise ValueError(f"{self.name}: {part[:40]!r} is not a number, a range, * "
                                 "or one of them with /step")
            star, first, last, step = match.groups()
            if star:
                span = self.expand(self.low, self.high)
            elif last is not None:
                span = self.expand(self.number(first), self.number(last))
            elif step is not None:
                raise ValueError(f"{self.name}: a step follows * or a range, not {part!r}")
            else:
                span = [self.number(first)]
            if step is not None and int(step) == 0:
                raise ValueError(f"{self.name}: a step of 0 in {part!r}")
            values.update(span[::int(step)] if step is not None else span)
        return frozenset(values)


_FULL_NAMES = {name[:3]: name for name in (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")}

FIELDS = (Field("minute", 0, 59, {}), Field("hour", 0, 23, {}),
          Field("day of month", 1, 31, {}),
          Field("month", 1, 12, {name: index + 1 for index, name in enumerate(_MONTHS)}),
          Field("day of week", 0, 6, {name: index for index, name in enumerate(_WEEKDAYS)}))


def parse_cron(expression: str) -> tuple[frozenset[int], ...]:
    """The five fields' sets (minutes, hours, days of month, months, weekdays with 0 = Sunday);
    raises ValueError naming the field and the part it cannot read."""
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise ValueError(f"{len(parts)} fields, not 5 (minute hour day month weekday)")
    return tuple(field.parse(part) for field, part in zip(FIELDS, parts))
