"""The one runner of external commands: exit codes, stderr tails, timeouts that kill the group."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from offsite.errors import CommandError, CommandTimedOut
from offsite.process.execute import describe_env, run_command
from tests.helpers import wait_until


def test_failure_carries_exit_code_and_stderr_tail() -> None:
    script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 7"
    with pytest.raises(CommandError) as caught:
        run_command(["bash", "-c", script], timeout_s=10, host="h", step="s")
    error = caught.value
    assert error.returncode == 7
    assert error.stderr_tail.splitlines()[-1] == "line30"
    assert len(error.stderr_tail.splitlines()) == 20
    assert error.host == "h" and error.step == "s"
    assert "exit code 7: line30" in str(error)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimedOut):
        run_command(["bash", "-c", script], timeout_s=1, host="h", step="s")
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    wait_until(lambda: not _alive(child), 10, "the grandchild to be gone after the timeout")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_success_returns_stdout_and_ticks_while_waiting() -> None:
    ticks: list[float] = []
    result = run_command(["bash", "-c", "sleep 0.5; echo done"], timeout_s=10, host=None,
                         step="s", on_tick=lambda: ticks.append(time.monotonic()), tick_s=0.1)
    assert result.exit_code == 0
    assert result.stdout.strip() == "done"
    assert len(ticks) >= 2


def test_missing_program_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="cannot start"):
        run_command(["/nonexistent/program"], timeout_s=5, host="h", step="s")


def test_logged_environment_masks_secrets() -> None:
    text = describe_env({"PASSPHRASE": "hunter2", "AWS_SECRET_ACCESS_KEY": "abc", "X": "1"}, {})
    assert "hunter2" not in text and "abc" not in text
    assert "X=1" in text
