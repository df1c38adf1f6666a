"""The tasks a host worker runs: start_backup builds the chain of scripts, then upload (which
confirms the set in the target and finishes the run).

Every argument reaches these bodies validated and typed by CheckedTask (offsite.wire.messages): the
host is this worker's, the run id has the run-id format, the script is in the config."""
from __future__ import annotations

import logging
from datetime import datetime

from celery import Task, chain
from celery.exceptions import Ignore

from offsite.run.admission import MustWait, note_waiting
from offsite.constants import BackupType, host_queue
from offsite.wire.messages import RUN_SCRIPT, START_BACKUP, UPLOAD
from offsite.host.settings import resolve_host
from offsite.run.context import RunContext
from offsite.run.steps import StaleRun, begin_run, run_script_step, upload_step
from tasks.base import CheckedTask
from tasks.callbacks import failure_callback
from tasks.dispatch import wait_for_host, backup_message
from workers.app import app
from offsite.ledger.heartbeat import worker_node
from workers.context import current_config, host_lease, refresh_config, run_store

log = logging.getLogger(__name__)

def _context(task: Task, host: str, run_id: str) -> RunContext:
    config = current_config()
    return RunContext(config=config, settings=resolve_host(config, host), store=run_store(),
                      lease=host_lease(), run_id=run_id,
                      worker=task.request.hostname or "unknown")


@app.task(bind=True, base=CheckedTask, name=START_BACKUP)
def start_backup(self: Task, host: str, backup_type: BackupType, run_id: str,
                 scheduled_for: datetime | None = None) -> str:
    refresh_config(worker_node(host))   # a changed file is read before the run, never during
    ctx = _context(self, host, run_id)
    try:
        effective = begin_run(ctx, backup_type, scheduled_for)
    except MustWait as wait:
        note_waiting(ctx, f"waited: {wait.cause}")
        wait_for_host(ctx, backup_message(host, backup_type, run_id, scheduled_for), wait.holder)
        return f"waiting: {wait.cause}"
    if effective is None:
        return not_run_reason(ctx)
    queue = host_queue(host)
    steps = [run_script.si(host, run_id, name, effective.value).set(queue=queue)
             for name in ctx.settings.scripts]
    steps.append(upload.si(host, run_id, effective.value).set(queue=queue))
    chain(*steps).on_error(failure_callback(host, run_id)).apply_async()
    return "started"


def not_run_reason(ctx: RunContext) -> str:
    """The task's result when the run did not start, as Flower shows it: the run's state and
    why (skipped: the host is busy…; expired: superseded by…), never a bare success."""
    record = ctx.store.get(ctx.run_id)
    if record is None:
        return f"not run: no record of {ctx.run_id}"
    why = record.notes[-1] if record.notes else "no reason recorded"
    why = why.removeprefix(f"{record.state.value}: ")
    if record.state.value in ("skipped", "expired"):
        return f"not run: {record.state.value}: {why}"
    return f"not run: the run is already {record.state.value} (a repeated message)"


@app.task(bind=True, base=CheckedTask, name=RUN_SCRIPT)
def run_script(self: Task, host: str, run_id: str, script: str, backup_type: BackupType) -> None:
    try:
        run_script_step(_context(self, host, run_id), script, backup_type)
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None


@app.task(bind=True, base=CheckedTask, name=UPLOAD)
def upload(self: Task, host: str, run_id: str, backup_type: BackupType) -> str | None:
    try:
        record = upload_step(_context(self, host, run_id), backup_type)
    except StaleRun as stale:
        log.warning("%s", stale)
        raise Ignore() from None
    return record.state.value if record else None
