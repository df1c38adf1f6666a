"""The base of every offsite task: its message is validated (offsite.wire.messages) before anything
runs, and the task's body is called with the typed values. A message that fails is recorded,
logged in one line and rejected without requeue."""
from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Reject

from offsite.wire.messages import MessageRejected, message_fields, validate_message
from offsite.wire.rejections import refuse
from offsite.schedule.specs import utcnow
from workers.context import current_config, redis_client, worker_host


class CheckedTask(Task):
    """Celery's tracer calls a task that overrides __call__ through it, for every message; the
    body (`run`) gets the validated, typed arguments (BackupType, datetime)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            message = validate_message(self.name, args, kwargs, current_config(), worker_host())
        except MessageRejected as refused:
            reject(self, refused)
        return self.run(**message_fields(message))


def reject(task: Task, refused: MessageRejected) -> NoReturn:
    """Record and log the refusal (one line), then Reject: Celery stores the task as failed
    and drops the message; QuietRejections keeps Celery's own line and traceback out."""
    request = task.request
    refuse(redis_client(), utcnow(), str(request.hostname or "?"), task.name,
           str(request.id or "?"), refused.one_line())
    raise Reject(refused, requeue=False) from None


class QuietRejections(logging.Filter):
    """Drops Celery's "Task ... Reject(...)" warning and its traceback for a message offsite
    refused: offsite already logged the one line that says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, Reject) and isinstance(error.reason, MessageRejected))


logging.getLogger("celery.app.trace").addFilter(QuietRejections())
