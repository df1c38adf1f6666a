"""Whether this process is being stopped (SIGTERM to a worker): a command that dies then was
killed by the stop, not by a fault of the backup, so its run is `lost` (and re-run by the
watchdog) rather than `failed` with a misleading cause."""
from __future__ import annotations

import threading

_stopping = threading.Event()


def request_stop() -> None:
    _stopping.set()


def stopping() -> bool:
    return _stopping.is_set()
