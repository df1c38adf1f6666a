"""duplicity: pure builders of its command lines and environment, and the runs that use them."""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from offsite.config import Config
from offsite.constants import BackupType
from offsite.errors import CommandError, OffsiteError
from offsite.execute import CommandResult, run_command
from offsite.sources import (archive_path, host_sources, record_uploaded, relocate,
                             scan_problems, write_manifest)
from offsite.staging import host_cache
from offsite.target import probe_bucket


def _find_duplicity() -> str:
    """The duplicity installed beside this interpreter (the same virtualenv), else on PATH."""
    return shutil.which("duplicity", path=os.path.dirname(sys.executable)) or "duplicity"


DUPLICITY = _find_duplicity()
_ACTIONS = {BackupType.FULL: "full", BackupType.INCR: "incremental"}
_STAT_LINE = re.compile(r"^(\w+) (-?[\d.]+)")

EXIT_MEANINGS = {
    3: "the source hostname changed (another machine wrote this chain)",
    11: "the restore destination is not empty",
    17: "no full backup chain exists yet for an incremental",
    19: "the path is not in the backup",
    23: "bad usage, or another duplicity holds the archive lock",
    30: "duplicity crashed (unhandled error)",
    31: "gpg failed: wrong passphrase or missing key",
    42: "the source path changed since the last backup",
    50: "the storage backend failed: missing bucket, bad credentials or unreachable endpoint",
}


@dataclass(frozen=True)
class UploadStats:
    source_files: int
    source_bytes: int
    new_files: int
    changed_files: int
    deleted_files: int
    bytes_uploaded: int
    errors: int
    elapsed_s: float
    problems: tuple[str, ...] = ()    # named files of `paths:` not backed up as they are

    def as_dict(self) -> dict[str, float | int]:
        numbers = asdict(self)
        del numbers["problems"]
        return numbers


def common_flags(config: Config, host: str, archive_dir: Path) -> list[str]:
    flags = ["--archive-dir", str(archive_dir), "--name", host]
    if config.target.endpoint_url:
        flags += ["--s3-endpoint-url", config.target.endpoint_url]
    if config.target.region:
        flags += ["--s3-region-name", config.target.region]
    return flags


def upload_tempdir(archive_dir: Path) -> Path:
    """Where duplicity builds volumes during an upload: beside its cache, not in /tmp, so the
    leftovers of a killed upload are found and removed by the next one."""
    return archive_dir / "upload-tmp"


def backup_argv(config: Config, host: str, backup_type: BackupType, archive_dir: Path) -> list[str]:
    sources = host_sources(config, host)
    return [DUPLICITY, _ACTIONS[backup_type], *common_flags(config, host, archive_dir),
            "--tempdir", str(upload_tempdir(archive_dir)),
            "--volsize", str(config.target.volsize),
            "--num-retries", str(config.target.retries),
            "--backend-retry-delay", str(config.target.retry_delay),
            *sources.selection, str(sources.root), config.target.host_url(host)]


def restore_argv(config: Config, host: str, dest: Path, archive_dir: Path,
                 time: str | None = None, path: str | None = None) -> list[str]:
    flags = common_flags(config, host, archive_dir)
    if time:
        flags += ["--time", time]
    if path:
        flags += ["--path-to-restore", path]
    return [DUPLICITY, "restore", *flags, config.target.host_url(host), str(dest)]


def read_passphrase(config: Config, host: str | None) -> str:
    """The encryption passphrase from env PASSPHRASE or encryption.passphrase_file on this host."""
    if passphrase := os.environ.get("PASSPHRASE"):
        return passphrase
    path = config.encryption.passphrase_file
    if path is None:
        raise OffsiteError("no passphrase: set PASSPHRASE or encryption.passphrase_file",
                           host=host, step="encryption")
    try:
        passphrase = path.read_text().strip()
    except OSError as exc:
        raise OffsiteError(f"cannot read passphrase file {path}: {exc.strerror}",
                           host=host, step="encryption") from None
    if not passphrase:
        raise OffsiteError(f"passphrase file {path} is empty", host=host, step="encryption")
    return passphrase


def duplicity_env(config: Config, passphrase: str, base: dict[str, str]) -> dict[str, str]:
    """The child's environment: passphrase and upload keys live here and nowhere else."""
    env = {name: value for name, value in base.items() if not name.startswith("ALERT_AWS_")}
    env["PASSPHRASE"] = passphrase
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if value := base.get("DUPLICITY_" + name):
            env[name] = value
    if config.target.endpoint_url:
        # S3-compatible services reject the checksums boto3 >= 1.36 sends by default.
        env.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        env.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    return env


