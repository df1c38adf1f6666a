"""`offsite ls` and `offsite find` against sets made by offsite: symmetric on a file:// target
(scripts and `paths:` named as a restore names them), and public-key on moto S3 with the secret
key from a file. Real duplicity and gpg."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe
from tests.security_harness import KeyPair, make_key_pair


def _local(run_offsite: Any, config: Path, kind: str, env: Any = None) -> None:
    result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config,
                         env_extra=env, timeout=180)
    assert result.returncode == 0 and ": succeeded" in result.stdout, describe(result)


def _json(run_offsite: Any, config: Path, *args: str, env: Any = None) -> Any:
    result = run_offsite(*args, "--json", config=config, env_extra=env, timeout=180)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ls_and_find_name_files_as_restore_does_across_sets(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "notes.txt").write_text("one\n")
    (data / "sub" / "dump.sql").write_text("select 1;\n")
    tree = tmp_path / "srv" / "rpg"
    tree.mkdir(parents=True)
    (tree / "map.pdf").write_bytes(os.urandom(2000))
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                                      "paths": {"rpg": str(tree)}}},
                         target={"url": f"file://{tmp_path}/target"})
    _local(run_offsite, config, "full")
    (data / "notes.txt").write_text("two\n")
    later = time.time() + 5     # another second than the full's (duplicity lists seconds)
    os.utime(data / "notes.txt", (later, later))
    _local(run_offsite, config, "incr")

    latest = _json(run_offsite, config, "ls", "carcosa")
    paths = [entry["path"] for entry in latest["files"]]
    assert {"files/notes.txt", "files/sub/dump.sql", "rpg/map.pdf"} <= set(paths), paths
    assert not [p for p in paths if p.startswith((".offsite", "srv", "var", "tmp"))], paths
    assert latest["type"] == "incr"
    sets = _json(run_offsite, config, "list", "carcosa")["chains"][0]["sets"]
    first = _json(run_offsite, config, "ls", "carcosa", "--time", sets[0]["time"])
    assert first["set"] == sets[0]["time"] and first["type"] == "full"
    under = _json(run_offsite, config, "ls", "carcosa", "files/sub")
    assert [entry["path"] for entry in under["files"]] == ["files/sub", "files/sub/dump.sql"]

    (notes,) = _json(run_offsite, config, "find", "carcosa", "notes.txt")
    assert notes["path"] == "files/notes.txt"
    assert [entry["set"] for entry in notes["sets"]] == [s["time"] for s in sets]
    assert notes["changed_in"] == [s["time"] for s in sets]      # changed in the incr
    (dump,) = _json(run_offsite, config, "find", "carcosa", "files/*/*.sql")
    assert dump["changed_in"] == [sets[0]["time"]]                # unchanged since the full
    missing = run_offsite("find", "carcosa", "*.docx", config=config, timeout=180)
    assert missing.returncode == 1, describe(missing)
    assert "no path of carcosa matches '*.docx' in any set" in missing.stdout
    text = run_offsite("ls", "carcosa", config=config, timeout=180)
    assert text.returncode == 0 and "rpg/map.pdf" in text.stdout, describe(text)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyPair]:
    key = make_key_pair(tmp_path_factory.mktemp("keys"), "backup")
    try:
        yield key
    finally:
        for home in (key.secret_home, key.public_home):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                           capture_output=True, timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ls_and_find_in_public_key_mode_need_the_secret_key(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path, pair: KeyPair) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         encryption={"mode": "public-key", "recipients": [pair.fingerprint],
                                     "public_keys_file": str(pair.public_file)})
    host_env = {"GNUPGHOME": str(pair.public_home), "PASSPHRASE": None}
    _local(run_offsite, config, "full", env=host_env)
    keyless = run_offsite("ls", "carcosa", config=config, env_extra=host_env, timeout=180)
    assert keyless.returncode == 1 and "no secret key" in keyless.stderr, describe(keyless)
    assert len(keyless.stderr.strip().splitlines()) == 1
    listed = _json(run_offsite, config, "ls", "carcosa", "--secret-keys-file",
                   str(pair.secret_file), env=host_env)
    assert [entry["path"] for entry in listed["files"]] == ["files", "files/a.txt"]
    (found,) = _json(run_offsite, config, "find", "carcosa", "a.*", "--secret-keys-file",
                     str(pair.secret_file), env=host_env)
    assert found["path"] == "files/a.txt" and len(found["sets"]) == 1
