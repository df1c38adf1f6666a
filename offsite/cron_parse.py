"""Cron fields read into sets of numbers, with the grammar of celery's crontab (which beat's
schedule entries are built with, beat_schedule): numbers, month and weekday names, `*`, ranges
(which may wrap: `22-2`), `/step` after `*` or a range, and comma lists. Our own reader, so
that loading a config (every client command) does not import celery for a parser; checked
against celery's in tests/test_cron_slots.py.

Stricter than celery where celery reads text loosely: a whole part must match (celery reads
`1-5-7` as `1-5`), names are allowed only in the month and weekday fields, a step is a
positive number."""
from __future__ import annotations

import re
from dataclasses import dataclass

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
