"""What a task message may carry: every argument of every offsite task is checked here, before
anything runs, against the task's signature, this worker's role and host, and the config.

Pure functions: `validate_message` returns a typed message or raises a MessageRejected
subclass whose text is bounded and on one line, whatever the message held (a 50 MB run id, a
newline, a dict where a name belongs).
"""
from __future__ import annotations

import inspect
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Union

from offsite.config.model import Config
from offsite.config.replicas import PRIMARY
from offsite.config.targets import host_replicas
from offsite.constants import BackupType, RunState
from offsite.errors import OffsiteError
from offsite.ledger.run_record import RunRecord

START_BACKUP = "tasks.backup.start_backup"
RUN_SCRIPT = "tasks.backup.run_script"
UPLOAD = "tasks.backup.upload"
NOTIFY_FAILURE = "tasks.control.notify_failure"
VERIFY = "tasks.verify.verify_backup"
PRUNE = "tasks.control.prune_host"

HOST_TASKS = frozenset({START_BACKUP, RUN_SCRIPT, UPLOAD})
CONTROL_TASKS = frozenset({NOTIFY_FAILURE, PRUNE})
DRILL_TASKS = frozenset({VERIFY})   # on whichever node `verify.where` names for the host

MAX_NAME_CHARS = 63          # the config's name rule
MAX_RUN_ID_CHARS = 128
MAX_TIMESTAMP_CHARS = 64
MAX_TASK_ID_CHARS = 128
MAX_BODY_BYTES = 1 << 20     # a chain of a few hundred steps fits many times over
MAX_ENVELOPE_BYTES = 2 * MAX_BODY_BYTES   # the body in base64 inside kombu's JSON envelope
MAX_HEADERS_CHARS = 16384    # Celery's own reprs of the arguments stay under 1 KiB each
JSON_CONTENT = "application/json"
RERUN_SUFFIX = "-rerun"      # offsite.watch.watchdog re-runs a lost run once, under this suffix
RUN_ID_STAMP = "%Y%m%dT%H%M%SZ"
_RUN_ID_TAIL = re.compile(r"(?P<type>full|incr|verify|prune)-(?P<stamp>\d{8}T\d{6}Z)(?:-rerun)?")
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]+")

_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60
_shown.maxlist = _shown.maxtuple = _shown.maxdict = 4
_shown.maxlevel = 2


def shown(value: Any) -> str:
    """A bounded one-line repr of anything a message carried (never its whole 50 MB)."""
    return _shown.repr(value)


class MessageRejected(OffsiteError):
    """A task message that must not run; it is recorded, logged in one line and dropped."""


class MalformedMessage(MessageRejected):
    """An argument is missing, extra, of the wrong type or out of bounds."""


class WrongWorker(MessageRejected):
    """A message on a queue whose worker does not run it (another host's, a control task on a
    host queue, a backup task on the control queue, a task name offsite does not have)."""


class NotAFailedRun(MessageRejected):
    """A failure report for a run whose record does not say failed or lost."""


@dataclass(frozen=True)
class StartBackup:
    host: str
    backup_type: BackupType
    run_id: str
    scheduled_for: datetime | None


@dataclass(frozen=True)
class RunScript:
    host: str
    run_id: str
    script: str
    backup_type: BackupType


@dataclass(frozen=True)
class Upload:
    host: str
    run_id: str
    backup_type: BackupType


@dataclass(frozen=True)
class Verify:
    host: str
    run_id: str
    at: datetime | None
    scheduled_for: datetime | None
    target: str | None   # the target the drill restores from (None: the rotation's next)


@dataclass(frozen=True)
class Prune:
    host: str
    run_id: str


@dataclass(frozen=True)
class NotifyFailure:
    failed_task_id: str
    host: str
    run_id: str


TaskMessage = Union[StartBackup, RunScript, Upload, Verify, Prune, NotifyFailure]


def message_fields(message: TaskMessage) -> dict[str, Any]:
    """The typed values by argument name, to call the task's body with."""
    return {field.name: getattr(message, field.name) for field in fields(message)}


def _signature(*positional: str, optional: tuple[str, ...] = (),
               keyword_only: tuple[str, ...] = ()) -> inspect.Signature:
    kinds = inspect.Parameter
    return inspect.Signature(
        [kinds(name, kinds.POSITIONAL_OR_KEYWORD) for name in positional]
        + [kinds(name, kinds.POSITIONAL_OR_KEYWORD, default=None) for name in optional]
        + [kinds(name, kinds.KEYWORD_ONLY) for name in keyword_only])


SIGNATURES: dict[str, inspect.Signature] = {
    START_BACKUP: _signature("host", "backup_type", "run_id", optional=("scheduled_for",)),
    RUN_SCRIPT: _signature("host", "run_id", "script", "backup_type"),
    UPLOAD: _signature("host", "run_id", "backup_type"),
    VERIFY: _signature("host", "run_id", optional=("at", "scheduled_for", "target")),
    PRUNE: _signature("host", "run_id"),
    NOTIFY_FAILURE: _signature("failed_task_id", keyword_only=("host", "run_id")),
}


def tasks_for(worker_host: str | None) -> frozenset[str]:
    """The task names a worker runs: a host worker backup tasks, the control worker (no host)
    control tasks; both restore drills, for the hosts whose `verify.where` names them."""
    return (HOST_TASKS if worker_host is not None else CONTROL_TASKS) | DRILL_TASKS


def check_role(task: str, worker_host: str | None) -> None:
    """Raises WrongWorker for a task name this worker does not run."""
    if task in tasks_for(worker_host):
        return
    role = f"the worker of host {worker_host}" if worker_host else "the control worker"
    known = task in HOST_TASKS or task in CONTROL_TASKS or task in DRILL_TASKS
    raise WrongWorker(f"{role} does not run {'task' if known else 'unknown task'} "
                      f"{shown(task)}", host=worker_host, step="message")


def check_envelope(content_type: str | None, body_size: int, headers: Any,
                   worker_host: str | None) -> str:
    """The task name of a message, if its envelope may be decoded here: JSON, of bounded
    size, Celery's message protocol 2, a task this worker runs. Checked before the body is
    decoded, so a 50 MB message costs its bytes and nothing more."""
    def malformed(cause: str) -> MalformedMessage:
        return MalformedMessage(cause, host=worker_host, step="message")
    if content_type != JSON_CONTENT:
        raise malformed(f"content type {shown(content_type)} refused: offsite takes JSON only")
    if body_size > MAX_BODY_BYTES:
        raise malformed(f"body of {body_size} bytes is over the {MAX_BODY_BYTES} bytes allowed")
    if not isinstance(headers, Mapping) or not isinstance(headers.get("task"), str):
        raise malformed("not a task message of Celery's protocol 2 (no task name in headers)")
    size = sum(len(str(key)) + len(str(value)) for key, value in headers.items())
    if size > MAX_HEADERS_CHARS:
        raise malformed(f"headers of {size} characters are over the {MAX_HEADERS_CHARS} allowed")
    task = str(headers["task"])
    check_role(task, worker_host)
    _text(headers.get("id"), "task id", MAX_TASK_ID_CHARS, worker_host)
    return task


def check_body(task: str, body: Any, worker_host: str | None) -> None:
    """Celery's protocol 2 body: [args, kwargs, embed] with a list, a mapping and a mapping."""
    if not (isinstance(body, (list, tuple)) and len(body) == 3
            and isinstance(body[0], (list, tuple)) and isinstance(body[1], Mapping)
            and isinstance(body[2], Mapping)):
        raise MalformedMessage(f"{task}: body is not [args, kwargs, options]: {shown(body)}",
                               host=worker_host, step="message")


def validate_message(task: str, args: Any, kwargs: Any, config: Config,
                     worker_host: str | None) -> TaskMessage:
    """The message's arguments, checked and typed; raises MessageRejected."""
    check_role(task, worker_host)
    values = _bind(task, args, kwargs, worker_host)
    if task == VERIFY:
        host = _drilled_host(values["host"], config, worker_host)
        return Verify(host=host, run_id=_run_id(values["run_id"], host, "verify"),
                      at=_timestamp(values["at"], host, "at"),
                      scheduled_for=_timestamp(values["scheduled_for"], host),
                      target=_drill_target(values["target"], config, host))
    host = _host(values["host"], config, worker_host)
    if task == PRUNE:
        return Prune(host=host, run_id=_run_id(values["run_id"], host, "prune"))
    if task == NOTIFY_FAILURE:
        return NotifyFailure(failed_task_id=_task_id(values["failed_task_id"], host),
                             host=host, run_id=_run_id(values["run_id"], host, None))
    backup_type = _backup_type(values["backup_type"], host)
    run_id = _run_id(values["run_id"], host, backup_type)
    if task == START_BACKUP:
        return StartBackup(host=host, backup_type=backup_type, run_id=run_id,
                           scheduled_for=_timestamp(values["scheduled_for"], host))
    if task == UPLOAD:
        return Upload(host=host, run_id=run_id, backup_type=backup_type)
    return RunScript(host=host, run_id=run_id, backup_type=backup_type,
                     script=_script(values["script"], config, host))


def require_failed_run(record: RunRecord | None, host: str, run_id: str) -> RunRecord:
    """The run's record, if it says the run failed or was lost on `host`: no message can make
    offsite alert "failed" for a run that succeeded, still runs, or does not exist."""
    if record is None:
        raise NotAFailedRun(f"failure report for run {run_id}, which has no record",
                            host=host, step="alert")
    if record.host != host:
        raise NotAFailedRun(f"failure report for run {run_id} of host {host}, but the run "
                            f"belongs to host {record.host}", host=host, step="alert")
    if record.state not in (RunState.FAILED, RunState.LOST):
        raise NotAFailedRun(f"failure report for run {run_id}, whose record says "
                            f"{record.state.value}", host=host, step="alert")
    return record


