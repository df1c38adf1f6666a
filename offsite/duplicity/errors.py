"""What a failed duplicity run means, in one headline that names the real cause.

duplicity's exit code alone is ambiguous (30 is "no backup yet" as well as a crash, 23 a held
lock as well as a bad option) and its last stderr line is often gpg's log trailer. Its
machine-readable log (`--log-file`: records `LEVEL CODE [CLASS]` followed by `. `-prefixed
lines) says which error it raised: the headline is taken from there, then from stderr.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_BYTES = 64 * 1024
_RECORD = re.compile(r"^(ERROR|WARNING|NOTICE|INFO|DEBUG)\s+(\d+)(?:\s+(\S+))?\s*$")

EXIT_MEANINGS = {
    3: "the source hostname changed (another machine wrote this chain)",
    11: "the restore destination is not empty",
    17: "no full backup chain exists yet for an incremental",
    19: "the path is not in the backup",
    23: "duplicity refused its command line",
    30: "duplicity stopped on an unexpected error",
    31: "gpg failed",
    42: "the source path changed since the last backup",
    44: "a volume in the target does not have the size its manifest records",
    50: "the storage backend failed",
    51: "the storage backend denied access",
    52: "the storage backend has no such bucket or path",
    53: "the storage backend is out of space",
}

# (pattern in duplicity's error text, headline): the first match wins
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), headline) for pattern, headline in (
        (r"Bad session key|decryption failed: (?:Bad|Invalid) (?:session )?key|bad passphrase",
         "wrong passphrase: it does not decrypt this host's backup (check PASSPHRASE or "
         "encryption.passphrase_file; a backup is read with the passphrase it was written with)"),
        (r"No secret key|secret key not available",
         "no secret key: this node holds no key that decrypts the backup"),
        (r"long term storage|InvalidObjectState|GLACIER|DEEP_ARCHIVE",
         "a volume is archived (Glacier/Deep Archive): request its restoration (S3 "
         "RestoreObject) and try again when it is thawed"),
        (r"No backup chains found|No signature chains found|Found no backup",
         "no backup yet: the target holds no backup of this host"),
        (r"Another duplicity instance is already running",
         "another duplicity run holds this host's cache lock (a run still going, or a killed "
         "one's lock file: see the log line naming it)"),
        (r"Bad time string",
         "bad --time: use an ISO 8601 time (2026-11-01T00:00:00Z), a date or an age like 3D"),
        (r"NoSuchBucket|bucket does not exist",
         "the bucket does not exist: create it or fix target.url"),
        (r"AccessDenied|Forbidden|InvalidAccessKeyId|SignatureDoesNotMatch",
         "access denied by the storage backend: check this node's keys (DUPLICITY_AWS_* on a "
         "host, READ_AWS_* for drills and restores elsewhere) and the identity's policy"),
        (r"Unable to locate credentials|NoCredentialsError|PartialCredentialsError",
         "no credentials for the target: set DUPLICITY_AWS_* on a host, READ_AWS_* for drills "
         "and restores elsewhere (offsite provision writes them)"),
        (r"'NoneType' object has no attribute 'objects'",
         "duplicity could not open the bucket (access denied or no credentials for this "
         "node's identity): run `offsite check --connect` on this node"),
        (r"No space left on device", "no space left on device"),
        (r"Could not connect|Connection refused|ConnectTimeout|EndpointConnectionError|"
         r"Name or service not known|timed out",
         "the storage backend is unreachable: check target.endpoint_url and the network"),
    ))


_OBJECT = r"([\w.+-]*duplicity-[\w.+-]+?\.(?:difftar|manifest|sigtar)(?:\.gpg)?)"
# (pattern naming an object of the target, headline with {name}): a failure about one object
# names it, never a bare `Error: 2` or manifest hash
_OBJECT_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), headline) for pattern, headline in (
        (r"hash mismatch for file:\s*" + _OBJECT,
         "{name} in the target does not match the hash its manifest records (changed, swapped "
         "with another set's or damaged): restore an older set with --time, run a full"),
        (r"(?:No such file or directory|Errno 2\]|NoSuchKey|Not Found|404)[^\n]{0,400}?" + _OBJECT,
         "{name} is missing from the target"),
        (_OBJECT + r"[^\n]{0,400}?(?:No such file or directory|Errno 2\]|NoSuchKey|404)",
         "{name} is missing from the target"),
        (r"(?:decryption failed|GPG Failed|gpg: )[^\n]{0,2000}?" + _OBJECT,
         "{name} does not decrypt (damaged, or written with another key)"),
    ))


@dataclass(frozen=True)
class DuplicityFailure:
    headline: str
    detail: str


def error_records(log_text: str) -> list[str]:
    """The text of each ERROR record in duplicity's machine-readable log."""
    records: list[str] = []
    current: list[str] | None = None
    for line in log_text.splitlines():
        match = _RECORD.match(line)
        if match:
            if current is not None:
                records.append("\n".join(current))
            current = [match.group(3) or ""] if match.group(1) == "ERROR" else None
        elif current is not None and line.startswith(". "):
            current.append(line[2:])
    if current is not None:
        records.append("\n".join(current))
    return records


def read_log_tail(path: Path) -> str:
    """The last LOG_TAIL_BYTES of the log file ('' when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def describe_failure(exit_code: int | None, log_text: str, stderr_tail: str) -> DuplicityFailure:
    """The headline for a failed run: a known cause from the log's error records or stderr,
    else what the exit code means plus duplicity's own last error line."""
    records = error_records(log_text)
    for text in [*reversed(records), stderr_tail]:
        for pattern, headline in _OBJECT_CAUSES:
            if match := pattern.search(text):
                return DuplicityFailure(headline.format(name=match.group(1)), "")
    for text in [*reversed(records), stderr_tail]:
        for pattern, headline in _CAUSES:
            if pattern.search(text):
                return DuplicityFailure(headline, _last_line(text))
    meaning = EXIT_MEANINGS.get(exit_code if exit_code is not None else -1,
                                "duplicity failed")
    detail = _last_line(records[-1]) if records else _last_line(stderr_tail)
    return DuplicityFailure(meaning, detail)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("=====")
             and not line.strip().endswith("see log below:")]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or [""])[-1][:300]
