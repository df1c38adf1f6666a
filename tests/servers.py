"""Real services for the tests: a redis-server that can be stopped and started again, and
moto_server (S3, SNS, SQS, IAM in one process), each on a free loopback port."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from botocore.config import Config as BotoConfig

from tests.harness import (REGION, TEST_AWS_KEY_ID, TEST_AWS_SECRET, VENV_BIN, _SCRUBBED_ENV,
                           HarnessError, _exited_unreaped, boto_client, free_port, read_tail)


# --------------------------------------------------------------------------- redis


class RedisServer:
    """A real redis-server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"
        self.extra_args: list[str] = []  # more redis-server options (tests/secure_redis.py)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited_unreaped(self._proc)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client; the caller closes it."""
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self) -> bool:
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> None:
        """Starts the server (loading dump.rdb if a stop(save=True) left one); no-op if running."""
        if self.running:
            return
        self._reap()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.log_path), *self.extra_args]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if _exited_unreaped(self._proc):
                self._reap()
                raise HarnessError(f"redis-server exited on port {self.port}:\n"
                                   f"{read_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(f"redis-server did not answer PING within {timeout:g}s:\n"
                                   f"{read_tail(self.log_path)}")
            time.sleep(0.02)

    def stop(self, save: bool = False, timeout: float = 10.0) -> None:
        """Clean shutdown. save=True writes dump.rdb so start() gets the data back (a restart of
        a persistent Redis); save=False loses everything (a Redis without persistence)."""
        if self.running:
            if save:
                client = self.client(socket_timeout=timeout)
                try:
                    client.shutdown(save=True)
                finally:
                    client.close()
            else:
                assert self._proc is not None
                self._proc.send_signal(signal.SIGTERM)
            assert self._proc is not None
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()
        if not save:
            (self.directory / "dump.rdb").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: a crash; unsaved data is lost, a dump.rdb from an earlier stop(save=True)
        stays."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
        self._reap()

    def restart(self, save: bool = False, down_for: float = 0.0) -> None:
        self.stop(save=save)
        if down_for:
            time.sleep(down_for)
        self.start()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait(10)


# --------------------------------------------------------------------------- moto


class MotoServer:
    """moto_server (S3, SNS, SQS, ... in one process) on a loopback port."""

    def __init__(self, directory: Path, port: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "moto.log"
        self.extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if _exited_unreaped(self._proc):
                self._proc.wait()
                raise HarnessError(f"moto_server exited:\n{read_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"moto_server not up within {timeout:g}s:\n"
                                   f"{read_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client on moto with the test process's fake credentials; the caller closes it."""
        config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        return boto_client(service, key_id=TEST_AWS_KEY_ID, secret=TEST_AWS_SECRET, region=REGION,
                           endpoint_url=self.endpoint_url, config=config, **kwargs)
