"""Bounds by bytes for every text offsite stores or sends, whatever a child or a message holds."""
from __future__ import annotations

import os
import stat

ERROR_CAUSE_MAX_BYTES = 2048        # OffsiteError causes: Celery results, logs, CLI lines
STDERR_TAIL_MAX_BYTES = 8192        # a command's stderr tail, in errors and run records
STDOUT_TAIL_MAX_BYTES = 65536       # a command's captured stdout (duplicity prints stats last)
RECORD_TEXT_MAX_BYTES = 8192        # an ErrorRecord's message or stderr tail
RECORD_MAX_BYTES = 65536            # a whole run record as stored JSON
NOTE_MAX_BYTES = 1024               # one note of a run record
NOTES_MAX = 20                      # notes kept per record (first ones and the latest)
ALERT_MESSAGE_MAX_BYTES = 32768     # an SNS message (the service allows 256 KiB in all)
ALERT_ATTRIBUTE_MAX_BYTES = 256     # one SNS message attribute value
LOG_MESSAGE_MAX_BYTES = 16384       # one log line, message and traceback each


def dropped_marker(count: int) -> str:
    return f"[... {count} bytes cut by offsite ...]"


def head_bytes(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its start and a marker saying how much
    was cut, the whole within `limit` bytes."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    keep = max(limit - len(dropped_marker(len(data))) - 1, 0)
    head = data[:keep].decode(errors="ignore")
    return head + " " + dropped_marker(len(data) - len(head.encode()))


def tail_bytes(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else a marker and its end, within `limit`."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    keep = max(limit - len(dropped_marker(len(data))) - 1, 0)
    end = data[len(data) - keep:].decode(errors="ignore") if keep else ""
    return dropped_marker(len(data) - len(end.encode())) + "\n" + end


class TailBuffer:
    """The last `limit` bytes written to it, and how many came before them; memory stays
    O(limit) whatever the writer sends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.limit:
            self._data = bytearray(chunk[-self.limit:])
            return
        self._data += chunk
        excess = len(self._data) - self.limit
        if excess > 0:
            del self._data[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self._data)

    def text(self) -> str:
        """What was kept, decoded, with a leading marker when something was dropped; the
        whole within `limit` bytes (undecodable bytes become U+FFFD, then are cut again)."""
        if not self.dropped:
            return _last_bytes(bytes(self._data).decode(errors="replace"), self.limit)
        keep = max(self.limit - len(dropped_marker(self.total)) - 1, 0)
        body = _last_bytes(bytes(self._data[-keep:] if keep else b"").decode(errors="replace"),
                           keep)
        return dropped_marker(self.total - len(body.encode())) + "\n" + body


def _last_bytes(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[len(data) - limit:].decode(errors="ignore")


class NotRegularFile(OSError):
    """A FIFO, socket or device where a file was expected: refused, never waited on."""


def read_regular_file(path: os.PathLike[str] | str, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of a regular file. Opened without blocking, so a FIFO in its
    place is refused (NotRegularFile) instead of waited on; IsADirectoryError for a folder."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory")
        if not stat.S_ISREG(mode):
            raise NotRegularFile(0, "not a regular file (a FIFO, socket or device): pass a file")
        return handle.read(max_bytes + 1)


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}
_CONTROL.pop(0x0A)   # newlines separate lines; callers of one-line texts collapse them


def printable(text: str) -> str:
    """Text safe on a terminal: control characters (ESC of escape sequences, CR, BEL, C1) are
    shown as \\xNN, so a script's stderr cannot move the cursor, retitle or recolour it."""
    return text.translate(_CONTROL)
