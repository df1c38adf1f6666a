"""offsite processes for the tests: commands run to completion in their own process group,
and long-running workers, control and beat that are always stopped with their whole group."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.harness import OFFSITE, HarnessError, _exited_unreaped, tail


# --------------------------------------------------------------------------- processes


def offsite_argv(config: Path, *args: str) -> list[str]:
    return [str(OFFSITE), "--config", str(config), *args]


def merged_env(env: Mapping[str, str],
               extra: Mapping[str, str | None] | None) -> dict[str, str]:
    """env plus extra; an extra value of None removes that variable."""
    merged = dict(env)
    for key, value in (extra or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def run_command(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs argv in its own process group, text output captured; on timeout kills the whole
    group (duplicity, gpg, scripts included) and raises HarnessError with the output tails."""
    with subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise HarnessError(f"{' '.join(argv)} still running after {timeout:g}s\n"
                               f"--- stdout ---\n{tail(stdout)}\n"
                               f"--- stderr ---\n{tail(stderr)}") from None
        # Children left behind in the group (a stray background job) must not outlive the test.
        _signal_group(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ManagedProcess:
    """A long-running child (worker, control, beat) in its own process group, logging to a file.

    start() waits for ready_marker to appear in the log after this start; restart() appends to
    the same log.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                 log_path: Path, ready_marker: str | None, ready_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.ready_marker = ready_marker
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._terminated = False

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and not _exited_unreaped(self._proc)

    @property
    def returncode(self) -> int | None:
        """None while running (or exited but not yet waited for)."""
        return None if self._proc is None else self._proc.returncode

    def log_text(self, since_start: bool = False) -> str:
        """The whole log, or with since_start only what the current start wrote."""
        try:
            with open(self.log_path, "rb") as log:
                if since_start:
                    log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return ""
        return data.decode(errors="replace")

    def start(self) -> None:
        if self.alive:
            raise HarnessError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self._terminated = False
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts} of {self.name} ===\n".encode())
            log.flush()
            self._offset = log.tell()
            self._proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        if self.ready_marker is not None:
            self.wait_for(self.ready_marker, self.ready_timeout)

    def wait_for(self, text: str, timeout: float = 30.0, since_start: bool = True) -> str:
        """Waits until text appears in the log (by default: since the current start) and returns
        the log; raises HarnessError with the log tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text(since_start)
            if text in log:
                return log
            exited = not self.alive
            if exited or time.monotonic() > deadline:
                # One last read: the line may have been written just before the exit.
                log = self.log_text(since_start)
                if text in log:
                    return log
                why = "exited" if exited else f"still running after {timeout:g}s"
                self.stop(timeout=5)
                raise HarnessError(
                    f"{self.name} {why} (exit {self.returncode}) before {text!r} appeared in "
                    f"{self.log_path}:\n{tail(self.log_text())}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends sig to the whole process group (the pool children, duplicity, scripts too)."""
        _signal_group(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for the leader to exit; returns its exit code."""
        assert self._proc is not None
        if not self._wait_exited(timeout):
            raise HarnessError(f"{self.name} still running after {timeout:g}s:\n"
                               f"{tail(self.log_text())}")
        _signal_group(self._proc.pid, signal.SIGKILL)
        return self._proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the group, SIGKILL after timeout; leftovers of the group are killed too."""
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            if not _exited_unreaped(self._proc):
                if not self._terminated:
                    _signal_group(self._proc.pid, signal.SIGTERM)
                self._wait_exited(timeout)
            # The leader is now exited but unreaped (or still running): its pgid is still ours.
            _signal_group(self._proc.pid, signal.SIGKILL)
        return self._reap()

    def terminate(self) -> None:
        """SIGTERM to the group once, without waiting (stop() then waits and does not repeat it)."""
        if self.alive and not self._terminated:
            _signal_group(self.pid, signal.SIGTERM)
            self._terminated = True

    def restart(self, timeout: float = 15.0) -> None:
        self.stop(timeout)
        self.start()

    def _wait_exited(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not _exited_unreaped(self._proc):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self) -> int | None:
        return None if self._proc is None else self._proc.wait(10)


class ProcessFactory:
    """Starts ManagedProcesses for one test and stops every one of them at teardown."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], ready_marker: str | None = None, *,
              ready_timeout: float = 30.0,
              env_extra: Mapping[str, str | None] | None = None) -> ManagedProcess:
        """Launches argv (the full command line) logging to <tmp>/<name>.log (<name>-2.log ... if
        taken) and waits for ready_marker in its log."""
        log_path = self.workdir / f"{name}.log"
        taken = {p.log_path for p in self.processes}
        n = 1
        while log_path in taken:
            n += 1
            log_path = self.workdir / f"{name}-{n}.log"
        process = ManagedProcess(name, argv, env=merged_env(self.env, env_extra),
                                 cwd=self.workdir, log_path=log_path, ready_marker=ready_marker,
                                 ready_timeout=ready_timeout)
        self.processes.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        """SIGTERM to every process group first, then waits for each: the warm shutdowns run
        side by side instead of one after the other."""
        for process in self.processes:
            process.terminate()
        errors: list[str] = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{process.name}: {exc!r}")
        if errors:
            raise HarnessError("could not stop: " + "; ".join(errors))
