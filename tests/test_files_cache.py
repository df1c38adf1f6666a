"""An incremental's digest manifest reads only the staged files that changed (the host's files
cache, offsite.run.files_cache), and what it records agrees with what duplicity uploads and
restore returns. Real files, real duplicity, a file:// target."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from offsite.run.files_cache import FilesCache
from offsite.run.manifest import file_digest, manifest_path, read_manifest, write_manifest
from tests.helpers import describe


def digests(staging: Path) -> dict[str, str | None]:
    return {entry.path: entry.sha256 for entry in read_manifest(manifest_path(staging))}


def manifest_of(staging: Path, cache_dir: Path, incremental: bool) -> tuple[dict[str, Any], int]:
    with FilesCache(cache_dir, reuse=incremental) as cache:
        write_manifest(staging, cache=cache)
        cache.commit()
        return digests(staging), cache.hits


def test_an_incremental_reads_only_what_changed(tmp_path: Path) -> None:
    staging, cache_dir = tmp_path / "staging", tmp_path / "cache"
    staging.mkdir()
    cache_dir.mkdir()
    for name in ("same", "grown", "rewritten"):
        (staging / name).write_bytes(b"before\n")
    full, hits = manifest_of(staging, cache_dir, incremental=False)
    assert hits == 0 and len(full) == 3

    (staging / "grown").write_bytes(b"before, and after\n")
    os.utime(staging / "grown", ns=(0, (staging / "same").stat().st_mtime_ns + 5))
    stamp = (staging / "rewritten").stat().st_mtime_ns
    (staging / "rewritten").write_bytes(b"AFTER!\n")     # same size, mtime set back
    os.utime(staging / "rewritten", ns=(stamp, stamp))
    incremental, hits = manifest_of(staging, cache_dir, incremental=True)
    assert hits == 2   # `same` and `rewritten`: neither read
    assert incremental["same"] == full["same"]
    assert incremental["grown"] == file_digest(staging / "grown") != full["grown"]
    # the documented blind spot, duplicity's own: size and mtime unchanged keep the digest
    assert incremental["rewritten"] == full["rewritten"]


def test_a_full_reads_everything_and_an_uncommitted_run_leaves_the_cache(tmp_path: Path) -> None:
    staging, cache_dir = tmp_path / "staging", tmp_path / "cache"
    staging.mkdir()
    cache_dir.mkdir()
    (staging / "a").write_bytes(b"alpha\n")
    manifest_of(staging, cache_dir, incremental=False)
    stamp = (staging / "a").stat().st_mtime_ns
    (staging / "a").write_bytes(b"ALPHA\n")
    os.utime(staging / "a", ns=(stamp, stamp))
    full, hits = manifest_of(staging, cache_dir, incremental=False)
    assert hits == 0 and full["a"] == file_digest(staging / "a")

    (staging / "a").write_bytes(b"gamma\n")   # a run that fails before its upload is confirmed
    os.utime(staging / "a", ns=(stamp, stamp + 1))
    with FilesCache(cache_dir, reuse=True) as cache:
        write_manifest(staging, cache=cache)
    (staging / "a").write_bytes(b"ALPHA\n")
    os.utime(staging / "a", ns=(stamp, stamp))
    again, hits = manifest_of(staging, cache_dir, incremental=True)
    assert hits == 1 and again["a"] == full["a"]


def test_a_damaged_cache_is_no_cache(tmp_path: Path) -> None:
    staging, cache_dir = tmp_path / "staging", tmp_path / "cache"
    staging.mkdir()
    cache_dir.mkdir()
    (staging / "a").write_bytes(b"alpha\n")
    (cache_dir / "offsite-files.sqlite").write_bytes(b"not a database" * 100)
    found, hits = manifest_of(staging, cache_dir, incremental=True)
    assert hits == 0 and found["a"] == file_digest(staging / "a")
    assert manifest_of(staging, cache_dir, incremental=True)[1] == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_file_changed_behind_its_mtime_restores_as_duplicity_kept_it_and_verifies(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    """The policy end to end: a file whose content changed with size and mtime set back is
    neither re-hashed nor uploaded again by duplicity; restore returns its previous content,
    and verify agrees (the manifest says what the set holds). A plainly changed file restores
    new."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "hidden.txt").write_text("before\n")
    (data / "plain.txt").write_text("before\n")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/target"})
    assert run_offsite("backup", "carcosa", "--type", "full", "--local",
                       config=config).returncode == 0
    stamp = (data / "hidden.txt").stat().st_mtime_ns
    (data / "hidden.txt").write_text("AFTER!\n")
    os.utime(data / "hidden.txt", ns=(stamp, stamp))
    (data / "plain.txt").write_text("after, longer\n")
    incr = run_offsite("backup", "carcosa", "--type", "incr", "--local", config=config)
    assert incr.returncode == 0, describe(incr)
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=120)
    assert result.returncode == 0, describe(result)
    assert (restored / "files" / "hidden.txt").read_text() == "before\n"
    assert (restored / "files" / "plain.txt").read_text() == "after, longer\n"
    drill = run_offsite("verify", "carcosa", "--local", "--json", config=config, timeout=180)
    assert drill.returncode == 0, describe(drill)
    assert json.loads(drill.stdout)["verify"]["mismatch_count"] == 0
