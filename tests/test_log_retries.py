"""A retry that goes on is logged in one line (offsite.process.logbounds): Celery's result
backend, retrying a write while a Redis master fails over, logs a warning with the traceback of
the error it handles; through offsite's log filter it is one line naming the operation and the
error. The format string is read from the installed Celery, so an upgrade that changes it fails
here instead of bringing the tracebacks back."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

from celery.backends.base import Backend

from offsite.process.logbounds import bound_handlers

KiB, MiB = 1024, 1024 * 1024
CUT_MARKER = "cut by offsite"   # as tests/test_hostile_processes.py

RETRY_MESSAGE = "Failed operation %s. Retrying %s more times."


def test_celerys_backend_retry_warning_is_one_line_with_its_error(tmp_path: Path) -> None:
    assert repr(RETRY_MESSAGE) in inspect.getsource(Backend._ensure_retryable)
    path = tmp_path / "log"
    celery_logger = logging.getLogger("celery.backends.base")
    handler = logging.FileHandler(path)
    celery_logger.addHandler(handler)
    try:
        bound_handlers(celery_logger)
        try:
            raise ConnectionError("No master found for 'offsite'")
        except ConnectionError:
            celery_logger.warning(RETRY_MESSAGE, "_store_result", 29, exc_info=True)
        try:
            raise ValueError("a real fault")
        except ValueError:
            celery_logger.error("something else failed", exc_info=True)
        try:
            raise ConnectionError("x" * (5 * MiB))
        except ConnectionError:
            celery_logger.warning(RETRY_MESSAGE, "_store_result", 28, exc_info=True)
    finally:
        celery_logger.removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    assert lines[0] == ("Failed operation _store_result. Retrying 29 more times. "
                        "(ConnectionError: No master found for 'offsite')")
    # any other record keeps its traceback
    assert lines[1] == "something else failed" and lines[2] == "Traceback (most recent call last):"
    # the error's text is bounded as any message is
    last = lines[-1]
    assert last.startswith("Failed operation _store_result. Retrying 28 more times. ")
    assert CUT_MARKER in last and len(last.encode()) < 64 * KiB
