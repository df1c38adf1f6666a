"""duplicity: pure builders of its command lines and environment, and the runs that use them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence
import os
import re
import shutil
import sys
import tempfile

from offsite.host.settings import HostSettings
from offsite.constants import BackupType
from offsite.crypto.encryption import (decryption_env, encrypt_flags, gpg_count_flags,
                                       public_keyring)
from offsite.duplicity.errors import describe_failure, read_log_tail
from offsite.duplicity.bandwidth import ENV as LIMIT_ENV
from offsite.duplicity.launch import launch_argv
from offsite.duplicity.progress import ProgressDeadline
from offsite.duplicity.uploaded import DIGESTS_ENV, record_path
from offsite.errors import CommandError, CommandTimedOut, OffsiteError
from offsite.host.sources import (Sources, archive_path, host_cache, host_sources,
                                  record_uploaded, relocate, scan_problems, write_manifest)
from offsite.process.execute import CommandResult, run_command
from offsite.target.bucket import UPLOAD_IDENTITY, probe_bucket, reading_identity


def _find_duplicity() -> str:
    """The duplicity installed beside this interpreter (the same virtualenv), else on PATH."""
    return shutil.which("duplicity", path=os.path.dirname(sys.executable)) or "duplicity"


DUPLICITY = _find_duplicity()
_ACTIONS = {BackupType.FULL: "full", BackupType.INCR: "incremental"}
_STAT_LINE = re.compile(r"^(\w+) (-?[\d.]+)")

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


def log_path(archive_dir: Path, step: str) -> Path:
    """duplicity's machine-readable log of the latest `step` run with this cache."""
    return archive_dir / f"{step}.log"


def common_flags(settings: HostSettings, archive_dir: Path, step: str) -> list[str]:
    flags = ["--archive-dir", str(archive_dir), "--name", settings.name,
             "--log-timestamp", "--log-file", str(log_path(archive_dir, step)),
             *gpg_count_flags()]
    if settings.target.endpoint_url:
        flags += ["--s3-endpoint-url", settings.target.endpoint_url]
    if settings.target.region:
        flags += ["--s3-region-name", settings.target.region]
    return flags


def upload_tempdir(archive_dir: Path) -> Path:
    """Where duplicity builds volumes during an upload: beside its cache, not in /tmp, so the
    leftovers of a killed upload are found and removed by the next one."""
    return archive_dir / ".upload-tmp"   # a dot: no host (the --name folder beside it) has one


def backup_argv(settings: HostSettings, backup_type: BackupType, archive_dir: Path,
                sources: Sources | None = None) -> list[str]:
    sources = sources or host_sources(settings)
    target = settings.target
    return [DUPLICITY, _ACTIONS[backup_type], *common_flags(settings, archive_dir, "upload"),
            "--tempdir", str(upload_tempdir(archive_dir)),
            "--volsize", str(target.volsize),
            "--num-retries", str(target.retries),
            "--backend-retry-delay", str(target.retry_delay),
            *encrypt_flags(settings.encryption), *prefix_flags(target.volume_prefix),
            *sources.selection, str(sources.root), target.url]


def prefix_flags(data_prefix: str) -> list[str]:
    """The name prefix of data volumes (offsite.config.security.DATA_PREFIX in the split
    layout); a chain is read with the prefix it was written with."""
    return ["--file-prefix-archive", data_prefix] if data_prefix else []


def restore_argv(settings: HostSettings, dest: Path, archive_dir: Path,
                 time: str | None = None, path: str | None = None,
                 data_prefix: str = "") -> list[str]:
    flags = common_flags(settings, archive_dir, "restore") + prefix_flags(data_prefix)
    if time:
        flags += ["--time", time]
    if path:
        flags += ["--path-to-restore", path]
    return [DUPLICITY, "restore", *flags, settings.target.url, str(dest)]


_OTHER_KEYS = ("ALERT_AWS_", "PRUNE_AWS_", "RECOVER_AWS_", "READ_AWS_", "DUPLICITY_AWS_")


def list_files_argv(settings: HostSettings, archive_dir: Path, time: str | None = None,
                    data_prefix: str = "") -> list[str]:
    """`duplicity list-current-files`: the files of the set at `time` (default the latest),
    read from the chain's signatures, no data volume decrypted."""
    flags = common_flags(settings, archive_dir, "list") + prefix_flags(data_prefix)
    if time:
        flags += ["--time", time]
    return [DUPLICITY, "list-current-files", *flags, settings.target.url]


