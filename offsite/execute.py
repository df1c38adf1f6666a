"""The one place offsite starts external commands: argv lists, timeouts, process groups, masking."""
from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from offsite.constants import STDERR_TAIL_LINES
from offsite.errors import CommandError, CommandTimedOut

log = logging.getLogger(__name__)

_SECRET_ENV = ("PASSPHRASE", "SIGN_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "SECRET", "TOKEN", "PASSWORD", "KEY_ID")
_KILL_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: be killed when the worker dies, so no orphan keeps writing or uploading."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr_tail: str
    elapsed_s: float


def is_secret_env(name: str) -> bool:
    return any(marker in name.upper() for marker in _SECRET_ENV)


def describe_env(env: Mapping[str, str], base: Mapping[str, str]) -> str:
    """The variables added to the child's environment, secrets masked, for the log."""
    return " ".join(f"{name}={'***' if is_secret_env(name) else value}"
                    for name, value in sorted(env.items()) if base.get(name) != value)


def run_command(argv: Sequence[str], *, timeout_s: float, host: str | None, step: str,
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                check: bool = True, capture_stdout: bool = True,
                on_tick: Callable[[], None] | None = None, tick_s: float = 1.0) -> CommandResult:
    """Run argv in its own process group and wait at most timeout_s.

    On timeout the whole group is killed (TERM, then KILL) and CommandTimedOut is raised;
    a non-zero exit raises CommandError when `check` is set. `on_tick` is called every
    `tick_s` while the child runs (the host lease is renewed there). stderr goes to a
    temporary file so a chatty child can never block on a full pipe.
    """
    full_env = dict(env) if env is not None else dict(os.environ)
    log.info("running %s (step %s) %s", " ".join(argv), step, describe_env(full_env, os.environ))
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr_file, tempfile.TemporaryFile() as stdout_file:
        try:
            child = subprocess.Popen(
                list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                stdout=stdout_file if capture_stdout else subprocess.DEVNULL,
                stderr=stderr_file, start_new_session=True,
                preexec_fn=_die_with_parent)
        except OSError as exc:
            raise CommandError(f"cannot start {argv[0]}: {exc.strerror}", host=host, step=step,
                               exit_code=None, stderr_tail="") from None
        exit_code = _wait(child, timeout_s, on_tick, tick_s)
        elapsed = time.monotonic() - started
        stderr_tail = _tail(stderr_file)
        stdout_file.seek(0)
        stdout = stdout_file.read().decode(errors="replace")
    if exit_code is None:
        raise CommandTimedOut(f"timed out after {timeout_s:.0f}s; killed its process group",
                              host=host, step=step, exit_code=None, stderr_tail=stderr_tail)
    if check and exit_code != 0:
        last = stderr_tail.strip().splitlines()[-1:] or ["(no stderr)"]
        raise CommandError(f"exit code {exit_code}: {last[0]}", host=host, step=step,
                           exit_code=exit_code, stderr_tail=stderr_tail)
    return CommandResult(list(argv), exit_code, stdout, stderr_tail, elapsed)


def _wait(child: subprocess.Popen[bytes], timeout_s: float,
          on_tick: Callable[[], None] | None, tick_s: float) -> int | None:
    """The child's exit code, or None after killing it at the deadline; on_tick every tick_s.
    Woken by the child's exit through a pidfd (Popen.wait with a timeout polls with sleeps of
    up to 50 ms)."""
    deadline = time.monotonic() + timeout_s
    exited = _exit_notifier(child)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(child)
                return None
            try:
                if exited is None:
                    return child.wait(timeout=min(tick_s, remaining))
                if select.select([exited], [], [], min(tick_s, remaining))[0]:
                    return child.wait()
            except subprocess.TimeoutExpired:
                pass
            except BaseException:
                _kill_group(child)
                raise
            if on_tick is not None:
                on_tick()
    finally:
        if exited is not None:
            os.close(exited)


def _exit_notifier(child: subprocess.Popen[bytes]) -> int | None:
    """A pidfd readable when the child exits (Linux 5.3+); None where there is none."""
    try:
        return os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        return None


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass
        try:
            child.wait(timeout=grace)
            if sig == signal.SIGTERM:
                try:
                    os.killpg(child.pid, signal.SIGKILL)  # leftovers of the group
                except ProcessLookupError:
                    pass
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip("\n"))
    return "\n".join(lines)
