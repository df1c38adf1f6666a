"""What a host's backup reads: its staging folder (the scripts' output) and its `paths:`, read
by duplicity where they are through its include/exclude selection, never copied; and the
host's duplicity cache beside it.

Scripts write to `<staging_root>/<host>/<script>/`, the same path on every run. The staging and
cache trees are private to the worker's user (0700), fixed when found looser.

A host without `paths:` backs up its staging folder as the source root, as always. A host with
them backs up `/` with a selection of the staging folder and each path: the root string stays
the same on every run (duplicity refuses an incremental whose source changed, exit 42), and a
change of the sources is noticed by comparing with the sources of the last upload, kept beside
the chain in the host's cache, so the next run starts a new chain and says why.

The backup carries `.offsite-sources.json` in its staging folder: at restore time it says which
path of the archive is which name, so `DEST/<name>/...` sits beside `DEST/<script>/...`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from offsite.host.settings import HostSettings

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700

MANIFEST_NAME = ".offsite-sources.json"
SIGNATURE_NAME = "offsite-sources.json"
ROOT = Path("/")
_MAX_PROBLEMS = 20



def private_dir(path: Path, shared_ok: bool = False) -> Path:
    """`path` (and missing parents) created as 0700; an existing `path` made 0700.

    With `shared_ok` (the configured roots), a directory that is not ours or is a shared one
    (sticky bit, like /tmp) is left as it is, with a warning: the host folders below it are
    0700 anyway, and chmod-ing a system directory would break other users."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o777 == PRIVATE_DIR_MODE:
        return path
    if shared_ok and (info.st_uid != os.geteuid() or info.st_mode & stat.S_ISVTX):
        log.warning("%s is mode %o and not only ours: left as it is (its host folders are "
                    "0700); give offsite a directory of its own", path, info.st_mode & 0o7777)
        return path
    path.chmod(PRIVATE_DIR_MODE)
    return path


def prepare_host_staging(settings: HostSettings) -> Path:
    """An empty staging folder for the host, with one empty folder per script."""
    private_dir(settings.staging_root, shared_ok=True)
    root = settings.staging
    empty_host_staging(settings)
    private_dir(root)
    for script in settings.scripts:
        (root / script).mkdir(mode=PRIVATE_DIR_MODE)
        (root / script).chmod(PRIVATE_DIR_MODE)
    return root


def empty_host_staging(settings: HostSettings) -> None:
    root = settings.staging
    if root.exists():
        shutil.rmtree(root)


def host_cache(settings: HostSettings) -> Path:
    """duplicity's archive dir for the host, made private if need be: kept between runs so
    incrementals need no download."""
    private_dir(settings.cache_root, shared_ok=True)
    return private_dir(settings.cache)


@dataclass(frozen=True)
class Sources:
    root: Path
    selection: tuple[str, ...]        # duplicity --include/--exclude arguments, in order
    paths: dict[str, str]             # name -> absolute path read in place
    staging: Path
    excludes: dict[str, tuple[str, ...]] = field(default_factory=dict)   # name -> globs

    def signature(self) -> str:
        return json.dumps({"root": str(self.root), "staging": str(self.staging),
                           "paths": self.paths}, sort_keys=True)


def host_sources(settings: HostSettings) -> Sources:
    """The first matching selection option wins in duplicity: a path's excludes come before
    its include, and the final `--exclude **` leaves out everything not named."""
    staging = settings.staging
    paths = {name: str(path) for name, path in settings.paths.items()}
    if not paths:
        return Sources(root=staging, selection=(), paths={}, staging=staging)
    selection: list[str] = ["--include", str(staging)]
    for name, path in paths.items():
        for glob in settings.excludes.get(name, ()):
            selection += ["--exclude", glob]
        selection += ["--include", path]
    selection += ["--exclude", "**"]
    return Sources(root=ROOT, selection=tuple(selection), paths=paths, staging=staging,
                   excludes=dict(settings.excludes))


def exclusion(globs: Iterable[str]) -> Callable[[str], bool] | None:
    """Whether an absolute path is left out by these duplicity exclude globs, as duplicity
    decides it (its own glob translation; a match on a folder leaves out all inside it);
    None when there are none."""
    globs = list(globs)
    if not globs:
        return None
    from duplicity.globmatch import glob_to_regex
    pattern = re.compile("^(" + "|".join(glob_to_regex(glob) for glob in globs) + ")($|/)",
                         re.S)
    return lambda path: pattern.match(path) is not None


def write_manifest(sources: Sources) -> None:
    """Into staging, so the backup itself says where each path went."""
    if sources.paths:
        (sources.staging / MANIFEST_NAME).write_text(json.dumps(
            {"staging": str(sources.staging), "paths": sources.paths}))


def record_uploaded(settings: HostSettings, sources: Sources) -> None:
    """Beside the chain in the host's cache, private like the rest of the cache."""
    target = host_cache(settings) / SIGNATURE_NAME
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(sources.signature())


def change_reason(settings: HostSettings) -> str | None:
    """Why the next run must start a new chain: the sources differ from the last upload's
    (a chain from before any `paths:` counts as the staging folder alone)."""
    current = host_sources(settings)
    saved = host_cache(settings) / SIGNATURE_NAME
    try:
        previous = saved.read_text()
    except FileNotFoundError:
        previous = Sources(root=current.staging, selection=(), paths={},
                           staging=current.staging).signature()
    if previous == current.signature():
        return None
    before = json.loads(previous).get("paths", {})
    return (f"the host's sources changed (paths {_names(before)} -> "
            f"{_names(current.paths)}); a new chain starts")


