"""What Flower shows of a task: `carcosa full carcosa-full-20261201T000000Z [script postgres]`
instead of a Python repr of its arguments. Set as the message's `argsrepr` when it is
published (workers.app), so every sender (CLI, beat's batches, chains, retries, errbacks)
labels the same way; the label holds the host, the run's type, its run id and the step,
never anything else of the message."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from offsite.wire.messages import NOTIFY_FAILURE, PRUNE, RUN_SCRIPT, START_BACKUP, UPLOAD, VERIFY

MAX_LABEL_CHARS = 200


def _text(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isprintable())[:128]


def task_label(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The label of a task of ours (None for anything else, or arguments not as expected)."""
    try:
        if name == START_BACKUP:
            host, kind, run_id = args[:3]
            words = [host, kind, run_id]
        elif name == RUN_SCRIPT:
            host, run_id, script, kind = args[:4]
            words = [host, kind, run_id, "script", script]
        elif name == UPLOAD:
            host, run_id, kind = args[:3]
            words = [host, kind, run_id, "upload"]
        elif name == VERIFY:
            host, run_id = args[:2]
            words = [host, "verify", run_id]
        elif name == PRUNE:
            host, run_id = args[:2]
            words = [host, "prune", run_id]
        elif name == NOTIFY_FAILURE:
            words = [kwargs["host"], "alert", kwargs["run_id"]]
        else:
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return " ".join(_text(word) for word in words)[:MAX_LABEL_CHARS]


def label_published_task(headers: Mapping[str, Any] | None, body: Any,
                         **_: Any) -> None:
    """celery's before_task_publish: the label replaces `argsrepr` in the message headers."""
    if not isinstance(headers, dict) or not isinstance(body, (list, tuple)) or len(body) < 2:
        return
    args, kwargs = body[0], body[1]
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return
    label = task_label(str(headers.get("task", "")), args, kwargs)
    if label is not None:
        headers["argsrepr"] = label
