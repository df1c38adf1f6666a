"""The host lock file of local commands (offsite.host.lock) under hostile conditions: a symlink,
a folder or a FIFO in its place is refused in one line and nothing it points to is written;
garbage or huge contents are ignored, never shown whole."""
from __future__ import annotations

import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from offsite.constants import BackupType
from offsite.host.lock import FileHostLease, HostLockUnusable
from offsite.run.local import LocalLease, local_run_id
from tests.helpers import describe

RUN = "carcosa-full-20261204T200000Z-local"


def test_a_symlink_in_place_of_the_lock_is_refused_and_its_target_untouched(
        tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / ".carcosa.lock").symlink_to(victim)
    with pytest.raises(HostLockUnusable, match="cannot open the host lock file"):
        FileHostLease(tmp_path / ".carcosa.lock").acquire("carcosa", RUN)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_folder_or_fifo_in_place_of_the_lock_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ".carcosa.lock"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(HostLockUnusable):
        FileHostLease(path).acquire("carcosa", RUN)


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"x" * 1_000_000,
                                     b"carcosa-full-20261204T200000Z-local\x1b[2J"])
def test_garbage_in_the_lock_file_is_ignored_and_never_shown(tmp_path: Path,
                                                            content: bytes) -> None:
    path = tmp_path / ".carcosa.lock"
    path.write_bytes(content)
    other = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)   # another process holds it
        lease = FileHostLease(path)
        assert lease.holder("carcosa") == "(a local run)"
        assert not lease.acquire("carcosa", RUN)
        run_id = local_run_id(LocalLease(lease, None), "carcosa", BackupType.FULL,
                              datetime(2026, 12, 4, 20, 0, tzinfo=timezone.utc))
        assert run_id == RUN
    finally:
        os.close(other)


def test_a_local_backup_with_a_symlinked_lock_fails_in_one_line(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}})
    (tmp_path / "staging").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "staging" / ".carcosa.lock").symlink_to(tmp_path / "elsewhere")
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 1, describe(result)
    assert len(result.stderr.strip().splitlines()) == 1, describe(result)
    assert "host lock file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "elsewhere").exists()
