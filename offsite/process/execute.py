"""The one place offsite starts external commands: argv lists, timeouts, process groups, masking,
output captured into bounded buffers, umask 077, and nothing left running after a command."""
from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from offsite.bounded import STDERR_TAIL_MAX_BYTES, STDOUT_TAIL_MAX_BYTES, TailBuffer, head_bytes
from offsite.constants import STDERR_TAIL_LINES
from offsite.errors import CommandError, CommandTimedOut
from offsite.process.priority import Priority
from offsite.process.reaper import WrapperSpec

log = logging.getLogger(__name__)

_SECRET_ENV = ("PASSPHRASE", "SIGN_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "SECRET", "TOKEN", "PASSWORD", "KEY_ID")
_KILL_GRACE_S = 5.0
_DRAIN_S = 5.0
_EXIT_POLL_S = 0.1     # how often a child's exit is looked for where there are no pidfds
_EXIT = object()       # marks the pidfd among the selector's pipes
_READ_CHUNK = 65536
_CHILD_UMASK = 0o077
_HEADLINE_MAX_BYTES = 300
_STATUS_MAX_BYTES = 1024
# the package root, put on the isolated wrapper's path (-I ignores PYTHONPATH and the cwd,
# -S skips site: the wrapper imports only offsite.process.reaper and the standard library)
_ROOT = str(Path(__file__).resolve().parents[2])
_WRAPPER = (f"import sys; sys.path.insert(0, {_ROOT!r}); "
            "from offsite.process.reaper import main; main()")


def wrapper_argv(argv: Sequence[str], spec: WrapperSpec) -> list[str]:
    """The command line that runs argv under its own reaper (offsite.process.reaper)."""
    return [sys.executable, "-I", "-S", "-c", _WRAPPER, *spec.to_args(), "--", *argv]


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr_tail: str
    elapsed_s: float


@dataclass(frozen=True)
class RunAs:
    """The identity a command runs as (a script's `user:`), when the worker runs as root."""
    uid: int
    gid: int
    groups: list[int]


def is_secret_env(name: str) -> bool:
    return any(marker in name.upper() for marker in _SECRET_ENV)


def describe_env(env: Mapping[str, str], base: Mapping[str, str]) -> str:
    """The variables added to the child's environment, secrets masked, for the log."""
    return " ".join(f"{name}={'***' if is_secret_env(name) else value}"
                    for name, value in sorted(env.items()) if base.get(name) != value)


def run_command(argv: Sequence[str], *, timeout_s: float, host: str | None, step: str,
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                check: bool = True, capture_stdout: bool = True,
                on_tick: Callable[[], None] | None = None, tick_s: float = 1.0,
                run_as: RunAs | None = None,
                stdout_max_bytes: int = STDOUT_TAIL_MAX_BYTES,
                stdin_data: bytes | None = None,
                priority: Priority | None = None) -> CommandResult:
    """Run argv in its own process group, under umask 077, and wait at most timeout_s.

    On timeout the whole group is killed (TERM, then KILL) and CommandTimedOut is raised;
    a non-zero exit raises CommandError when `check` is set. `on_tick` is called every
    `tick_s` while the child runs (the host lease is renewed there). stdout and stderr are
    read from pipes into bounded buffers (the last `stdout_max_bytes`, default 64 KiB, and the
    last 8 KiB), so neither a chatty child nor one huge line costs memory. Whatever the
    command leaves running is ended when it ends, whatever its outcome: each command runs under
    its own reaper (offsite.process.reaper), so concurrent commands cannot end each other's.
    `run_as` runs it as another user (a script's `user:`; the worker must be root).
    `stdin_data` (a passphrase for gpg: at most a pipe buffer) is written to its stdin.
    `priority` lowers its CPU and I/O priority (offsite.process.priority).
    """
    full_env = dict(env) if env is not None else dict(os.environ)
    log.info("running %s (step %s) %s", " ".join(argv), step, describe_env(full_env, os.environ))
    started = time.monotonic()
    child, report = _start(argv, full_env, cwd, capture_stdout, stdin_data is not None, run_as,
                           priority or Priority(), host, step)
    if stdin_data is not None and child.stdin is not None:
        try:
            child.stdin.write(stdin_data)
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child exited without reading: its exit code says why
    output = _Output(child.stdout, child.stderr, stdout_max_bytes)
    try:
        exit_code = _supervise(child, output, timeout_s, on_tick, tick_s)
    finally:
        output.close()
        _log_leftovers(report, child.pid)
    elapsed = time.monotonic() - started
    stderr_tail = _last_lines(output.stderr.text())
    if exit_code is None:
        raise CommandTimedOut(f"timed out after {timeout_s:.0f}s; killed its process group",
                              host=host, step=step, exit_code=None, stderr_tail=stderr_tail)
    if check and exit_code != 0:
        last = stderr_tail.strip().splitlines()[-1:] or ["(no stderr)"]
        raise CommandError(f"exit code {exit_code}: {head_bytes(last[0], _HEADLINE_MAX_BYTES)}",
                           host=host, step=step, exit_code=exit_code, stderr_tail=stderr_tail)
    return CommandResult(list(argv), exit_code, output.stdout.text(), stderr_tail, elapsed)


def _start(argv: Sequence[str], env: dict[str, str], cwd: Path | None, capture_stdout: bool,
           with_stdin: bool, run_as: RunAs | None, priority: Priority, host: str | None,
           step: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start argv under its own reaper, in a session of its own, under umask 077; returns it
    and the pipe its reaper reports on when it ends (_log_leftovers). Raises CommandError
    `cannot start …` when the wrapper or the command cannot be executed."""
    status_r, status_w = os.pipe()
    report_r, report_w = os.pipe()
    spec = WrapperSpec(os.getpid(), status_w, report_w, priority,
                       run_as.uid if run_as else None, run_as.gid if run_as else None,
                       tuple(run_as.groups) if run_as else ())
    try:
        try:
            child = subprocess.Popen(
                wrapper_argv(argv, spec), cwd=cwd, env=env,
                stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True, umask=_CHILD_UMASK,
                pass_fds=(status_w, report_w))
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(report_r)
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CommandError(f"cannot start {argv[0]}: {reason}", host=host, step=step,
                               exit_code=None, stderr_tail="") from None
        finally:
            os.close(status_w)
            os.close(report_w)
        failure = _read_all(status_r)   # EOF once the command is executing
    finally:
        os.close(status_r)
    if failure:
        os.close(report_r)
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
        reason = failure.decode(errors="replace")
        raise CommandError(f"cannot start {argv[0]}: {reason}", host=host, step=step,
                           exit_code=None, stderr_tail="")
    return child, report_r


def _log_leftovers(report: int, pid: int) -> None:
    """Log what the command's reaper ended (read once it has exited: EOF then)."""
    try:
        ended, _, stuck = _read_all(report).decode(errors="replace").partition(" ")
    finally:
        os.close(report)
    if ended.isdigit() and int(ended):
        log.info("ended %s process(es) left behind by command %d", ended, pid)
    if stuck.isdigit() and int(stuck):
        log.warning("%s process(es) left by command %d still alive after 10s", stuck, pid)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, _STATUS_MAX_BYTES):
        data += chunk[:_STATUS_MAX_BYTES - len(data)]
    return data


class _Output:
    """The child's pipes, read without blocking into bounded buffers; and, where the kernel has
    pidfds, the child's exit, so a wait ends the moment it exits rather than at the next poll."""

    def __init__(self, stdout: IO[bytes] | None, stderr: IO[bytes] | None,
                 stdout_max_bytes: int) -> None:
        self.stdout = TailBuffer(stdout_max_bytes)
        self.stderr = TailBuffer(STDERR_TAIL_MAX_BYTES)
        self._streams = [stream for stream in (stdout, stderr) if stream is not None]
        self._selector = selectors.DefaultSelector()
        self._exit_fd: int | None = None
        for stream, buffer in ((stdout, self.stdout), (stderr, self.stderr)):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                self._selector.register(stream.fileno(), selectors.EVENT_READ, buffer)

    @property
    def open(self) -> bool:
        return any(key.data is not _EXIT for key in self._selector.get_map().values())

    def watch_exit(self, child: subprocess.Popen[bytes]) -> bool:
        """Wake pump() when the child exits; False where pidfds are not available."""
        try:
            self._exit_fd = os.pidfd_open(child.pid)
        except (AttributeError, OSError):
            return False
        self._selector.register(self._exit_fd, selectors.EVENT_READ, _EXIT)
        return True

    def unwatch_exit(self) -> None:
        if self._exit_fd is not None:
            self._selector.unregister(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None

    def pump(self, wait_s: float) -> None:
        """Read what the pipes hold, waiting at most wait_s for something to arrive (or for
        the child to exit, when watched)."""
        if not self._selector.get_map():
            time.sleep(max(wait_s, 0.0))
            return
        for key, _ in self._selector.select(max(wait_s, 0.0)):
            if key.data is _EXIT:
                continue
            try:
                chunk = os.read(key.fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                key.data.write(chunk)
            else:
                self._selector.unregister(key.fd)

    def drain(self, deadline_s: float) -> None:
        """Read until every pipe is closed by its writers, or the deadline."""
        end = time.monotonic() + deadline_s
        while self.open and time.monotonic() < end:
            self.pump(end - time.monotonic())

    def close(self) -> None:
        self.unwatch_exit()
        self._selector.close()
        for stream in self._streams:
            stream.close()


def _exited(child: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited; it stays unreaped (a zombie) so its pid, which is also
    its process group id, cannot be reused while we clean up after it."""
    try:
        return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return child.poll() is not None


def _supervise(child: subprocess.Popen[bytes], output: _Output, timeout_s: float,
               on_tick: Callable[[], None] | None, tick_s: float) -> int | None:
    """Wait for the child while reading its output; returns its exit code, None on timeout."""
    deadline = time.monotonic() + timeout_s
    next_tick = time.monotonic() + tick_s
    timed_out = False
    poll_s = tick_s if output.watch_exit(child) else _EXIT_POLL_S
    try:
        while not _exited(child):
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                _stop_group(child, output)
                break
            if now >= next_tick:
                next_tick = now + tick_s
                if on_tick is not None:
                    on_tick()
            output.pump(min(deadline, next_tick, now + poll_s) - now)
    except BaseException:
        _stop_group(child, output)
        _clean_up(child, output)
        raise
    _clean_up(child, output)
    return None if timed_out else child.returncode


def _clean_up(child: subprocess.Popen[bytes], output: _Output) -> None:
    """Read the rest of the output (its reaper has ended what the command left), reap it."""
    output.unwatch_exit()
    output.drain(_DRAIN_S)
    child.wait()


def _stop_group(child: subprocess.Popen[bytes], output: _Output) -> None:
    """TERM the child's process group, KILL it after a grace; the child stays unreaped."""
    _signal_group(child.pid, signal.SIGTERM)
    end = time.monotonic() + _KILL_GRACE_S
    while not _exited(child) and time.monotonic() < end:
        output.pump(_EXIT_POLL_S)
    _signal_group(child.pid, signal.SIGKILL)
    while not _exited(child):
        output.pump(_EXIT_POLL_S)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _last_lines(text: str) -> str:
    return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])
