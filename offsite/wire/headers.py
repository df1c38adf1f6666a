"""What Celery reads of a task message besides its arguments: the headers of its protocol 2
(`timelimit`, `eta`, `expires`, `retries`, `group`, `parent_id`, …) and the body's embedded
callbacks (`chain`, `errbacks`, `callbacks`, `chord`). Celery trusts them: `timelimit: [1, 2, 3]`
raises inside its consumer's loop (the worker stops, the message is restored, every restart dies
on it again), an `expires` in the past drops a run's message silently, an `eta` years ahead
holds it for ever, a `chord` makes the worker call back into the result backend.

Pure functions, called by the workers' consumer (workers.consumer) before Celery sees the
message: a header offsite never sends is refused, and every header it sends must hold what
offsite's own senders (offsite.wire.publish, Celery's chains and retries) put there.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from offsite.wire.messages import (HOST_TASKS, MAX_RUN_ID_CHARS, MAX_TASK_ID_CHARS,
                                   NOTIFY_FAILURE, PRUNE, RUN_SCRIPT, START_BACKUP, UPLOAD,
                                   VERIFY, MalformedMessage, shown)

# Celery's protocol 2 headers (celery.app.amqp.as_task_v2), and nothing else
KNOWN_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps"})
EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
MAX_ETA_AHEAD = timedelta(hours=1)   # offsite's own retries wait seconds (tasks.backup)
MAX_RETRIES = 10_000_000             # a run waiting for its host retries every 5 s
MAX_NESTING = 16
MAX_TEXT_CHARS = 1024                # argsrepr, kwargsrepr, origin
MAX_CHAIN = 1000
MAX_ERRBACKS = 4
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,%d}" % MAX_TASK_ID_CHARS)
# where each task that starts or continues a run carries its run id
RUN_ID_ARG = {START_BACKUP: 2, RUN_SCRIPT: 1, UPLOAD: 1, VERIFY: 1, PRUNE: 1}
RUN_STARTING_TASKS = frozenset({START_BACKUP, VERIFY, PRUNE})


def _refuse(task: str, name: str, value: Any, rule: str, host: str | None) -> MalformedMessage:
    return MalformedMessage(f"{task}: header {name} {shown(value)} refused: {rule}",
                            host=host, step="message")


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def check_headers(task: str, headers: Mapping[str, Any], worker_host: str | None,
                  now: datetime) -> None:
    """Raises MalformedMessage for a header Celery would read that offsite never sends, or
    that holds what offsite never puts there."""
    def refuse(name: str, rule: str) -> MalformedMessage:
        return _refuse(task, name, headers.get(name), rule, worker_host)
    unknown = sorted(str(key) for key in headers if key not in KNOWN_HEADERS)
    if unknown:
        raise MalformedMessage(f"{task}: headers offsite never sends: {shown(unknown)}",
                               host=worker_host, step="message")
    if headers.get("lang", "py") not in ("py", None):
        raise refuse("lang", "offsite's messages are Celery's 'py'")
    for name in ("shadow", "expires"):
        if headers.get(name) is not None:
            raise refuse(name, "offsite never sets it")
    index = headers.get("group_index")
    if index is not None and not _int_in(index, 0, MAX_ERRBACKS):
        raise refuse("group_index", "Celery's index of a failure report among its errbacks")
    timelimit = headers.get("timelimit")
    if timelimit is not None and (not isinstance(timelimit, (list, tuple))
                                  or list(timelimit) != [None, None]):
        raise refuse("timelimit", "offsite sets no time limit in a message: [null, null]")
    if headers.get("retries") is not None and not _int_in(headers["retries"], 0, MAX_RETRIES):
        raise refuse("retries", f"a count from 0 to {MAX_RETRIES}")
    nesting = headers.get("replaced_task_nesting")
    if nesting is not None and not _int_in(nesting, 0, MAX_NESTING):
        raise refuse("replaced_task_nesting", f"a count from 0 to {MAX_NESTING}")
    if headers.get("eta") is not None:
        eta = _time(headers["eta"])
        if eta is None:
            raise refuse("eta", "an ISO 8601 time with its zone")
        if eta > now + MAX_ETA_AHEAD:
            raise refuse("eta", f"more than {MAX_ETA_AHEAD} ahead")
    for name in ("root_id", "parent_id", "group"):   # Celery calls errbacks as a group
        value = headers.get(name)
        if value is not None and not (isinstance(value, str) and _TASK_ID.fullmatch(value)):
            raise refuse(name, "a task id")
    for name in ("argsrepr", "kwargsrepr", "origin"):
        value = headers.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS):
            raise refuse(name, f"text of at most {MAX_TEXT_CHARS} characters")
    if headers.get("ignore_result") not in (None, True, False):
        raise refuse("ignore_result", "true or false")
    if headers.get("stamped_headers") not in (None, []) or headers.get("stamps") not in (None, {}):
        raise refuse("stamps" if headers.get("stamps") not in (None, {}) else "stamped_headers",
                     "offsite never stamps a task")


def _signatures(value: Any, limit: int) -> list[Mapping[str, Any]] | None:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > limit \
            or not all(isinstance(item, Mapping) for item in value):
        return None
    return list(value)


def check_embed(task: str, embed: Mapping[str, Any], worker_host: str | None) -> None:
    """The body's third part: what Celery sends or calls when the task ends. offsite chains a
    run's steps on its host's queue and sets one errback (the failure report) on the control
    queue; it never sets a callback or a chord."""
    def refuse(what: str, rule: str) -> MalformedMessage:
        return MalformedMessage(f"{task}: embedded {what} {shown(embed.get(what))} refused: "
                                f"{rule}", host=worker_host, step="message")
    unknown = sorted(str(key) for key in embed if key not in EMBED_KEYS)
    if unknown:
        raise MalformedMessage(f"{task}: embedded options offsite never sends: "
                               f"{shown(unknown)}", host=worker_host, step="message")
    if embed.get("chord") is not None:
        raise refuse("chord", "offsite never sends a chord")
    if embed.get("callbacks") not in (None, []):
        raise refuse("callbacks", "offsite never sets one")
    chain = _signatures(embed.get("chain"), MAX_CHAIN)
    if chain is None or any(step.get("task") not in HOST_TASKS for step in chain):
        raise refuse("chain", "a run's steps only")
    errbacks = _signatures(embed.get("errbacks"), MAX_ERRBACKS)
    if errbacks is None or any(errback.get("task") != NOTIFY_FAILURE for errback in errbacks):
        raise refuse("errbacks", "the failure report only")


def named_run(task: str, body: Any) -> str | None:
    """The run id a message of a run-starting task names, if its body holds one where that
    task carries it (a refused start can then end its queued run instead of leaving it)."""
    position = RUN_ID_ARG.get(task)
    if task not in RUN_STARTING_TASKS or position is None \
            or not isinstance(body, (list, tuple)) or not body:
        return None
    args, kwargs = body[0], body[1] if len(body) > 1 else {}
    value = args[position] if isinstance(args, (list, tuple)) and len(args) > position else \
        kwargs.get("run_id") if isinstance(kwargs, Mapping) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_RUN_ID_CHARS:
        return value
    return None