def _bind(task: str, args: Any, kwargs: Any, worker_host: str | None) -> dict[str, Any]:
    def malformed(cause: str) -> MalformedMessage:
        return MalformedMessage(f"{task}: {cause}", host=worker_host, step="message")
    if not isinstance(args, (list, tuple)):
        raise malformed(f"positional arguments must be a list, got {shown(args)}")
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise malformed(f"keyword arguments must be a mapping by name, got {shown(kwargs)}")
    try:
        bound = SIGNATURES[task].bind(*args, **kwargs)
    except TypeError as mismatch:
        raise malformed(f"{shown(str(mismatch))} in {shown(args)} {shown(dict(kwargs))}") \
            from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _text(value: Any, what: str, limit: int, host: str | None) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a string, got {shown(value)}", host=host,
                               step="message")
    if not value or len(value) > limit:
        raise MalformedMessage(f"{what} must be 1 to {limit} characters, got {len(value)}: "
                               f"{shown(value)}", host=host, step="message")
    return value


def _host(value: Any, config: Config, worker_host: str | None) -> str:
    """A host in the config (so it meets the config's name rule), and this worker's own."""
    host = _text(value, "host", MAX_NAME_CHARS, worker_host)
    if host not in config.hosts:
        raise WrongWorker(f"message for host {shown(host)}, which is not in the config",
                          host=worker_host, step="message")
    if worker_host is not None and host != worker_host:
        raise WrongWorker(f"message for host {host} reached the worker of {worker_host}",
                          host=worker_host, step="message")
    return host


def _drilled_host(value: Any, config: Config, worker_host: str | None) -> str:
    """A configured host whose drills `verify.where` sends to this worker."""
    host = _text(value, "host", MAX_NAME_CHARS, worker_host)
    if host not in config.hosts:
        raise WrongWorker(f"verify of host {shown(host)}, which is not in the config",
                          host=worker_host, step="message")
    here = worker_host or "control"
    if config.verify_on(host) != here:
        raise WrongWorker(f"verify of host {host} reached {here}; its drills run on "
                          f"{config.verify_on(host)}", host=worker_host, step="message")
    return host


def _drill_target(value: Any, config: Config, host: str) -> str | None:
    """None, `primary` or the name of one of the host's replicas: never a URL or a path (the
    target's place and keys come from the config and the node, not from a message)."""
    if value is None:
        return None
    name = _text(value, "target", MAX_NAME_CHARS, host)
    known = [PRIMARY, *host_replicas(config, host)]
    if name not in known:
        raise MalformedMessage(f"target {shown(name)} is not one of host {host}'s targets "
                               f"({', '.join(known)})", host=host, step="message")
    return name


def _backup_type(value: Any, host: str) -> BackupType:
    if not isinstance(value, str) or value not in (BackupType.FULL.value, BackupType.INCR.value):
        raise MalformedMessage(f"backup type must be 'full' or 'incr', got {shown(value)}",
                               host=host, step="message")
    return BackupType(value)


def _run_id(value: Any, host: str, backup_type: BackupType | str | None) -> str:
    """`<host>-<type>-<UTC stamp>[-rerun]`, of this host; its type is the message's, or incr
    when the message says full (an incremental promoted to a full keeps its id)."""
    run_id = _text(value, "run id", MAX_RUN_ID_CHARS, host)
    tail = _RUN_ID_TAIL.fullmatch(run_id[len(host) + 1:]) \
        if run_id.startswith(host + "-") else None
    expected = f"'{host}-<full|incr|verify|prune>-<YYYYmmddTHHMMSSZ>[{RERUN_SUFFIX}]'"
    if tail is None:
        raise MalformedMessage(f"run id {shown(run_id)} is not {expected}", host=host,
                               step="message")
    try:
        datetime.strptime(tail["stamp"], RUN_ID_STAMP)
    except ValueError:
        raise MalformedMessage(f"run id {run_id!r} has no real time in it", host=host,
                               step="message") from None
    kind = tail["type"]
    if backup_type is not None and kind != backup_type and \
            not (kind == BackupType.INCR and backup_type == BackupType.FULL):
        raise MalformedMessage(f"run id {run_id!r} is of type {kind}, the message says "
                               f"{backup_type}", host=host, step="message")
    return run_id


def _script(value: Any, config: Config, host: str) -> str:
    script = _text(value, "script", MAX_NAME_CHARS, host)
    if script not in config.host(host).scripts:
        raise MalformedMessage(f"script {shown(script)} is not in host {host}'s config",
                               host=host, step="message")
    return script


def _timestamp(value: Any, host: str, what: str = "scheduled_for") -> datetime | None:
    if value is None:
        return None
    text = _text(value, what, MAX_TIMESTAMP_CHARS, host)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MalformedMessage(f"{what} {shown(text)} is not an ISO 8601 time with its zone",
                               host=host, step="message")
    return moment


def _task_id(value: Any, host: str) -> str:
    task_id = _text(value, "failed task id", MAX_TASK_ID_CHARS, host)
    if not _TASK_ID.fullmatch(task_id):
        raise MalformedMessage(f"failed task id {shown(task_id)} is not a task id", host=host,
                               step="message")
    return task_id
