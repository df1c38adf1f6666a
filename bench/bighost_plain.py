"""The baselines of the big-host benchmark that are not offsite: `tar | gpg` with duplicity's gpg
defaults, plain `duplicity restore` of a set and a streaming digest compare of a restored tree
against its source; and the clean-up between repeats."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.overhead_runs import PASSPHRASE
from bench.services import BenchError, tail
from offsite.config.model import Config
from offsite.crypto.encryption import S2K_COUNT
from offsite.duplicity.command import duplicity_env, restore_argv
from offsite.host.settings import HostSettings, resolve_host
from offsite.host.sources import host_cache
from offsite.run.manifest import file_digest


def tar_gpg(source: Path, out_file: Path, passphrase_file: Path, home: Path,
            env: dict[str, str]) -> float:
    """`tar -c SOURCE | gpg --symmetric` into `out_file`: gpg's own defaults for cipher and
    compression (duplicity passes none but the s2k count offsite sets), the same passphrase."""
    home.mkdir(mode=0o700, exist_ok=True)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    script = ('set -o pipefail; tar -cf - -C "$1" . | gpg --batch --no-tty --homedir "$2" '
              '--pinentry-mode loopback --passphrase-file "$3" --s2k-count "$4" '
              '--symmetric -o "$5"')
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script, "tar-gpg", str(source), str(home),
                             str(passphrase_file), str(S2K_COUNT), str(out_file)],
                            env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], env=env, check=False,
                   capture_output=True)
    if result.returncode != 0:
        raise BenchError(f"tar | gpg exited {result.returncode}: {result.stderr[-2000:]}")
    return seconds


@dataclass(frozen=True)
class RestoreCheck:
    restore_s: float
    digest_s: float
    files: int
    mismatches: int
    peak_rss_kib: int

    @property
    def seconds(self) -> float:
        return self.restore_s + self.digest_s


def digest_compare(source: Path, restored: Path) -> tuple[int, int]:
    """Streams both trees (one file at a time, nothing kept): (files compared, mismatches,
    a missing, differing or extra file each)."""
    files = mismatches = 0
    for folder, _, names in os.walk(source):
        for name in names:
            path = Path(folder) / name
            twin = restored / path.relative_to(source)
            files += 1
            if not twin.is_file() or file_digest(path) != file_digest(twin):
                mismatches += 1
    restored_files = sum(len(names) for _, _, names in os.walk(restored))
    return files, mismatches + max(0, restored_files - files)


def plain_restore_check(config: Config, host: str, source: Path, work: Path,
                        env: dict[str, str]) -> RestoreCheck:
    """`duplicity restore` of the newest set of `config`'s chain for `host` (its own cache,
    emptied first), then the digest compare against `source`; the restore is removed."""
    settings = resolve_host(config, host)
    dest, cache = work / "plain-restore", work / "plain-restore-cache"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    argv = restore_argv(settings, dest, cache, None, None, settings.target.volume_prefix)
    err_path = work / "plain-restore.err"
    started = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, env=duplicity_env(settings, PASSPHRASE, env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)   # wait4: the child's own peak RSS
    restore_s = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"plain duplicity restore failed:\n{tail(err_path)}")
    started = time.monotonic()
    files, mismatches = digest_compare(source, dest)
    digest_s = time.monotonic() - started
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return RestoreCheck(restore_s, digest_s, files, mismatches, usage.ru_maxrss)


def target_folder(settings: HostSettings) -> Path:
    if not settings.target.url.startswith("file://"):
        raise BenchError(f"the bench cleans file:// targets only, not {settings.target.url}")
    return Path(settings.target.url[len("file://"):])


def clean_host(config: Config, host: str) -> None:
    """Remove a host's sets and its duplicity cache: the next full starts from nothing."""
    settings = resolve_host(config, host)
    shutil.rmtree(target_folder(settings), ignore_errors=True)
    shutil.rmtree(host_cache(settings), ignore_errors=True)


def clean_plain(config: Config, root: Path) -> None:
    """Remove a plain_config's target and folder (cache, staging)."""
    url = config.target.url
    if url.startswith("file://"):
        shutil.rmtree(url[len("file://"):], ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
