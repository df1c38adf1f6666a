"""The `offsite` command under bad arguments and a hostile environment: one line, the right exit
code, never a Python traceback. All through the real executable."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from offsite.constants import ALL_RUNS_KEY, RUN_KEY
from tests.conftest import RunOffsite
from tests.helpers import OffsiteEnv, describe, offsite_argv


def write_config(tmp_path: Path, broker_url: str = "redis://127.0.0.1:1/0",
                 hosts: dict[str, Any] | None = None, **changes: Any) -> Path:
    """A file-target config with a private passphrase file; `changes` replace top-level keys."""
    passphrase = tmp_path / "passphrase"
    if not passphrase.exists():
        fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("correct horse battery staple\n")
    data: dict[str, Any] = {
        "broker_url": broker_url,
        "staging_root": str(tmp_path / "offsite" / "staging"),
        "cache_root": str(tmp_path / "offsite" / "cache"),
        "target": {"url": f"file://{tmp_path}/target"},
        "encryption": {"passphrase_file": str(passphrase)},
        "hosts": hosts or {"carcosa": {"scripts": {"pg": {"bash": "echo dump > pg.sql"}}}},
    }
    data.update(changes)
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_one_clean_line(result: subprocess.CompletedProcess[str], code: int,
                          expected: str) -> None:
    assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    assert expected in result.stderr, describe(result)


def test_restore_into_a_file_exits_2_naming_it(tmp_path: Path, run_offsite: RunOffsite) -> None:
    config = write_config(tmp_path)
    dest = tmp_path / "restored"
    dest.write_text("an existing file\n")

    result = run_offsite("restore", "carcosa", str(dest), config=config)

    assert_one_clean_line(result, 2, f"restore destination {dest} exists and is not a folder")
    assert dest.read_text() == "an existing file\n"


@pytest.mark.parametrize("argv", [("check",), ("check", "--connect"), ("status",),
                                  ("backup", "carcosa", "--type", "full")])
def test_garbage_broker_url_in_the_environment_exits_2(argv: tuple[str, ...], tmp_path: Path,
                                                       run_offsite: RunOffsite) -> None:
    result = run_offsite(*argv, config=write_config(tmp_path),
                         env_extra={"OFFSITE_BROKER_URL": "garbage"})

    assert_one_clean_line(result, 2, "At 'broker_url' (from $OFFSITE_BROKER_URL): broker url "
                                     "'garbage' must be redis://")


@pytest.mark.slow
def test_check_piped_into_head_exits_quietly(tmp_path: Path, offsite_env: OffsiteEnv) -> None:
    """Far more output than a pipe holds, and a reader that leaves after one line."""
    hosts = {f"host{i}": {"scripts": {"s": {"bash": "true"}}} for i in range(1500)}
    config = write_config(tmp_path, hosts=hosts)
    with subprocess.Popen(offsite_argv(config, "check"), env=dict(offsite_env), cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        code = proc.wait(timeout=120)

    assert first.startswith("config OK: 1500 host(s)")
    assert code == 141, stderr
    assert stderr == ""


def test_bogus_loglevel_exits_2_naming_the_levels(tmp_path: Path,
                                                  run_offsite: RunOffsite) -> None:
    result = run_offsite("check", "--loglevel", "BOGUS", config=write_config(tmp_path))

    assert_one_clean_line(result, 2, "argument --loglevel: 'BOGUS' is not a log level: use one of "
                                     "DEBUG, INFO, WARNING, ERROR, CRITICAL")


def test_loglevel_is_case_insensitive(tmp_path: Path, run_offsite: RunOffsite) -> None:
    result = run_offsite("check", "--loglevel", "warning", config=write_config(tmp_path))
    assert result.returncode == 0, describe(result)


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten", "1e3", ""])
def test_status_limit_out_of_range_exits_2(limit: str, tmp_path: Path,
                                           run_offsite: RunOffsite) -> None:
    result = run_offsite("status", "--limit", limit, config=write_config(tmp_path))

    assert_one_clean_line(result, 2, "argument --limit:")
    assert "from 1 to 1000" in result.stderr


@pytest.mark.parametrize("argv", [(), ("bogus-command",), ("backup", "carcosa"),
                                  ("backup", "carcosa", "--type", "weekly"),
                                  ("status", "--limit")])
def test_usage_errors_exit_2(argv: tuple[str, ...], tmp_path: Path,
                             run_offsite: RunOffsite) -> None:
    result = run_offsite(*argv, config=write_config(tmp_path))

    assert_one_clean_line(result, 2, "usage: offsite")


def test_backup_wait_timeout_takes_the_config_duration_syntax(
        tmp_path: Path, redis_url: str, run_offsite: RunOffsite) -> None:
    """No worker serves the host: the wait gives up after the duration given as `2s`."""
    config = write_config(tmp_path, broker_url=redis_url)

    result = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "2s",
                         config=config)

    assert_one_clean_line(result, 1, "still queued after 2s")


@pytest.mark.parametrize("timeout", ["1.5h", "-5m", "0", "forever", "99999999999d"])
def test_backup_wait_timeout_refuses_what_the_config_refuses(
        timeout: str, tmp_path: Path, run_offsite: RunOffsite) -> None:
    result = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", timeout,
                         config=write_config(tmp_path))

    assert_one_clean_line(result, 2, "argument --timeout:")


def test_unreachable_broker_is_one_line(tmp_path: Path, run_offsite: RunOffsite) -> None:
    result = run_offsite("status", config=write_config(tmp_path))

    assert_one_clean_line(result, 1, "cannot reach the broker at redis://127.0.0.1:1/0")


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_and_its_traceback_shows_only_at_debug(
        tmp_path: Path, redis_url: str, run_offsite: RunOffsite) -> None:
    """A run record that is not JSON (written by hand, or by a broken tool) is a case offsite
    does not foresee: the last-resort handler turns it into one line."""
    client = redis.Redis.from_url(redis_url)
    client.zadd(ALL_RUNS_KEY, {"carcosa-full-20261101T000000Z": 1})
    client.set(RUN_KEY + "carcosa-full-20261101T000000Z", b"\xff not json")
    client.close()
    config = write_config(tmp_path, broker_url=redis_url)

    plain = run_offsite("status", config=config)
    debug = run_offsite("status", "--loglevel", "DEBUG", config=config)

    assert_one_clean_line(plain, 1, "offsite: internal error: ")
    assert "run with --loglevel DEBUG for the traceback" in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
