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


# Appended to a copy of a page (the served page's CSP runs no script): writes what the layout
# measured into the DOM, for --dump-dom to carry out.
_MEASURE = ("<script>document.body.insertAdjacentHTML('beforeend', '<p id=\"measured\" '"
            "+ 'data-scroll-width=\"' + document.documentElement.scrollWidth + '\" '"
            "+ 'data-inner-width=\"' + window.innerWidth + '\"></p>')</script>")


def dump_dom_at_width(html: str, folder: Path, width: int) -> tuple[str, int, int]:
    """Chromium's DOM of `html` (a page as served, saved as a file with a measuring script
    added) laid out in a window `width` px wide, with document.scrollWidth and
    window.innerWidth as measured there."""
    import re
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "page.html"
    page.write_text(html.replace("</body>", _MEASURE + "</body>"))
    result = subprocess.run(_browser_argv(folder / "profile") + [
        f"--window-size={width},900", "--dump-dom", page.as_uri()], capture_output=True,
        text=True, timeout=90, stdin=subprocess.DEVNULL)
    found = re.search(r'id="measured" data-scroll-width="(\d+)" data-inner-width="(\d+)"',
                      result.stdout)
    if result.returncode != 0 or found is None:
        raise HarnessError(f"chromium --dump-dom exited {result.returncode}:\n"
                           f"{result.stderr[-2000:]}")
    return result.stdout, int(found.group(1)), int(found.group(2))


def screenshot(url: str, profile: Path, out: Path, timeout: float = 90.0,
               width: int = 1280) -> Path:
    result = subprocess.run(_browser_argv(profile) + [f"--screenshot={out}",
                                                      f"--window-size={width},500", url],
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not out.exists():
        raise HarnessError(f"chromium --screenshot exited {result.returncode}:\n"
                           f"{result.stderr[-2000:]}")
    return out