LIST_MAX_BYTES = 128 * 1024 * 1024   # about two million paths of a set's listing


def run_list_files(settings: HostSettings, archive_dir: Path, time: str | None = None,
                   data_prefix: str = "", gnupg_home: Path | None = None) -> CommandResult:
    """list-current-files with this node's reading identity; raises CommandError naming the
    cause, or when the listing is larger than LIST_MAX_BYTES."""
    result = _run_duplicity(settings, "list", list_files_argv(
        settings, archive_dir, time, data_prefix), gnupg_home=gnupg_home,
        identity=reading_identity(), stdout_max_bytes=LIST_MAX_BYTES)
    if len(result.stdout) >= LIST_MAX_BYTES - 4096:
        raise CommandError(f"the set's listing is larger than {LIST_MAX_BYTES // 2**20} MiB: "
                           "give a PATH to list less", host=settings.name, step="list",
                           exit_code=None, stderr_tail="")
    return result


def duplicity_env(settings: HostSettings, passphrase: str, base: dict[str, str],
                  identity: str = UPLOAD_IDENTITY) -> dict[str, str]:
    """The child's environment: passphrase and the keys of one identity (`<identity>_AWS_*`:
    the upload keys for a backup, this node's reading identity for a restore) live here and
    nowhere else; the other identities' keys are left out."""
    env = {name: value for name, value in base.items() if not name.startswith(_OTHER_KEYS)}
    env["PASSPHRASE"] = passphrase
    keys = settings.target.keys(identity)   # a replica's: <NAME>_AWS_*
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if value := base.get(f"{keys}_{name}"):
            env[name] = value
    if settings.target.endpoint_url:
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


def explain(error: CommandError, log_path: Path) -> CommandError:
    """The same error, headed by the real cause read from duplicity's log and stderr."""
    failure = describe_failure(error.returncode, read_log_tail(log_path), error.stderr_tail)
    cause = f"duplicity exit {error.returncode}: {failure.headline}"
    if failure.detail and failure.detail not in failure.headline:
        cause += f" ({failure.detail})"
    return CommandError(cause, host=error.host, step=error.step, exit_code=error.returncode,
                        stderr_tail=error.stderr_tail)


def upload(settings: HostSettings, backup_type: BackupType,
           on_tick: Callable[[], None] | None = None,
           passphrase: str | None = None,
           walked: Sequence[str] | None = None) -> UploadStats:
    """duplicity full/incremental of the host's staging dir; raises CommandError on failure.
    `passphrase`: the one the caller read (else duplicity's is read here). `walked`: the
    problems of the `paths:` sources found by the caller's walk of them (the digest manifest's,
    offsite.run.manifest), so they are not walked again; None: walked here."""
    host = settings.name
    archive_dir = host_cache(settings)
    tempdir = upload_tempdir(archive_dir)
    shutil.rmtree(tempdir, ignore_errors=True)
    tempdir.mkdir(mode=0o700)
    problem = probe_bucket(settings.target)
    if problem is not None and problem[1]:
        raise CommandError(f"{problem[0]} (not retried)", host=host, step="upload",
                           exit_code=None, stderr_tail="")
    sources = host_sources(settings)
    write_manifest(sources)
    problems = tuple(scan_problems(sources) if walked is None else walked)
    uploaded = record_path(archive_dir)   # see offsite.duplicity.uploaded
    uploaded.unlink(missing_ok=True)
    try:
        with public_keyring(settings) as gnupg_home:
            result = _run_duplicity(settings, "upload",
                                    backup_argv(settings, backup_type, archive_dir, sources),
                                    on_tick, gnupg_home=gnupg_home, passphrase=passphrase,
                                    extra_env={DIGESTS_ENV: str(uploaded)})
    finally:
        # duplicity's own clean-up can leave a volume's temp file behind (seen when it resumes
        # a full cut short); nothing uses the folder between uploads
        shutil.rmtree(tempdir, ignore_errors=True)
    try:
        stats = parse_stats(result.stdout)
    except ValueError:
        raise CommandError("duplicity exited 0 but printed no statistics", host=host,
                           step="upload", exit_code=0, stderr_tail=result.stderr_tail) from None
    record_uploaded(settings, sources)
    if not problems:
        return stats
    return replace(stats, errors=max(stats.errors, len(problems)), problems=problems)


