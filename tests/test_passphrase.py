"""The passphrase is checked where it is needed before anything is dumped: by `offsite check`, in
the worker's start-up log, and at the start of every run (the scripts must not run without it)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offsite.constants import RunState
from tests.conftest import RunOffsite
from tests.helpers import ManagedProcess, describe, wait_until
from tests.test_hostile_cli import write_config

MARKER_SCRIPT = "touch {marker}; echo dump > pg.sql"


def config_with_passphrase(tmp_path: Path, passphrase_file: Path | None,
                           broker_url: str = "redis://127.0.0.1:1/0") -> tuple[Path, Path]:
    """A config whose one script leaves a marker file when it runs; returns (config, marker)."""
    marker = tmp_path / "script-ran"
    hosts = {"carcosa": {"scripts": {"pg": {"bash": MARKER_SCRIPT.format(marker=marker)}}}}
    encryption = {"passphrase_file": str(passphrase_file)} if passphrase_file else {}
    return write_config(tmp_path, broker_url, hosts=hosts, encryption=encryption), marker


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-passphrase"


def empty(tmp_path: Path) -> Path:
    return private_file(tmp_path / "empty-passphrase", " \n")


def folder(tmp_path: Path) -> Path:
    (tmp_path / "a-folder").mkdir()
    return tmp_path / "a-folder"


def fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "a-fifo", 0o600)
    return tmp_path / "a-fifo"


UNUSABLE: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", missing, "cannot read passphrase file {path}: No such file or directory"),
    ("empty", empty, "passphrase file {path} is empty"),
    ("folder", folder, "cannot read passphrase file {path}: Is a directory"),
    ("fifo", fifo, "passphrase file {path} is not a regular file"),
]


@pytest.mark.parametrize(("make", "expected"), [(make, expected) for _, make, expected in UNUSABLE],
                         ids=[name for name, _, _ in UNUSABLE])
def test_check_reports_an_unusable_passphrase_file(make: Callable[[Path], Path], expected: str,
                                                   tmp_path: Path,
                                                   offsite_main: RunOffsite) -> None:
    path = make(tmp_path)
    config, _ = config_with_passphrase(tmp_path, path)

    result = offsite_main("check", config=config)

    assert result.returncode == 1, describe(result)
    assert f"problem: passphrase: {expected.format(path=path)}" in result.stderr
    assert "config OK" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_reports_no_passphrase_at_all(tmp_path: Path, run_offsite: RunOffsite) -> None:
    config, _ = config_with_passphrase(tmp_path, None)

    result = run_offsite("check", config=config, env_extra={"PASSPHRASE": None})

    assert result.returncode == 1, describe(result)
    assert ("problem: passphrase: no passphrase: set PASSPHRASE or "
            "encryption.passphrase_file") in result.stderr


def test_check_accepts_the_passphrase_from_the_environment(tmp_path: Path,
                                                           run_offsite: RunOffsite) -> None:
    config, _ = config_with_passphrase(tmp_path, None)

    result = run_offsite("check", config=config, env_extra={"PASSPHRASE": "from-the-env"})

    assert result.returncode == 0, describe(result)
    assert "passphrase" not in result.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_check_warns_about_a_passphrase_file_others_can_read(mode: int, tmp_path: Path,
                                                             offsite_main: RunOffsite) -> None:
    path = private_file(tmp_path / "shared-passphrase", "secret words\n", mode)
    config, _ = config_with_passphrase(tmp_path, path)

    result = offsite_main("check", config=config)

    assert result.returncode == 0, describe(result)
    assert (f"warning: passphrase file {path} is readable or writable by group or others "
            f"(mode {mode:04o}): run `chmod 600 {path}`") in result.stderr
    assert "secret words" not in result.stdout + result.stderr


def test_check_is_silent_about_a_private_passphrase_file(tmp_path: Path,
                                                         run_offsite: RunOffsite) -> None:
    path = private_file(tmp_path / "private-passphrase", "secret words\n")
    config, _ = config_with_passphrase(tmp_path, path)

    result = run_offsite("check", config=config)

    assert result.returncode == 0, describe(result)
    assert result.stderr == ""


@pytest.mark.parametrize(("make", "expected"), [(make, expected) for _, make, expected in UNUSABLE],
                         ids=[name for name, _, _ in UNUSABLE])
def test_local_backup_fails_at_start_before_any_script_runs(
        make: Callable[[Path], Path], expected: str, tmp_path: Path,
        run_offsite: RunOffsite) -> None:
    path = make(tmp_path)
    config, marker = config_with_passphrase(tmp_path, path)

    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                         timeout=60)

    assert result.returncode == 1, describe(result)
    assert ": failed at start: host carcosa step start: " + expected.format(path=path) in \
        result.stdout, describe(result)
    assert not marker.exists(), "the dump script ran without a usable passphrase"
    assert not (tmp_path / "offsite" / "staging" / "carcosa").exists()
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_queued_backup_fails_at_start_with_class_encryption_failed(
        tmp_path: Path, redis_url: str, run_offsite: RunOffsite,
        start_worker: Callable[..., ManagedProcess]) -> None:
    path = missing(tmp_path)
    config, marker = config_with_passphrase(tmp_path, path, broker_url=redis_url)
    start_worker(config, "carcosa")

    result = run_offsite("backup", "carcosa", "--type", "full", "--wait", "--timeout", "60s",
                         config=config, timeout=90)
    status = run_offsite("status", "carcosa", "--json", config=config)

    assert result.returncode == 1, describe(result)
    records: list[dict[str, Any]] = json.loads(status.stdout)
    assert [record["state"] for record in records] == [RunState.FAILED.value]
    error = records[0]["error"]
    assert (error["step"], error["failure_class"]) == ("start", "encryption_failed")
    assert f"cannot read passphrase file {path}" in error["message"]
    assert not marker.exists(), "the dump script ran without a usable passphrase"


@pytest.mark.slow
def test_worker_start_up_log_warns_about_the_passphrase(
        tmp_path: Path, redis_url: str,
        start_worker: Callable[..., ManagedProcess]) -> None:
    path = private_file(tmp_path / "shared-passphrase", "secret words\n", 0o644)
    config, _ = config_with_passphrase(tmp_path, path, broker_url=redis_url)

    worker = start_worker(config, "carcosa")

    expected = (f"host carcosa: passphrase file {path} is readable or writable by group or "
                f"others (mode 0644): run `chmod 600 {path}`")
    wait_until(lambda: expected in worker.log_text(), timeout=30, what="the passphrase warning")
    assert "WARNING" in next(line for line in worker.log_text().splitlines() if expected in line)
    assert "secret words" not in worker.log_text()


@pytest.mark.slow
def test_worker_start_up_log_reports_a_missing_passphrase(
        tmp_path: Path, redis_url: str,
        start_worker: Callable[..., ManagedProcess]) -> None:
    path = missing(tmp_path)
    config, _ = config_with_passphrase(tmp_path, path, broker_url=redis_url)

    worker = start_worker(config, "carcosa")

    expected = (f"host carcosa: cannot read passphrase file {path}: No such file or directory: "
                "every run will fail at its start step")
    wait_until(lambda: expected in worker.log_text(), timeout=30, what="the passphrase error")
