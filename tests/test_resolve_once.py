"""Resolve once, pass the result: a run resolves its host's settings once (offsite.host.settings)
and an upload's path visits few modules. Measured on a real `--local` backup (real duplicity and
gpg, a file:// target) with a profiler hook, not a mock: the hook records which offsite modules'
functions run."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

import pytest

from offsite.config.model import Config, parse_config
from offsite.constants import BackupType, RunState
from offsite.errors import UnknownHostError
from offsite.host.settings import (EncryptionSettings, HostSettings, TargetSettings,
                                   resolve_host)
from offsite.run.context import RunContext
from offsite.run.local_backup import run_local

MAX_UPLOAD_MODULES = 8
PACKAGE = str(Path(__import__("offsite").__file__).parent)


def fleet(tmp_path: Path, **host: Any) -> Config:
    passphrase = tmp_path / "passphrase"
    if not passphrase.exists():
        passphrase.write_text("correct horse battery staple\n")
        passphrase.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.txt").write_text("hello\n")
    return parse_config({
        "staging_root": str(tmp_path / "staging"), "cache_root": str(tmp_path / "cache"),
        "target": {"url": f"file://{tmp_path}/target", "volsize": 5, "layout": "split"},
        "encryption": {"mode": "symmetric", "passphrase_file": str(passphrase)},
        "hosts": {"carcosa": {"scripts": {"files": {"bash": f"cp -r {data}/. ."}}, **host},
                  "hali": {"scripts": {"s": {"bash": "true"}},
                           "encryption": {"passphrase_file": str(tmp_path / "hali-pass")}}}})


SETTINGS_TYPES = (Config, RunContext, HostSettings, TargetSettings, EncryptionSettings)


class Recorder:
    """A profile hook on every thread. Inside `within` (a function's name; anywhere when None)
    it records which offsite modules' functions run (`modules`) and which of them are handed
    the host's settings, a RunContext holding them, or the Config as an argument (`carriers`: the modules the settings
    are threaded through; `self` does not count: a settings object's own properties are not a
    module it travels through); and it counts the calls of the function named `count`."""

    def __init__(self, within: str | None = None, count: str | None = None) -> None:
        self.within, self.count = within, count
        self.depth = 0
        self.modules: set[str] = set()
        self.carriers: set[str] = set()
        self.calls = 0
        self.lock = threading.Lock()

    def hook(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event not in ("call", "return"):
            return
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE):
            return
        if self.within is not None and code.co_name == self.within:
            self.depth += 1 if event == "call" else -1
            if event == "return":
                return
        if event != "call":
            return
        with self.lock:
            if code.co_name == self.count:
                self.calls += 1
            if self.within is None or self.depth > 0:
                relative = os.path.relpath(code.co_filename, PACKAGE)[:-3]
                module = "offsite." + relative.replace(os.sep, ".")
                self.modules.add(module)
                arguments = [frame.f_locals.get(name) for name
                             in code.co_varnames[:code.co_argcount] if name != "self"]
                if any(isinstance(value, SETTINGS_TYPES) for value in arguments):
                    self.carriers.add(module)

    def __enter__(self) -> Recorder:
        threading.setprofile(self.hook)
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *_exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


@pytest.fixture()
def passphrase_env() -> Iterator[None]:
    saved = os.environ.pop("PASSPHRASE", None)
    yield
    if saved is not None:
        os.environ["PASSPHRASE"] = saved


def test_resolve_host_merges_the_fleet_defaults_with_the_host_overrides(tmp_path: Path) -> None:
    config = fleet(tmp_path, paths={"srv": str(tmp_path / "srv")})
    carcosa, hali = resolve_host(config, "carcosa"), resolve_host(config, "hali")
    assert carcosa.target.url == f"file://{tmp_path}/target/carcosa"
    assert carcosa.target.file_dir == tmp_path / "target" / "carcosa"
    assert carcosa.target.bucket is None and carcosa.target.volume_prefix == "data-"
    assert carcosa.staging == tmp_path / "staging" / "carcosa"
    assert carcosa.cache == tmp_path / "cache" / "carcosa"
    assert carcosa.script_staging("files") == tmp_path / "staging" / "carcosa" / "files"
    assert dict(carcosa.paths) == {"srv": tmp_path / "srv"}
    assert carcosa.encryption.passphrase_file == tmp_path / "passphrase"
    assert hali.encryption.passphrase_file == tmp_path / "hali-pass"
    assert not hali.encryption.public_key and hali.encryption.mode == "symmetric"
    assert carcosa.max_run_s == config.max_run_s("carcosa")
    with pytest.raises(Exception):
        carcosa.target.volsize = 1  # type: ignore[misc]   # frozen


def test_resolve_host_of_an_unknown_host_names_the_configured_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownHostError) as raised:
        resolve_host(fleet(tmp_path), "nobody")
    assert "carcosa" in str(raised.value) and "hali" in str(raised.value)


def test_an_s3_target_gives_bucket_and_prefix(tmp_path: Path) -> None:
    config = fleet(tmp_path)
    config = config.model_copy(update={"target": config.target.model_copy(
        update={"url": "s3://bucket/some/path", "layout": "flat"})})
    target = resolve_host(config, "hali").target
    assert (target.bucket, target.prefix, target.file_dir) == ("bucket", "some/path/hali/", None)
    assert target.volume_prefix == ""


@pytest.mark.slow
def test_an_upload_hands_the_settings_to_at_most_8_modules_and_never_rereads_the_config(
        tmp_path: Path, passphrase_env: None) -> None:
    config = fleet(tmp_path, paths={"srv": str(tmp_path / "data")})
    with Recorder(within="upload_step") as upload:
        record = run_local(config, "carcosa", BackupType.FULL)
    assert record.state == RunState.SUCCEEDED, record
    visited = f"(every module whose functions ran: {sorted(upload.modules)})"
    assert "offsite.duplicity.command" in upload.carriers, visited   # the recorder records
    assert len(upload.carriers) <= MAX_UPLOAD_MODULES, (
        f"the upload step handed the host's settings to {len(upload.carriers)} modules: "
        f"{sorted(upload.carriers)} {visited}")
    rederived = sorted(module for module in upload.modules if module.startswith("offsite.config."))
    assert not rederived, f"the upload step looked into the Config again: {rederived}"


@pytest.mark.slow
def test_a_run_resolves_its_host_once(tmp_path: Path, passphrase_env: None) -> None:
    config = fleet(tmp_path)
    assert run_local(config, "carcosa", BackupType.FULL).state == RunState.SUCCEEDED
    with Recorder(count="resolve_host") as run:
        record = run_local(config, "carcosa", BackupType.INCR)
    assert record.state == RunState.SUCCEEDED, record
    assert run.calls == 1, f"resolve_host ran {run.calls} times in one run"
    assert len(run.modules) > 10, sorted(run.modules)   # the hook saw the whole run
