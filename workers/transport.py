"""kombu's Redis transport, refusing an oversized message as it comes off the queue, before
kombu decodes it: decoding a 50 MB message (JSON envelope, base64 body) costs five copies of
it, 300 MB and more, before any check of ours could run. The workers use it (workers.start);
what arrives within the bound goes on to workers.consumer and the task's own checks."""
from __future__ import annotations

import re
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from offsite.messages import MAX_ENVELOPE_BYTES
from offsite.rejections import refuse
from offsite.schedules import utcnow
from workers.context import redis_client

TRANSPORT = "workers.transport:Transport"
# kombu writes the headers after the body: the end of an envelope names its task and id
_TASK = re.compile(rb'"task": "([^"\\]{1,200})"')
_ID = re.compile(rb'"id": "([^"\\]{1,128})"')


def _refuse_oversized(queue: Any, item: bytes) -> None:
    tail = item[-8192:]
    task, task_id = _TASK.search(tail), _ID.search(tail)
    name = queue.decode(errors="replace") if isinstance(queue, bytes) else str(queue)
    refuse(redis_client(), utcnow(), f"queue {name}",
           task.group(1).decode(errors="replace") if task else "?",
           task_id.group(1).decode(errors="replace") if task_id else "?",
           f"message of {len(item)} bytes is over the {MAX_ENVELOPE_BYTES} allowed; "
           "dropped undecoded")


def _bounded(queue: Any, item: Any) -> Any:
    if isinstance(item, bytes) and len(item) > MAX_ENVELOPE_BYTES:
        _refuse_oversized(queue, item)
        return None
    return item


class BoundedRedis(redis.Redis):
    """The channel's client: a popped message over the bound is recorded and dropped, as if
    the queue had been empty (kombu then raises Empty and polls again)."""

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        response = super().parse_response(connection, command_name, **options)
        if command_name == "BRPOP" and response:
            queue, item = response
            return None if _bounded(queue, item) is None else response
        return response

    def rpop(self, name: Any, count: int | None = None) -> Any:
        return _bounded(name, super().rpop(name, count))


class Channel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped
    def _get_client(self) -> Any:
        base = super()._get_client()
        return BoundedRedis if base is redis.Redis else base


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
