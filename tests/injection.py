"""Putting messages on offsite's queues as anyone who can write to its Redis can: Celery's
message protocol 2 published with kombu, any body, any content type, any task name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Connection

NO_OPTIONS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_headers(task: str, task_id: str, **extra: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": "(hostile)", "kwargsrepr": "{}", "origin": "hostile@test",
        "ignore_result": False}
    headers.update(extra)
    return headers


def publish(broker_url: str, queue: str, task: str, task_id: str, args: Any = (),
            kwargs: Any = None, *, body: Any = None, serializer: str = "json",
            raw: bytes | None = None, content_type: str | None = None,
            headers: dict[str, Any] | None = None) -> None:
    """One task message on `queue`: body defaults to [args, kwargs, options]; `raw` bytes are
    sent as they are with `content_type`; `headers` replace Celery's whole header set."""
    message: Any = raw if raw is not None else (
        body if body is not None else [list(args) if isinstance(args, tuple) else args,
                                       {} if kwargs is None else kwargs, NO_OPTIONS])
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        options: dict[str, Any] = {"serializer": serializer}
        if raw is not None:
            options = {"content_type": content_type or "application/octet-stream",
                       "content_encoding": "binary"}
        # the default exchange with the queue's name as key, as Celery itself sends
        producer.publish(message, exchange="", routing_key=queue,
                         headers=task_headers(task, task_id) if headers is None else headers,
                         retry=True, **options)


def vm_peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def rejected_entries(client: Any) -> list[str]:
    return [str(entry) for entry in client.lrange("offsite:rejected", 0, -1)]
