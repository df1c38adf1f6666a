"""Who watches the watchman: the control node pings an external dead man's switch
(`alerts.heartbeat_url`, a healthchecks.io-style push URL) after every healthy watchdog tick,
so that a control node that is down (and so cannot alert) is noticed by the service instead.
A tick is healthy when it ran and could judge the fleet: while Redis' lost data is not rebuilt
(offsite.watch.ledger_lost.unjudged) no ping is sent, so the service alerts after its grace.

A ping runs in its own short-lived thread with a bounded timeout: a slow or dead endpoint never
delays a tick, and at most one ping is in flight. Failures are logged (the URL's path, which is
the check's secret, never is)."""
from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 10.0


def shown(url: str) -> str:
    """scheme://host of the URL: its path and query identify the check and stay out of logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…"


class DeadMansSwitch:
    def __init__(self, url: str | None, timeout_s: float = PING_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._busy = threading.Lock()
        self._failing = False
        self._withheld: str | None = None

    def ping_unless(self, withheld: str | None) -> bool:
        """Ping, unless `withheld` says why the fleet cannot be judged: then say so once (and
        once when pings resume). True when a ping was started."""
        if self.url is None:
            return False
        if withheld != self._withheld:
            if withheld:
                log.warning("dead man's switch %s not pinged while %s", shown(self.url),
                            withheld)
            else:
                log.info("dead man's switch %s pinged again: the fleet can be judged",
                         shown(self.url))
            self._withheld = withheld
        return False if withheld else self.ping()

    def ping(self) -> bool:
        """Start a ping unless one is still in flight (or no URL is set); True when started."""
        if self.url is None or not self._busy.acquire(blocking=False):
            return False
        threading.Thread(target=self._ping, name="deadman-ping", daemon=True).start()
        return True

    def _ping(self) -> None:
        assert self.url is not None
        try:
            request = urllib.request.Request(self.url, headers={"User-Agent": "offsite"})
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read(1024)
            if self._failing:
                log.info("dead man's switch %s answers again", shown(self.url))
            self._failing = False
        except (OSError, ValueError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or \
                type(exc).__name__
            log.warning("dead man's switch %s not pinged: %s", shown(self.url), reason)
            self._failing = True
        finally:
            self._busy.release()


def describe_switch(url: str | None) -> str:
    if url is None:
        return ("dead man's switch: alerts.heartbeat_url is not set: nothing alerts you when "
                "the control node itself is down")
    return (f"dead man's switch: alerts.heartbeat_url {shown(url)} is pinged by the control "
            "node after every healthy watchdog tick (none while a Redis loss is not rebuilt)")
