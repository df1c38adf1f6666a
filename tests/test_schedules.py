"""offsite.schedule.specs: next slots, lateness. Pure."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from offsite.schedule.specs import (CronSpec, EverySpec, describe_lateness, due_after, next_run,
                               parse_schedule_spec, slots_between)

UTC = timezone.utc
DAY = 86400


def at(text: str) -> datetime:
    """An aware UTC moment from `2026-12-01T04:00:00`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------ next_run


@pytest.mark.parametrize(("cron", "zone", "after", "expected_utc"), [
    # the blog post's defaults, in UTC
    ("0 0 1 * *", "UTC", "2026-11-15T12:00:00", "2026-12-01T00:00:00"),
    ("0 4 * * 1", "UTC", "2026-12-01T00:00:00", "2026-12-07T04:00:00"),  # Tue -> next Mon
    # strictly after: a slot exactly at `after` is not the next one
    ("0 0 1 * *", "UTC", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("0 4 * * 1", "UTC", "2026-12-07T04:00:00", "2026-12-14T04:00:00"),
    # seconds past the slot still count as after it
    ("0 4 * * 1", "UTC", "2026-12-07T04:00:00.5", "2026-12-14T04:00:00"),
    ("*/15 * * * *", "UTC", "2026-12-07T04:14:59", "2026-12-07T04:15:00"),
    # year end
    ("0 0 1 * *", "UTC", "2026-12-31T23:59:00", "2027-01-01T00:00:00"),
    ("0 0 1 1 *", "UTC", "2026-01-01T00:00:01", "2027-01-01T00:00:00"),
    # read in the configured zone: midnight in London is 23:00 UTC in summer, 00:00 in winter
    ("0 0 1 * *", "Europe/London", "2026-06-15T12:00:00", "2026-06-30T23:00:00"),
    ("0 0 1 * *", "Europe/London", "2026-11-15T12:00:00", "2026-12-01T00:00:00"),
    ("0 4 * * 1", "America/New_York", "2026-12-01T00:00:00", "2026-12-07T09:00:00"),
    # across the spring change in London (29 March 2026): 04:00 BST is 03:00 UTC
    ("0 4 * * *", "Europe/London", "2026-03-28T12:00:00", "2026-03-29T03:00:00"),
])
def test_next_cron_slot_is_the_first_strictly_after(cron: str, zone: str, after: str,
                                                    expected_utc: str) -> None:
    slot = next_run(CronSpec(cron), zone, at(after))

    assert slot == at(expected_utc)
    assert str(slot.tzinfo) == zone  # shown to people in their zone


def test_next_cron_slot_of_a_rare_cron_is_found() -> None:
    assert next_run(CronSpec("0 0 29 2 *"), "UTC", at("2026-03-01T00:00:00")) == \
        at("2028-02-29T00:00:00")


def test_next_interval_slot_is_the_next_on_the_anchor_grid() -> None:
    after = at("2026-12-01T10:00:00.250")
    assert next_run(EverySpec(6 * 3600), "UTC", after) == at("2026-12-01T12:00:00")
    assert next_run(EverySpec(3), "Europe/London", after) == at("2026-12-01T10:00:03")
    anchored = EverySpec(6 * 3600, anchor=at("2026-01-01T01:30:00").timestamp())
    assert next_run(anchored, "UTC", after) == at("2026-12-01T13:30:00")
    assert next_run(anchored, "UTC", at("2026-12-01T13:30:00")) == at("2026-12-01T19:30:00")


def test_due_after_is_the_slot_a_late_send_stands_for() -> None:
    """Beat last ran the entry at 04:00 on Monday 7th and comes back on Thursday 17th: the send
    stands for the first slot it missed, Monday 14th."""
    assert due_after(CronSpec("0 4 * * 1"), "UTC", at("2026-12-07T04:00:00.3")) == \
        at("2026-12-14T04:00:00")
    assert due_after(EverySpec(60), "UTC", at("2026-12-07T04:00:00")) == \
        at("2026-12-07T04:01:00")


# ------------------------------------------------------------------ slots_between


@pytest.mark.parametrize(("spec", "first", "until", "count"), [
    (EverySpec(3), "2026-12-01T00:00:00", "2026-12-01T00:00:00", 1),
    (EverySpec(3), "2026-12-01T00:00:00", "2026-12-01T00:00:02", 1),
    (EverySpec(3), "2026-12-01T00:00:00", "2026-12-01T00:00:03", 2),
    (EverySpec(3), "2026-12-01T00:00:00", "2026-12-01T00:00:10", 4),
    (CronSpec("0 4 * * 1"), "2026-12-07T04:00:00", "2026-12-28T05:00:00", 4),
    (CronSpec("0 0 1 * *"), "2026-01-01T00:00:00", "2026-12-31T00:00:00", 12),
    (EverySpec(3), "2026-12-01T00:00:05", "2026-12-01T00:00:00", 0),
])
def test_slots_between_counts_the_slots_in_the_closed_range(spec: CronSpec | EverySpec,
                                                           first: str, until: str,
                                                           count: int) -> None:
    assert slots_between(spec, "UTC", at(first), at(until)) == count


def test_slots_between_stops_at_its_limit() -> None:
    assert slots_between(EverySpec(1), "UTC", at("2026-12-01T00:00:00"),
                         at("2026-12-02T00:00:00"), limit=50) == 50


# ------------------------------------------------------------------ describe_lateness


def test_a_send_on_time_has_no_note() -> None:
    slot = at("2026-12-07T04:00:00")
    late_s, note = describe_lateness(CronSpec("0 4 * * 1"), "UTC", slot,
                                     slot + timedelta(seconds=0.4))
    assert late_s == pytest.approx(0.4)
    assert note is None


def test_a_send_before_its_slot_is_not_late() -> None:
    slot = at("2026-12-07T04:00:00")
    assert describe_lateness(EverySpec(3), "UTC", slot, slot - timedelta(seconds=1)) == (0.0, None)


@pytest.mark.parametrize(("spec", "late_s", "is_late"), [
    (CronSpec("0 4 * * 1"), 59, False),      # a minute of slack for a weekly schedule
    (CronSpec("0 4 * * 1"), 61, True),
    (EverySpec(3), 1.4, False),              # half the period for a short interval
    (EverySpec(3), 1.6, True),
    (EverySpec(6 * 3600), 61, True),
])
def test_lateness_threshold_is_a_minute_or_half_the_period(spec: CronSpec | EverySpec,
                                                           late_s: float,
                                                           is_late: bool) -> None:
    slot = at("2026-12-07T04:00:00")
    _, note = describe_lateness(spec, "UTC", slot, slot + timedelta(seconds=late_s))
    assert (note is not None) == is_late


def test_a_late_send_says_by_how_much_and_which_slot() -> None:
    slot = at("2026-12-07T04:00:00")
    late_s, note = describe_lateness(CronSpec("0 4 * * 1"), "UTC", slot,
                                     slot + timedelta(hours=2, minutes=30))
    assert late_s == 9000
    assert note == "ran late by 2h30m (slot 2026-12-07T04:00:00Z)"


def test_a_catch_up_says_how_many_missed_slots_it_collapsed() -> None:
    slot = at("2026-12-07T04:00:00")
    late_s, note = describe_lateness(CronSpec("0 4 * * 1"), "UTC", slot,
                                     at("2026-12-24T12:00:00"))
    assert late_s == pytest.approx(17 * DAY + 8 * 3600)
    assert note is not None
    assert note.startswith("ran late by 17d8h (slot 2026-12-07T04:00:00Z)")
    assert "3 missed slots collapsed into this run" in note


def test_lateness_of_a_slot_in_another_zone_is_written_in_utc() -> None:
    slot = next_run(CronSpec("0 0 1 * *"), "Europe/London", at("2026-06-15T00:00:00"))
    _, note = describe_lateness(CronSpec("0 0 1 * *"), "Europe/London", slot,
                                slot + timedelta(hours=1))
    assert note is not None
    assert "(slot 2026-06-30T23:00:00Z)" in note


# ------------------------------------------------------------------ parse_schedule_spec


@pytest.mark.parametrize(("value", "expected"), [
    ("0 4 * * 1", CronSpec("0 4 * * 1")),
    ("  0  4 * *   1 ", CronSpec("0 4 * * 1")),
    ({"every": "6h"}, EverySpec(6 * 3600)),
    ({"every": "3s"}, EverySpec(3)),
    ({"every": 90}, EverySpec(90)),
])
def test_schedule_specs_parse(value: object, expected: CronSpec | EverySpec) -> None:
    assert parse_schedule_spec(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("0 4 * *", "must have 5 fields"),
    ("0 25 * * *", "is invalid"),
    ({"every": "6h", "at": "4am"}, "unexpected keys"),
    ({"every": "0s"}, "positive"),
    (42, "expected a cron string"),
])
def test_bad_schedule_specs_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule_spec(value)


def test_describe_says_what_the_schedule_is() -> None:
    assert CronSpec("0 4 * * 1").describe() == "0 4 * * 1"
    assert EverySpec(6 * 3600).describe() == "every 6h"
    assert EverySpec(3).describe() == "every 3s"
