"""The escrow watch, run by the control node: a host whose newest backup no key held here
decrypts is a standing condition (`escrow_failed`, one alert, a recovery message when a key
opens it again). It reads the target and runs gpg per host, so it runs in a thread of its own
every `watchdog.escrow_every`, never inside the watchdog's tick."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

import redis

from offsite.watch.alerts import condition_alert, recovery_alert
from offsite.watch.conditions import Conditions
from offsite.config.model import Config
from offsite.crypto.escrow import EscrowResult, escrow_check
from offsite.watch.alerts import AlertOutbox

log = logging.getLogger(__name__)
FIRST_CHECK_S = 10.0


def apply_escrow(results: list[EscrowResult], conditions: Conditions, now: datetime) -> None:
    """Raise the condition for a host no key here opens; clear it for one that opens. Hosts
    without a backup, or whose target could not be read, leave it as it is."""
    for result in results:
        key = f"escrow:{result.host}"
        if result.state == "does-not-open":
            conditions.raise_(key, condition_alert(
                result.host, "any", "escrow_failed",
                f"No key held on the control node decrypts the newest backup of host "
                f"{result.host}: {result.detail}. Restores need a key that does: check the "
                "escrowed passphrase or secret key."), now)
        elif result.state == "opens":
            conditions.clear(key, recovery_alert(
                result.host, "any", "escrow_failed",
                f"A key held on the control node decrypts host {result.host}'s newest backup "
                "again."), now)


def watch_escrow(config: Config, client: redis.Redis, stop: threading.Event) -> None:
    """Check soon after start, then every `watchdog.escrow_every`, until stopped; a failing
    check is logged and the next one runs."""
    wait = FIRST_CHECK_S
    while not stop.wait(wait):
        wait = float(config.watchdog.escrow_every)
        try:
            outbox = AlertOutbox(client)
            apply_escrow(escrow_check(config), Conditions(client, outbox),
                         datetime.now(timezone.utc))
        except Exception:   # the target or gpg away: the next check tries again
            log.exception("escrow check failed; next in %ss", wait)
