"""The tasks a host worker runs: start_backup builds the chain of scripts, then upload (which
confirms the set in the target and finishes the run)."""
from __future__ import annotations

import logging
from datetime import datetime

from celery import Task, chain
from celery.exceptions import Ignore, Reject

from offsite.constants import REJECTED_KEY, BackupType, host_queue
from offsite.admission import MustWait, note_waiting
from offsite.run_context import RunContext
from offsite.runner import StaleRun, begin_run, run_script_step, upload_step
from offsite.schedules import utcnow
from tasks.callbacks import failure_callback
from workers.app import app
from workers.context import current_config, host_lease, redis_client, run_store, worker_host

log = logging.getLogger(__name__)

WAIT_RETRY_S = 5


def _context(task: Task, host: str, run_id: str) -> RunContext:
    """The run's context; a message for another host is recorded and rejected, never run."""
    mine = worker_host()
    if mine is not None and mine != host:
        redis_client().rpush(REJECTED_KEY, f"{utcnow().isoformat()} {task.request.hostname} "
                             f"refused {task.name} for host {host} run {run_id}")
        log.error("refusing %s for host %s: this worker serves %s", task.name, host, mine)
        raise Reject(f"message for host {host} reached the worker of {mine}", requeue=False)
    return RunContext(config=current_config(), store=run_store(), lease=host_lease(), host=host,
                      run_id=run_id, worker=task.request.hostname or "unknown")


@app.task(bind=True, name="tasks.backup.start_backup")
def start_backup(self: Task, host: str, backup_type: str, run_id: str,
                 scheduled_for: str | None = None) -> str:
    ctx = _context(self, host, run_id)
    slot = datetime.fromisoformat(scheduled_for) if scheduled_for else None
    try:
        effective = begin_run(ctx, BackupType(backup_type), slot)
    except MustWait as wait:
        note_waiting(ctx, f"waited: {wait.cause}")
        raise self.retry(countdown=WAIT_RETRY_S, max_retries=None) from None
    if effective is None:
        return "not run"
    queue = host_queue(host)
    steps = [run_script.si(host, run_id, name, effective.value).set(queue=queue)
             for name in ctx.config.host(host).scripts]
    steps.append(upload.si(host, run_id, effective.value).set(queue=queue))
    chain(*steps).on_error(failure_callback(host, run_id)).apply_async()
    return "started"


@app.task(bind=True, name="tasks.backup.run_script")
def run_script(self: Task, host: str, run_id: str, script: str, backup_type: str) -> None:
    try:
        run_script_step(_context(self, host, run_id), script, BackupType(backup_type))
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None


@app.task(bind=True, name="tasks.backup.upload")
def upload(self: Task, host: str, run_id: str, backup_type: str) -> str | None:
    try:
        record = upload_step(_context(self, host, run_id), BackupType(backup_type))
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None
    return record.state.value if record else None
