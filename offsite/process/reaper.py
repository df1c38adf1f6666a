"""Each command's own reaper: the small exec wrapper every command runs under
(offsite.process.execute starts `python -I -S -c … ` → main() here, then the command from it).

The wrapper, alone in its session and process group, makes itself a child subreaper, lowers its
own priority (offsite.process.priority; the command inherits it), forks and execs the command,
and when the command ends kills (TERM, then KILL after a grace) and reaps every process the
command left running (`cmd &`, `nohup`, `setsid`, double forks, gpg-agent daemons: as orphans
they are re-parented to the wrapper, never to the worker), then exits with the command's
status. So concurrent commands in one process (a drill and the escrow check on the control
node's threads) each have their own reaper and cannot end each other's processes, and nothing
runs code between fork and exec in the threaded worker (no `preexec_fn`).

A TERM (the worker's timeout, sent to the whole group) or the worker's death (PDEATHSIG) ends
the command and everything it left at once. Only the standard library is imported: the
wrapper starts isolated, ~20 ms."""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time

from offsite.process.priority import Priority, apply_in_child

TYPE_CHECKING = False   # not typing's: importing typing would cost every command ~5 ms

if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn, Sequence

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_TERM_GRACE_S = 1.0
_SWEEP_DEADLINE_S = 10.0
_POLL_S = 0.05
EXIT_CANNOT_START = 127
_NONE = "-"


class WrapperSpec:
    """What the wrapper needs besides the command: who started it, where to report a failed
    exec and, at the end, what it ended, the command's priority, and the identity to run it as
    (None: the worker's own). A plain class: the wrapper imports nothing it can do without."""

    def __init__(self, parent: int, status_fd: int, report_fd: int, priority: Priority,
                 uid: int | None = None, gid: int | None = None,
                 groups: tuple[int, ...] = ()) -> None:
        self.parent, self.status_fd, self.report_fd = parent, status_fd, report_fd
        self.priority, self.uid, self.gid, self.groups = priority, uid, gid, groups

    def to_args(self) -> list[str]:
        ids = [_NONE if v is None else str(v) for v in (self.uid, self.gid)]
        return [str(self.parent), str(self.status_fd), str(self.report_fd),
                str(self.priority.nice), self.priority.io, *ids,
                ",".join(map(str, self.groups)) or _NONE]

    @classmethod
    def from_args(cls, args: Sequence[str]) -> WrapperSpec:
        parent, fd, report, nice, io, uid, gid, groups = args
        return cls(int(parent), int(fd), int(report), Priority(int(nice), io),
                   None if uid == _NONE else int(uid), None if gid == _NONE else int(gid),
                   () if groups == _NONE else tuple(int(g) for g in groups.split(",")))


class _Stop(Exception):
    """TERM (a timeout), HUP or the parent's death: end the command and what it left now."""


def _on_stop(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)   # one sweep; the group's TERM reaches us once
    raise _Stop()


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """`<spec args> -- <command argv>`: run the command as its own reaper; exit as it did."""
    args = list(sys.argv[1:] if argv is None else argv)
    split = args.index("--")
    spec, command = WrapperSpec.from_args(args[:split]), args[split + 1:]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_stop)
    status: int | None = None
    try:
        if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
            os.write(2, b"offsite: cannot become a child subreaper: processes the command "
                        b"leaves behind may outlive it\n")
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != spec.parent:
            os._exit(EXIT_CANNOT_START)   # the worker died before we could watch it
        if spec.priority.lowered:
            apply_in_child(spec.priority)
        os.set_inheritable(spec.status_fd, False)
        os.set_inheritable(spec.report_fd, False)
        pid = os.fork()
        if pid == 0:
            _exec(spec, command)
        os.close(spec.status_fd)
        status = _wait_for(pid)
        _report(spec, _sweep())
    except _Stop:
        _report(spec, _sweep())
        _exit_like(signal.SIGTERM)   # die of it: the worker sees a stopped command (-15)
    _exit_like(status)


def _report(spec: WrapperSpec, swept: tuple[int, int]) -> None:
    """`ended stuck`: how many processes the command left were ended, how many survived."""
    try:
        os.write(spec.report_fd, f"{swept[0]} {swept[1]}".encode())
    except OSError:
        pass


def _exec(spec: WrapperSpec, command: list[str]) -> NoReturn:
    """In the forked child (the wrapper is single-threaded): die with the wrapper, take the
    default signal dispositions and the run's identity, and exec; a failure to exec is written
    to the status pipe (the worker raises it as `cannot start …`)."""
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE,
                    signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        paths = _executables(command[0])   # looked up as the worker, as subprocess does
        if spec.gid is not None:
            os.setgroups(list(spec.groups))
            os.setgid(spec.gid)
        if spec.uid is not None:
            os.setuid(spec.uid)   # from here on nothing may import (the stdlib may be unreadable)
        _exec_first(paths, command)
    except BaseException as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        try:
            os.write(spec.status_fd, reason.encode(errors="replace")[:500])
        finally:
            os._exit(EXIT_CANNOT_START)


def _executables(name: str) -> list[str]:
    if "/" in name:
        return [name]
    return [os.path.join(folder or ".", name)
            for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)]


def _exec_first(paths: list[str], command: list[str]) -> NoReturn:
    """execve the first of paths that is executable (PATH's order); raises the most telling
    error when none is (a permission error before `not found`)."""
    error: OSError | None = None
    for path in paths:
        try:
            os.execve(path, command, os.environ)
        except (FileNotFoundError, NotADirectoryError) as exc:
            error = error or exc
        except OSError as exc:
            error = exc if error is None or isinstance(error, FileNotFoundError) else error
    raise error or FileNotFoundError(2, "No such file or directory")


def _wait_for(pid: int) -> int:
    """Reap children (the command and orphans re-parented to us) until the command exits."""
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            return status


def _descendants() -> tuple[set[int], bool]:
    """(live descendants of this wrapper, whether any child of ours is a zombie)."""
    parents: dict[int, int] = {}
    zombies: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(name)] = int(fields[1])
        if fields[0] in ("Z", "X"):
            zombies.add(int(name))
    mine = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    mine.discard(os.getpid())
    return mine - zombies, bool(mine & zombies)


def _sweep() -> tuple[int, int]:
    """Kill (TERM, then KILL after a grace) and reap everything left below the wrapper;
    returns (how many were ended, how many are still alive after the deadline)."""
    deadline = time.monotonic() + _SWEEP_DEADLINE_S
    term_sent: dict[int, float] = {}
    alive: set[int] = set()
    while time.monotonic() < deadline:
        if not _reap():
            return len(term_sent), 0   # no child left: an orphan would be re-parented to us
        alive, unreaped = _descendants()
        if not alive and not unreaped:
            return len(term_sent), 0
        now = time.monotonic()
        for pid in alive:
            first = term_sent.setdefault(pid, now)
            sig = (signal.SIGTERM if first == now else
                   signal.SIGKILL if now - first >= _TERM_GRACE_S else 0)
            if sig:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(_POLL_S)
    return len(term_sent), len(alive)


def _reap() -> bool:
    """Reap the children that have exited; whether any child is left."""
    while True:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if reaped == 0:
            return True


def _exit_like(status: int | None) -> NoReturn:
    """Exit with the command's code, or die of its signal (so the worker sees -signal): a
    wait status, or a bare signal number (the wait status of a death by that signal)."""
    if status is None:
        os._exit(EXIT_CANNOT_START)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))
