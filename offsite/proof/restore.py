"""`offsite restore`: a backup of the host, as of a time the target really covers, into a new
folder. A time before the oldest backup is refused (duplicity would silently answer with a
later one), a time string duplicity cannot read is refused before it runs."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from offsite.target.bucket import check_readable
from offsite.target.catalog import BackupSet, Catalog, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.host.settings import HostSettings
from offsite.duplicity.command import run_restore
from offsite.crypto.encryption import secret_keyring
from offsite.errors import CommandError, OffsiteError, UsageError
from offsite.proof.diagnose import explain_failure, volume_order
from offsite.proof.space import require_space, restore_size, tree_bytes, work_bytes
from offsite.host.sources import host_cache
from offsite.target.thaw import (archived_volumes, check_thaw_days, refuse_if_frozen, request_thaw,
                          sets_needed)

MAX_TIME_TEXT = 64


class RestoreRefused(OffsiteError):
    """The target cannot give what was asked: no backup yet, none as old as the time asked."""


class BadRestoreRequest(UsageError):
    """The request itself is wrong (exit 2): a time string duplicity cannot read, a destination
    that is a file or not empty."""


def parse_backup_time(text: str, now: datetime, host: str | None = None,
                      step: str = "restore") -> datetime:
    """A `--time` as duplicity reads it (ISO 8601, a date, an age like 3D2h, epoch seconds);
    raises BadRestoreRequest naming the accepted forms."""
    from duplicity import dup_time  # duplicity's own parser: the same reading as the restore
    if len(text) > MAX_TIME_TEXT or not text.strip() or not text.isprintable():
        raise BadRestoreRequest(f"bad --time {text[:MAX_TIME_TEXT]!r}: use an ISO 8601 "
                                "time (2026-11-01T00:00:00Z), a date (2026-11-01) or an age "
                                "(3D, 12h)", host=host, step=step)
    dup_time.setcurtime(int(now.timestamp()))
    try:
        seconds = dup_time.genstrtotime(text.strip())
    except Exception:  # duplicity raises TimeException, and ValueError/TypeError on odd input
        raise BadRestoreRequest(f"bad --time {text!r}: use an ISO 8601 time "
                                "(2026-11-01T00:00:00Z), a date (2026-11-01) or an age (3D, 12h)",
                                host=host, step=step) from None
    return datetime.fromtimestamp(int(seconds), timezone.utc)


def check_time_covered(catalog: Catalog, at: datetime | None, host: str) -> None:
    """Refuse a restore the target cannot answer truthfully."""
    oldest = catalog.oldest_time
    if oldest is None:
        broken = [s for s in catalog.unfinished + catalog.orphans
                  if s.seal is not None or s.manifest is not None]
        if broken:
            named = "; ".join(f"the {s.kind} set of {format_stamp(s.time)}: "
                              f"{s.reason or 'a set before it is missing'}" for s in broken[:5])
            raise RestoreRefused(f"no restorable backup: no set in {catalog.location} restores "
                                 f"({named})", host=host, step="restore")
        raise RestoreRefused(f"no backup yet: {catalog.location} holds no complete backup of "
                             "this host", host=host, step="restore")
    if at is not None and at < oldest:
        raise RestoreRefused(f"no backup at or before {format_stamp(at)}: the oldest backup of "
                             f"{host} is from {format_stamp(oldest)}", host=host, step="restore")


def choose_set(catalog: Catalog, at: datetime | None, host: str,
               step: str = "restore") -> BackupSet:
    """The set a restore as of `at` gives (default: the newest): the newest restorable set of a
    chain at or before `at`. Without `at`, newer sets that cannot be used are refused, named
    (RestoreRefused): restoring an older set in their place would be a silent substitution. A
    set whose signatures are missing restores (offsite.duplicity.launch keeps duplicity from
    dropping it)."""
    check_time_covered(catalog, at, host)
    candidates = [backup_set for chain in catalog.chains for backup_set in chain.sets
                  if at is None or backup_set.time <= at]
    if not candidates:
        raise RestoreRefused(f"no restorable backup at or before {format_stamp(at)}"
                             if at else "no restorable backup", host=host, step=step)
    chosen = max(candidates, key=lambda backup_set: backup_set.time)
    unusable = catalog.unusable_after(chosen.time) if at is None else []
    if unusable:
        named = "; ".join(f"the {s.kind} set of {format_stamp(s.time)}: "
                          f"{s.reason or 'a set before it is missing or does not restore'}"
                          for s in unusable[:5])
        raise RestoreRefused(f"the newest backup(s) of {host} cannot be restored ({named}); "
                             f"the newest that can is the {chosen.kind} set of "
                             f"{format_stamp(chosen.time)}: restore it with --time "
                             f"{format_stamp(chosen.time)}", host=host, step=step)
    return chosen


def check_destination(dest: Path, host: str) -> None:
    """dest must be a new or empty folder in an existing one."""
    if dest.exists() and not dest.is_dir():
        raise BadRestoreRequest(f"restore destination {dest} exists and is not a folder: "
                                "choose a new folder", host=host, step="restore")
    if dest.is_dir():
        if any(dest.iterdir()):
            raise BadRestoreRequest(f"restore destination {dest} is not empty: choose a new "
                                    "folder", host=host, step="restore")
    if not dest.parent.is_dir():
        raise BadRestoreRequest(f"the folder {dest.parent} does not exist: create it first",
                                host=host, step="restore")


MAX_PATH_TEXT = 4096


def restore_subpath(path: str, host: str) -> PurePosixPath:
    """`--path P` as a path relative to the host's backup (`<script>/...` or `<name>/...`),
    restored as DEST/P: never empty, never `..`, no NUL; raises BadRestoreRequest."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if len(path) > MAX_PATH_TEXT or "\x00" in path or not path.isprintable() or not parts \
            or ".." in parts:
        raise BadRestoreRequest(f"bad --path {path[:80]!r}: give a path inside the host's "
                                "backup, like db/dump.sql or files/notes (no '..')", host=host,
                                step="restore")
    return PurePosixPath(*parts)


