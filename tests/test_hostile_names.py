"""Any file name backs up: names that are not UTF-8 (Latin-1 from old systems, stray bytes) in
a script's output and in a `paths:` folder are recorded losslessly in the digest manifest and
restored byte-identical. Real duplicity, a file:// target."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from offsite.run.manifest import manifest_path, read_manifest, write_manifest
from tests.helpers import describe

NAMES = [b"caf\xe9.sql", b"\xff\xfe raw", b"ok-\xc3\xa9t\xc3\xa9.txt", b"half \xe2\x82.txt"]


def make_tree(folder: Path) -> None:
    os.makedirs(os.fsencode(folder) + b"/dir-\xe9", exist_ok=True)
    for name in NAMES:
        with open(os.fsencode(folder) + b"/" + name, "wb") as handle:
            handle.write(b"content of " + name + b"\n")
    with open(os.fsencode(folder) + b"/dir-\xe9/inner\xe9", "wb") as handle:
        handle.write(b"inner\n")
    os.symlink(b"caf\xe9.sql", os.fsencode(folder) + b"/link-\xe9")


def byte_tree(folder: Path) -> dict[bytes, bytes]:
    """Every file and link under folder by its name's bytes: content, or the link's target."""
    found: dict[bytes, bytes] = {}
    top = os.fsencode(folder)
    for here, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(here, name)
            relative = os.path.relpath(path, top)
            if os.path.islink(path):
                found[relative] = b"-> " + os.readlink(path)
            else:
                with open(path, "rb") as handle:
                    found[relative] = handle.read()
    return found


def test_names_that_are_not_utf8_are_recorded_losslessly(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    make_tree(staging)
    summary = write_manifest(staging)
    assert summary.files == len(NAMES) + 1
    manifest_path(staging).read_bytes().decode("utf-8")   # still a UTF-8 text file
    recorded = {os.fsencode(entry.path) for entry in read_manifest(manifest_path(staging))}
    assert recorded == set(byte_tree(staging)) - {b".offsite/manifest.jsonl"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_host_with_names_that_are_not_utf8_backs_up_and_restores_them_byte_identical(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    dumps, tree = tmp_path / "dumps", tmp_path / "tree"
    dumps.mkdir()
    tree.mkdir()
    make_tree(dumps)
    make_tree(tree)
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {dumps}/. ."}},
                                      "paths": {"old": str(tree)}}},
                         target={"url": f"file://{tmp_path}/target"})
    for kind in ("full", "incr"):
        if kind == "incr":
            with open(os.fsencode(tree) + b"/new \xe9", "wb") as handle:
                handle.write(b"added\n")
        result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config)
        assert result.returncode == 0, describe(result)
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=120)
    assert result.returncode == 0, describe(result)
    assert byte_tree(restored / "files") == byte_tree(dumps)
    assert byte_tree(restored / "old") == byte_tree(tree)
    drill = run_offsite("verify", "carcosa", "--local", "--json", config=config, timeout=180)
    assert drill.returncode == 0, describe(drill)
    assert json.loads(drill.stdout)["verify"]["mismatch_count"] == 0
