"""Hostile input to the deployment surface: install-units, config-schema, check --role,
completion, flower, TLS options in the broker URL and python_interpreter. Each must be
refused in one line naming the problem, without a traceback and without writing anything."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from offsite.config.schema import markdown_table, readme_block
from tests.deploy_harness import HOST, write_minimal_config

ROOT = Path(__file__).resolve().parent.parent


def _refused(result: Any, code: int, *needles: str) -> None:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("host", ["../etc/passwd", "carcosa/../x", "/etc", "", "a\nb",
                                  "carcosa; rm -rf /", "x" * 300, "%i", "-carcosa"])
def test_install_units_refuses_a_host_that_is_not_in_the_config(
        tmp_path: Path, offsite_main: Any, host: str) -> None:
    config = write_minimal_config(tmp_path)
    dest = tmp_path / "units"
    dest.mkdir()
    result = offsite_main("install-units", f"--host={host}", "--dest", str(dest), config=config)
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert list(dest.iterdir()) == []


@pytest.mark.slow
def test_install_units_refuses_a_bad_destination(tmp_path: Path, run_offsite: Any) -> None:
    config = write_minimal_config(tmp_path)
    _refused(run_offsite("install-units", "--dest", str(tmp_path / "nope"), config=config), 1,
             "is not an existing folder")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _refused(run_offsite("install-units", "--dest", str(a_file), config=config), 1,
             "is not an existing folder")
    dest = tmp_path / "units"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (dest / "offsite-worker@.service").symlink_to(victim)
    _refused(run_offsite("install-units", "--dest", str(dest), config=config), 1,
             "is a symlink")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("folder", ["with%specifier", "with$var", "quote\"d", "back\\slash",
                                    "semi;colon"])
def test_install_units_refuses_a_config_path_a_unit_cannot_hold(
        tmp_path: Path, run_offsite: Any, folder: str) -> None:
    home = tmp_path / folder
    home.mkdir()
    config = write_minimal_config(home)
    dest = tmp_path / "units"
    dest.mkdir()
    _refused(run_offsite("install-units", "--dest", str(dest), config=config), 1,
             "would not read back")
    assert list(dest.iterdir()) == []


def test_install_units_quotes_a_config_path_with_a_space(tmp_path: Path,
                                                         run_offsite: Any) -> None:
    home = tmp_path / "with space"
    home.mkdir()
    config = home / "offsite.yaml"
    config.write_text(write_minimal_config(tmp_path).read_text())
    dest = tmp_path / "units"
    dest.mkdir()
    result = run_offsite("install-units", "--dest", str(dest), config=config)
    assert result.returncode == 0, result.stderr
    from tests.deploy_harness import exec_argv
    argv = exec_argv((dest / "offsite-beat.service").read_text(), HOST)
    assert argv[argv.index("--config") + 1] == str(config)


@pytest.mark.parametrize("user", ["root;rm", "Root", "a b", "x" * 40, "../x"])
def test_install_units_refuses_a_bad_user(tmp_path: Path, offsite_main: Any, user: str) -> None:
    config = write_minimal_config(tmp_path)
    dest = tmp_path / "units"
    dest.mkdir()
    _refused(offsite_main("install-units", "--user", user, "--dest", str(dest), config=config),
             1, "is not a system user name")
    _refused(offsite_main("install-units", "--worker-user", user, "--dest", str(dest),
                         config=config), 1, "is not a system user name")
    assert list(dest.iterdir()) == []


def test_config_schema_is_stable_and_the_docs_table_is_current(
        tmp_path: Path, run_offsite: Any) -> None:
    missing_config = tmp_path / "no-such.yaml"     # config-schema needs no config
    first = run_offsite("config-schema", config=missing_config)
    second = run_offsite("config-schema", config=missing_config)
    assert first.returncode == 0 and first.stdout == second.stdout, first.stderr
    schema = json.loads(first.stdout)
    assert json.dumps(schema, indent=2, sort_keys=True) + "\n" == first.stdout
    assert schema["additionalProperties"] is False and "hosts" in schema["required"]
    assert str(ROOT) not in first.stdout and os.environ.get("HOME", "/root") not in first.stdout
    host = schema["$defs"]["HostConfig"]["properties"]
    assert "python_interpreter" in host
    schedule = schema["$defs"]["ScheduleConfig"]["properties"]
    assert schedule["full"]["default"] == "0 0 1 * *"
    table = run_offsite("config-schema", "--markdown", config=missing_config).stdout
    assert table == markdown_table()
    documented = readme_block((ROOT / "docs" / "configuration.md").read_text())
    assert documented == table, "docs/configuration.md's key table is stale: paste `offsite " \
                                "config-schema --markdown` between its config-keys markers"


def test_every_config_key_is_in_the_table() -> None:
    table = markdown_table()
    for key in ("broker_url", "watchdog.stale_after", "hosts.<host>.python_interpreter",
                "hosts.<host>.scripts.<script>.timeout", "retention.schedule",
                "provision.lifecycle.archive_class", "encryption.recipients"):
        assert f"| `{key}` |" in table, key


@pytest.mark.parametrize("role", ["garbage", "HOST", "", "all;ls", "../host"])
def test_check_refuses_a_role_it_does_not_know(tmp_path: Path, offsite_main: Any,
                                               role: str) -> None:
    config = write_minimal_config(tmp_path)
    _refused(offsite_main("check", "--connect", f"--role={role}", config=config), 2,
             "invalid choice")


def test_check_as_a_host_needs_a_host_of_the_config(tmp_path: Path, run_offsite: Any) -> None:
    config = write_minimal_config(tmp_path, host="not-this-machine")
    _refused(run_offsite("check", "--connect", "--role", "host", config=config), 1,
             "is not a host of the config: give --host HOST")
    _refused(run_offsite("check", "--connect", "--role", "host", "--host", "../etc",
                         config=config), 2, "unknown host", "not-this-machine")


@pytest.mark.parametrize("args", [["completion", "zsh"], ["completion"],
                                  ["flower", "--port", "0"], ["flower", "--port", "70000"],
                                  ["flower", "--port", "http"]])
def test_bad_usage_of_the_new_commands_exits_2(tmp_path: Path, offsite_main: Any,
                                               args: list[str]) -> None:
    config = write_minimal_config(tmp_path)
    result = offsite_main(*args, config=config)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.10", "example.org",
                                     "127.0.0.1.evil.org"])
def test_flower_beyond_loopback_with_empty_auth_is_refused(
        tmp_path: Path, run_offsite: Any, address: str) -> None:
    config = write_minimal_config(tmp_path)
    _refused(run_offsite("flower", "--address", address, config=config,
                         env_extra={"FLOWER_BASIC_AUTH": "  ", "FLOWER_AUTH": None}), 1,
             "without authentication")


@pytest.mark.parametrize(("url", "needle"), [
    ("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none", "must stay required"),
    ("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=CERT_NONE", "must stay required"),
    ("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=optional", "must stay required"),
    ("rediss://redis.example/0?ssl_check_hostname=false", "unknown option"),
    ("redis://redis.example/0?ssl_ca_certs=/etc/ca.pem", "need a rediss:// URL"),
])
def test_a_broker_url_that_weakens_tls_is_refused(tmp_path: Path, offsite_main: Any,
                                                  url: str, needle: str) -> None:
    config = write_minimal_config(tmp_path, extra=f"broker_url: \"{url}\"\n")
    _refused(offsite_main("check", config=config), 2, "broker_url", needle)


@pytest.mark.parametrize("interpreter", ["python3", "bin/python", "./python3", "", "~/py"])
def test_python_interpreter_must_be_an_absolute_path(tmp_path: Path, offsite_main: Any,
                                                     interpreter: str) -> None:
    config = tmp_path / "offsite.yaml"
    write_minimal_config(tmp_path)
    config.write_text(config.read_text() + f"    python_interpreter: \"{interpreter}\"\n")
    _refused(offsite_main("check", config=config), 2, "python_interpreter")


def test_a_missing_python_interpreter_fails_the_run_naming_it(tmp_path: Path,
                                                              run_offsite: Any) -> None:
    passphrase = tmp_path / "pp"
    passphrase.write_text("secret\n")
    passphrase.chmod(0o600)
    config = tmp_path / "offsite.yaml"
    config.write_text(
        f"staging_root: {tmp_path}/staging\ncache_root: {tmp_path}/cache\n"
        f"target: {{url: \"file://{tmp_path}/target\"}}\n"
        f"encryption: {{mode: symmetric, passphrase_file: {passphrase}}}\n"
        f"hosts:\n  {HOST}:\n    python_interpreter: /nonexistent/python3\n"
        f"    scripts: {{dump: {{python: \"open('d', 'w').write('x')\"}}}}\n")
    result = run_offsite("backup", HOST, "--type", "full", "--local", config=config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "python_interpreter /nonexistent/python3 is not an executable file" in result.stdout
    assert f"hosts.{HOST}.python_interpreter" in result.stdout
