"""The verify task: a restore drill of one host, run where `verify.on` says (the control node or
a named host's worker), never on a node the config does not name for it."""
from __future__ import annotations

import logging
from datetime import datetime

from celery import Task
from celery.exceptions import Ignore, Reject

from offsite.admission import MustWait, note_waiting
from offsite.run_context import RunContext
from offsite.runner import StaleRun
from offsite.verify_run import run_verify
from workers.app import app
from workers.context import current_config, host_lease, run_store, worker_host

log = logging.getLogger(__name__)

WAIT_RETRY_S = 5


@app.task(bind=True, name="tasks.verify.verify_backup")
def verify_backup(self: Task, host: str, run_id: str, at: str | None = None,
                  scheduled_for: str | None = None) -> str:
    config = current_config()
    drill_node = config.verify_on(host)
    mine = worker_host() or "control"
    if mine != drill_node:
        log.error("refusing a verify of %s: drills of that host run on %s, this is %s",
                  host, drill_node, mine)
        raise Reject(f"verify of {host} reached {mine}, not {drill_node}", requeue=False)
    ctx = RunContext(config=config, store=run_store(), lease=host_lease(), host=host,
                     run_id=run_id, worker=self.request.hostname or "unknown")
    try:
        record = run_verify(ctx, datetime.fromisoformat(at) if at else None,
                            datetime.fromisoformat(scheduled_for) if scheduled_for else None)
    except MustWait as wait:
        note_waiting(ctx, f"waited: {wait.cause}")
        raise self.retry(countdown=WAIT_RETRY_S, max_retries=None) from None
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None
    return record.state.value if record else "not run"
