"""Slot arithmetic checked against the definition: a brute-force scan of every minute of a year.

A cron fires at each instant whose wall clock in the zone matches its fields. The scan reads
the wall clock of every UTC minute; offsite.schedule.cron must find exactly those instants, forwards
(next_fire) and backwards (previous_fire), across DST changes and a leap day.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from celery.schedules import crontab

from offsite.schedule.cron import cron_fields, next_fire, previous_fire
from offsite.schedule.specs import CronSpec, EverySpec, latest_slot, next_run

UTC = timezone.utc
START = datetime(2027, 12, 31, 0, 0, tzinfo=UTC)   # through 2028: a leap year
MINUTES = 366 * 24 * 60 + 2 * 24 * 60

EXPRESSIONS = ["30 1 * * *",       # inside London's spring gap and autumn repeat
               "0 2 * * *",        # inside New York's spring gap and autumn repeat
               "0 0 29 2 *",       # the leap day only
               "*/20 * * * 0",     # many slots on Sundays (the DST change days)
               "15 4 1 * *", "0 4 * * 1", "59 23 * * *"]
ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe"]

_walls: dict[str, list[tuple[datetime, datetime]]] = {}


def wall_clock(zone: str) -> list[tuple[datetime, datetime]]:
    """(UTC minute, the zone's wall clock then) for every minute of the scanned span."""
    if zone not in _walls:
        tz = ZoneInfo(zone)
        minutes = [START + timedelta(minutes=i) for i in range(MINUTES)]
        _walls[zone] = [(moment, moment.astimezone(tz)) for moment in minutes]
    return _walls[zone]


def brute_force(expression: str, zone: str) -> list[datetime]:
    fields = cron_fields(expression)
    return [moment for moment, wall in wall_clock(zone)
            if wall.minute in fields.minutes and wall.hour in fields.hours
            and fields.day_matches(wall.date())]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
@pytest.mark.slow
def test_cron_fires_exactly_at_the_scanned_instants(expression: str, zone: str) -> None:
    expected = brute_force(expression, zone)
    assert expected, "every expression fires at least once in the span"
    end = START + timedelta(minutes=MINUTES - 1)
    found, moment = [], START - timedelta(seconds=1)
    while (moment := next_fire(expression, zone, moment)) <= end:
        found.append(moment)
    assert found == expected
    # backwards: from every fire instant and from random moments between them
    rng = random.Random(f"{expression}|{zone}")
    probes = expected[1:] + [START + timedelta(seconds=rng.randrange(MINUTES * 60))
                             for _ in range(300)]
    for probe in probes:
        truth = max((fire for fire in expected if fire <= probe), default=None)
        if truth is not None:
            assert previous_fire(expression, zone, probe) == truth, probe


def test_london_spring_gap_skips_and_autumn_repeat_fires_twice() -> None:
    fires = brute_force("30 1 * * *", "Europe/London")
    march = [f for f in fires if f.date() == datetime(2028, 3, 26).date()]
    october = [f for f in fires if f.date() == datetime(2028, 10, 29).date()]
    assert march == []                       # 01:30 does not exist on 26 March 2028
    assert [f.hour for f in october] == [0, 1]  # 01:30 BST then 01:30 GMT
    assert next_fire("30 1 * * *", "Europe/London",
                     datetime(2028, 3, 25, 2, tzinfo=UTC)) == datetime(2028, 3, 27, 0, 30,
                                                                       tzinfo=UTC)


def test_leap_day_cron_finds_the_next_leap_year() -> None:
    assert next_fire("0 0 29 2 *", "UTC", datetime(2028, 3, 1, tzinfo=UTC)) == \
        datetime(2032, 2, 29, tzinfo=UTC)
    assert previous_fire("0 0 29 2 *", "UTC", datetime(2031, 1, 1, tzinfo=UTC)) == \
        datetime(2028, 2, 29, tzinfo=UTC)


def test_a_year_of_slots_is_computed_without_stepping_minutes() -> None:
    """Per-tick cost: a yearly cron's previous slot from a cold cache is found quickly."""
    previous_fire.cache_clear()
    next_fire.cache_clear()
    began = datetime.now()
    for day in range(200):
        at = START + timedelta(days=day, minutes=7)
        latest_slot(CronSpec("0 0 1 1 *"), "Europe/London", at)
        latest_slot(CronSpec("*/5 * * * *"), "America/New_York", at)
    assert (datetime.now() - began).total_seconds() < 5


@pytest.mark.parametrize("seconds", [60, 7 * 60, 3600 + 17])
def test_interval_slots_sit_on_the_anchor_grid(seconds: int) -> None:
    anchor = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    spec = EverySpec(seconds, anchor=anchor.timestamp())
    rng = random.Random(seconds)
    for _ in range(500):
        at = anchor + timedelta(seconds=rng.uniform(0, 90 * 86400))
        slot = latest_slot(spec, "UTC", at)
        assert slot is not None
        index = (slot - anchor).total_seconds() / seconds
        assert index == int(index) and slot <= at < slot + timedelta(seconds=seconds)
        assert next_run(spec, "Europe/London", slot) == slot + timedelta(seconds=seconds)
        assert next_run(spec, "UTC", at) == slot + timedelta(seconds=seconds)


# Expressions as celery's crontab reads them (the parser beat followed before offsite read
# cron fields itself): names, wrapping ranges, steps on ranges and on *.
AS_CELERY_READS = ["* * * * *", "*/15 * * * *", "0 4 * * 1", "0 22-2 * * *",
                   "5-50/5 1,2,3 1-31/2 jan-mar sun-sat", "0 0 29 feb *", "0 4 * * mon-fri",
                   "0 4 * * friday", "0 */4 * 1,6,12 0", "30 2 * dec-feb sat-mon",
                   "0 0 * * 6-1/2", "59 23 31 12 *", "0 0 1 January *", "7,8,9 0-23/7 * * *"]


@pytest.mark.parametrize("expression", AS_CELERY_READS)
def test_cron_fields_are_the_sets_celery_reads(expression: str) -> None:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    theirs = crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                     month_of_year=month_of_year, day_of_week=day_of_week)
    ours = cron_fields(expression)
    assert set(ours.minutes) == theirs.minute
    assert set(ours.hours) == theirs.hour
    assert ours.days == theirs.day_of_month
    assert ours.months == theirs.month_of_year
    assert ours.weekdays == theirs.day_of_week
