"""The workers' message consumer: what never reaches a task is refused here, in one log line
and an entry in offsite:rejected, instead of Celery's multi-line reports with tracebacks and
message dumps: another content type (pickle, yaml), an oversized or malformed message, a task
name this worker does not run (a control task on a host queue, a backup task on the control
queue, Celery's built-in tasks, a typo).

Set as `worker_consumer` in workers.settings; the arguments are checked later, by the task
(tasks.base.CheckedTask)."""
from __future__ import annotations

import logging
from typing import Any, Callable

from celery.utils.functional import promise
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message

from offsite.wire.headers import check_embed, check_headers, named_run
from offsite.wire.messages import (JSON_CONTENT, MAX_BODY_BYTES, MessageRejected, check_body,
                                   check_envelope, shown)
from offsite.wire.rejections import fail_refused_run, refuse
from offsite.schedule.specs import utcnow
from workers.context import redis_client, run_store, worker_host

log = logging.getLogger(__name__)


class OffsiteConsumer(Consumer):  # type: ignore[misc]  # Celery's Consumer is untyped
    def create_task_handler(self, promise: Any = promise) -> Callable[[Message], Any]:
        celery_handler = super().create_task_handler(promise)
        host = worker_host()

        def on_task_received(message: Message) -> Any:
            try:
                task = check_envelope(message.content_type, len(message.body or b""),
                                      message.headers, host)
                check_headers(task, message.headers, host, utcnow())
                body = message.decode()
                check_body(task, body, host)
                check_embed(task, body[2], host)
            except MessageRejected as refused:
                return self._refuse(message, refused.one_line(), end_run=True)
            except (DecodeError, ContentDisallowed) as exc:  # kombu's, for a body it cannot read
                return self._refuse(message, f"undecodable message: {shown(str(exc))}")
            return celery_handler(message)

        return on_task_received

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._refuse(message, "not a task message")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._refuse(message, "unknown task")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._refuse(message, f"invalid task message: {shown(str(exc))}")

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._refuse(message, f"undecodable message: {shown(str(exc))}")

    def _refuse(self, message: Message, cause: str, end_run: bool = False) -> None:
        """Record and drop the message; with end_run, a queued run it names is failed (its
        start will never come) rather than left queued."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        task = str(headers.get("task", "?"))
        refuse(redis_client(), utcnow(), str(self.hostname), task,
               str(headers.get("id", "?")), cause)
        try:
            if end_run and (run_id := _named_run(message, task)) is not None:
                fail_refused_run(run_store(), run_id, cause, utcnow())
        except Exception as exc:   # Redis away: the run stays queued and run_stuck reports it
            log.warning("could not end the run the refused message named: %s", shown(str(exc)))
        message.reject_log_error(log, self.connection_errors)


def _named_run(message: Message, task: str) -> str | None:
    """The run a refused message of a run-starting task names, read only from a JSON body
    within the bound (nothing else of a refused message is decoded)."""
    if message.content_type != JSON_CONTENT or len(message.body or b"") > MAX_BODY_BYTES:
        return None
    try:
        return named_run(task, message.decode())
    except (DecodeError, ContentDisallowed, ValueError, TypeError):
        return None
