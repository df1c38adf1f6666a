"""Basic auth for the control node's HTTP server: one user, a salted PBKDF2-SHA256 hash.

The file holds one line `USER:$pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and hash in
URL-safe base64 without padding), made by `offsite http-password USER`. A request's
credentials are checked once with PBKDF2 (deliberately slow); the header of a request that
passed is remembered by its SHA-256, so a scraper sending the same header every 15 s costs one
hash, not one PBKDF2, per scrape. Failed checks run one at a time: a flood of wrong passwords
costs one core at most, and never blocks a request whose header is already known.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from offsite.bounded import read_regular_file
from offsite.errors import ConfigError

SCHEME = "pbkdf2-sha256"
DEFAULT_ITERATIONS = 200_000
MAX_ITERATIONS = 5_000_000
MAX_FILE_BYTES = 4096
MAX_HEADER_CHARS = 1024
_KNOWN_HEADERS_MAX = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"${SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


@dataclass
class Credentials:
    user: str
    iterations: int
    salt: bytes
    digest: bytes
    _known: set[bytes] = field(default_factory=set)
    _slow: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_header(self, header: str | None) -> bool:
        """Whether an `Authorization` header value carries this user and password."""
        if not header or len(header) > MAX_HEADER_CHARS:
            return False
        fingerprint = hashlib.sha256(header.encode("utf-8", "replace")).digest()
        with self._lock:
            if fingerprint in self._known:
                return True
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not sep:
            return False
        with self._slow:
            derived = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt,
                                          self.iterations)
        right = hmac.compare_digest(derived, self.digest) & \
            hmac.compare_digest(user.encode(), self.user.encode())
        if right:
            with self._lock:
                if len(self._known) >= _KNOWN_HEADERS_MAX:
                    self._known.clear()
                self._known.add(fingerprint)
        return right


def parse_credentials(line: str, source: str) -> Credentials:
    """Raises ConfigError naming `source` when the line is not USER:$pbkdf2-sha256$...."""
    def bad(why: str) -> ConfigError:
        return ConfigError([f"http.basic_auth_file: {why} (make the line with `offsite "
                            "http-password USER`)"], path=source)
    user, sep, stored = line.strip().partition(":")
    if not sep or not user:
        raise bad("expected one line USER:HASH")
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != SCHEME:
        raise bad(f"the hash is not ${SCHEME}$ITERATIONS$SALT$HASH")
    if not parts[2].isdigit() or not 1000 <= int(parts[2]) <= MAX_ITERATIONS:
        raise bad(f"iterations must be a number from 1000 to {MAX_ITERATIONS}")
    try:
        salt, digest = _unb64(parts[3]), _unb64(parts[4])
    except (binascii.Error, ValueError):
        raise bad("salt or hash is not base64") from None
    if len(salt) < 8 or len(digest) != 32:
        raise bad("salt shorter than 8 bytes or hash not 32 bytes")
    return Credentials(user=user, iterations=int(parts[2]), salt=salt, digest=digest)


def load_credentials(path: Path) -> Credentials:
    """Read the basic_auth_file; raises ConfigError (exit 2) naming it when it is missing,
    unreadable or malformed."""
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES)   # a FIFO is refused, not waited on
    except OSError as exc:
        raise ConfigError([f"http.basic_auth_file: cannot read {path}: "
                           f"{exc.strerror or exc}"], path=str(path)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"http.basic_auth_file: longer than {MAX_FILE_BYTES} bytes"],
                          path=str(path))
    lines = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) != 1:
        raise ConfigError(["http.basic_auth_file: expected exactly one USER:HASH line"],
                          path=str(path))
    return parse_credentials(lines[0], str(path))


def group_or_world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False
