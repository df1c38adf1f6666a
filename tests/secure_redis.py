"""A redis-server that asks for a password (`requirepass`), and Flower started as compose.yaml
starts it, for the tests that look for the password where it must not be."""
from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import VENV_BIN, ManagedProcess, ProcessFactory, RedisServer, free_port


class PasswordRedisServer(RedisServer):
    """RedisServer with `--requirepass`; its url carries the password, as a fleet's would."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.password = "pw-" + secrets.token_hex(16)
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.extra_args = ["--requirepass", self.password]


class Flower:
    """`offsite flower` (Flower on the app's settings) on a free loopback port, the API open
    (as FLOWER_UNAUTHENTICATED_API allows) so the test can read every page."""

    def __init__(self, processes: ProcessFactory, config: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess = processes.start(
            "flower", [str(VENV_BIN / "offsite"), "--config", str(config), "flower",
                       "--port", str(self.port), "--address", "127.0.0.1"],
            "Visit me at", ready_timeout=60,
            env_extra={"OFFSITE_CONFIG": str(config), "FLOWER_UNAUTHENTICATED_API": "true"})

    def get(self, path: str, timeout: float = 30) -> tuple[int, str]:
        """(status, body) of GET path; an HTTP error's status and body too."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
