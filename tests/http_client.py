"""A plain HTTP client for the control node's server (http.client, nothing of offsite's), and a
headless Chromium to load the fleet page as a browser would."""
from __future__ import annotations

import base64
import http.client
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import HarnessError, wait_until


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(port: int, path: str = "/", method: str = "GET", host: str = "127.0.0.1",
            headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = 30.0) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     response.read())
    finally:
        conn.close()


def wait_serving(port: int, timeout: float = 30.0) -> None:
    def answers() -> bool:
        try:
            request(port, "/nothing-here", timeout=2)
            return True
        except OSError:
            return False
    wait_until(answers, timeout, f"the control node's HTTP server on port {port}")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise HarnessError("chromium is not installed: run bin/setup")
    return found


def _browser_argv(profile: Path) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}"]


def dump_dom(url: str, profile: Path, timeout: float = 90.0) -> str:
    """The DOM after the page loaded, as Chromium serialises it."""
    result = subprocess.run(_browser_argv(profile) + ["--dump-dom", url], capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0 or "<html" not in result.stdout:
        raise HarnessError(f"chromium --dump-dom exited {result.returncode}:\n"
                           f"{result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, profile: Path, out: Path, timeout: float = 90.0) -> Path:
    result = subprocess.run(_browser_argv(profile) + [f"--screenshot={out}",
                                                      "--window-size=1600,500", url],
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not out.exists():
        raise HarnessError(f"chromium --screenshot exited {result.returncode}:\n"
                           f"{result.stderr[-2000:]}")
    return out
