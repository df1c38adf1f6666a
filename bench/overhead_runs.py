"""One backup measured three ways: through offsite (`offsite backup --wait` and a real worker),
plain duplicity on the source tree, and the same work by hand (copy into a staging folder,
then duplicity on it). Every duplicity here is built by offsite's own `backup_argv`."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from bench.services import OFFSITE, BenchError, run_waited, tail
from offsite.config.model import Config
from offsite.constants import BackupType
from offsite.duplicity.command import backup_argv, duplicity_env, parse_stats, upload_tempdir
from offsite.host.settings import resolve_host
from offsite.host.sources import host_cache

PASSPHRASE = "bench-passphrase-not-a-secret"


@dataclass(frozen=True)
class OffsiteResult:
    end_to_end_s: float   # `offsite backup --wait`, as the user waits for it
    run_s: float          # record created -> finished
    queue_s: float        # record created -> started (message delivery)
    script_s: float
    upload_s: float
    bytes_uploaded: int
    run_id: str = ""
    steps: dict[str, float] = field(default_factory=dict)   # the run record's step seconds


@dataclass(frozen=True)
class PlainResult:
    seconds: float        # copy (by hand only) + duplicity
    copy_s: float
    bytes_uploaded: int
    peak_rss_kib: int


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _run_cli(argv: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env, timeout=4 * 3600)
    if result.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n"
                         f"{result.stderr[-3000:]}")
    return result.stdout


def run_offsite(config_path: Path, host: str, backup_type: BackupType,
                env: dict[str, str]) -> OffsiteResult:
    base = [OFFSITE, "--config", str(config_path)]
    started = time.monotonic()
    out = _run_cli(base + ["backup", host, "--type", backup_type.value, "--wait"], env)
    end_to_end = time.monotonic() - started
    match = re.search(r"queued (\S+)", out)
    if match is None:
        raise BenchError(f"no run id in the output of offsite backup:\n{out}")
    records = json.loads(_run_cli(base + ["status", host, "--json", "--limit", "5"], env))
    record = next((r for r in records if r["run_id"] == match.group(1)), None)
    if record is None or record["state"] != "succeeded":
        raise BenchError(f"run {match.group(1)} did not succeed: {record}")
    steps = {step["name"]: step["duration_s"] or 0.0 for step in record["steps"]}
    script_s = sum(value for name, value in steps.items() if name.startswith("script:"))
    return OffsiteResult(end_to_end_s=end_to_end,
                         run_s=_seconds(record["created_at"], record["finished_at"]),
                         queue_s=_seconds(record["created_at"], record["started_at"]),
                         script_s=script_s, upload_s=steps.get("upload", 0.0),
                         bytes_uploaded=int(record["bytes_uploaded"] or 0),
                         run_id=match.group(1), steps=steps)


def run_plain(config: Config, host: str, backup_type: BackupType, source: Path,
              env: dict[str, str], log_dir: Path, copy_from: Path | None = None,
              edit: Callable[[list[str]], list[str]] | None = None) -> PlainResult:
    """duplicity with offsite's command line on `source`; with `copy_from`, the tree is first
    copied into an emptied `source` (the work a dump script and offsite's staging do), and the
    copy is timed with it."""
    settings = resolve_host(config, host)
    archive_dir = host_cache(settings)
    upload_tempdir(archive_dir).mkdir(exist_ok=True)
    started = time.monotonic()
    if copy_from is not None:
        shutil.rmtree(source, ignore_errors=True)
        source.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(copy_from), str(source)], check=True)
    copy_s = time.monotonic() - started
    argv = backup_argv(settings, backup_type, archive_dir)
    argv[-2] = str(source)
    if edit is not None:
        argv = edit(argv)   # a variant of offsite's flags (bench.bighost_options)
    out_path, err_path = log_dir / "plain.out", log_dir / "plain.err"
    err_path.write_text("")
    code, usage = run_waited(argv, duplicity_env(settings, PASSPHRASE, env), out_path, err_path)
    seconds = time.monotonic() - started
    if code != 0:
        raise BenchError(f"{shlex.join(argv)} exited {code}:\n{tail(err_path)}")
    stats = parse_stats(out_path.read_text())
    return PlainResult(seconds, copy_s, stats.bytes_uploaded, usage.ru_maxrss)
