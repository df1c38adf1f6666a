"""`paths:` sources: large trees read by duplicity where they are, not copied into staging.

A full, one file changed in a 50 MB tree, an incremental that uploads about the change, a
restore that is byte-identical (paths as DEST/<name>/ beside DEST/<script>/); a change of the
sources starts a new chain with a note; a symlink loop is a warning naming it, not a crash."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe
from tests.test_backup_flow import backup, same_tree

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

TREE_MB = 50


def big_tree(root: Path) -> None:
    """50 MB of incompressible files, so an upload's size says what it carried."""
    for index in range(50):
        folder = root / f"part-{index // 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-{index:02d}.bin").write_bytes(os.urandom(TREE_MB * 1_000_000 // 50))


def test_paths_are_backed_up_in_place_incrementally_and_restored_by_name(
        make_config: Any, start_worker: Any, run_offsite: Any, tmp_path: Path) -> None:
    tree, notes = tmp_path / "srv" / "pdfs", tmp_path / "srv" / "notes"
    big_tree(tree)
    notes.mkdir(parents=True)
    (notes / "a.txt").write_text("first notes\n")
    hosts = {"carcosa": {"scripts": {"db": {"bash": "echo dump > dump.sql"}},
                         "paths": {"pdfs": str(tree)}}}
    config = make_config(hosts, target={"url": f"file://{tmp_path}/target"})
    worker = start_worker(config, "carcosa")

    full = backup(run_offsite, config, "carcosa", "full")
    assert full["state"] == "succeeded", full
    assert full["bytes_uploaded"] > TREE_MB * 1_000_000 * 0.9
    assert not any((tmp_path / "staging" / "carcosa").glob("**/*.bin")), "copied to staging"

    (tree / "part-2" / "file-23.bin").write_bytes(os.urandom(200_000))
    incr = backup(run_offsite, config, "carcosa", "incr")
    assert incr["state"] == "succeeded" and incr["type"] == "incr", incr
    assert incr["bytes_uploaded"] < 2_000_000, "an incremental carries the change, not the tree"

    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=300)
    assert result.returncode == 0, describe(result)
    assert sorted(p.name for p in restored.iterdir()) == [".offsite", "db", "pdfs"]
    assert (restored / "db" / "dump.sql").read_text() == "dump\n"
    assert same_tree(restored / "pdfs", tree)

    # adding a path changes the sources: the next incremental starts a new chain, and says so
    hosts["carcosa"]["paths"]["notes"] = str(notes)
    config = make_config(hosts, target={"url": f"file://{tmp_path}/target"})
    worker.restart()   # a worker reads its config when it starts
    changed = backup(run_offsite, config, "carcosa", "incr")
    assert changed["state"] == "succeeded" and changed["type"] == "full", changed
    assert any("sources changed" in note for note in changed["notes"]), changed["notes"]
    one_file = tmp_path / "one-file"
    result = run_offsite("restore", "carcosa", str(one_file), "--path", "notes/a.txt",
                         config=config, timeout=300)
    assert result.returncode == 0, describe(result)
    assert sorted(p.name for p in one_file.iterdir()) == ["notes"]   # DEST/P, not DEST itself
    assert (one_file / "notes" / "a.txt").read_text() == "first notes\n"
    one_folder = tmp_path / "one-folder"
    result = run_offsite("restore", "carcosa", str(one_folder), "--path", "/db/", config=config,
                         timeout=300)
    assert result.returncode == 0, describe(result)
    assert (one_folder / "db" / "dump.sql").read_text() == "dump\n"


def test_a_symlink_loop_in_a_path_is_a_warning_naming_it(
        make_config: Any, start_worker: Any, run_offsite: Any, tmp_path: Path) -> None:
    tree = tmp_path / "srv" / "repos"
    (tree / "git").mkdir(parents=True)
    (tree / "git" / "HEAD").write_text("ref: refs/heads/main\n")
    os.symlink("loop-b", tree / "git" / "loop-a")
    os.symlink("loop-a", tree / "git" / "loop-b")
    config = make_config({"carcosa": {"scripts": {"db": {"bash": "echo dump > dump.sql"}},
                                      "paths": {"repos": str(tree)}}},
                         target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    record = backup(run_offsite, config, "carcosa", "full")
    assert record["state"] == "warning", record
    named = [note for note in record["notes"] if "symlink loop" in note]
    assert any(str(tree / "git" / "loop-a") in note for note in named), record["notes"]
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=300)
    assert result.returncode == 0, describe(result)
    assert (restored / "repos" / "git" / "HEAD").read_text() == "ref: refs/heads/main\n"
