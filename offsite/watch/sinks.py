"""Alert sinks beyond SNS, and the fan-out that carries each alert to every configured sink.

- WebhookSink (`alerts.webhook_url`): the alert as one JSON POST
  `{"subject", "message", "attributes": {"host", "type", "class"}}` — the same texts and
  attributes as the SNS message. A non-2xx answer or no answer raises, so the outbox retries.
  The URL's path and query (often the hook's secret) never appear in a log line.
- FanOutSink: several sinks at once; the outbox records which ones took an alert, so a retry
  goes only to those that have not (no duplicates on the sink that worked).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping

from offsite.config.model import Config
from offsite.watch.alert_message import Alert, AlertSink
from offsite.watch.deadman import shown

WEBHOOK_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 4096


class DeliveryFailed(Exception):
    """A sink did not take the alert (the message names the sink, never its secret)."""


class WebhookSink:
    def __init__(self, config: Config, timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
        assert config.alerts.webhook_url
        self.url = config.alerts.webhook_url
        self.timeout_s = timeout_s

    def send(self, alert: Alert) -> None:
        body = json.dumps({"subject": alert.subject, "message": alert.message,
                           "attributes": alert.attributes}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "offsite"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raise DeliveryFailed(f"webhook {shown(self.url)} answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise DeliveryFailed(f"webhook {shown(self.url)} unreachable: {reason}") from None


class PartialDelivery(Exception):
    """Some sinks took the alert, others did not: `done` names those that did."""

    def __init__(self, done: list[str], problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.done = done


class FanOutSink:
    def __init__(self, sinks: Mapping[str, AlertSink]) -> None:
        self.sinks = dict(sinks)

    def send(self, alert: Alert) -> None:
        self.send_remaining(alert, [])

    def send_remaining(self, alert: Alert, done: list[str]) -> list[str]:
        """Send to every sink not in `done`; returns all that took it, raises PartialDelivery
        (carrying them) when any did not."""
        taken, problems = list(done), []
        for name, sink in self.sinks.items():
            if name in taken:
                continue
            try:
                sink.send(alert)
            except Exception as exc:  # any sink failure: the others still get the alert
                problems.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                continue
            taken.append(name)
        if problems:
            raise PartialDelivery(taken, problems)
        return taken
