"""The digest manifest's walk (offsite.run.manifest.walk) reads folders with os.scandir, for
speed on 500,000-file `paths:` sources; what it lists, in which order, and the problems it
gathers must stay exactly os.walk's. The reference below is the os.walk walk it replaced.
Real files: nested folders, links to folders, files and nowhere, a link loop, a fifo, a name
that is not UTF-8, excluded paths and a `.offsite` folder at and below the top."""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from offsite.host.sources import PathProblems, exclusion
from offsite.run.manifest import MANIFEST_DIR, Entry, line_of, manifest_line, walk


def os_walk_entries(root: Path, prefix: str, left_out: Callable[[str], bool] | None = None,
                    problems: PathProblems | None = None) -> Iterator[Entry]:
    """The walk before os.scandir (offsite/run/manifest.py at 00d1750), as the reference."""
    source = prefix.rstrip("/")
    if problems is not None and not problems.top(source, str(root)):
        return
    onerror = None if problems is None else (
        lambda error: problems.add(source, f"cannot read {error.filename}"))
    for folder, dirs, files in os.walk(root, onerror=onerror):
        here = Path(folder)
        if here == root and not prefix:
            dirs[:] = [d for d in dirs if d != MANIFEST_DIR]
        if left_out is not None:
            dirs[:] = [d for d in dirs if not left_out(os.path.join(folder, d))]
            files = [f for f in files if not left_out(os.path.join(folder, f))]
        dirs.sort()
        if problems is not None:   # the folders, then the other entries sorted (the walk's order)
            for entry in dirs + sorted(files):
                problems.check(source, os.path.join(folder, entry))
        for link in sorted(d for d in dirs if (here / d).is_symlink()):
            yield Entry(prefix + str((here / link).relative_to(root)), "symlink",
                        target=os.readlink(here / link))
        for name in sorted(files):
            path = here / name
            relative = prefix + str(path.relative_to(root))
            try:
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    yield Entry(relative, "symlink", target=os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    yield Entry(relative, "file", info.st_size, mtime_ns=info.st_mtime_ns)
            except OSError:
                continue


def hostile_tree(root: Path) -> None:
    for folder in ("b/deep/er", "a", "a-b", "a.b", "A", "b/cache", "z/.offsite", ".offsite"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(("a/1", "a/10", "a/2", "a-b/x", "a.b/y", "A/z", "b/deep/f",
                                   "b/deep/er/g", "b/cache/skip.me", "b/keep.log", "top",
                                   "z/.offsite/manifest.jsonl", ".offsite/manifest.jsonl")):
        (root / name).write_text(f"{number}\n" * number)
    os.symlink("b", root / "link-to-folder")
    os.symlink("top", root / "b" / "link-to-file")
    os.symlink("nowhere", root / "dangling")
    os.symlink("loop-2", root / "a" / "loop-1")
    os.symlink("loop-1", root / "a" / "loop-2")
    os.mkfifo(root / "b" / "fifo")
    (root / os.fsdecode(b"caf\xe9")).write_text("latin-1 name\n")


@pytest.mark.parametrize("prefix", ["", "files/"])
@pytest.mark.parametrize("globs", [(), ("**/cache", "**/*.log")])
def test_the_walk_lists_what_os_walk_lists_in_its_order(
        tmp_path: Path, prefix: str, globs: tuple[str, ...]) -> None:
    root = tmp_path / "tree"
    hostile_tree(root)
    left_out = exclusion(globs)
    found, expected = PathProblems(), PathProblems()
    listed = list(walk(root, prefix=prefix, digests=False, left_out=left_out, problems=found))
    reference = list(os_walk_entries(root, prefix, left_out, expected))
    assert listed == reference
    assert found.result() == expected.result()
    assert any(entry.kind == "symlink" and entry.path == f"{prefix}link-to-folder"
               for entry in listed)
    assert (f"{prefix}.offsite/manifest.jsonl" in {entry.path for entry in listed}) == bool(
        prefix)
    assert sorted(found.result()) == [f"path {prefix.rstrip('/')}: symlink loop {root}/a/loop-1",
                                      f"path {prefix.rstrip('/')}: symlink loop {root}/a/loop-2"]


def test_a_missing_top_is_named_and_lists_nothing(tmp_path: Path) -> None:
    found = PathProblems()
    assert list(walk(tmp_path / "gone", prefix="files/", digests=False, problems=found)) == []
    assert found.result() == [f"path files: {tmp_path / 'gone'} is not a readable folder"]


@pytest.mark.parametrize("path", [
    "d00001/f0000001", "a b/c~d", "quote\"d", "back\\slash", "tab\there", "new\nline",
    "del\x7f", "caf\u00e9", os.fsdecode(b"caf\xe9"), "\u2028sep", "{}[]:,", ""])
@pytest.mark.parametrize("sha256", [None, "ab" * 32, 'not"hex'])
def test_a_files_line_is_the_bytes_json_writes(path: str, sha256: str | None) -> None:
    """The direct format of a plain file's line gives exactly json's bytes, and a line that
    needs escapes still goes through json."""
    record: dict[str, object] = {"path": path, "kind": "file", "size": 4096}
    if sha256 is not None:
        record["sha256"] = sha256
    line = line_of(path, "file", 4096, sha256, None)
    assert line == manifest_line(record)
    assert json.loads(line) == record


def test_a_links_line_is_the_bytes_json_writes() -> None:
    line = line_of("a/link", "symlink", 0, None, "../t\"x")
    assert line == manifest_line({"path": "a/link", "kind": "symlink", "target": '../t"x'})


def test_a_large_flat_folder_is_walked_in_names_not_listing_objects(tmp_path: Path) -> None:
    """A folder of many files is held as its names while it is walked (os.walk's memory): the
    DirEntry objects and stat results of a listing cost ~0.8 KiB a file, 800 MB for a million
    files in one folder (a mail spool, a cache)."""
    import tracemalloc
    flat = tmp_path / "flat"
    flat.mkdir()
    files = 3_000
    for number in range(files):
        (flat / f"f{number:06}").touch()
    tracemalloc.start()
    try:
        listed = sum(1 for _ in walk(flat, prefix="flat/", digests=False,
                                     problems=PathProblems()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert listed == files
    assert peak < 150 * files, peak   # bytes a file: a name and its list slot, not a DirEntry


NOBODY = 65534
_ACL_READ_FOR_NOBODY = b"".join(  # system.posix_acl_access: owner rw, user nobody r, mask r
    [struct.pack("<I", 2)] + [struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in (
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, NOBODY), (0x04, 0, 0xFFFFFFFF),
        (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))])


def _named_and_judged(root: Path) -> tuple[list[str], list[str]]:
    """What the walk names unreadable under root, and what os.access says is not readable."""
    found = PathProblems()
    listed = list(walk(root, prefix="t/", digests=False, problems=found))
    named = sorted(line.rsplit("/", 1)[1] for line in found.result() if "unreadable" in line)
    judged = sorted(entry.path[2:] for entry in listed
                    if not os.access(root / entry.path[2:], os.R_OK))
    return named, judged


def _as_nobody(root: Path) -> tuple[list[str], list[str]]:
    """_named_and_judged in a child that is user and group nobody, with no other groups."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps(_named_and_judged(root)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    named, judged = json.loads(reported)
    return named, judged


def test_unreadable_files_are_named_as_os_access_judges_them(tmp_path: Path) -> None:
    """The walk takes "readable" from the lstat's mode bits where they grant it and asks
    os.access only where they do not (root's capabilities, an ACL's grant): what it names is
    what os.access says, for the file's owner, the others and root."""
    if os.geteuid() != 0:
        root = tmp_path / "tree"
        root.mkdir()
        for name, mode in (("mine-0000", 0o000), ("mine-0400", 0o400)):
            (root / name).touch(mode)
        assert _named_and_judged(root) == (["mine-0000"], ["mine-0000"])
        return
    root = Path(tempfile.mkdtemp(prefix="offsite-walk-"))   # nobody must reach it: not tmp_path
    try:
        root.chmod(0o755)
        for name, owner, mode in (("root-0600", 0, 0o600), ("root-0640", 0, 0o640),
                                  ("root-0644", 0, 0o644), ("nobody-0000", NOBODY, 0o000),
                                  ("nobody-0400", NOBODY, 0o400), ("root-0600-acl", 0, 0o600)):
            (root / name).touch()
            os.chown(root / name, owner, owner)
            (root / name).chmod(mode)
        os.setxattr(root / "root-0600-acl", "system.posix_acl_access", _ACL_READ_FOR_NOBODY)
        (root / "listed-not-searched").mkdir(0o744)   # nobody lists its names, cannot lstat them
        (root / "listed-not-searched" / "inside").touch(0o644)
        assert _named_and_judged(root) == ([], [])   # root: the capabilities read everything
        unreadable = ["nobody-0000", "root-0600", "root-0640"]
        # the ACL grants nobody its file; "inside" is named though the walk cannot list it
        assert _as_nobody(root) == (sorted(unreadable + ["inside"]), unreadable)
    finally:
        shutil.rmtree(root)


def test_a_folder_swapped_for_a_link_during_the_walk_is_not_followed(tmp_path: Path) -> None:
    """Between a folder's listing and its walk, a folder becomes a link to another tree, and a
    link to a folder becomes a folder: the walk neither follows the new link out of the source
    (it names the folder it cannot read) nor fails on the old link."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "kept").write_text("x")
    outside.mkdir()
    (outside / "secret").write_text("not in the source")
    (root / "was-link").symlink_to(outside)

    def swap(path: str) -> bool:   # the walk asks this of every name, after the listing
        if path.endswith("/sub"):
            shutil.rmtree(path)
            os.symlink(outside, path)
        elif path.endswith("/was-link"):
            os.unlink(path)
            os.mkdir(path)
        return False

    found = PathProblems()
    listed = [entry.path for entry in walk(root, prefix="t/", digests=False, left_out=swap,
                                           problems=found)]
    assert not [path for path in listed if "secret" in path or "kept" in path], listed
    assert "t/was-link" not in listed, listed
    assert any(f"cannot read {root}/sub" in line for line in found.result()), found.result()
