"""Rules of the config that a field type cannot say: absolute paths away from system folders,
staging and cache apart, target and broker URLs that the tools using them will accept."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import redis

SYSTEM_DIRS = frozenset(PurePosixPath(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/cache",
    "/var/lib", "/var/log", "/var/run", "/var/tmp", "/var/spool", "/var/mail"))
PSEUDO_FS = tuple(PurePosixPath(p) for p in ("/proc", "/sys", "/dev"))
MAX_PATH_CHARS = 1024
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._~+=@,-]+$")


@dataclass(frozen=True)
class PathProblem:
    where: str
    message: str

    def line(self) -> str:
        return f"At '{self.where}': {self.message}"


class ConfigProblems(ValueError):
    """Problems of a cross-field rule, each with its own path (pydantic would give them none)."""

    def __init__(self, problems: list[PathProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.line() for problem in problems))


def check_absolute_path(value: Path) -> Path:
    text = str(value)
    if "\x00" in text or len(text) > MAX_PATH_CHARS:
        raise ValueError(f"not a usable path (NUL byte or over {MAX_PATH_CHARS} characters)")
    if not value.is_absolute():
        raise ValueError(f"{text!r} is relative: write an absolute path (the worker's working "
                         "folder is not the config's folder)")
    return Path(os.path.normpath(text))


def system_dir_problem(path: Path) -> str | None:
    """Why `path` must not be a folder offsite empties or fills, or None when it may be."""
    home = os.environ.get("HOME")
    for candidate in {PurePosixPath(path), PurePosixPath(path.resolve())}:
        if candidate in SYSTEM_DIRS or (home and candidate == PurePosixPath(home)):
            return (f"{str(path)!r} is a system or home folder: offsite creates and empties "
                    "folders in it; use a folder of its own, e.g. /var/lib/offsite/staging")
        if any(candidate.is_relative_to(pseudo) for pseudo in PSEUDO_FS):
            return f"{str(path)!r} is inside a kernel pseudo-filesystem (/proc, /sys, /dev)"
    return None


def overlap(first: Path, second: Path) -> bool:
    """True when the folders are the same or one is inside the other (symlinks resolved)."""
    for one, other in ((first, second), (first.resolve(), second.resolve())):
        if one == other or one.is_relative_to(other) or other.is_relative_to(one):
            return True
    return False


# The schemes of a target's url (offsite.duplicity.launch loads duplicity's backends of these).
TARGET_SCHEMES = ("file", "boto3+s3", "s3")


def check_target_url(value: str) -> str:
    """A duplicity URL naming a place: file:///abs/path, or boto3+s3:// / s3:// with a bucket."""
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"target url {value!r} contains whitespace or control characters")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"target url is longer than {MAX_PATH_CHARS} characters")
    scheme, _, rest = value.partition("://")
    if scheme not in TARGET_SCHEMES or not _:
        raise ValueError(f"target url {value!r} must start with file://, boto3+s3:// or s3://")
    if "?" in rest or "#" in rest:
        raise ValueError(f"target url {value!r} must not have a query or fragment")
    rest = rest.rstrip("/")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"target url {value!r} must name an absolute folder, "
                             "e.g. file:///srv/backups")
        if ".." in rest.split("/"):
            raise ValueError(f"target url {value!r} must not contain '..'")
        return f"file://{rest}"
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"target url {value!r} names no bucket: write {scheme}://BUCKET[/prefix]")
    if not _BUCKET.match(bucket):
        raise ValueError(f"target url {value!r}: {bucket!r} is not a bucket name")
    if prefix and not all(_PREFIX_PART.match(part) and part not in (".", "..")
                          for part in prefix.split("/")):
        raise ValueError(f"target url {value!r}: the prefix after the bucket may hold letters, "
                         "digits and ._~+=@,- between single slashes")
    return f"{scheme}://{rest}"


def check_http_url(value: str) -> str:
    """An S3/SNS endpoint: http(s)://host[:port][/path]."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"endpoint {value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not value.isprintable() \
            or any(char.isspace() for char in value):
        raise ValueError(f"endpoint {value!r} must be an http:// or https:// URL with a host")
    return value


def check_broker_url(value: str) -> str:
    """redis://[:password@]host[:port][/db] or rediss://…: what Celery (kombu), RedBeat and
    redis-py all read the same way. A Unix socket is not offered: kombu spells it
    redis+socket:// and redis-py unix://, so no one URL serves both. Or Redis Sentinel's
    sentinel://H1:P1;sentinel://H2:P2 (offsite.config.broker)."""
    from offsite.config.broker import is_sentinel, parse_sentinel_url
    if is_sentinel(value):
        if not value.isprintable() or any(char.isspace() for char in value):
            raise ValueError(f"broker url {_masked(value)!r} contains whitespace or control "
                             "characters")
        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise ValueError(f"broker url {_masked(value)!r}: {exc}") from None
        from offsite.config.tls import tls_problem
        if (problem := tls_problem(value)) is not None:
            raise ValueError(f"broker url {_masked(value)!r}: {problem}")
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"broker url is not a URL: {exc}") from None
    shown = _masked(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"broker url {shown!r} must be redis://HOST[:PORT][/DB] or "
                         "rediss://HOST[:PORT][/DB]")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"broker url {shown!r} contains whitespace or control characters")
    if parts.path not in ("", "/") and not re.fullmatch(r"/[0-9]{1,5}", parts.path):
        raise ValueError(f"broker url {shown!r}: the path must be a database number like /0")
    from offsite.config.tls import tls_problem
    if (problem := tls_problem(value)) is not None:
        raise ValueError(f"broker url {shown!r}: {problem}")
    try:
        redis.ConnectionPool.from_url(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"broker url {shown!r} is refused by redis: {exc}") from None
    return value


def _masked(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def scan_data(data: Any, path: tuple[str, ...] = ()) -> list[PathProblem]:
    """NUL characters in any string or key (no path, URL or command may carry one), and keys
    YAML read as booleans (a host called `no` or `on`)."""
    problems: list[PathProblem] = []
    if isinstance(data, str):
        if "\x00" in data:
            problems.append(PathProblem(".".join(path), "contains a NUL character"))
        elif not _is_unicode(data):
            problems.append(PathProblem(".".join(path), "contains a lone surrogate (an escape "
                                        "like \\ud800 that is not a character)"))
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and "\x00" in key:
                problems.append(PathProblem(".".join(path) or "(top level)",
                                            "a key contains a NUL character"))
                continue
            if isinstance(key, bool) and key and path[-1:] == ("verify",):
                problems.append(PathProblem(".".join(path), (
                    "`on:` unquoted is read by YAML as true: write `where: control` (or a "
                    "host's name) for where drills run")))
                continue
            if isinstance(key, bool):
                problems.append(PathProblem(".".join((*path, str(key).lower())), (
                    "this key is a boolean: YAML reads an unquoted yes/no/on/off/true/false "
                    "as one; quote the name")))
                continue
            problems += scan_data(value, (*path, str(key)[:80]))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            problems += scan_data(item, (*path, str(index)))
    return problems


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