def parse_stats(stdout: str) -> UploadStats:
    """The `Backup Statistics` block duplicity prints; raises ValueError when it is absent."""
    values: dict[str, float] = {}
    in_block = False
    for line in stdout.splitlines():
        if "[ Backup Statistics ]" in line:
            in_block = True
        elif in_block and line.startswith("-----"):
            break
        elif in_block and (match := _STAT_LINE.match(line)):
            values[match.group(1)] = float(match.group(2))
    if not values:
        raise ValueError("duplicity printed no statistics")
    whole = lambda key: int(values.get(key, 0))  # noqa: E731
    return UploadStats(source_files=whole("SourceFiles"), source_bytes=whole("SourceFileSize"),
                       new_files=whole("NewFiles"), changed_files=whole("ChangedFiles"),
                       deleted_files=whole("DeletedFiles"),
                       bytes_uploaded=whole("TotalDestinationSizeChange"),
                       errors=whole("Errors"), elapsed_s=values.get("ElapsedTime", 0.0))


def explain(error: CommandError) -> CommandError:
    """The same error with what duplicity's exit code means and its own last error line."""
    meaning = EXIT_MEANINGS.get(error.returncode or -1)
    if meaning is None:
        return error
    detail = _last_error_line(error.stderr_tail)
    cause = f"duplicity exit {error.returncode}: {meaning}" + (f" ({detail})" if detail else "")
    return CommandError(cause, host=error.host, step=error.step, exit_code=error.returncode,
                        stderr_tail=error.stderr_tail)


def _last_error_line(stderr_tail: str) -> str:
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors or lines or [""])[-1][:300]


def upload(config: Config, host: str, backup_type: BackupType,
           on_tick: Callable[[], None] | None = None) -> UploadStats:
    """duplicity full/incremental of the host's staging dir; raises CommandError on failure."""
    archive_dir = host_cache(config, host)
    tempdir = upload_tempdir(archive_dir)
    shutil.rmtree(tempdir, ignore_errors=True)
    tempdir.mkdir(mode=0o700)
    problem = probe_bucket(config)
    if problem is not None and problem[1]:
        raise CommandError(f"{problem[0]} (not retried)", host=host, step="upload",
                           exit_code=None, stderr_tail="")
    sources = host_sources(config, host)
    write_manifest(sources)
    problems = tuple(scan_problems(sources))
    result = _run_duplicity(config, host, "upload",
                            backup_argv(config, host, backup_type, archive_dir), on_tick)
    try:
        stats = parse_stats(result.stdout)
    except ValueError:
        raise CommandError("duplicity exited 0 but printed no statistics", host=host,
                           step="upload", exit_code=0, stderr_tail=result.stderr_tail) from None
    record_uploaded(config, host, sources)
    if not problems:
        return stats
    return replace(stats, errors=max(stats.errors, len(problems)), problems=problems)


def restore(config: Config, host: str, dest: Path, time: str | None = None,
            path: str | None = None) -> None:
    """Restore the host's backup (as of `time`, optionally one `path`) into `dest`."""
    if dest.exists() and any(dest.iterdir()):
        raise OffsiteError(f"restore destination {dest} is not empty: choose a new folder",
                           host=host, step="restore")
    if dest.exists():
        dest.rmdir()
    sources = host_sources(config, host)
    if path is not None or not sources.paths:
        inner = archive_path(sources, path) if path is not None else None
        _run_duplicity(config, host, "restore",
                       restore_argv(config, host, dest, host_cache(config, host), time, inner))
        return
    restoring = dest.parent / f".{dest.name}.restoring"
    shutil.rmtree(restoring, ignore_errors=True)
    try:
        _run_duplicity(config, host, "restore",
                       restore_argv(config, host, restoring, host_cache(config, host), time))
        relocate(restoring, dest, sources)
    finally:
        shutil.rmtree(restoring, ignore_errors=True)


def _run_duplicity(config: Config, host: str, step: str, argv: list[str],
                   on_tick: Callable[[], None] | None = None) -> CommandResult:
    """Run duplicity with the passphrase and upload keys in its environment only; a failure
    says what its exit code means."""
    env = duplicity_env(config, read_passphrase(config, host), dict(os.environ))
    try:
        return run_command(argv, timeout_s=config.target.upload_timeout, host=host, step=step,
                           env=env, on_tick=on_tick)
    except CommandError as error:
        raise explain(error) from None
