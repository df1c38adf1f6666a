"""Log lines bounded by bytes: a filter on every handler of offsite's and Celery's loggers cuts
a message (and its traceback) longer than LOG_MESSAGE_MAX_BYTES, with a marker."""
from __future__ import annotations

import logging

from offsite.bounded import LOG_MESSAGE_MAX_BYTES, head_bytes, tail_bytes

_TRACEBACKS = logging.Formatter()
# Warnings of a retry that goes on (a broker failing over, a result write retried): the
# traceback of an expected, handled error says nothing the line does not, so it is one line
# with the error, as Celery's consumer already logs a lost connection.
_RETRIES_IN_ONE_LINE = {("celery.backends.base", "Failed operation %s. Retrying %s more times.")}


class BoundedRecords(logging.Filter):
    """Cuts the message from its end and the traceback from its start (its last lines name
    the error); never drops a record."""

    def __init__(self, limit: int = LOG_MESSAGE_MAX_BYTES) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's own error path
            return True
        if record.exc_info and (record.name, record.msg) in _RETRIES_IN_ONE_LINE:
            error = record.exc_info[1]   # its text is bounded with the message, below
            message = f"{message} ({type(error).__name__}: {error})"
            record.msg, record.args = message, None
            record.exc_info, record.exc_text = None, None
        if len(message) > self.limit // 4 and len(message.encode(errors="replace")) > self.limit:
            record.msg, record.args = head_bytes(message, self.limit), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = tail_bytes(record.exc_text, self.limit)
        if record.stack_info:
            record.stack_info = tail_bytes(record.stack_info, self.limit)
        return True


def bound_handlers(*loggers: logging.Logger) -> None:
    """Install the filter on the handlers of `loggers` (the root logger when none is given)."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(existing, BoundedRecords) for existing in handler.filters):
                handler.addFilter(BoundedRecords())


def bound_celery_logging(logger: logging.Logger | None = None, **_: object) -> None:
    """Receiver of Celery's after_setup_logger / after_setup_task_logger signals."""
    bound_handlers(*(logger,) if logger is not None else ())