def restore_host(settings: HostSettings, dest: Path, time: str | None = None,
                 path: str | None = None, *, thaw_days: int | None = None,
                 secret_keys_file: Path | None = None,
                 chosen: list[BackupSet] | None = None) -> str | None:
    """Restore `host` as of `time` (default: the latest backup) into DEST, or only `path`
    into DEST/`path`.
    Archived volumes it needs are named (VolumesArchived), or with thaw_days requested from
    S3 (the returned text says when to come back; nothing is restored then). In public-key mode
    the secret key comes from secret_keys_file or GNUPGHOME, never from the host. The set
    restored is appended to `chosen` (see choose_set). Raises NoRestoreSpace before duplicity
    starts when DEST's filesystem (or the cache's, for duplicity's temp) has less room than
    the set restores to (offsite.proof.space)."""
    host = settings.name
    at = parse_backup_time(time, datetime.now(timezone.utc), host) if time else None
    inner = restore_subpath(path, host) if path is not None else None
    if thaw_days is not None:
        check_thaw_days(thaw_days, host)
    check_destination(dest, host)
    with secret_keyring(host, secret_keys_file) as gnupg_home:
        return _restore(settings, dest, at, inner, thaw_days, gnupg_home, chosen)


def _restore(settings: HostSettings, dest: Path, at: datetime | None,
             inner: PurePosixPath | None, thaw_days: int | None, gnupg_home: Path | None,
             chosen: list[BackupSet] | None) -> str | None:
    host = settings.name
    catalog = read_keyed_catalog(settings, gnupg_home)
    backup_set = choose_set(catalog, at, host)
    if chosen is not None:
        chosen.append(backup_set)
    sets = sets_needed(catalog, backup_set.time)
    volumes = archived_volumes(settings, sets)
    if thaw_days is not None and any(volume.state != "thawed" for volume in volumes):
        return request_thaw(settings, volumes, thaw_days)
    refuse_if_frozen(host, volumes)
    if sets and sets[-1].manifest:
        check_readable(settings, sets[-1].manifest)   # a denied key named at once
    size = restore_size(sets)   # a --path restore: its size is not known, its temp is
    require_space([(dest.parent, tree_bytes(size) if inner is None else 0),
                   (host_cache(settings), work_bytes(sets))], size,
                  f"the set of {format_stamp(backup_set.time)}", host, "restore",
                  "free space there or restore into a folder with room")
    if inner is None:
        into = dest
        if dest.is_dir():
            dest.rmdir()  # duplicity creates the folder itself
    else:   # DEST/P, as cp -r and rsync -R would put it
        into = dest.joinpath(inner)
        into.parent.mkdir(parents=True, exist_ok=True)
    stamp = str(int(backup_set.time.timestamp()))   # exactly the set chosen
    try:
        run_restore(settings, into, host_cache(settings), stamp,
                    str(inner) if inner is not None else None,
                    data_prefix=sets[-1].data_prefix if sets else "", gnupg_home=gnupg_home,
                    volume_names=volume_order(sets))
    except CommandError as error:
        raise type(error)(explain_failure(settings, sets, error.cause), host=host,
                          step=error.step, exit_code=error.returncode,
                          stderr_tail=error.stderr_tail) from None
    return None
