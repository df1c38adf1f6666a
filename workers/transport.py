"""kombu's Redis transport, refusing an oversized, compressed or malformed message as it comes
off the queue, before kombu decodes it: decoding a 50 MB message (JSON envelope, base64 body)
costs five copies of it, 300 MB and more, before any check of ours could run, kombu inflates a
compressed body whole, and an envelope it cannot read raises inside the consumer's loop. The workers use it (workers.start);
what arrives within the bound goes on to workers.consumer and the task's own checks."""
from __future__ import annotations

import json
import re
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from offsite.wire.messages import MAX_ENVELOPE_BYTES, shown
from offsite.wire.rejections import refuse
from offsite.schedule.specs import utcnow
from workers.context import redis_client

TRANSPORT = "workers.transport:Transport"
SENTINEL_TRANSPORT = "workers.transport:SentinelTransport"
# kombu writes the headers after the body: the end of an envelope names its task and id
_TASK = re.compile(rb'"task": "([^"\\]{1,200})"')
_ID = re.compile(rb'"id": "([^"\\]{1,128})"')


def envelope_problem(envelope: Any) -> str | None:
    """What makes a popped message one kombu cannot turn into a Message safely: not its JSON
    envelope (kombu would raise in the consumer's loop), a body encoding kombu does not have,
    or compression (kombu would inflate it whole before any check: a zip bomb)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("properties"), dict) \
            or "delivery_tag" not in envelope["properties"]:
        return "not a kombu message envelope"
    if envelope["properties"].get("body_encoding") not in (None, "base64", "utf-8"):
        return f"body encoding {shown(envelope['properties'].get('body_encoding'))} refused"
    headers = envelope.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "headers are not a mapping"
    if headers and headers.get("compression"):
        return f"compressed body ({shown(headers['compression'])}) refused: offsite never " \
               "compresses"
    return None


def _label(item: bytes, envelope: Any) -> tuple[str, str]:
    """The task name and id to name a refused message by, as far as they can be read."""
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    if isinstance(headers, dict):
        return str(headers.get("task", "?")), str(headers.get("id", "?"))
    tail = item[-8192:]
    task, task_id = _TASK.search(tail), _ID.search(tail)
    return (task.group(1).decode(errors="replace") if task else "?",
            task_id.group(1).decode(errors="replace") if task_id else "?")


def _screened(queue: Any, item: Any) -> Any:
    """item, or None (after recording why) when it must not reach kombu's decoding."""
    if not isinstance(item, bytes):
        return item
    envelope: Any = None
    if len(item) > MAX_ENVELOPE_BYTES:
        problem: str | None = (f"message of {len(item)} bytes is over the "
                               f"{MAX_ENVELOPE_BYTES} allowed; dropped undecoded")
    else:
        try:
            envelope = json.loads(item)
        except ValueError:
            envelope = None
        problem = envelope_problem(envelope)
    if problem is None:
        return item
    name = queue.decode(errors="replace") if isinstance(queue, bytes) else str(queue)
    task, task_id = _label(item, envelope)
    refuse(redis_client(), utcnow(), f"queue {name}", task, task_id, problem)
    return None


class BoundedRedis(redis.Redis):
    """The channel's client: a popped message over the bound is recorded and dropped, as if
    the queue had been empty (kombu then raises Empty and polls again)."""

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        response = super().parse_response(connection, command_name, **options)
        if command_name == "BRPOP" and response:
            queue, item = response
            return None if _screened(queue, item) is None else response
        return response

    def rpop(self, name: Any, count: int | None = None) -> Any:
        return _screened(name, super().rpop(name, count))


class Channel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped
    def _get_client(self) -> Any:
        base = super()._get_client()
        return BoundedRedis if base is redis.Redis else base


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):  # type: ignore[misc]
    """The same screening on a broker reached through Redis Sentinel."""

    def _get_client(self) -> Any:
        base = super()._get_client()
        return BoundedRedis if base is redis.Redis else base


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel
