"""The Apprise sink: each alert to every Apprise URL (email, Slack, ntfy, Matrix, a JSON POST…),
for fleets that do not run on AWS, beside SNS and the webhook or alone.

The URLs come from `alerts.apprise_urls`, the file `alerts.apprise_urls_file` (one a line, `#`
comments) and `$OFFSITE_APPRISE_URLS` (whitespace-separated), read where alerts are sent (the
control node, or an operator's `--alert`). Each URL is a sink of its own in the fan-out, so a
retry through the outbox goes only to the URLs that did not take the alert. The title is the
alert's subject; the body its message, then one line of its attributes
(`attributes: host=… type=… class=…`: most channels have no other place for them). A URL often
holds a token: only its scheme is ever named in a log line or an error, and Apprise's own
logger (which names hosts) is silenced.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from offsite.bounded import read_regular_file
from offsite.config.model import Config
from offsite.watch.alert_message import Alert, AlertSink
from offsite.watch.sinks import DeliveryFailed

ENV_URLS = "OFFSITE_APPRISE_URLS"
MAX_FILE_BYTES = 64 * 1024


def _scheme(url: str) -> str:
    return url.split("://", 1)[0][:32] + "://…"


class AppriseSink:
    def __init__(self, url: str, number: int) -> None:
        with warnings.catch_warnings():   # its plugins import imghdr, deprecated in 3.11
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise
            logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)   # it names hosts
            self.label = f"apprise #{number} ({_scheme(url)})"
            self.notifier: Any = apprise.Apprise()
            self.known = bool(self.notifier.add(url))
            self.types = apprise.NotifyType

    def send(self, alert: Alert) -> None:
        if not self.known:
            raise DeliveryFailed(f"{self.label}: not a URL Apprise can use; fix it in the "
                                 "config, the URLs file or $" + ENV_URLS)
        attributes = " ".join(f"{name}={value}" for name, value in alert.attributes.items())
        kind = (self.types.SUCCESS if alert.attributes.get("class") == "recovered"
                else self.types.FAILURE)
        if not self.notifier.notify(title=alert.subject, notify_type=kind,
                                    body=f"{alert.message}\nattributes: {attributes}"):
            raise DeliveryFailed(f"{self.label} did not take the alert")


class UnreadableUrls:
    """The URLs file could not be read: every attempt fails naming it, so the outbox keeps the
    alert and the log says why."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def send(self, alert: Alert) -> None:
        raise DeliveryFailed(self.problem)


def apprise_urls(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    """Every configured Apprise URL, in order, without repeats; raises OSError or ValueError
    when the URLs file cannot be read."""
    alerts = config.alerts
    urls = list(alerts.apprise_urls)
    if alerts.apprise_urls_file is not None:
        text = read_regular_file(alerts.apprise_urls_file, MAX_FILE_BYTES).decode()
        urls += [line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#")]
    urls += (environ if environ is not None else os.environ).get(ENV_URLS, "").split()
    return list(dict.fromkeys(urls))


def apprise_sinks(config: Config) -> dict[str, AlertSink]:
    """One sink per URL (`apprise#N`), none when no URL is configured."""
    try:
        urls = apprise_urls(config)
    except (OSError, ValueError) as exc:
        file = Path(str(config.alerts.apprise_urls_file))
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return {"apprise": UnreadableUrls(f"apprise: cannot read apprise_urls_file {file}: "
                                          f"{reason}")}
    return {f"apprise#{number}": AppriseSink(url, number)
            for number, url in enumerate(urls, 1)}


def apprise_problems(config: Config) -> list[str]:
    """`offsite check` on the alerting node: a URLs file it cannot read, a URL Apprise does not
    know (named by number and scheme only); nothing is sent."""
    sinks = apprise_sinks(config)
    return [sink.problem if isinstance(sink, UnreadableUrls) else
            f"{sink.label}: not a URL Apprise can use"
            for sink in sinks.values()
            if isinstance(sink, UnreadableUrls) or (isinstance(sink, AppriseSink)
                                                   and not sink.known)]
