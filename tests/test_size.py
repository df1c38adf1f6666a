"""Cost that follows size: a drill or restore refused before duplicity starts when its folder
has less room than the set restores to (offsite.proof.space, `verify.scratch`); the `paths:`
sources walked once, their problems gathered on the digest manifest's walk; a set's volumes
tagged in bounded parallel, a failing one named. Real files, real moto, real duplicity."""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import load_config
from offsite.config.security import VOLUME_TAG
from offsite.constants import RunState, RunType
from offsite.errors import NoRestoreSpace
from offsite.host.settings import resolve_host
from offsite.host.sources import PathProblems, host_sources, scan_problems
from offsite.ledger.lease import MemoryHostLease
from offsite.ledger.records import MemoryRunStore
from offsite.proof.space import RestoreSize, require_space
from offsite.proof.verify import run_verify
from offsite.run.context import RunContext, queue_run
from offsite.run.manifest import write_manifest
from offsite.run.steps import failure_class
from offsite.target.catalog import BackupSet
from offsite.target.seal import parse_seal
from offsite.target.thaw import tag_data_volumes
from tests.helpers import describe


def test_a_folder_short_of_room_is_named_with_the_bytes_needed_and_free(tmp_path: Path) -> None:
    needed = shutil.disk_usage(tmp_path).free + 2**30   # more than is free, whatever others do
    size = RestoreSize(bytes=needed, files=10, recorded=True)
    try:
        require_space([(tmp_path / "new" / "dest", needed)], size, "the set of X", "carcosa",
                      "verify", "set verify.scratch")
    except NoRestoreSpace as error:
        refused = error
    else:
        raise AssertionError("a set larger than the free space was not refused")
    line = refused.one_line()
    assert f"not enough free space in {tmp_path / 'new' / 'dest'}" in line
    assert f"needs {needed} bytes" in line and "available; set verify.scratch" in line
    assert "\n" not in line
    assert failure_class("verify", refused) == "verify_no_space"
    require_space([(tmp_path, 1), (tmp_path / "x", 1)], size, "y", "carcosa", "verify", "")


def _seal_claims(target: Path, restored_bytes: int) -> None:
    """The full's seal, rewritten (still a valid seal) to record a set larger than the disk:
    the record is what a restore is judged by, and a real set that large is not cheap."""
    (path,) = target.glob("offsite-seal.full.*.json")
    seal = parse_seal(path.read_bytes(), path.name)
    assert seal.restored_bytes is not None and seal.restored_bytes > 0
    text = path.read_text().replace(f'"bytes": {seal.restored_bytes}',
                                    f'"bytes": {restored_bytes}')
    path.write_text(text)
    assert parse_seal(path.read_bytes(), path.name).restored_bytes == restored_bytes


@pytest.mark.slow
def test_a_drill_whose_set_is_larger_than_the_free_space_fails_before_restoring(
        make_config: Any, run_offsite: Any, tmp_path: Path, monkeypatch: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n" * 1000)
    scratch = tmp_path / "scratch"
    path = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                       target={"url": f"file://{tmp_path}/target"},
                       verify={"scratch": str(scratch)})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=path)
    assert result.returncode == 0, describe(result)
    larger = shutil.disk_usage(tmp_path).free + 2**30
    _seal_claims(tmp_path / "target" / "carcosa", larger)

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store, lease = MemoryRunStore(), MemoryHostLease()
    config = load_config(path)
    ctx = RunContext(config=config, settings=resolve_host(config, "carcosa"), store=store,
                     lease=lease, run_id="carcosa-verify-20261204T000000Z", worker="test")
    queue_run(store, "carcosa", RunType.VERIFY, ctx.run_id)
    try:
        run_verify(ctx, None)
    except NoRestoreSpace:
        pass
    record = store.get(ctx.run_id)
    assert record is not None and record.state == RunState.FAILED and record.error
    assert record.error.failure_class == "verify_no_space"
    assert f"not enough free space in {scratch}" in record.error.message
    assert f"restores to {larger} bytes in 1 files" in record.error.message
    assert list(scratch.iterdir()) == []   # nothing restored, no private folder made

    dest = tmp_path / "restored"
    refused = run_offsite("restore", "carcosa", str(dest), config=path)
    assert refused.returncode == 1, describe(refused)
    assert f"not enough free space in {tmp_path}" in refused.stdout + refused.stderr
    assert not dest.exists()


def test_the_paths_problems_come_from_the_manifests_walk(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "sub" / "ok.txt").write_text("ok")
    os.symlink("loop-b", files / "sub" / "loop-a")
    os.symlink("loop-a", files / "sub" / "loop-b")
    staging = tmp_path / "staging"
    staging.mkdir()
    paths = {"files": files, "gone": tmp_path / "missing"}
    walked = PathProblems()
    summary = write_manifest(staging, paths, problems=walked)
    assert summary.files == 1
    sources = host_sources(_settings(tmp_path, staging, paths))
    assert sorted(walked.result()) == sorted(scan_problems(sources))
    assert sorted(walked.result()) == sorted([
        f"path files: symlink loop {files / 'sub' / 'loop-a'}",
        f"path files: symlink loop {files / 'sub' / 'loop-b'}",
        f"path gone: {tmp_path / 'missing'} is not a readable folder"])


def _settings(tmp_path: Path, staging: Path, paths: dict[str, Path]) -> Any:
    class Settings:   # what host_sources reads of a host's settings
        pass
    settings = Settings()
    settings.staging = staging   # type: ignore[attr-defined]
    settings.paths = paths       # type: ignore[attr-defined]
    settings.excludes = {}       # type: ignore[attr-defined]
    return settings


def test_tagging_a_sets_volumes_tags_each_and_names_one_that_fails(
        make_config: Any, aws: Any) -> None:
    settings = resolve_host(load_config(make_config(
        {"carcosa": {"scripts": {"files": {"bash": "true"}}}})), "carcosa")
    names = [f"data-duplicity-full.20261101T000000Z.vol{n}.difftar.gpg" for n in range(1, 21)]
    for name in names:
        aws.s3.put_object(Bucket=aws.bucket, Key=f"carcosa/{name}", Body=b"v")
    missing = "data-duplicity-full.20261101T000000Z.vol21.difftar.gpg"
    written = BackupSet(kind="full", time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                        data_prefix="data-", volume_names=names + [missing])
    note = tag_data_volumes(settings, written)
    assert note is not None and note.startswith("1 of 21 data volume(s) could not be tagged")
    assert missing in note
    for name in names:
        tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=f"carcosa/{name}")["TagSet"]
        assert tags == [{"Key": VOLUME_TAG[0], "Value": VOLUME_TAG[1]}]