def _names(paths: dict[str, str]) -> str:
    return "{" + ", ".join(f"{name}: {path}" for name, path in sorted(paths.items())) + "}"


class PathProblems:
    """The files of the `paths:` sources duplicity will not back up as they are (symlink
    loops, files or folders this process cannot read), gathered by whichever walk reads the
    sources (the digest manifest's, offsite.run.manifest, or scan_problems): the first
    _MAX_PROBLEMS named, so the run's warning says which."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.more = False
        self._ids: tuple[int, frozenset[int]] | None = None   # see _granted

    @property
    def full(self) -> bool:
        return len(self.lines) >= _MAX_PROBLEMS

    def add(self, name: str, problem: str) -> None:
        if self.full:
            self.more = True
        else:
            self.lines.append(f"path {name}: {problem}")

    def check(self, name: str, path: str, is_link: bool | None = None) -> None:
        """One entry (a file, a link or a folder) as the walk finds it (`is_link`: whether it
        is a symlink, when the walk's listing already says)."""
        problem = _problem(path, is_link)
        if problem:
            self.add(name, f"{problem} {path}")

    def check_walked(self, name: str, folder: str, fd: int, entry: str,
                     info: os.stat_result) -> None:
        """check() for an entry that is not a folder, from the walk's lstat of it (`info`) in
        its open `folder` (`fd`): where the mode bits grant this process read there is no
        syscall; where they do not, os.access decides (root's capabilities, an ACL's grant).
        An ACL entry that takes away what the mode bits give is not seen here: duplicity
        counts such a file in its errors, so the run still ends a warning."""
        if stat.S_ISLNK(info.st_mode):
            self.check(name, os.path.join(folder, entry), True)
        elif not self._granted(info) and not os.access(entry, os.R_OK, dir_fd=fd):
            self.add(name, f"unreadable {os.path.join(folder, entry)}")

    def _granted(self, info: os.stat_result) -> bool:
        """Whether the mode bits alone let this process read: the owner's bits for its owner,
        the group's for a member, the others' for the rest (the kernel's order; os.access,
        as here, asks with the real ids)."""
        if self._ids is None:
            self._ids = (os.getuid(), frozenset((os.getgid(), *os.getgroups())))
        uid, gids = self._ids
        if info.st_uid == uid:
            return bool(info.st_mode & stat.S_IRUSR)
        if info.st_gid in gids:
            return bool(info.st_mode & stat.S_IRGRP)
        return bool(info.st_mode & stat.S_IROTH)

    def top(self, name: str, top: str) -> bool:
        """Whether a source's top folder can be walked (else named)."""
        if os.path.isdir(top):
            return True
        self.add(name, f"{top} is not a readable folder")
        return False

    def result(self) -> list[str]:
        return self.lines + (["(more not listed)"] if self.more else [])


def scan_problems(sources: Sources) -> list[str]:
    """PathProblems of the sources by a walk of their own (a caller that walks them anyway
    gathers them on that walk instead)."""
    found = PathProblems()
    for name, top in sorted(sources.paths.items()):
        if not found.top(name, top):
            continue
        left_out = exclusion(sources.excludes.get(name, ()))
        for folder, dirs, files in os.walk(top, onerror=lambda error: found.add(
                name, f"cannot read {error.filename}")):
            if left_out is not None:
                dirs[:] = [d for d in dirs if not left_out(os.path.join(folder, d))]
                files = [f for f in files if not left_out(os.path.join(folder, f))]
            for entry in dirs + files:
                found.check(name, os.path.join(folder, entry))
            if found.full:
                found.more = True
                return found.result()
    return found.result()


def _problem(path: str, is_link: bool | None = None) -> str | None:
    if os.path.islink(path) if is_link is None else is_link:
        try:
            Path(path).resolve(strict=True)
        except RuntimeError:
            return "symlink loop"
        except OSError:
            return None            # a dangling link is backed up as the link it is
        return None
    if not os.access(path, os.R_OK):   # a permission check, no open: the walk stays cheap
        return "unreadable"
    return None


def archive_path(sources: Sources, path: str) -> str:
    """A restore path as the user names it (`<script>/...` or `<name>/...`) inside the archive."""
    if not sources.paths:
        return path
    first, _, rest = path.strip("/").partition("/")
    if first in sources.paths:
        base = sources.paths[first]
    else:
        base = str(sources.staging / first)
    inner = os.path.join(base, rest) if rest else base
    return os.path.relpath(inner, ROOT)


def relocate(restored: Path, dest: Path, sources: Sources) -> None:
    """Turn a restored `/`-rooted archive in `restored` into DEST/<script>/... and
    DEST/<name>/...; an archive rooted at staging is DEST as it is."""
    manifest = _find_manifest(restored, sources)
    if manifest is None:
        restored.rename(dest)
        return
    recorded = json.loads(manifest.read_text())
    dest.mkdir(mode=0o700)
    staging = restored / os.path.relpath(recorded["staging"], ROOT)
    for child in staging.iterdir():
        if child.name != MANIFEST_NAME:
            child.rename(dest / child.name)
    for name, path in recorded["paths"].items():
        source = restored / os.path.relpath(path, ROOT)
        if source.exists():
            source.rename(dest / name)
    shutil.rmtree(restored)


def _find_manifest(restored: Path, sources: Sources) -> Path | None:
    """Where the current config puts staging first; else anywhere (staging_root moved)."""
    expected = restored / os.path.relpath(sources.staging, ROOT) / MANIFEST_NAME
    if expected.is_file():
        return expected
    if (restored / MANIFEST_NAME).exists() or not any(restored.iterdir()):
        return None
    return next(iter(restored.rglob(MANIFEST_NAME)), None)
