"""Browse and find files in a host's backup sets without restoring them: `offsite ls` lists the
files of one set, `offsite find` says which sets hold a path matching a pattern and when it
changed. Both read duplicity's own listing (`list-current-files`, from the chain's signatures:
no data volume is decrypted), with a private throwaway cache, and name paths as a restore does
(`<script>/…`, `<name>/…` of `paths:`)."""
from __future__ import annotations

import fnmatch
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from offsite.crypto.encryption import secret_keyring
from offsite.duplicity.command import run_list_files
from offsite.errors import OffsiteError, UsageError
from offsite.host.settings import HostSettings
from offsite.host.sources import archive_path, host_sources
from offsite.proof.restore import choose_set, restore_subpath
from offsite.target.catalog import BackupSet, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog

MAX_PATTERN_TEXT = 1024
MAX_LISTED = 1_000_000        # entries of one listing kept; a bigger set is cut, and says so
# duplicity's line, after the --log-timestamp prefix ("2026-12-04 21:19:53,519 INFO   ")
_LINE = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+\s+)?"
                   r"(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}) (.*)$")
INTERNAL = ".offsite"         # offsite's own folder in a set (the digest manifest)


class BadPattern(UsageError):
    """A `find` pattern that is empty, too long or not printable (exit 2)."""


@dataclass(frozen=True)
class ListedFile:
    path: str             # as a restore names it: <script>/... or <name>/...
    mtime: str            # as duplicity prints it (the file's modification time)

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "mtime": self.mtime}


def parse_listing(stdout: str) -> list[tuple[str, str]]:
    """(mtime text, archive path) per line of list-current-files; the root `.` left out."""
    found = []
    for line in stdout.splitlines():
        match = _LINE.match(line)
        if match and match.group(2) != ".":
            found.append((match.group(1), match.group(2)))
            if len(found) >= MAX_LISTED:
                break
    return found


def user_names(settings: HostSettings) -> list[tuple[str, str]]:
    """(archive prefix, the name a restore gives it) for each script and `paths:` entry."""
    sources = host_sources(settings)
    names = list(settings.scripts) + list(sources.paths)
    return [(archive_path(sources, name).strip("/"), name) for name in names]


def to_user_path(archive: str, names: list[tuple[str, str]]) -> str | None:
    """The restore name of an archive path; None for what no script or path holds (the
    folders above a `paths:` entry, offsite's own folder)."""
    for prefix, name in names:
        if prefix in ("", "."):
            return archive
        if archive == prefix or archive.startswith(prefix + "/"):
            return name + archive[len(prefix):]
    return None


def _listing(settings: HostSettings, chosen: BackupSet,
             secret_keys_file: Path | None) -> list[ListedFile]:
    names = user_names(settings)
    workspace = settings.cache_root / ".browse-tmp"   # no host name starts with a dot
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix=f"{settings.name}-", dir=workspace))
    try:
        with secret_keyring(settings.name, secret_keys_file) as gnupg_home:
            result = run_list_files(settings, cache, str(int(chosen.time.timestamp())),
                                    chosen.data_prefix, gnupg_home)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    files = []
    for mtime, archive in parse_listing(result.stdout):
        path = to_user_path(archive, names)
        if path is not None and path.split("/", 1)[0] != INTERNAL:
            files.append(ListedFile(path, mtime))
    return files


def list_set(settings: HostSettings, at: datetime | None, under: str | None = None,
             secret_keys_file: Path | None = None) -> tuple[BackupSet, list[ListedFile]]:
    """The set a restore as of `at` gives, and its files (those under `under` when given)."""
    host = settings.name
    prefix = str(restore_subpath(under, host)) if under is not None else None
    catalog = read_keyed_catalog(settings)
    chosen = choose_set(catalog, at, host)
    files = _listing(settings, chosen, secret_keys_file)
    if prefix is not None:
        files = [f for f in files if f.path == prefix or f.path.startswith(prefix + "/")]
    return chosen, files


def check_pattern(pattern: str, host: str) -> str:
    if not pattern.strip() or len(pattern) > MAX_PATTERN_TEXT or not pattern.isprintable():
        raise BadPattern(f"bad pattern {pattern[:80]!r}: give a glob like '*.sql' or "
                         "'db/dump.*' (at most 1024 printable characters)", host=host,
                         step="find")
    return pattern


def matches(path: str, pattern: str) -> bool:
    """A glob against the whole path (`db/*.sql`) or, without a `/`, against the file name."""
    target = path if "/" in pattern else PurePosixPath(path).name
    return fnmatch.fnmatchcase(target, pattern)


@dataclass
class Found:
    path: str
    sets: list[dict[str, str]]   # {"set": time of the set, "mtime": the file's then}

    def changed_in(self) -> list[str]:
        """The sets where the path appeared or its modification time changed."""
        return [entry["set"] for index, entry in enumerate(self.sets)
                if index == 0 or entry["mtime"] != self.sets[index - 1]["mtime"]]

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "sets": self.sets, "changed_in": self.changed_in()}


def find_in_sets(settings: HostSettings, pattern: str,
                 secret_keys_file: Path | None = None) -> list[Found]:
    """Every path matching `pattern` in any complete set, oldest set first per path, with the
    sets where its modification time changed."""
    host = settings.name
    check_pattern(pattern, host)
    catalog = read_keyed_catalog(settings)
    if catalog.oldest_time is None:
        raise OffsiteError(f"no backup yet: {catalog.location} holds no complete backup of "
                           "this host", host=host, step="find")
    sets = sorted((s for chain in catalog.chains for s in chain.sets), key=lambda s: s.time)
    found: dict[str, Found] = {}
    for backup_set in sets:
        stamp = format_stamp(backup_set.time)
        for listed in _listing(settings, backup_set, secret_keys_file):
            if matches(listed.path, pattern):
                found.setdefault(listed.path, Found(listed.path, [])).sets.append(
                    {"set": stamp, "mtime": listed.mtime})
    return [found[path] for path in sorted(found)]


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
