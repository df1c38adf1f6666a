"""Config validation: every problem at once, with its path; exit code 2 from the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import parse_config
from offsite.constants import BackupType
from offsite.errors import ConfigError
from offsite.schedule.specs import CronSpec, EverySpec

VALID: dict[str, Any] = {
    "target": {"url": "file:///srv/backups"},
    "hosts": {"carcosa": {"scripts": {"pg": {"bash": "pg_dumpall > dump.sql"}}}},
}


def with_changes(**changes: Any) -> dict[str, Any]:
    data = {key: value for key, value in VALID.items()}
    data.update(changes)
    return data


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_valid_config_fills_defaults() -> None:
    config = parse_config(VALID)
    assert config.host_schedule("carcosa", BackupType.FULL) == CronSpec("0 0 1 * *")
    assert config.host_schedule("carcosa", BackupType.INCR) == CronSpec("0 4 * * 1")
    assert config.hosts["carcosa"].scripts["pg"].timeout == 3600
    assert config.schedule.timezone == "UTC"
    assert config.max_full_interval("carcosa") == 35 * 86400


def test_host_schedule_overrides_fleet_default() -> None:
    config = parse_config(with_changes(hosts={"h": {
        "scripts": {"s": {"bash": "true"}},
        "schedule": {"incr": {"every": "6h"}, "max_full_interval": "7d"}}}))
    assert config.host_schedule("h", BackupType.INCR) == EverySpec(6 * 3600)
    assert config.max_full_interval("h") == 7 * 86400


@pytest.mark.parametrize(("data", "expected"), [
    (with_changes(bogus=1), "At 'bogus': unknown key"),
    (with_changes(hosts={"h": {"scripts": {"s": {"bash": "true", "timeout": "2x"}}}}),
     "At 'hosts.h.scripts.s.timeout': '2x' is not a duration"),
    (with_changes(hosts={"h": {"scripts": {"s": {}}}}),
     "At 'hosts.h.scripts.s': give exactly one of 'bash' or 'python'"),
    (with_changes(hosts={"h": {"scripts": {"s": {"bash": "a", "python": "b"}}}}),
     "At 'hosts.h.scripts.s': give exactly one"),
    (with_changes(schedule={"full": "61 * * * *"}), "At 'schedule.full': cron '61 * * * *'"),
    (with_changes(schedule={"incr": "* * *"}), "At 'schedule.incr': cron '* * *' must have 5"),
    (with_changes(schedule={"incr": {"every": "soon"}}), "At 'schedule.incr': 'soon' is not"),
    (with_changes(schedule={"timezone": "Mars/Olympus"}), "At 'schedule.timezone': unknown"),
    (with_changes(target={"url": "ftp://x"}), "At 'target.url': target url 'ftp://x' must"),
    (with_changes(target={}), "At 'target.url': required but missing"),
    (with_changes(hosts={}), "At 'hosts':"),
    (with_changes(hosts={"bad/name": {"scripts": {"s": {"bash": "true"}}}}), "At 'hosts."),
    (with_changes(encryption={"mode": "rot13"}), "At 'encryption.mode':"),
    (with_changes(hosts={"h": {"scripts": {"s": {"bash": "true"}}, "extra": 1}}),
     "At 'hosts.h.extra': unknown key"),
])
def test_each_mistake_is_reported_with_its_path(data: Any, expected: str) -> None:
    problems = problems_of(data)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(with_changes(
        bogus=1, schedule={"timezone": "Nowhere/X"},
        hosts={"h": {"scripts": {"s": {"bash": "true", "timeout": "-"}}}}))
    assert len(problems) == 3, problems


def test_broker_url_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSITE_BROKER_URL", "redis://elsewhere:6379/3")
    assert parse_config(VALID).broker_url == "redis://elsewhere:6379/3"


@pytest.mark.parametrize(("text", "expected"), [
    ("hosts: [unclosed", "YAML syntax error at line"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("target: {url: 'file:///x'}\nhosts: {h: {scripts: {s: {bash: x, timout: 5m}}}}\n",
     "At 'hosts.h.scripts.s.timout': unknown key"),
])
def test_cli_rejects_bad_config_with_exit_2(tmp_path: Path, run_offsite: Any, text: str,
                                           expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_offsite("check", config=path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_cli_missing_config_file_exits_2(tmp_path: Path, run_offsite: Any) -> None:
    result = run_offsite("check", config=tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "file not found" in result.stderr
