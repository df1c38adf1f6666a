"""The encryption passphrase on this machine: read it for duplicity, and say whether it is
there, readable, non-empty and private (for `offsite check`, the worker's start and each run)."""
from __future__ import annotations

from dataclasses import dataclass, field
import os
import stat

from offsite.config.model import Config
from offsite.host.settings import HostSettings, resolve_host
from offsite.errors import PassphraseError

MAX_PASSPHRASE_BYTES = 64 * 1024


def read_passphrase(settings: HostSettings, step: str = "encryption") -> str:
    """The passphrase from env PASSPHRASE or encryption.passphrase_file on this host; raises
    PassphraseError (at `step`) when it is missing, unreadable or empty."""
    if passphrase := os.environ.get("PASSPHRASE"):
        if not passphrase.strip():
            raise PassphraseError("PASSPHRASE is set but blank: set the passphrase, or unset "
                                  "it to use encryption.passphrase_file", host=settings.name,
                                  step=step)
        return passphrase
    host, path = settings.name, settings.encryption.passphrase_file
    if path is None:
        raise PassphraseError("no passphrase: set PASSPHRASE or encryption.passphrase_file",
                              host=host, step=step)
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the worker; fstat then refuses it
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise PassphraseError(f"passphrase file {path} is not a regular file",
                                      host=host, step=step)
            raw = handle.read(MAX_PASSPHRASE_BYTES + 1)
    except OSError as exc:
        raise PassphraseError(f"cannot read passphrase file {path}: {exc.strerror}",
                              host=host, step=step) from None
    if len(raw) > MAX_PASSPHRASE_BYTES:
        raise PassphraseError(f"passphrase file {path} is larger than 64 KiB: is it the "
                              "right file?", host=host, step=step)
    try:
        passphrase = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PassphraseError(f"passphrase file {path} is not UTF-8 text", host=host,
                              step="encryption") from None
    if not passphrase:
        raise PassphraseError(f"passphrase file {path} is empty", host=host, step=step)
    if "\x00" in passphrase:
        raise PassphraseError(f"passphrase file {path} contains a NUL byte", host=host,
                              step="encryption")
    return passphrase


@dataclass
class PassphraseFindings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_passphrase(config: Config, host: str | None = None) -> PassphraseFindings:
    """Whether this machine can read the passphrase of `host` (of every host when None: with
    per-host passphrase files each is checked, each file once), and whether others can too.
    Only presence, readability and file mode: whether it opens the existing chain is checked
    against the target (offsite.duplicity.keycheck). In public-key mode a host needs none."""
    if host is not None:
        return _check_one(resolve_host(config, host))
    findings, seen = PassphraseFindings(), set()
    for name in config.hosts:
        settings = resolve_host(config, name)
        encryption = settings.encryption
        if (encryption.mode, encryption.passphrase_file) in seen:
            continue
        seen.add((encryption.mode, encryption.passphrase_file))
        for_host = _check_one(settings)
        findings.problems += [p for p in for_host.problems if p not in findings.problems]
        findings.warnings += [w for w in for_host.warnings if w not in findings.warnings]
    return findings


def _check_one(settings: HostSettings) -> PassphraseFindings:
    findings = PassphraseFindings()
    if settings.encryption.public_key:
        return findings
    try:
        read_passphrase(settings)
    except PassphraseError as error:
        findings.problems.append(error.cause)
    path = settings.encryption.passphrase_file
    if findings.problems or os.environ.get("PASSPHRASE") or path is None:
        return findings
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:  # removed since it was read
        findings.problems.append(f"cannot stat passphrase file {path}: {exc.strerror}")
        return findings
    if mode & 0o077:
        findings.warnings.append(
            f"passphrase file {path} is readable or writable by group or others (mode "
            f"{mode:04o}): run `chmod 600 {path}`")
    return findings
