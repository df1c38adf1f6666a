"""The upload bandwidth cap (`target.upload_limit`, `hosts.<host>.upload_limit`), applied inside
the duplicity process, which has no option of its own for it.

offsite passes the cap, in bytes per second, to the launcher (offsite.duplicity.launch) in the
environment variable OFFSITE_UPLOAD_LIMIT (a number, no secret), only for an upload. The
launcher then, before duplicity runs:
- S3: makes boto3's TransferConfig (which duplicity's boto3 backend builds for every
  `upload_file`) default its `max_bandwidth` to the cap, so s3transfer's leaky bucket paces the
  bytes it reads into every request, single or multipart;
- file://: copies each volume through a reader that sleeps so that the bytes read so far never
  run ahead of the cap (and never moves a file by renaming it, which would send it uncapped).
Restores and listings are not capped.
"""
from __future__ import annotations

import os
import time
from typing import Any

ENV = "OFFSITE_UPLOAD_LIMIT"
_CHUNK = 64 * 1024


def limit_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The cap the launcher was given; None without one (or a value that is not a positive
    whole number, which offsite never sets)."""
    raw = environ.get(ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


class Pace:
    """Bytes may pass at `rate` per second on average from the first one: `take(n)` sleeps
    until n more bytes are within the cap, so N bytes take at least N/rate seconds."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.free_at: float | None = None

    def take(self, amount: int) -> None:
        now = time.monotonic()
        start = now if self.free_at is None else max(self.free_at, now)
        self.free_at = start + amount / self.rate
        time.sleep(max(0.0, self.free_at - now))


class PacedReader:
    def __init__(self, handle: Any, pace: Pace) -> None:
        self.handle = handle
        self.pace = pace

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK))
        if data:
            self.pace.take(len(data))
        return bytes(data)

    def close(self) -> None:
        self.handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def install(rate: int) -> None:
    """Cap duplicity's uploads in this process at `rate` bytes per second (see the module)."""
    from boto3.s3 import transfer
    original = transfer.TransferConfig

    class CappedTransferConfig(original):   # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("max_bandwidth", rate)
            super().__init__(*args, **kwargs)

    transfer.TransferConfig = CappedTransferConfig   # type: ignore[misc]

    from duplicity.backends import localbackend
    pace = Pace(rate)

    def paced_put(self: Any, source_path: Any, remote_filename: Any) -> None:
        target = self.remote_pathdir.append(remote_filename)
        source_path.setdata()
        target.writefileobj(PacedReader(source_path.open("rb"), pace))

    localbackend.LocalBackend._put = paced_put
    localbackend.LocalBackend._move = lambda self, source, name: False
