"""A broker reached over TLS (`rediss://`): a backup goes through the queue to a real worker
with the certificate verified against the CA named in the URL, and the same fleet without
that CA is refused by every client (the server's certificate is not trusted), never accepted
unverified."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ConfigFactory
from tests.tls_redis import TlsRedisServer

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

HOST = "carcosa"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedisServer]:
    folder = tmp_path / "tls-redis"
    folder.mkdir()
    server = TlsRedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_backup_runs_over_a_verified_tls_broker(
        tmp_path: Path, tls_redis: TlsRedisServer, aws: Any, start_worker: Any,
        run_offsite: Any) -> None:
    config = ConfigFactory(tmp_path, tls_redis.url, aws)(
        {HOST: {"scripts": {"data": {"bash": "echo data > d"}}}})
    start_worker(config, HOST)
    result = run_offsite("backup", HOST, "--type", "full", "--wait", "--timeout", "2m",
                         config=config, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    status = run_offsite("status", HOST, "--json", config=config)
    assert status.returncode == 0 and '"state": "succeeded"' in status.stdout
    check = run_offsite("check", "--connect", "--role", "operator", config=config)
    assert "broker unreachable" not in check.stderr


def test_an_untrusted_certificate_is_refused_not_ignored(
        tmp_path: Path, tls_redis: TlsRedisServer, aws: Any, run_offsite: Any) -> None:
    config = ConfigFactory(tmp_path, tls_redis.untrusted_url, aws)(
        {HOST: {"scripts": {"data": {"bash": "echo data > d"}}}})
    check = run_offsite("check", "--connect", "--role", "operator", config=config)
    assert check.returncode == 1
    assert "broker unreachable" in check.stderr and "certificate verify failed" in check.stderr
    queued = run_offsite("backup", HOST, "--type", "full", config=config, timeout=120)
    assert queued.returncode == 1 and "Traceback" not in queued.stderr
    assert "certificate verify failed" in queued.stderr
    assert tls_redis.password not in queued.stderr + check.stderr
