"""Why a duplicity restore could hang for hours on a bad volume, and how offsite runs it instead.

duplicity's gpginterface starts each `gpg --decrypt` with a *non-daemon* thread that waits for
it (`threaded_waitpid`). When a restore fails on a volume (a hash mismatch: a flipped byte, a
swapped or foreign volume), duplicity raises its fatal error and exits while the gpg of the
volume it was reading still has output to give: that gpg blocks writing into the full pipe that
duplicity no longer reads, and the exiting interpreter joins every non-daemon thread first, so
it waits for the waiter, which waits for gpg, which waits for duplicity to read or to close the
pipe (which happens only when it exits). Nothing moves until the run's timeout (12 h by
default); the process tree shows duplicity's main thread in a futex wait, one thread in waitpid
and gpg in pipe_write.

offsite therefore starts duplicity through this launcher (`python -m offsite.duplicity.launch
ARGS...`, the same interpreter duplicity is installed in), which makes those waiter threads
daemon threads before duplicity runs: on its fatal error duplicity exits at once with its own
error, its end of the pipe closes, and gpg ends on EPIPE (the reaper of offsite.process ends
whatever is left).

A restore also gets the newest set whose signatures are missing: duplicity builds its backup
chains from manifests and volumes, then pairs the newest with a signature chain; when the
signatures end one set early it "discards last backup set, because of missing signature file"
by cutting that set from the backup chain (`CollectionsStatus.set_matched_chain_pair`), and a
restore of the newest time then silently gives the set before it. A restore reads only
manifests and volumes, so for `restore` the launcher puts the cut set back (a backup still sees
duplicity's own pairing; offsite promotes such a chain to full before one runs).

The launcher also applies an upload's bandwidth cap (offsite.duplicity.bandwidth), and with
OFFSITE_UPLOAD_DIGESTS in its environment (an upload) hashes every file duplicity hands its
backend, just before the transfer, and records it once the transfer succeeded (see
offsite.duplicity.uploaded): the seal is made from that, not by reading the set back.
It skips duplicity's check that gpg-agent allows loopback pinentry (`duplicity.gpg.check_gpg`
encrypts a test message with `--passphrase test` before every action): offsite gives gpg the
key-derivation count on every command (offsite.crypto.encryption.S2K_COUNT), with which that
test never reaches an agent, so it can no longer fail for the reason it exists and only hashes
the test passphrase 65 million times (~0.2 s of CPU and wall time a command; gpg's own checks
of its binary and version still run). It imports only the backends of the schemes an offsite
target may name (offsite.config.rules: file, boto3+s3 and s3), not duplicity's ~40 (60-100 ms a
command; Dropbox's alone loads requests). Its file selection decides as duplicity's own, at
the cost of the tree itself when a `paths:` host is selected from `/`
(offsite.duplicity.selection). Everything else is duplicity's own `dup_run`, unchanged.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from typing import Any, Callable

from offsite.duplicity.uploaded import DIGESTS_ENV, UploadRecord, file_digest


class _DaemonThreads:
    """`threading` as gpginterface sees it: the same module, whose Thread makes daemons."""

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    @staticmethod
    def Thread(*args: Any, **kwargs: Any) -> threading.Thread:   # noqa: N802 (threading's name)
        kwargs["daemon"] = True
        return threading.Thread(*args, **kwargs)


def keep_unsigned_last_set(collection_status: Any) -> None:
    """Make `set_matched_chain_pair` of duplicity's CollectionsStatus class leave the newest
    backup chain whole when the action is `restore` (see the module docstring)."""
    from duplicity import config
    original = collection_status.set_matched_chain_pair

    def set_matched_chain_pair(self: Any, sig_chains: Any, backup_chains: Any) -> None:
        latest = backup_chains[-1] if backup_chains else None
        whole = list(latest.incset_list) if latest is not None else []
        original(self, sig_chains, backup_chains)
        if config.action != "restore" or latest is None \
                or len(latest.incset_list) == len(whole):
            return
        cut = whole[len(latest.incset_list):]
        latest.incset_list = whole
        self.incomplete_backup_sets = [s for s in self.incomplete_backup_sets
                                       if all(s is not c for c in cut)]

    collection_status.set_matched_chain_pair = set_matched_chain_pair


def skip_loopback_test(gpg_module: Any) -> None:
    """Make duplicity's `check_gpg` skip its loopback pinentry test (see the module docstring):
    the test runs only without `use_agent`, so the check runs with it set."""
    from duplicity import config
    original = gpg_module.check_gpg

    def check_gpg() -> None:
        use_agent = config.use_agent
        config.use_agent = True
        try:
            original()
        finally:
            config.use_agent = use_agent

    gpg_module.check_gpg = check_gpg


# The duplicity backends of offsite.config.rules.TARGET_SCHEMES.
TARGET_BACKENDS = ("duplicity.backends.localbackend", "duplicity.backends.s3_boto3_backend")


def import_target_backends(backend_module: Any) -> None:
    """Make duplicity's `import_backends` (run before every action) import TARGET_BACKENDS
    only, each of which registers its schemes as it loads."""
    def import_backends() -> None:
        for name in TARGET_BACKENDS:
            importlib.import_module(name)

    backend_module.import_backends = import_backends


def launch_argv(argv: list[str]) -> list[str]:
    """duplicity's argv run through this launcher, when argv[0] is the duplicity installed
    beside this interpreter (the launcher imports that one); else unchanged."""
    beside = os.path.join(os.path.dirname(sys.executable), "duplicity")
    if not argv or argv[0] != beside:
        return argv
    return [sys.executable, "-m", "offsite.duplicity.launch", *argv[1:]]


def _recorded(transfer: Callable[..., Any], record: UploadRecord) -> Callable[..., Any]:
    """A BackendWrapper transfer (put, move: `(self, source_path, remote_filename=None)`)
    that hashes the local file before it goes (move may rename or delete it) and records it
    once the transfer returned."""
    @functools.wraps(transfer)
    def wrapper(self: Any, source_path: Any, remote_filename: Any = None) -> Any:
        name = os.fsdecode(remote_filename or source_path.get_filename())
        size, sha256 = file_digest(source_path.name)
        result = transfer(self, source_path, remote_filename)
        record.add(name, size, sha256)
        return result
    return wrapper


def record_transfers(path: str) -> None:
    from duplicity.backend import BackendWrapper
    record = UploadRecord(path)
    for method in ("put", "move"):
        setattr(BackendWrapper, method, _recorded(getattr(BackendWrapper, method), record))


def main() -> int:
    from offsite.duplicity.bandwidth import install, limit_from_env
    if (rate := limit_from_env()) is not None:
        install(rate)   # an upload under target.upload_limit (offsite.duplicity.bandwidth)
    from duplicity import gpginterface
    if hasattr(gpginterface, "threading"):
        gpginterface.threading = _DaemonThreads()   # type: ignore[assignment]
    from offsite.duplicity.selection import install_in_duplicity
    install_in_duplicity()   # selection from `/` at the tree's cost (offsite.duplicity.selection)
    from duplicity import backend, dup_collections, gpg
    skip_loopback_test(gpg)
    import_target_backends(backend)
    keep_unsigned_last_set(dup_collections.CollectionsStatus)
    if digests := os.environ.get(DIGESTS_ENV):
        record_transfers(digests)
    from duplicity.__main__ import dup_run
    sys.argv[0] = "duplicity"
    return int(dup_run() or 0)


if __name__ == "__main__":
    sys.exit(main())
