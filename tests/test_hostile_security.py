"""Hostile input to the security surfaces: recipients, key files, secret key files, recover's
--time, provision's --credentials-out and settings, --thaw --days. Each is refused with one line
naming the problem, never a traceback and never a half-done action."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe
from tests.security_harness import KeyPair, make_key_pair
from tests.test_hostile_outcomes import data_tree

FPR = "A" * 40


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyPair]:
    keys = make_key_pair(tmp_path_factory.mktemp("keys"), "hostile")
    try:
        yield keys
    finally:
        for home in (keys.secret_home, keys.public_home):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                           capture_output=True, timeout=30)


def _one_line_failure(result: Any, code: int, *needles: str) -> None:
    assert result.returncode == code, describe(result)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def _host(data: Path) -> dict[str, Any]:
    return {"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}}


@pytest.mark.parametrize("recipients", [
    ["not-a-key"], ["DEADBEEF"], [FPR + "; rm -rf /"], [FPR[:-1] + "G"], [123],
    ["0x" + FPR, FPR], []])
def test_malformed_recipients_are_refused_by_the_config(
        make_config: Any, offsite_main: Any, tmp_path: Path, recipients: list[Any]) -> None:
    config = make_config(_host(tmp_path), encryption={"mode": "public-key",
                                                      "recipients": recipients})
    result = offsite_main("check", config=config)
    _one_line_failure(result, 2, "encryption")
    assert "recipient" in result.stderr


def test_a_host_cannot_switch_mode_on_its_own(make_config: Any, run_offsite: Any,
                                              tmp_path: Path) -> None:
    hosts = _host(tmp_path)
    hosts["carcosa"]["encryption"] = {"mode": "symmetric"}
    result = run_offsite("check", config=make_config(hosts))
    _one_line_failure(result, 2, "hosts.carcosa.encryption.mode", "unknown key")


@pytest.mark.parametrize("setting", ["not a key\n", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"
                                     "garbage\n-----END PGP PUBLIC KEY BLOCK-----\n", "",
                                     "directory", "missing", "huge"])
@pytest.mark.slow
def test_a_public_keys_file_that_is_not_a_key_fails_the_upload_in_one_line(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path, setting: str) -> None:
    key_file = tmp_path / "keys.asc"
    if setting == "directory":
        key_file.mkdir()
    elif setting == "huge":
        key_file.write_bytes(os.urandom(2 * 1024 * 1024))
    elif setting != "missing":
        key_file.write_text(setting)
    config = make_config(_host(data_tree(tmp_path / "data", files=1, size=1000)), encryption={
        "mode": "public-key", "recipients": [FPR], "public_keys_file": str(key_file)})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    _one_line_failure(result, 1, "public_keys_file", "step encryption")
    assert aws.object_keys("carcosa/") == [], "nothing may be uploaded"


@pytest.mark.slow
def test_a_public_keys_file_holding_a_secret_key_is_refused(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path, pair: KeyPair) -> None:
    config = make_config(_host(data_tree(tmp_path / "data", files=1, size=1000)), encryption={
        "mode": "public-key", "recipients": [pair.fingerprint],
        "public_keys_file": str(pair.secret_file)})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    _one_line_failure(result, 1, "holds a secret key: a host must hold only public keys")
    assert aws.object_keys("carcosa/") == []


@pytest.mark.slow
def test_a_recipient_missing_from_the_keys_file_is_named(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path, pair: KeyPair) -> None:
    config = make_config(_host(data_tree(tmp_path / "data", files=1, size=1000)), encryption={
        "mode": "public-key", "recipients": [pair.fingerprint, FPR],
        "public_keys_file": str(pair.public_file)})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    _one_line_failure(result, 1, f"recipient {FPR} is not among the public keys")


@pytest.mark.parametrize("content", ["not a key", "public"])
@pytest.mark.slow
def test_a_secret_keys_file_without_a_secret_key_is_refused(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path, pair: KeyPair,
        content: str) -> None:
    data = data_tree(tmp_path / "data", files=1, size=1000)
    config = make_config(_host(data), encryption={
        "mode": "public-key", "recipients": [pair.fingerprint],
        "public_keys_file": str(pair.public_file)})
    backed = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                         timeout=180)
    assert backed.returncode == 0, describe(backed)
    secret = pair.public_file if content == "public" else tmp_path / "secret.asc"
    if content != "public":
        secret.write_text(content)
    result = run_offsite("restore", "carcosa", str(tmp_path / "out"), "--secret-keys-file",
                         str(secret), config=config)
    _one_line_failure(result, 1, "secret keys file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["yesterday-ish", "", " ", "\x1b[31mred", "9" * 80,
                                  "2026-13-45T99:99:99Z", "-3D"])
def test_recover_refuses_a_garbage_time(make_config: Any, offsite_main: Any, tmp_path: Path,
                                        text: str) -> None:
    config = make_config(_host(tmp_path))
    result = offsite_main("recover", "carcosa", f"--time={text}", config=config)
    _one_line_failure(result, 2, "bad --time")


@pytest.mark.slow
def test_recover_refuses_a_target_without_versions(make_config: Any, run_offsite: Any,
                                                   tmp_path: Path) -> None:
    config = make_config(_host(tmp_path), target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("recover", "carcosa", "--time", "1D", config=config)
    _one_line_failure(result, 1, "keeps no versions")
    unknown = run_offsite("recover", "nosuchhost", "--time", "1D", config=config)
    _one_line_failure(unknown, 2, "unknown host")


def test_provision_refuses_a_credentials_out_that_is_a_file(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config(_host(tmp_path))
    taken = tmp_path / "creds"
    taken.write_text("precious")
    result = run_offsite("provision", "--apply", "--credentials-out", str(taken),
                         config=config)
    _one_line_failure(result, 1, "is a file, not a folder")
    assert taken.read_text() == "precious"


def test_provision_refuses_what_it_cannot_make(make_config: Any, run_offsite: Any,
                                               tmp_path: Path) -> None:
    on_files = make_config(_host(tmp_path), target={"url": f"file://{tmp_path}/t"})
    _one_line_failure(run_offsite("provision", config=on_files), 1, "needs an S3 target")
    long_host = "h" * 63
    too_long = make_config({long_host: {"scripts": {"s": {"bash": "true"}}}})
    _one_line_failure(run_offsite("provision", config=too_long), 1, "longer than 64")


@pytest.mark.parametrize(("provision", "needle"), [
    ({"lifecycle": {"infrequent_access_after": "64d", "archive_after": "32d"}},
     "archive_after must be later"),
    ({"lifecycle": {"noncurrent_expire_after": "36h"}}, "whole number of days"),
    ({"lifecycle": {"noncurrent_expire_after": "-1d"}}, "noncurrent_expire_after"),
    ({"lifecycle": {"archive_class": "TAPE"}}, "archive_class"),
    ({"name_prefix": "bad name!"}, "name_prefix"),
    ({"name_prefix": "x" * 40}, "name_prefix"),
    ({"lifecycle": {"expire": "1d"}}, "unknown key"),
])
def test_bad_provision_settings_are_config_errors(make_config: Any, offsite_main: Any,
                                                  tmp_path: Path, provision: dict[str, Any],
                                                  needle: str) -> None:
    result = offsite_main("check", config=make_config(_host(tmp_path), provision=provision))
    _one_line_failure(result, 2, needle)


@pytest.mark.parametrize("days", ["0", "-1", "100000"])
def test_thaw_days_out_of_range_are_refused_before_anything_runs(
        make_config: Any, run_offsite: Any, tmp_path: Path, days: str) -> None:
    config = make_config(_host(tmp_path))
    result = run_offsite("restore", "carcosa", str(tmp_path / "out"), "--thaw", "--days", days,
                         config=config)
    _one_line_failure(result, 1, f"--days {days}")
