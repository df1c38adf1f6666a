"""The verify task: a restore drill of one host, run where `verify.where` says (the control node or
a named host's worker). CheckedTask has validated the message (offsite.wire.messages): the host is
configured and this is its drill node, the run id is a verify run id of that host."""
from __future__ import annotations

import logging
from datetime import datetime

from celery import Task
from celery.exceptions import Ignore

from offsite.run.admission import MustWait, note_waiting
from offsite.wire.messages import VERIFY
from offsite.host.settings import resolve_host
from offsite.run.context import RunContext
from offsite.run.steps import StaleRun
from offsite.proof.verify import run_verify
from tasks.base import CheckedTask
from tasks.dispatch import verify_message, wait_for_host
from workers.app import app
from workers.context import current_config, host_lease, run_store

log = logging.getLogger(__name__)

@app.task(bind=True, base=CheckedTask, name=VERIFY)
def verify_backup(self: Task, host: str, run_id: str, at: datetime | None = None,
                  scheduled_for: datetime | None = None, target: str | None = None) -> str:
    config = current_config()
    ctx = RunContext(config=config, settings=resolve_host(config, host), store=run_store(),
                     lease=host_lease(), run_id=run_id,
                     worker=self.request.hostname or "unknown")
    try:
        record = run_verify(ctx, at, scheduled_for, target=target)
    except MustWait as wait:
        note_waiting(ctx, f"waited: {wait.cause}")
        wait_for_host(ctx, verify_message(config, host, run_id, at, scheduled_for, target),
                      wait.holder)
        return f"waiting: {wait.cause}"
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None
    return record.state.value if record else "not run"
