"""Proof of restorability: the digest manifest in every backup, `offsite verify` restoring from
the target alone on a fresh cache (on another host's worker, on the control node, locally), and
failing with one alert when a volume is corrupt or the restore differs from the manifest.
`offsite list` reads the target, not Redis. Real workers, duplicity, gpg, moto."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VENV_BIN, describe, merged_env, run_command
from tests.test_backup_flow import backup, record_of
from tests.test_failures import attributes, only_alert
from tests.seaweed import S3_SERVERS

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s


def tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("alpha\n" * 1000)
    (root / "sub" / "b.bin").write_bytes(os.urandom(150_000))
    (root / "link").symlink_to("a.txt")
    return root


def two_hosts(make_config: Any, data: Path, **overrides: Any) -> Path:
    return make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                                    "verify": {"where": "drills"}},
                        "drills": {"scripts": {"none": {"bash": "true"}}}}, **overrides)


def verify(run_offsite: Any, config: Path, *args: str, expect_rc: int = 0) -> Any:
    result = run_offsite("verify", "carcosa", *args, config=config, timeout=180)
    assert result.returncode == expect_rc, describe(result)
    return result


@pytest.mark.parametrize("target_store", S3_SERVERS, indirect=True)
def test_full_incr_then_verify_on_another_hosts_worker_and_on_control_with_no_cache(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    config = two_hosts(make_config, data)
    start_worker(config, "carcosa")
    start_worker(config, "drills")
    full = backup(run_offsite, config, "carcosa", "full")
    assert full["manifest"]["files"] == 2
    (data / "new.txt").write_text("after the full")
    incr = backup(run_offsite, config, "carcosa", "incr")
    assert incr["type"] == "incr" and incr["manifest"]["files"] == 3
    shutil.rmtree(tmp_path / "cache")        # the host's cache is gone: the target must do

    result = verify(run_offsite, config, "--wait", "--timeout", "150")
    assert "queue backup.drills" in result.stdout
    run_id = result.stdout.split()[1]
    record = record_of(run_offsite, config, "carcosa", run_id)
    assert record["type"] == "verify" and record["state"] == "succeeded", record
    assert record["verify"]["files_checked"] == 3 and record["verify"]["mismatch_count"] == 0
    assert record["verify"]["backup_set"] == incr["backup_set"]
    assert record["steps"][0]["worker"].startswith("drills@")
    assert not any((tmp_path / "cache" / ".verify-tmp").iterdir()), "the restore is removed"

    on_control = make_config({"carcosa": {"scripts": {"files": {"bash": "true"}}},
                              "drills": {"scripts": {"none": {"bash": "true"}}}},
                             filename="control.yaml")
    start_control(on_control)
    result = run_offsite("verify", "carcosa", "--wait", "--timeout", "150",
                         "--time", full["backup_set"], config=on_control, timeout=180)
    assert result.returncode == 0, describe(result)
    assert "queue offsite.control" in result.stdout
    record = record_of(run_offsite, on_control, "carcosa", result.stdout.split()[1])
    assert record["verify"]["files_checked"] == 2
    assert record["verify"]["backup_set"] == full["backup_set"]
    assert record["steps"][0]["worker"].startswith("control@")


def file_config(make_config: Any, tmp_path: Path, data: Path) -> Path:
    return make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                       target={"url": f"file://{tmp_path}/target", "volsize": 1})


def test_a_corrupt_volume_fails_verify_with_one_alert_naming_the_host(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    (data / "big.bin").write_bytes(os.urandom(3_000_000))
    config = file_config(make_config, tmp_path, data)
    start_worker(config, "carcosa")
    start_control(config)
    backup(run_offsite, config, "carcosa", "full")
    volume = sorted((tmp_path / "target" / "carcosa").glob("*duplicity-full.*.vol2.difftar.gpg"))[0]
    raw = bytearray(volume.read_bytes())
    for offset in range(1000, 1100):
        raw[offset] ^= 0xFF
    volume.write_bytes(bytes(raw))

    result = verify(run_offsite, config, "--wait", "--timeout", "150", expect_rc=1)
    record = record_of(run_offsite, config, "carcosa", result.stdout.split()[1])
    assert record["state"] == "failed" and record["error"]["failure_class"] == "verify_failed"
    alert = only_alert(aws)
    assert attributes(alert) == {"host": "carcosa", "type": "verify", "class": "verify_failed"}
    assert "does not restore" in alert["Message"]


def test_a_restore_that_differs_from_its_manifest_fails_verify_listing_the_file(
        make_config: Any, run_offsite: Any, offsite_env: Any, tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    config = file_config(make_config, tmp_path, data)
    # A backup whose content no longer matches its manifest (bit rot in staging before the
    # upload): stage the tree and its manifest, change one byte, upload with duplicity itself.
    staging = tmp_path / "forged"
    shutil.copytree(data, staging / "files", symlinks=True)
    from offsite.run.manifest import write_manifest
    write_manifest(staging)
    (staging / "files" / "a.txt").write_text("alphA\n" + "alpha\n" * 999)
    env = merged_env(offsite_env, {"PASSPHRASE": (tmp_path / "passphrase").read_text().strip()})
    forged = run_command([str(VENV_BIN / "duplicity"), "full", "--archive-dir",
                          str(tmp_path / "forger-cache"), "--name", "carcosa", str(staging),
                          f"file://{tmp_path}/target/carcosa"], env=env, cwd=tmp_path,
                         timeout=120)
    assert forged.returncode == 0, describe(forged)

    result = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert result.returncode == 1, describe(result)
    assert "1 mismatch(es)" in result.stdout
    assert "different: files/a.txt has another SHA-256" in result.stdout


def test_list_reads_the_target_like_collection_status_with_redis_down(
        make_config: Any, run_offsite: Any, offsite_env: Any, tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         broker_url="redis://127.0.0.1:1/0",
                         target={"url": f"file://{tmp_path}/target"})
    for kind in ("full", "incr", "full", "incr", "incr", "full"):
        (data / f"{kind}-{len(list(data.iterdir()))}").write_text(kind)
        result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config)
        assert result.returncode == 0, describe(result)
    shutil.rmtree(tmp_path / "cache")
    listed = run_offsite("list", "carcosa", "--json", config=config)
    assert listed.returncode == 0, describe(listed)
    chains = json.loads(listed.stdout)["chains"]
    assert [[s["type"] for s in chain["sets"]] for chain in chains] == [
        ["full", "incr"], ["full", "incr", "incr"], ["full"]]

    env = merged_env(offsite_env, {"PASSPHRASE": (tmp_path / "passphrase").read_text().strip()})
    status = run_command([str(VENV_BIN / "duplicity"), "collection-status", "--archive-dir",
                          str(tmp_path / "other-cache"), "--name", "carcosa",
                          "--file-prefix-archive", "data-",   # the split layout's volumes
                          f"file://{tmp_path}/target/carcosa"], env=env, cwd=tmp_path,
                         timeout=120)
    assert status.returncode == 0, describe(status)
    theirs = re.findall(r"^\s+(Full|Incremental)\s+(.+?)\s+(\d+)\s*$", status.stdout, re.M)
    ours = [(s["type"], s["volumes"]) for chain in chains for s in chain["sets"]]
    assert [("full" if kind == "Full" else "incr", int(volumes))
            for kind, _, volumes in theirs] == ours
    assert status.stdout.count("Chain start time:") == len(chains) == 3


def test_verify_covers_paths_sources_by_their_file_list_and_sizes(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data, pdfs = tree(tmp_path / "data"), tree(tmp_path / "pdfs")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                                      "paths": {"pdfs": str(pdfs)}}},
                         target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    result = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert "4 file(s)" in result.stdout and "0 mismatch(es)" in result.stdout