def run_restore(settings: HostSettings, dest: Path, archive_dir: Path,
                time: str | None = None, path: str | None = None, *, step: str = "restore",
                on_tick: Callable[[], None] | None = None, data_prefix: str = "",
                gnupg_home: Path | None = None,
                volume_names: Sequence[str] = ()) -> CommandResult:
    """duplicity restore into dest (which must not exist), the host's `paths:` sources as
    DEST/<name>/ beside DEST/<script>/ (see offsite.host.sources); raises CommandError naming the
    cause, RestoreStalled when no byte arrives for target.restore_progress_timeout (naming the
    volume of `volume_names`, in restore order, it was reading). data_prefix: the layout the set
    was written in; gnupg_home: a keyring with the secret key (public-key mode), else GNUPGHOME.

    duplicity restores into a private folder beside DEST (`.DEST.restoring-*`, never a folder
    that was there before) that becomes DEST when the restore is whole. A restore that fails
    leaves what it restored as DEST marked partial (DEST/PARTIAL_MARKER says why); one killed
    outright leaves only that dot-folder."""
    sources = host_sources(settings)
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.restoring-", dir=dest.parent))
    downloads = Path(tempfile.mkdtemp(prefix=".restore-tmp-", dir=archive_dir))
    restoring = holder / "tree"
    inner = archive_path(sources, path) if path is not None else None
    argv = restore_argv(settings, restoring, archive_dir, time, inner, data_prefix)
    argv[2:2] = ["--verbosity", "info", "--tempdir", str(downloads)]
    watch = ProgressDeadline([restoring, downloads], settings.target.restore_progress_timeout,
                             log_path(archive_dir, "restore"), volume_names, settings.name, step,
                             then=on_tick)
    try:
        result = _run_duplicity(settings, step, argv, watch, gnupg_home=gnupg_home,
                                identity=reading_identity())
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if path is not None or not sources.paths:
            restoring.rename(dest)
        else:
            relocate(restoring, dest, sources)
        shutil.rmtree(holder, ignore_errors=True)
        return result
    except OffsiteError as error:
        _keep_partial(restoring, dest, error)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


PARTIAL_MARKER = "OFFSITE-RESTORE-PARTIAL.txt"


def _keep_partial(restoring: Path, dest: Path, error: OffsiteError) -> None:
    """What a failed restore wrote becomes DEST, marked partial (never over a DEST that holds
    anything)."""
    try:
        if not restoring.is_dir() or not any(restoring.iterdir()):
            return
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if dest.exists():
            return
        restoring.rename(dest)
        (dest / PARTIAL_MARKER).write_text(
            "This restore did not finish: the files here are partial.\n"
            f"Cause: {error.one_line()}\n")
    except OSError:
        pass


def _run_duplicity(settings: HostSettings, step: str, argv: list[str],
                   on_tick: Callable[[], None] | None = None,
                   gnupg_home: Path | None = None,
                   passphrase: str | None = None,
                   identity: str = UPLOAD_IDENTITY,
                   stdout_max_bytes: int | None = None,
                   extra_env: dict[str, str] | None = None) -> CommandResult:
    """Run duplicity with the passphrase and one identity's keys in its environment only; a
    failure is explained from duplicity's own log (see offsite.duplicity.errors)."""
    env = duplicity_env(settings, "", dict(os.environ), identity)
    env.update(decryption_env(settings, gnupg_home, passphrase))
    env.pop(LIMIT_ENV, None)
    if step == "upload" and settings.upload_limit:   # offsite.duplicity.bandwidth
        env[LIMIT_ENV] = str(settings.upload_limit)
    env.update(extra_env or {})
    log_file = Path(argv[argv.index("--log-file") + 1])
    log_file.unlink(missing_ok=True)
    argv = launch_argv(argv)   # duplicity that cannot hang on its gpg (offsite.duplicity.launch)
    try:
        if stdout_max_bytes:
            return run_command(argv, timeout_s=settings.target.upload_timeout,
                               host=settings.name, step=step, env=env, on_tick=on_tick,
                               stdout_max_bytes=stdout_max_bytes, priority=settings.priority)
        return run_command(argv, timeout_s=settings.target.upload_timeout, host=settings.name,
                           step=step, env=env, on_tick=on_tick, priority=settings.priority)
    except CommandError as error:
        if isinstance(error, CommandTimedOut):
            raise
        raise explain(error, log_file) from None
