"""An alert as every sink carries it (subject, message, attributes within SNS's limits) and
the Protocol a sink follows (offsite.watch.alerts: SNS, the log; offsite.watch.sinks: the
webhook, the fan-out)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from offsite.bounded import ALERT_ATTRIBUTE_MAX_BYTES, ALERT_MESSAGE_MAX_BYTES, head_bytes
from offsite.constants import SNS_SUBJECT_MAX

_ALERT_ATTRIBUTES_MAX = 10          # SNS takes at most 10 message attributes


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
