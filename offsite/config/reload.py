"""A config that follows its file: re-read when the file changed (size, mtime or content), the
new one taken only when valid. An invalid new file keeps the config in use, is logged, and is
reported once per content to the caller (which alerts, class `config_invalid`)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from offsite.config.model import Config, config_path, load_config
from offsite.errors import ConfigError

log = logging.getLogger(__name__)

InvalidReport = Callable[[ConfigError, str], None]   # (the problems, the file's sha256)


@dataclass(frozen=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            found = os.stat(path)
        except OSError:
            return None
        return cls(found.st_mtime_ns, found.st_size, found.st_ino)


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ReloadableConfig:
    """Call it for the config in use (loaded on first use, from $OFFSITE_CONFIG); `refresh()`
    re-reads the file when it changed. Thread-safe."""

    def __init__(self, path: Callable[[], Path] = lambda: config_path(None)) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._stamp: FileStamp | None = None
        self._digest: str | None = None
        self._reported: set[str] = set()

    def __call__(self) -> Config:
        with self._lock:
            if self._config is None:
                path = self._path()
                self._stamp, self._digest = FileStamp.of(path), file_digest(path)
                self._config = load_config(path)
            return self._config

    def cache_clear(self) -> None:
        with self._lock:
            self._config = self._stamp = self._digest = None

    def refresh(self, on_invalid: InvalidReport | None = None) -> Config:
        """The config to use now: the file's new content when it changed and is valid, else
        the one in use. Raises ConfigError only when no config was ever loaded."""
        current = self()
        path = self._path()
        stamp = FileStamp.of(path)
        with self._lock:
            if stamp == self._stamp:
                return current
            self._stamp = stamp
            digest = file_digest(path)
            if digest is None or digest == self._digest:
                return current
            try:
                fresh = load_config(path)
            except ConfigError as error:
                if digest not in self._reported:
                    self._reported.add(digest)
                    log.error("config %s changed and is invalid; keeping the config in use: %s",
                              path, "; ".join(error.problems)[:2000])
                    if on_invalid is not None:
                        try:
                            on_invalid(error, digest)
                        except Exception as exc:   # the report must not end the caller's run
                            log.error("could not report the invalid config: %s", exc)
                return current
            self._config, self._digest = fresh, digest
            log.info("config %s changed: re-read (digest %s)", path, digest[:16])
            return fresh
