"""Every error offsite raises on purpose derives from OffsiteError and says host, step and cause."""
from __future__ import annotations

from offsite.bounded import ERROR_CAUSE_MAX_BYTES, STDERR_TAIL_MAX_BYTES, head_bytes, tail_bytes

_WHERE_MAX_BYTES = 512


class OffsiteError(Exception):
    """An error with the host and the step it happened in, and the cause in words.

    The cause is bounded (ERROR_CAUSE_MAX_BYTES): it travels into Celery results, task events,
    logs and run records, whatever text a child or a message put into it."""

    exit_code = 1
    failure_class: str | None = None   # the alert class, when the error type decides it

    def __init__(self, cause: str, *, host: str | None = None, step: str | None = None) -> None:
        self.cause = head_bytes(cause, ERROR_CAUSE_MAX_BYTES)
        self.host = host
        self.step = step
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = " ".join(part for part in (
            f"host {self.host}" if self.host else "",
            f"step {self.step}" if self.step else "",
        ) if part)
        line = f"{where}: {self.cause}" if where else self.cause
        return head_bytes(line, ERROR_CAUSE_MAX_BYTES + _WHERE_MAX_BYTES)


class ConfigError(OffsiteError):
    """The configuration is missing or invalid; `problems` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str], *, path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        head = f"invalid config {path}" if path else "invalid config"
        super().__init__(f"{head}: " + "; ".join(problems))


class UsageError(OffsiteError):
    exit_code = 2


class UnknownHostError(UsageError):
    def __init__(self, host: str, known: list[str]) -> None:
        names = ", ".join(known) or "none"
        super().__init__(f"unknown host {host!r}: not in the config (configured hosts: {names})",
                         host=host)


class CommandError(OffsiteError):
    """An external command failed; carries its exit code and the tail of its stderr."""

    def __init__(self, cause: str, *, host: str | None, step: str | None,
                 exit_code: int | None, stderr_tail: str) -> None:
        self.returncode = exit_code
        self.stderr_tail = tail_bytes(stderr_tail, STDERR_TAIL_MAX_BYTES)
        super().__init__(cause, host=host, step=step)


class CommandTimedOut(CommandError):
    pass


class BrokerUnavailable(OffsiteError):
    pass


class MessageUnsent(BrokerUnavailable):
    """A run is recorded but the broker did not take its message: the control node's
    watchdog sends it when it does (offsite.wire.outgoing)."""


class PassphraseError(OffsiteError):
    """The encryption passphrase is missing, unreadable or empty on this machine."""

    failure_class = "encryption_failed"


class NoRestoreSpace(OffsiteError):
    """A restore's folder has less free space than the set restores to (offsite.proof.space):
    refused before duplicity starts."""

    failure_class = "verify_no_space"   # the class a drill refused for it fails with
