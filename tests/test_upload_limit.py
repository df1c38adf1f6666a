"""The upload bandwidth cap (`target.upload_limit`, `hosts.<host>.upload_limit`): an upload of
N bytes under a cap of R bytes/s takes at least N/R seconds (a lower bound: correctness, not a
timing guess), to S3 (boto3's own max_bandwidth) and to a file:// target; no cap is the default.
Hostile values: tests/test_hostile_config.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import load_config, parse_config
from offsite.constants import BackupType, RunState
from offsite.config.types import parse_rate
from offsite.host.settings import resolve_host
from offsite.run.local_backup import run_local

DATA_BYTES = 1_500_000
CAP = "250KB/s"
CAP_BYTES = 250_000   # 6 s at least: above an uncapped upload step (about 2 s unloaded)


@pytest.mark.parametrize(("text", "rate"), [
    ("10MB/s", 10_000_000), ("512KiB/s", 524_288), ("1.5 MB/s", 1_500_000),
    ("2gb/s", 2_000_000_000), (250_000, 250_000), ("1000B/s", 1000)])
def test_rates_are_read_in_bytes_per_second(text: Any, rate: int) -> None:
    assert parse_rate(text) == rate


def test_no_cap_unless_configured_and_a_host_overrides_the_fleet() -> None:
    data: dict[str, Any] = {"target": {"url": "file:///backups"}, "hosts": {
        "a": {"scripts": {"s": {"bash": "true"}}},
        "b": {"scripts": {"s": {"bash": "true"}}, "upload_limit": "1MB/s"}}}
    plain = parse_config(data)
    assert plain.target.upload_limit is None
    assert resolve_host(plain, "a").upload_limit is None
    assert resolve_host(plain, "b").upload_limit == 1_000_000
    data["target"]["upload_limit"] = "5MiB/s"
    capped = parse_config(data)
    assert resolve_host(capped, "a").upload_limit == 5 * 2**20
    assert resolve_host(capped, "b").upload_limit == 1_000_000


@pytest.mark.slow
def test_an_upload_to_s3_under_a_cap_takes_at_least_size_over_cap(
        make_config: Any, tmp_path: Path, aws_credentials: None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(DATA_BYTES))   # incompressible
    path = make_config({"carcosa": {"scripts": {"copy": {"bash": f"cp {data}/* ."}},
                                    "upload_limit": CAP}})
    record = run_local(load_config(path), "carcosa", BackupType.FULL)
    assert record.state == RunState.SUCCEEDED, record.error
    (upload,) = [step for step in record.steps if step.name == "upload"]
    assert record.bytes_uploaded and record.bytes_uploaded >= DATA_BYTES
    assert upload.duration_s is not None and upload.duration_s >= DATA_BYTES / CAP_BYTES, (
        f"{record.bytes_uploaded} bytes uploaded in {upload.duration_s:.2f}s")


PUT_TO_FILE = """
import os, sys, time
from offsite.duplicity.bandwidth import install, limit_from_env
if (rate := limit_from_env()) is not None:
    install(rate)
from duplicity import backend, path
from duplicity.backends.localbackend import LocalBackend
local = LocalBackend(backend.ParsedUrl("file://" + sys.argv[1]))
source = path.Path(sys.argv[2])
started = time.monotonic()
local._move(source, b"volume") is not False or local._put(source, b"volume")
print(time.monotonic() - started)
"""


def test_a_put_to_a_file_target_under_a_cap_takes_at_least_size_over_cap(
        tmp_path: Path) -> None:
    """duplicity's own file:// backend, in a process of its own as under the launcher."""
    size, rate = 300_000, 200_000
    (tmp_path / "target").mkdir()
    (tmp_path / "volume").write_bytes(os.urandom(size))
    result = subprocess.run([sys.executable, "-c", PUT_TO_FILE, str(tmp_path / "target"),
                             str(tmp_path / "volume")], capture_output=True, text=True,
                            env={**os.environ, "OFFSITE_UPLOAD_LIMIT": str(rate)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) >= size / rate
    assert (tmp_path / "target" / "volume").stat().st_size == size
    assert (tmp_path / "volume").exists(), "copied, not moved by a rename (which is uncapped)"
