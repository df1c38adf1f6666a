"""A drill's comparison streams (offsite.proof.compare): every kind of difference is still
named; and a drill whose record was made final while it ran leaves that record as it is.
Real files; the drill case runs real duplicity against a file:// target."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import load_config
from offsite.host.settings import resolve_host
from offsite.constants import RunState, RunType
from offsite.ledger.lease import MemoryHostLease
from offsite.ledger.records import MemoryRunStore
from offsite.ledger.run_record import RunRecord
from offsite.ledger.run_record import VerifyRecord
from offsite.proof.compare import compare
from offsite.proof.verify import run_verify
from offsite.run.context import RunContext, queue_run
from offsite.run.manifest import write_manifest
from offsite.run.steps import StaleRun
from tests.helpers import describe, wait_until


def staged(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    for number in range(600):   # more than one batch
        (root / "d" / f"f{number:04}").write_text(f"file {number}\n")
    (root / "same.txt").write_text("same\n")
    (root / "content.txt").write_text("before\n")
    (root / "size.txt").write_text("short\n")
    (root / "gone.txt").write_text("gone\n")
    (root / "kind").write_text("a file\n")
    os.symlink("same.txt", root / "link")
    write_manifest(root)
    return root


def test_an_identical_restore_has_no_mismatch(tmp_path: Path) -> None:
    root = staged(tmp_path / "restore")
    outcome = VerifyRecord(backup_set="20261204T000000Z")
    ticks: list[int] = []
    compare(root, outcome, on_tick=lambda: ticks.append(1))
    assert outcome.mismatch_count == 0, outcome.mismatches
    assert outcome.files_checked == 605
    assert len(ticks) >= 3   # the lease is checked while comparing, not only around it


def test_every_kind_of_difference_is_named(tmp_path: Path) -> None:
    root = staged(tmp_path / "restore")
    (root / "content.txt").write_text("AFTER!\n")
    (root / "size.txt").write_text("longer now\n")
    (root / "gone.txt").unlink()
    (root / "kind").unlink()
    (root / "kind").mkdir()
    (root / "link").unlink()
    os.symlink("elsewhere", root / "link")
    (root / "d" / "extra").write_text("not in the manifest\n")
    outcome = VerifyRecord(backup_set="20261204T000000Z")
    compare(root, outcome)
    assert sorted(outcome.mismatches) == sorted([
        "different: content.txt has another SHA-256 than the manifest",
        "different: size.txt has 11 bytes, the manifest says 6",
        "missing: gone.txt is in the manifest but not in the restore",
        "different: kind is a folder or other, the manifest says file",
        "different: link links to elsewhere, the manifest says same.txt",
        "extra: d/extra is in the restore but not in the manifest",
    ])
    assert not (tmp_path / "manifest-index.sqlite").exists()


def test_extras_are_counted_as_the_walk_lists_them(tmp_path: Path) -> None:
    """The count that decides whether anything extra was restored reads folder listings, not
    each file: it must count what the manifest's walk lists (a link to a folder, a file in a
    nested `.offsite` folder, a broken link), each alone, and leave out what it skips (a fifo,
    the root's own manifest folder)."""
    root = staged(tmp_path / "restore")
    (root / "d" / "sub" / ".offsite").mkdir(parents=True)
    os.mkfifo(root / "d" / "fifo")
    (root / ".offsite" / "scratch").write_text("the manifest's own folder\n")
    extras = {"d/sub/.offsite/nested": lambda path: path.write_text("not in the manifest\n"),
              "folder-link": lambda path: os.symlink("d", path),
              "d/broken": lambda path: os.symlink("nowhere", path)}
    for name, make in extras.items():
        make(root / name)
        outcome = VerifyRecord(backup_set="20261204T000000Z")
        compare(root, outcome)
        assert outcome.mismatches == [
            f"extra: {name} is in the restore but not in the manifest"], name
        os.unlink(root / name)
    outcome = VerifyRecord(backup_set="20261204T000000Z")
    compare(root, outcome)
    assert outcome.mismatches == [] and outcome.files_checked == 605


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "restore").mkdir()
    outcome = VerifyRecord(backup_set="20261204T000000Z")
    compare(tmp_path / "restore", outcome)
    assert outcome.mismatches == ["manifest: the backup holds no .offsite/manifest.jsonl"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_drill_finishing_after_its_record_was_made_final_does_not_overwrite_it(
        make_config: Any, run_offsite: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for number in range(300):
        (data / f"f{number}").write_text(f"{number}\n" * 100)
    path = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                       target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=path)
    assert result.returncode == 0, describe(result)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store, lease = MemoryRunStore(), MemoryHostLease()
    config = load_config(path)
    ctx = RunContext(config=config, settings=resolve_host(config, "carcosa"), store=store,
                     lease=lease, run_id="carcosa-verify-20261204T000000Z", worker="test")
    queue_run(store, "carcosa", RunType.VERIFY, ctx.run_id)
    errors: list[BaseException] = []

    def drill() -> None:
        try:
            run_verify(ctx, None)
        except BaseException as error:
            errors.append(error)
    thread = threading.Thread(target=drill)
    thread.start()
    wait_until(lambda: _state(store, ctx.run_id) == RunState.RUNNING, timeout=60,
               what="the drill to start", interval=0.01)

    def settle(record: RunRecord) -> None:   # as the watchdog does with a run it found lost
        record.state = RunState.LOST
    store.update(ctx.run_id, settle)
    thread.join(timeout=120)
    assert len(errors) == 1 and isinstance(errors[0], StaleRun), errors
    assert _state(store, ctx.run_id) == RunState.LOST
    assert lease.holder("carcosa") is None
    assert not list((load_config(path).cache_dir / ".verify-tmp").iterdir())


def _state(store: MemoryRunStore, run_id: str) -> RunState | None:
    record = store.get(run_id)
    return record.state if record else None
