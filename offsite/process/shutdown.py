"""Whether this process is being stopped (SIGTERM to a worker): a command that dies then was
killed by the stop, not by a fault of the backup, so its run is `lost` (and re-run by the
watchdog) rather than `failed` with a misleading cause."""
from __future__ import annotations

import threading

_stopping = threading.Event()


def request_stop() -> None:
    _stopping.set()


def stopping(grace_s: float = 0.0) -> bool:
    """Whether a stop was requested, waiting up to grace_s for one: a signal sent to a whole
    process tree can kill the child before the worker's own handler has run."""
    return _stopping.wait(grace_s) if grace_s > 0 else _stopping.is_set()
