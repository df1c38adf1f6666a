"""The test harness's basics: where offsite is, waiting for a condition up to a deadline, the
tails of logs and outputs for assertion messages."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


# Not resolved: the venv's bin is where the symlinked interpreter lives.

VENV_BIN = Path(sys.executable).parent
OFFSITE = VENV_BIN / "offsite"
REGION = "eu-west-1"
# Credentials of the test process itself (fixtures, assertions); the children get others.
TEST_AWS_KEY_ID = "testing"
TEST_AWS_SECRET = "testing"

_SCRUBBED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "PASSPHRASE",
                 "SIGN_PASSPHRASE", "OFFSITE_CONFIG", "OFFSITE_BROKER_URL",
                 "DUPLICITY_AWS_ACCESS_KEY_ID", "DUPLICITY_AWS_SECRET_ACCESS_KEY",
                 "ALERT_AWS_ACCESS_KEY_ID", "ALERT_AWS_SECRET_ACCESS_KEY", "GNUPGHOME")


class HarnessError(AssertionError):
    """A service or process of the test harness did not behave; the message holds its log tail."""


_LOWEST_PORT = 10000
_handed_out: set[int] = set()


def _port_slice() -> range:
    """This process's ports: below the kernel's ephemeral range, where no outgoing connection
    and no bind to port 0 takes one (not even while a test's server is down for a restart), cut
    in one slice per pytest-xdist worker so parallel workers never draw the same port."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (ephemeral_low - _LOWEST_PORT) // max(count, 1)
    if size < 100:
        return range(0)
    start = _LOWEST_PORT + (index % count) * size
    return range(start, start + size)


def free_port() -> int:
    """A loopback port nothing listens on, never handed out before in this process."""
    ports = _port_slice()
    for _ in range(200 if ports else 0):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float | None = None) -> None:
    """Polls predicate until true; raises HarnessError naming `what` after timeout seconds.

    With no interval the polls start 0.05 s apart and back off to 0.2 s: a condition met at
    once is seen at once, one that takes seconds (a backup, a worker's start) is not asked
    twenty times a second all along."""
    pause = interval if interval is not None else 0.05
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(pause)
        if interval is None:
            pause = min(pause * 1.5, 0.2)


_sessions: dict[tuple[str, str, str], Any] = {}
_sessions_lock = threading.Lock()


def boto_client(service: str, *, key_id: str, secret: str, region: str = REGION,
                **kwargs: Any) -> Any:
    """A new boto3 client (kwargs: endpoint_url, config, ...); the caller closes it.

    Made from one boto3 Session per credentials in this process: a new Session loads the
    service models again (~0.1 CPU-s a client), a client of a kept one costs ~2 ms. A Session
    is not safe to make clients from in two threads at once, hence the lock."""
    import boto3
    with _sessions_lock:
        session = _sessions.get((key_id, secret, region))
        if session is None:
            session = _sessions[(key_id, secret, region)] = boto3.session.Session(
                aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region)
        return session.client(service, **kwargs)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def read_tail(path: Path, lines: int = 40) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: `assert r.returncode == 0, describe(r)`."""
    return (f"exit {result.returncode} from {' '.join(map(str, result.args))}\n"
            f"--- stdout ---\n{tail(result.stdout or '')}\n"
            f"--- stderr ---\n{tail(result.stderr or '')}")


def find_leaks(text: str, secret_values: Iterable[str]) -> list[str]:
    """The secret values that occur in text (for `assert not find_leaks(log, env.secrets)`)."""
    return [value for value in secret_values if value and value in text]


def _exited_unreaped(proc: subprocess.Popen[Any]) -> bool:
    """Whether proc has exited, without reaping it.

    While the leader is an unreaped zombie its pid (= the process group id) cannot be reused,
    so signalling the group afterwards cannot hit an unrelated process.
    """
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None
