"""Pure builders of duplicity's command lines and environment, and its statistics parser."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from offsite.config.model import parse_config
from offsite.config.rules import TARGET_SCHEMES
from offsite.constants import BackupType
from offsite.host.settings import resolve_host
from offsite.duplicity.command import backup_argv, duplicity_env, parse_stats, restore_argv
from offsite.duplicity.launch import TARGET_BACKENDS

S3_CONFIG = parse_config({
    "staging_root": "/var/lib/offsite/staging",
    "target": {"url": "boto3+s3://bucket/prefix", "endpoint_url": "http://minio:9000",
               "region": "eu-west-1"},
    "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}},
})
FILE_CONFIG = parse_config({"target": {"url": "file:///srv/backups/"},
                            "hosts": {"h": {"scripts": {"s": {"bash": "true"}}}}})

STATS = """Local and Remote metadata are synchronized, no sync needed.
--------------[ Backup Statistics ]--------------
StartTime 1795913143.08 (Sun Nov 29 00:45:43 2026)
ElapsedTime 0.51 (0.51 seconds)
SourceFiles 3
SourceFileSize 4107 (4.01 KB)
NewFiles 2
ChangedFiles 1
DeletedFiles 0
TotalDestinationSizeChange 221 (221 bytes)
Errors 2
-------------------------------------------------
"""


@pytest.mark.parametrize(("kind", "action"), [(BackupType.FULL, "full"),
                                              (BackupType.INCR, "incremental")])
def test_backup_argv_targets_the_host_prefix_with_endpoint(kind: BackupType, action: str) -> None:
    argv = backup_argv(resolve_host(S3_CONFIG, "carcosa"), kind, Path("/cache/carcosa"))
    assert argv[0].endswith("duplicity")
    assert argv[1:] == [action, "--archive-dir", "/cache/carcosa", "--name", "carcosa",
                    "--log-timestamp", "--log-file", "/cache/carcosa/upload.log",
                    "--gpg-options", "--s2k-count 65011712",
                    "--s3-endpoint-url", "http://minio:9000", "--s3-region-name", "eu-west-1",
                    "--tempdir", "/cache/carcosa/.upload-tmp",
                    "--volsize", "200", "--num-retries", "3", "--backend-retry-delay", "10",
                    "--file-prefix-archive", "data-",
                    "/var/lib/offsite/staging/carcosa",
                    "boto3+s3://bucket/prefix/carcosa"]


def test_file_target_has_no_s3_flags_and_no_double_slash() -> None:
    argv = backup_argv(resolve_host(FILE_CONFIG, "h"), BackupType.FULL, Path("/c"))
    assert not any(flag.startswith("--s3") for flag in argv)
    assert argv[-1] == "file:///srv/backups/h"


def test_restore_argv_with_time_and_path() -> None:
    argv = restore_argv(resolve_host(S3_CONFIG, "carcosa"), Path("/tmp/out"), Path("/c"), "3D",
                        "pg/dump.sql")
    assert argv[1] == "restore"
    assert argv[argv.index("--time") + 1] == "3D"
    assert argv[argv.index("--path-to-restore") + 1] == "pg/dump.sql"
    assert argv[-2:] == ["boto3+s3://bucket/prefix/carcosa", "/tmp/out"]


def test_secrets_go_in_the_environment_never_argv() -> None:
    base = {"DUPLICITY_AWS_ACCESS_KEY_ID": "AKIAUP", "DUPLICITY_AWS_SECRET_ACCESS_KEY": "upsecret",
            "ALERT_AWS_SECRET_ACCESS_KEY": "alertsecret", "PATH": "/bin"}
    env = duplicity_env(resolve_host(S3_CONFIG, "carcosa"), "pass phrase", base)
    assert env["PASSPHRASE"] == "pass phrase"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAUP"
    assert env["AWS_SECRET_ACCESS_KEY"] == "upsecret"
    assert "ALERT_AWS_SECRET_ACCESS_KEY" not in env
    argv = backup_argv(resolve_host(S3_CONFIG, "carcosa"), BackupType.FULL, Path("/c"))
    assert not {"pass phrase", "upsecret"} & set(argv)


def test_parse_stats_reads_the_statistics_block() -> None:
    stats = parse_stats(STATS)
    assert (stats.source_files, stats.source_bytes, stats.new_files, stats.changed_files) == (
        3, 4107, 2, 1)
    assert stats.bytes_uploaded == 221
    assert stats.errors == 2
    assert stats.elapsed_s == pytest.approx(0.51)


def test_parse_stats_without_block_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_stats("Duplicity backup complete.\n")


def test_the_launcher_loads_the_backend_of_every_target_scheme_and_no_other() -> None:
    """duplicity imports all its ~40 backends before every action; offsite's launcher only
    those of the schemes a target may name (offsite.config.rules.TARGET_SCHEMES)."""
    code = ("import sys; from duplicity import backend; "
            "from offsite.duplicity.launch import import_target_backends; "
            "import_target_backends(backend); backend.import_backends(); "
            "print(' '.join(sorted(backend._backends))); "
            "print(' '.join(m for m in sys.modules if m.startswith('duplicity.backends.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    schemes, modules = result.stdout.splitlines()
    assert set(TARGET_SCHEMES) <= set(schemes.split()), schemes
    assert set(modules.split()) == set(TARGET_BACKENDS), modules
