"""The digest manifest inside every backup: each staged file's path, size and SHA-256, written
to `.offsite/manifest.jsonl` at the staging root before the upload, so it is encrypted with the
data and restored with it. `offsite verify` compares a restore against it: proof that the target
alone (plus the key) gives back exactly what was staged.

One JSON object per line, so neither writing nor reading holds the whole list in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Generator, Iterator, Mapping

from offsite.host.sources import PathProblems, exclusion
from offsite.run.files_cache import FilesCache

MANIFEST_DIR = ".offsite"
MANIFEST_NAME = "manifest.jsonl"
FORMAT = 1
_CHUNK = 1024 * 1024
_read_buffers = threading.local()
MAX_LINE_BYTES = 64 * 1024   # a manifest line longer than this is not ours
_HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
_HASH_BATCH = 64
TICK_ENTRIES = 256
# json.dumps with ensure_ascii=False builds an encoder per call: one each, made once
_UTF8_JSON = json.JSONEncoder(ensure_ascii=False)
_ASCII_JSON = json.JSONEncoder()
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC   # a folder walked by its descriptor
# a folder below the top, listed as a folder, is not followed if it became a link since
_BELOW_FLAGS = _FOLDER_FLAGS | os.O_NOFOLLOW
_WRITTEN_AS_IS = re.compile(r'[ !#-\[\]-~]*')   # what json.dumps writes unescaped, in ASCII


@dataclass(frozen=True)
class ManifestSummary:
    files: int
    bytes: int
    sha256: str   # of the manifest file itself: recorded in the run, so it cannot be swapped


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str            # "file" or "symlink"
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    mtime_ns: int | None = None   # as walked (not written): the files cache's key


def manifest_path(root: Path) -> Path:
    return root / MANIFEST_DIR / MANIFEST_NAME


def file_digest(path: Path) -> str:
    """A file's SHA-256, read into one buffer per thread, kept: read(_CHUNK) allocated 1 MiB
    and shrank it to the file's size for every file, a fifth of a drill's compare of 500,000
    files of 2-8 KB (20.2-22.5 s -> 15.3-17.8 s)."""
    view = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(_CHUNK))
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()


def walk(root: Path, prefix: str = "", digests: bool = True,
         cache: FilesCache | None = None,
         left_out: Callable[[str], bool] | None = None,
         problems: PathProblems | None = None) -> Iterator[Entry]:
    """Every regular file and symlink under root (not the manifest's own folder), sorted, with
    what identifies its content (its SHA-256 when `digests`: from `cache` for a file it knows
    unchanged, else read; see offsite.run.files_cache). Other kinds (sockets, fifos) duplicity
    skips too. Paths are relative to root, after `prefix`; a name that is not UTF-8 is kept as
    os.walk gives it (surrogate escapes), so it maps back to the same bytes. `left_out`: the
    absolute paths a `paths:` entry excludes (offsite.host.sources.exclusion), neither walked
    nor listed, as duplicity leaves them out of the set. `problems`: what duplicity will not
    back up as it is, gathered on this walk (a `paths:` source, named by `prefix`; see
    offsite.host.sources.PathProblems)."""
    entries = (Entry(path, kind, size, None, target, mtime_ns)
               for path, kind, size, target, mtime_ns in _walked(root, prefix, left_out, problems))
    return _digested(entries, root, prefix, cache) if digests else entries


# what the walk finds of an entry, an Entry's fields as a tuple: (path, kind, size, symlink
# target, mtime_ns). The manifest formats a `paths:` source's lines from these directly: an
# Entry object costs 0.8 µs, a sixth of a file's walk.
Walked = tuple[str, str, int, str | None, int | None]


def _walked(root: Path, prefix: str, left_out: Callable[[str], bool] | None = None,
            problems: PathProblems | None = None) -> Iterator[Walked]:
    """os.walk's order and choices (top-down, folders sorted, a link to a folder listed and not
    followed, a folder it cannot list left out), from os.scandir's listings: a file costs one
    lstat relative to its open folder and no path joins, not pathlib objects and a second
    lstat (a 500,000-file `paths:` source is walked on every run)."""
    source = prefix.rstrip("/")
    if problems is not None and not problems.top(source, str(root)):
        return
    pending = [(str(root), prefix)]
    while pending:
        folder, inside = pending.pop()
        try:
            fd = os.open(folder, _BELOW_FLAGS if inside != prefix else _FOLDER_FLAGS)
        except OSError:
            fd = -1
        listed = None if fd < 0 else _listing(fd)
        if listed is None:
            if fd >= 0:
                os.close(fd)
            if problems is not None:
                problems.add(source, f"cannot read {folder}")
            continue
        try:
            dirs = yield from _folder(fd, folder, inside, listed, left_out, problems, source)
        finally:
            os.close(fd)
        pending += [(os.path.join(folder, name), f"{inside}{name}/") for name in reversed(dirs)]


def _folder(fd: int, folder: str, inside: str, listed: tuple[list[str], list[str], set[str]],
            left_out: Callable[[str], bool] | None, problems: PathProblems | None,
            source: str) -> Generator[Walked, None, list[str]]:
    """One folder's entries, from its listing and its open descriptor `fd`; returns the
    folders to walk below it, sorted. Problems are named in the walk's order: the folders,
    then the other entries, sorted."""
    dirs, files, links = listed
    if inside == "":
        dirs = [name for name in dirs if name != MANIFEST_DIR]
    if left_out is not None:
        dirs = [name for name in dirs if not left_out(os.path.join(folder, name))]
        files = [name for name in files if not left_out(os.path.join(folder, name))]
    dirs.sort()
    if problems is not None:
        for name in dirs:
            problems.check(source, os.path.join(folder, name), name in links)
    for name in (name for name in dirs if name in links):
        if (target := _link_target(name, fd)) is not None:
            yield inside + name, "symlink", 0, target, None
    for name in sorted(files):
        try:
            info = os.lstat(name, dir_fd=fd)
        except OSError as error:   # gone meanwhile, or in a folder this process cannot search
            if problems is not None and not isinstance(error, FileNotFoundError):
                problems.add(source, f"unreadable {os.path.join(folder, name)}")
            continue
        if problems is not None:
            problems.check_walked(source, folder, fd, name, info)
        if stat.S_ISLNK(info.st_mode):
            if (target := _link_target(name, fd)) is not None:
                yield inside + name, "symlink", 0, target, None
        elif stat.S_ISREG(info.st_mode):
            yield inside + name, "file", info.st_size, None, info.st_mtime_ns
    return [name for name in dirs if name not in links]


def _link_target(name: str, fd: int) -> str | None:
    """The target of the link `name` in the folder `fd`; None when it is no longer a link
    (replaced since the listing: duplicity names it in the run's warning)."""
    try:
        return os.readlink(name, dir_fd=fd)
    except OSError:
        return None


def _listing(fd: int) -> tuple[list[str], list[str], set[str]] | None:
    """A folder's names as os.walk splits them (folders, links to folders among them; the rest),
    and which of them are links, from the listing's file types; None when it cannot be listed.
    Names only, as os.walk keeps: a folder of a million files holds a million strings, not a
    million DirEntry objects and their stat results."""
    dirs: list[str] = []
    files: list[str] = []
    links: set[str] = set()
    try:
        with os.scandir(fd) as listing:
            for item in listing:
                try:
                    is_dir = item.is_dir()   # follows a link, as os.walk does
                except OSError:   # a link loop, or gone meanwhile: os.walk lists it with the files
                    is_dir = False
                (dirs if is_dir else files).append(item.name)
                try:
                    if item.is_symlink():
                        links.add(item.name)
                except OSError:
                    continue   # gone meanwhile: its lstat below says so
    except OSError:
        return None
    return dirs, files, links


def _digested(entries: Iterator[Entry], root: Path, prefix: str,
              cache: FilesCache | None = None) -> Iterator[Entry]:
    """The entries with their files' SHA-256, hashed by a few threads (hashlib lets go of the
    GIL while it hashes, so the cores share a large tree), a bounded batch at a time and in
    order; a file the cache knows unchanged is not read, and every digest is written to the
    cache's next generation. A file that cannot be read is left out, as duplicity names it."""
    def digest(entry: Entry) -> str | None:
        if entry.kind != "file":
            return ""
        try:
            return file_digest(root / entry.path[len(prefix):])
        except OSError:
            return None
    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        while batch := list(islice(entries, _HASH_BATCH)):
            known = [_known(cache, entry) for entry in batch]
            todo = [entry for entry, sha256 in zip(batch, known) if sha256 is None]
            hashed = iter(pool.map(digest, todo))
            for entry, sha256 in zip(batch, known):
                sha256 = sha256 if sha256 is not None else next(hashed)
                if sha256 is None:
                    continue
                if sha256 and cache is not None and entry.mtime_ns is not None:
                    cache.record(entry.path, entry.size, entry.mtime_ns, sha256)
                yield replace(entry, sha256=sha256) if sha256 else entry


def _known(cache: FilesCache | None, entry: Entry) -> str | None:
    if cache is None or entry.kind != "file" or entry.mtime_ns is None:
        return None
    return cache.known(entry.path, entry.size, entry.mtime_ns)


def manifest_line(record: dict[str, object]) -> bytes:
    """One manifest line as UTF-8. A name that is not UTF-8 (os.walk's surrogate escapes) is
    written with JSON's \\u escapes instead, which json.loads reads back to the same escapes,
    and os.fsencode to the same bytes: lossless, and still a UTF-8 text file."""
    try:
        return (_UTF8_JSON.encode(record) + "\n").encode()
    except UnicodeEncodeError:
        return (_ASCII_JSON.encode(record) + "\n").encode()


def line_of(path: str, kind: str, size: int, sha256: str | None, target: str | None) -> bytes:
    """An entry's manifest line from its fields: the bytes manifest_line writes for its record.
    A file whose path JSON writes as it is (printable ASCII but `"` and `\\`) is formatted
    directly: most of a 500,000-file source, where json's encoder was a third of the
    manifest's time."""
    if kind == "file" and _WRITTEN_AS_IS.fullmatch(path) and (
            sha256 is None or _WRITTEN_AS_IS.fullmatch(sha256)):
        digest = "" if sha256 is None else f', "sha256": "{sha256}"'
        return f'{{"path": "{path}", "kind": "file", "size": {size}{digest}}}\n'.encode()
    record: dict[str, object] = {"path": path, "kind": kind}
    if kind == "file":
        record["size"] = size
        if sha256 is not None:
            record["sha256"] = sha256
    else:
        record["target"] = target
    return manifest_line(record)


def write_manifest(root: Path, paths: Mapping[str, Path] | None = None,
                   on_tick: Callable[[], None] | None = None,
                   cache: FilesCache | None = None,
                   excludes: Mapping[str, tuple[str, ...]] | None = None,
                   problems: PathProblems | None = None) -> ManifestSummary:
    """Hash every file under root (the staging folder) into root's manifest, and list the
    files of each `paths:` source as `<name>/...` with their size (read in place, often large
    and static: hashing them would read them whole on every run); returns the count, the total
    size and the manifest's own digest. `cache`: the host's files cache (an incremental reads
    only the files that changed; see offsite.run.files_cache). `on_tick` is called every
    TICK_ENTRIES entries (the run checks there that it still holds its host lease). `excludes`:
    each path's duplicity exclude globs; what they leave out is not listed (not in the set).
    The walk of the `paths:` sources also gathers their `problems` (one walk before duplicity,
    not two)."""
    target = manifest_path(root)
    target.parent.mkdir(mode=0o700, exist_ok=True)
    files = total = 0
    digest = hashlib.sha256()
    with open(target, "wb") as handle:
        header = manifest_line({"offsite_manifest": FORMAT})
        handle.write(header)
        digest.update(header)
        staged = ((entry.path, entry.kind, entry.size, entry.sha256, entry.target)
                  for entry in walk(root, cache=cache))
        sources = [staged] + [   # a `paths:` source's fields, with no sha256 and no Entry
            ((path, kind, size, None, link) for path, kind, size, link, _ in _walked(
                Path(top), f"{name}/", exclusion((excludes or {}).get(name, ())), problems))
            for name, top in sorted((paths or {}).items())]
        fields = (walked for source in sources for walked in source)
        while batch := list(islice(fields, TICK_ENTRIES)):
            if on_tick is not None:
                on_tick()
            lines = b"".join([line_of(*walked) for walked in batch])
            handle.write(lines)
            digest.update(lines)
            files += sum(1 for walked in batch if walked[1] == "file")
            total += sum(walked[2] for walked in batch)   # a symlink's size is 0
    return ManifestSummary(files, total, digest.hexdigest())


class ManifestUnreadable(ValueError):
    """The restored manifest is missing, truncated or not ours."""


def read_manifest(path: Path) -> Iterator[Entry]:
    """The entries of a manifest; raises ManifestUnreadable on anything that is not one."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ManifestUnreadable("the backup holds no .offsite/manifest.jsonl") from None
    with handle:
        header = handle.readline(MAX_LINE_BYTES)
        try:
            if json.loads(header).get("offsite_manifest") != FORMAT:
                raise ManifestUnreadable("unknown manifest format")
        except (ValueError, AttributeError):
            raise ManifestUnreadable("the manifest's first line is not an offsite header") from None
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES), b""), 2):
            try:
                item = json.loads(raw)
                yield Entry(str(item["path"]), str(item["kind"]), int(item.get("size", 0)),
                            item.get("sha256"), item.get("target"))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ManifestUnreadable(f"manifest line {number} is not an entry") from None
