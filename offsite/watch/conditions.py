"""Standing conditions (a host down, a slot missed, a run overdue): one alert when a condition
appears, nothing while it lasts, one recovery message when it clears."""
from __future__ import annotations

import json
from datetime import datetime

import redis

from offsite.watch.alerts import Alert
from offsite.constants import KEY_PREFIX
from offsite.watch.alerts import AlertOutbox

CONDITIONS_KEY = KEY_PREFIX + "conditions"   # hash: condition -> JSON {since, subject}


class Conditions:
    def __init__(self, client: redis.Redis, outbox: AlertOutbox) -> None:
        self.client = client
        self.outbox = outbox

    def raise_(self, key: str, alert: Alert, now: datetime) -> bool:
        """Alert when the condition is new; True then."""
        return self._switch(key, True, f"raise:{key}:{now.timestamp():.0f}", alert, now)

    def clear(self, key: str, recovery: Alert, now: datetime) -> bool:
        """Send the recovery message when the condition was active; True then."""
        return self._switch(key, False, f"clear:{key}:{now.timestamp():.0f}", recovery, now)

    def _switch(self, key: str, active: bool, alert_key: str, alert: Alert,
                now: datetime) -> bool:
        """Flip the condition and queue its message in one transaction."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(CONDITIONS_KEY)
                    if bool(pipe.hexists(CONDITIONS_KEY, key)) == active:
                        return False
                    pipe.multi()
                    if active:
                        pipe.hset(CONDITIONS_KEY, key, json.dumps(
                            {"since": now.isoformat(), "subject": alert.subject}))
                    else:
                        pipe.hdel(CONDITIONS_KEY, key)
                    self.outbox.stage(pipe, alert_key, alert, now)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def update(self, key: str, active: bool, alert: Alert, recovery: Alert,
               now: datetime) -> None:
        """Raise or clear the condition to match what was just observed."""
        if active:
            self.raise_(key, alert, now)
        else:
            self.clear(key, recovery, now)

    def is_active(self, key: str) -> bool:
        return bool(self.client.hexists(CONDITIONS_KEY, key))
