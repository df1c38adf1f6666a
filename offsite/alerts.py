"""Alerts: what a failure says, and the sinks that carry it to a person (SNS, or the log)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

from offsite.bounded import (ALERT_ATTRIBUTE_MAX_BYTES, ALERT_MESSAGE_MAX_BYTES, head_bytes,
                             tail_bytes)
from offsite.config import Config
from offsite.constants import SNS_SUBJECT_MAX
from offsite.durations import format_duration
from offsite.records import RunRecord

log = logging.getLogger(__name__)

_ALERT_ATTRIBUTES_MAX = 10          # SNS takes at most 10 message attributes
_ALERT_ERROR_MAX_BYTES = 2048
_ALERT_STDERR_MAX_BYTES = 4096


@dataclass(frozen=True)
class Alert:
    subject: str
    message: str
    attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Within SNS limits whatever went into it: subject 100 characters, message and
        attributes far below the 256 KiB the service takes in all."""
        object.__setattr__(self, "subject", sns_subject(self.subject))
        object.__setattr__(self, "message", head_bytes(self.message, ALERT_MESSAGE_MAX_BYTES))
        limit = ALERT_ATTRIBUTE_MAX_BYTES
        object.__setattr__(self, "attributes", {
            head_bytes(name, limit): head_bytes(value, limit)
            for name, value in list(self.attributes.items())[:_ALERT_ATTRIBUTES_MAX]})


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None:
        """Deliver the alert; raises on failure so the caller can retry."""


def sns_subject(text: str) -> str:
    """SNS subjects: at most 100 printable ASCII characters, one line."""
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in " ".join(text.split()))
    return clean if len(clean) <= SNS_SUBJECT_MAX else clean[:SNS_SUBJECT_MAX - 3] + "..."


def _subject(host: str, kind: str, what: str) -> str:
    return sns_subject(f"offsite: {host} {kind} backup {what.replace('_', ' ')}")


def condition_alert(host: str, kind: str, failure: str, text: str) -> Alert:
    return Alert(subject=_subject(host, kind, failure),
                 message=f"{text}\nnext: run `offsite status {host}`",
                 attributes={"host": host, "type": kind, "class": failure})


def recovery_alert(host: str, kind: str, failure: str, text: str) -> Alert:
    return Alert(subject=_subject(host, kind, f"recovered from {failure}"), message=text,
                 attributes={"host": host, "type": kind, "class": "recovered"})


def failure_alert(record: RunRecord) -> Alert:
    error = record.error
    failure = error.failure_class if error else "failed"
    lines = [
        f"Backup of host {record.host} ({record.type.value}) {failure.replace('_', ' ')}.",
        f"run id: {record.run_id}",
        f"failed step: {error.step if error else 'unknown'}",
        f"exit code: {error.exit_code if error and error.exit_code is not None else 'none'}",
        f"error: {head_bytes(error.message, _ALERT_ERROR_MAX_BYTES) if error else 'unknown'}",
    ]
    if record.started_at and record.finished_at:
        elapsed = (record.finished_at - record.started_at).total_seconds()
        lines.append(f"duration: {format_duration(elapsed)}")
    if error and error.stderr_tail:
        lines += ["stderr (last lines):", tail_bytes(error.stderr_tail, _ALERT_STDERR_MAX_BYTES)]
    lines.append(f"next: run `offsite status {record.host}` for the run history")
    return Alert(
        subject=_subject(record.host, record.type.value, failure),
        message="\n".join(lines),
        attributes={"host": record.host, "type": record.type.value, "class": failure})


class SnsSink:
    """Publishes with the alert credentials (ALERT_AWS_*), never the upload keys."""

    def __init__(self, config: Config) -> None:
        alerts = config.alerts
        assert alerts.sns_topic_arn
        self.topic_arn = alerts.sns_topic_arn
        import boto3   # only on the node that publishes: host workers never load it
        from botocore.config import Config as BotoConfig
        self.client = boto3.client(
            "sns", region_name=alerts.sns_region, endpoint_url=alerts.endpoint_url,
            aws_access_key_id=os.environ.get("ALERT_AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("ALERT_AWS_SECRET_ACCESS_KEY"),
            config=BotoConfig(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10))

    def send(self, alert: Alert) -> None:
        self.client.publish(
            TopicArn=self.topic_arn, Subject=alert.subject, Message=alert.message,
            MessageAttributes={name: {"DataType": "String", "StringValue": value}
                               for name, value in alert.attributes.items()})


class LogSink:
    """When no topic is configured: the failure is logged (and recorded), nothing crashes."""

    def __init__(self, config: Config) -> None:
        del config

    def send(self, alert: Alert) -> None:
        log.error("ALERT %s\n%s", alert.subject, alert.message)


ALERT_SINKS: dict[str, Callable[[Config], AlertSink]] = {"sns": SnsSink, "log": LogSink}


def sink_for(config: Config) -> AlertSink:
    return ALERT_SINKS["sns" if config.alerts.sns_topic_arn else "log"](config)
