"""Processes the benchmarks start for themselves: a redis-server, offsite services, their
environment. Each child runs in its own session and is stopped by its own pid."""
from __future__ import annotations

import http.client
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

import redis

VENV_BIN = Path(sys.executable).parent
OFFSITE = str(VENV_BIN / "offsite")
REGION = "eu-west-1"
FAKE_KEY = "bench"  # moto accepts any key; a file:// target needs none
_SCRUBBED_PREFIXES = ("AWS_", "DUPLICITY_AWS_", "ALERT_AWS_", "OFFSITE_")


class BenchError(RuntimeError):
    """A service or a backup of the benchmark failed; the message holds the log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def status_kib(pid: int | str, field: str) -> int | None:
    """A memory figure of /proc/<pid>/status in KiB (VmRSS, VmHWM...; `pid` "self" for this
    process), None when the process or the field is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def run_waited(argv: Sequence[str], env: dict[str, str], stdout: Path,
               stderr: Path | None = None) -> tuple[int, resource.struct_rusage]:
    """Run argv to its end (stdout and stderr to files; stderr to stdout's without one); its
    exit code and its own rusage from wait4 (CPU of it and the children it waited for; peak
    RSS an upper bound: Linux carries this process's peak over exec into the child's
    ru_maxrss), which subprocess does not give."""
    with open(stdout, "w") as out, open(stderr or stdout, "a") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err if stderr else out, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return os.waitstatus_to_exitcode(status), usage


class Service:
    """A child process in its own session, logging to a file, stopped by its own pid."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited {self.proc.returncode}:\n"
                                 f"{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {timeout:g}s:\n"
                                 f"{tail(self.log_path)}")
            time.sleep(0.05)

    def logged(self, text: str) -> bool:
        return text in self.log_path.read_text(errors="replace")

    def peak_rss_kib(self) -> int | None:
        return status_kib(self.proc.pid, "VmHWM")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_redis(stack: ExitStack, work: Path) -> str:
    port = free_port()
    directory = work / "redis"
    directory.mkdir()
    server = Service("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(directory)],
                     directory / "redis.log", dict(os.environ))
    stack.callback(server.stop)
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    stack.callback(client.close)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
    server.wait_until(answers, 15)
    return f"redis://127.0.0.1:{port}/0"


def child_env(home: Path) -> dict[str, str]:
    """Our environment minus inherited credentials and offsite settings, HOME in the temp dir."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(_SCRUBBED_PREFIXES) and name not in ("PASSPHRASE",)}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", AWS_DEFAULT_REGION=REGION,
               AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(home / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
               DUPLICITY_AWS_ACCESS_KEY_ID=FAKE_KEY, DUPLICITY_AWS_SECRET_ACCESS_KEY=FAKE_KEY)
    return env


def start_moto(stack: ExitStack, work: Path, env: dict[str, str]) -> str:
    """moto_server on a free loopback port with one bucket; returns its endpoint URL."""
    port = free_port()
    server = Service("moto_server", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                     str(port)], work / "moto.log", env)
    stack.callback(server.stop)

    def answers() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
    server.wait_until(answers, 30)
    return f"http://127.0.0.1:{port}"


def create_bucket(endpoint_url: str, bucket: str) -> None:
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION,
                          aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_KEY)
    try:
        client.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
    finally:
        client.close()


def start_worker(stack: ExitStack, config_path: Path, host: str, work: Path,
                 env: dict[str, str]) -> Service:
    worker = Service(f"worker {host}", [OFFSITE, "--config", str(config_path), "worker", host],
                     work / f"worker-{host}.log", env)
    stack.callback(worker.stop)
    worker.wait_until(lambda: worker.logged(" ready."), 60)
    return worker
