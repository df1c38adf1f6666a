"""The host lock a `--local` command takes on its machine: an exclusive lock file next to the
host's staging (`<staging_root>/.<host>.lock`, flock), held for as long as the command runs.

It keeps two local commands of one host apart on this machine, and with no broker at all (the
embedded default) it is the whole host lock. Where a broker answers, a local command takes the
host's Redis lease as well (offsite.run.local), the one the host's worker takes: a worker run
and a local run never share a staging folder. The kernel frees the lock when its holder dies.
The file keeps the id of the last run that held it: who holds it now, and the next local run's
id is never the same as the last one's (see offsite.run.local).
"""
from __future__ import annotations

import fcntl
import os
import re
import stat
from pathlib import Path

from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings
from offsite.host.sources import private_dir

_MAX_ID_BYTES = 200
_RUN_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


class HostLockUnusable(OffsiteError):
    """The host's lock file is not a plain file offsite can lock (a symlink, a folder...)."""


def lock_path(settings: HostSettings) -> Path:
    return settings.staging_root / f".{settings.name}.lock"   # no host name starts with a dot


class FileHostLease:
    """A HostLease (offsite.ledger.lease) for one host, by flock on its lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._run_id: str | None = None

    @classmethod
    def for_host(cls, settings: HostSettings) -> FileHostLease:
        private_dir(settings.staging_root, shared_ok=True)
        return cls(lock_path(settings))

    def last_run_id(self) -> str | None:
        """The id written by the last run that took the lock (it may hold it still); None when
        the file holds anything else."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            text = os.read(fd, _MAX_ID_BYTES + 1).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        finally:
            os.close(fd)
        return text if _RUN_ID.fullmatch(text) else None

    def acquire(self, host: str, run_id: str) -> bool:
        if self._fd is not None:
            return self._run_id == run_id
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            raise HostLockUnusable(f"cannot open the host lock file {self.path}: "
                                   f"{exc.strerror or exc}; remove it (it must be a plain file "
                                   "offsite creates)", host=host, step="start") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise HostLockUnusable(f"the host lock file {self.path} is not a plain file; "
                                   "remove it", host=host, step="start")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, run_id.encode() + b"\n")
        self._fd, self._run_id = fd, run_id
        return True

    def renew(self, host: str, run_id: str) -> bool:
        return self._fd is not None and self._run_id == run_id

    def release(self, host: str, run_id: str) -> None:
        if self._fd is not None and self._run_id == run_id:
            os.close(self._fd)   # closing the descriptor drops the flock
            self._fd = self._run_id = None

    def holder(self, host: str) -> str | None:
        """The run holding the lock (this one's or another process's); None when free."""
        if self._fd is not None:
            return self._run_id
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.last_run_id() or "(a local run)"
        finally:
            os.close(fd)
        return None
