"""beat_schedule.build_beat_schedule: config in, Celery `beat_schedule` out, pinned as a table."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule as interval
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder

from beat_schedule import START_BACKUP, build_beat_schedule, entry_name
from offsite.config.model import Config, parse_config
from offsite.constants import BackupType
from workers.settings import beat_settings, celery_settings

SCRIPTS = {"data": {"bash": "echo hi > a.txt"}}


def fleet(**schedule: Any) -> Config:
    """Three hosts: one on the fleet default, one overriding incr by cron, one by interval."""
    data: dict[str, Any] = {
        "target": {"url": "file:///srv/backups"},
        "hosts": {
            "carcosa": {"scripts": SCRIPTS},
            "nyarlathotep": {"scripts": SCRIPTS, "schedule": {"incr": "0 5 * * 1"}},
            "yuggoth": {"scripts": SCRIPTS,
                        "schedule": {"full": {"every": "7d"}, "incr": {"every": "6h"}}},
        },
    }
    if schedule:
        data["schedule"] = {"min_interval": "1s", **schedule}  # second-scale intervals allowed
    return parse_config(data)


def cron(minute: str, hour: str, day_of_month: str = "*", month_of_year: str = "*",
         day_of_week: str = "*") -> crontab:
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)


# host, type -> entry name, schedule, queue (fleet defaults: the blog post's crons)
TABLE = [
    ("carcosa", BackupType.FULL, "carcosa-full", cron("0", "0", day_of_month="1"),
     "backup.carcosa"),
    ("carcosa", BackupType.INCR, "carcosa-incr", cron("0", "4", day_of_week="1"),
     "backup.carcosa"),
    ("nyarlathotep", BackupType.FULL, "nyarlathotep-full", cron("0", "0", day_of_month="1"),
     "backup.nyarlathotep"),
    ("nyarlathotep", BackupType.INCR, "nyarlathotep-incr", cron("0", "5", day_of_week="1"),
     "backup.nyarlathotep"),
    ("yuggoth", BackupType.FULL, "yuggoth-full", interval(timedelta(days=7)), "backup.yuggoth"),
    ("yuggoth", BackupType.INCR, "yuggoth-incr", interval(timedelta(hours=6)), "backup.yuggoth"),
]


@pytest.mark.parametrize(("host", "kind", "name", "expected_schedule", "queue"), TABLE,
                         ids=[f"{row[0]}-{row[1].value}" for row in TABLE])
def test_each_host_and_type_has_one_entry_routed_to_the_host_queue(
        host: str, kind: BackupType, name: str, expected_schedule: Any, queue: str) -> None:
    entries = build_beat_schedule(fleet())

    entry = entries[name]
    assert entry_name(host, kind) == name
    assert entry["task"] == START_BACKUP
    assert entry["schedule"] == expected_schedule
    assert type(entry["schedule"]) is type(expected_schedule)
    assert entry["args"] == (host, kind.value)
    assert entry["options"] == {"queue": queue}


def test_the_table_has_exactly_a_full_and_an_incr_per_host() -> None:
    assert sorted(build_beat_schedule(fleet())) == sorted(row[2] for row in TABLE)


def test_entries_carry_no_code_nor_secrets() -> None:
    for entry in build_beat_schedule(fleet()).values():
        assert set(entry) == {"task", "schedule", "args", "options"}
        assert all(isinstance(arg, str) for arg in entry["args"])


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "America/New_York"])
def test_cron_entries_are_read_in_the_configured_zone(zone: str) -> None:
    entries = build_beat_schedule(fleet(timezone=zone))

    for name in ("carcosa-full", "carcosa-incr", "nyarlathotep-incr"):
        assert entries[name]["schedule"].tz == ZoneInfo(zone)


def test_timezone_defaults_to_utc_and_reaches_the_celery_app() -> None:
    assert fleet().schedule.timezone == "UTC"
    settings = celery_settings(fleet(timezone="Europe/London"))
    assert settings["timezone"] == "Europe/London"
    assert settings["enable_utc"] is True


def test_fleet_default_changes_every_host_without_an_override() -> None:
    entries = build_beat_schedule(fleet(full={"every": "30s"}, incr="15 3 * * *"))

    assert entries["carcosa-full"]["schedule"] == interval(timedelta(seconds=30))
    assert entries["nyarlathotep-full"]["schedule"] == interval(timedelta(seconds=30))
    assert entries["carcosa-incr"]["schedule"] == cron("15", "3")
    # the hosts' own schedules still win
    assert entries["nyarlathotep-incr"]["schedule"] == cron("0", "5", day_of_week="1")
    assert entries["yuggoth-full"]["schedule"] == interval(timedelta(days=7))


def test_interval_of_a_few_seconds_stays_an_interval() -> None:
    entries = build_beat_schedule(fleet(full={"every": "3s"}, incr={"every": "2s"}))

    assert entries["carcosa-full"]["schedule"] == interval(timedelta(seconds=3))
    assert entries["carcosa-incr"]["schedule"] == interval(timedelta(seconds=2))
    assert isinstance(entries["carcosa-full"]["schedule"], interval)
    assert not isinstance(entries["carcosa-full"]["schedule"], crontab)


def test_the_celery_settings_carry_the_same_schedule() -> None:
    config = fleet()
    assert celery_settings(config)["beat_schedule"] == build_beat_schedule(config)


@pytest.mark.parametrize("name", [row[2] for row in TABLE])
def test_entries_survive_the_round_trip_through_redbeat(name: str) -> None:
    """RedBeat stores each entry as JSON in Redis: the schedule must come back the same."""
    entry = build_beat_schedule(fleet())[name]

    stored = json.dumps({"schedule": entry["schedule"], "args": entry["args"],
                         "options": entry["options"]}, cls=RedBeatJSONEncoder)
    loaded = json.loads(stored, cls=RedBeatJSONDecoder)

    assert loaded["schedule"] == entry["schedule"]
    assert tuple(loaded["args"]) == entry["args"]
    assert loaded["options"] == entry["options"]


def test_beat_keeps_its_state_in_redis_under_one_short_lock() -> None:
    settings = beat_settings(fleet())

    assert settings["beat_scheduler"] == "workers.beat:SlotScheduler"
    assert settings["redbeat_key_prefix"].startswith("offsite:")
    # a dead beat's lock must expire in minutes, not RedBeat's default 25
    assert 0 < settings["redbeat_lock_timeout"] <= 120
    assert settings["beat_max_loop_interval"] < settings["redbeat_lock_timeout"]
