"""Standing conditions (a host down, a slot missed, a run overdue): one alert when a condition
appears, nothing while it lasts, one recovery message when it clears."""
from __future__ import annotations

import json
from datetime import datetime

import redis

from offsite.alerts import Alert
from offsite.constants import KEY_PREFIX
from offsite.outbox import AlertOutbox

CONDITIONS_KEY = KEY_PREFIX + "conditions"   # hash: condition -> JSON {since, subject}


class Conditions:
    def __init__(self, client: redis.Redis, outbox: AlertOutbox) -> None:
        self.client = client
        self.outbox = outbox

    def active(self) -> dict[str, dict[str, str]]:
        return {(key.decode() if isinstance(key, bytes) else key): json.loads(value)
                for key, value in self.client.hgetall(CONDITIONS_KEY).items()}

    def raise_(self, key: str, alert: Alert, now: datetime) -> bool:
        """Alert when the condition is new; True then."""
        state = json.dumps({"since": now.isoformat(), "subject": alert.subject})
        if not self.client.hsetnx(CONDITIONS_KEY, key, state):
            return False
        self.outbox.add(f"raise:{key}:{now.timestamp():.0f}", alert, now)
        return True

    def clear(self, key: str, recovery: Alert, now: datetime) -> bool:
        """Send the recovery message when the condition was active; True then."""
        if not self.client.hdel(CONDITIONS_KEY, key):
            return False
        self.outbox.add(f"clear:{key}:{now.timestamp():.0f}", recovery, now)
        return True

    def update(self, key: str, active: bool, alert: Alert, recovery: Alert,
               now: datetime) -> None:
        """Raise or clear the condition to match what was just observed."""
        if active:
            self.raise_(key, alert, now)
        else:
            self.clear(key, recovery, now)

    def is_active(self, key: str) -> bool:
        return bool(self.client.hexists(CONDITIONS_KEY, key))
