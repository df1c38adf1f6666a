"""`offsite install-units`: the units it writes pass `systemd-analyze verify` (no warning
either), each ExecStart is an `offsite` command line the CLI accepts, and the settings the
operations issue asks for are there."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from offsite.cli.main import build_parser
from offsite.deploy.units import STOP_TIMEOUT_S, UNIT_NAMES
from tests.deploy_harness import HOST, exec_argv, unit_settings, write_minimal_config
from tests.helpers import VENV_BIN

EXPECTED_COMMANDS = {"offsite-worker@.service": "worker", "offsite-beat.service": "beat",
                     "offsite-control.service": "control", "offsite-flower.service": "flower"}


@pytest.fixture
def units(tmp_path: Path, run_offsite: Any) -> tuple[Path, Path]:
    config = write_minimal_config(tmp_path)
    dest = tmp_path / "units"
    dest.mkdir()
    result = run_offsite("install-units", "--dest", str(dest), config=config)
    assert result.returncode == 0, result.stderr
    assert "systemctl enable --now offsite-worker@HOST.service" in result.stdout
    return config, dest


def test_the_units_pass_systemd_analyze_verify(units: tuple[Path, Path]) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: bin/setup installs Debian's systemd package"
    _, dest = units
    assert sorted(p.name for p in dest.iterdir()) == sorted(UNIT_NAMES)
    # verify needs an instance of the template: the same text under the instance's name
    shutil.copy(dest / "offsite-worker@.service", dest / f"offsite-worker@{HOST}.service")
    names = [f"offsite-worker@{HOST}.service"] + [n for n in UNIT_NAMES if "@" not in n]
    result = subprocess.run([analyze, "verify", "--man=no", *[str(dest / n) for n in names]],
                            capture_output=True, text=True, timeout=60, cwd=dest)
    assert result.returncode == 0, result.stderr
    # systemd only warns (exit 0) about unknown keys and bad values: a warning is a failure
    assert result.stderr.strip() == "", result.stderr


def test_every_exec_start_is_an_offsite_command_the_cli_accepts(
        units: tuple[Path, Path]) -> None:
    config, dest = units
    for name, command in EXPECTED_COMMANDS.items():
        argv = exec_argv((dest / name).read_text(), HOST)
        assert argv[0] == str(VENV_BIN / "offsite"), argv
        args = build_parser().parse_args(argv[1:])   # exits 2 (SystemExit) if refused
        assert args.command == command
        assert args.config == str(config.absolute())
        if command == "worker":
            assert args.host == HOST
        if command == "flower":
            assert args.address == "127.0.0.1"


def test_each_unit_restarts_stops_gracefully_and_reads_secrets_from_a_file(
        units: tuple[Path, Path]) -> None:
    _, dest = units
    for name in UNIT_NAMES:
        settings = unit_settings((dest / name).read_text())
        assert settings["Restart"] == ["on-failure"], name
        assert settings["KillMode"] == ["control-group"], name
        assert settings["TimeoutStopSec"] == [f"{STOP_TIMEOUT_S}s"], name
        assert STOP_TIMEOUT_S >= 60
        (env_file,) = settings["EnvironmentFile"]
        assert env_file.lstrip("-").startswith("/etc/offsite/") and env_file.endswith(".env")
        # no secret in the unit: the only Environment= is the config's path
        assert [v.strip('"').split("=")[0] for v in settings["Environment"]] == ["OFFSITE_CONFIG"]
        assert "NoNewPrivileges" in settings or name.startswith("offsite-worker"), name
    worker = unit_settings((dest / "offsite-worker@.service").read_text())
    assert worker["EnvironmentFile"] == ["/etc/offsite/%i.env"]
    assert worker["ProtectSystem"] == ["full"] and "PrivateTmp" not in worker
    control = unit_settings((dest / "offsite-control.service").read_text())
    assert control["ProtectSystem"] == ["strict"] and control["PrivateTmp"] == ["yes"]
    assert control["ReadWritePaths"] == [f"-{dest.parent}/staging -{dest.parent}/cache"]


def test_a_host_node_gets_only_the_worker_template(tmp_path: Path, run_offsite: Any) -> None:
    config = write_minimal_config(tmp_path)
    dest = tmp_path / "units"
    dest.mkdir()
    result = run_offsite("install-units", "--host", HOST, "--dest", str(dest), config=config)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in dest.iterdir()] == ["offsite-worker@.service"]
    assert f"systemctl enable --now offsite-worker@{HOST}.service" in result.stdout


def test_secrets_files_others_can_read_are_named(tmp_path: Path, run_offsite: Any) -> None:
    config = write_minimal_config(tmp_path)
    dest, env_dir = tmp_path / "units", tmp_path / "secrets"
    dest.mkdir()
    env_dir.mkdir()
    (env_dir / f"{HOST}.env").write_text("PASSPHRASE=x\n")
    (env_dir / f"{HOST}.env").chmod(0o644)
    (env_dir / "control.env").write_text("ALERT_AWS_ACCESS_KEY_ID=x\n")
    (env_dir / "control.env").chmod(0o600)
    result = run_offsite("install-units", "--dest", str(dest), "--env-dir", str(env_dir),
                         config=config)
    assert result.returncode == 0, result.stderr
    assert f"warning: {env_dir}/{HOST}.env is readable" in result.stderr
    assert "control.env" not in result.stderr
    worker = unit_settings((dest / "offsite-worker@.service").read_text())
    assert worker["EnvironmentFile"] == [f"{env_dir}/%i.env"]


def test_install_units_says_how_to_make_the_service_user_and_let_it_read_the_passphrase(
        tmp_path: Path, run_offsite: Any) -> None:
    import pwd
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    extra = ("verify: {schedule: {every: 7d}, where: control}\n"
             f"encryption: {{passphrase_file: {secret}}}\n")
    config = write_minimal_config(tmp_path, extra=extra)
    dest = tmp_path / "units"
    dest.mkdir()
    missing = "offsite-no-such-user"
    result = run_offsite("install-units", "--dest", str(dest), "--user", missing, config=config)
    assert result.returncode == 0, result.stderr
    assert f"the units run as {missing}, which does not exist here" in result.stdout
    assert "systemd-sysusers" in result.stdout
    assert f"useradd --system --home-dir /var/lib/offsite --shell /usr/sbin/nologin {missing}" \
        in result.stdout
    assert "which does not exist here" not in run_offsite(
        "install-units", "--dest", str(dest), "--user", "root", config=config).stdout
    other = next(entry.pw_name for entry in pwd.getpwall()
                 if entry.pw_uid not in (0, secret.stat().st_uid) and entry.pw_name.isidentifier())
    result = run_offsite("install-units", "--dest", str(dest), "--user", other, config=config)
    assert f"as {other}, which cannot read {secret}" in result.stdout, result.stdout
    assert f"chgrp {other} {secret} && chmod 0640 {secret}" in result.stdout
    secret.chmod(0o644)
    result = run_offsite("install-units", "--dest", str(dest), "--user", other, config=config)
    assert "cannot read" not in result.stdout
