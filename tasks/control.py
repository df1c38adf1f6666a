"""The control worker (queue offsite.control): failure alerts and the watchdog. The alert keys
live on this node only."""
from __future__ import annotations

import logging
import threading
from functools import lru_cache

from celery import Task

from offsite.watch.alerts import AlertSink, sink_for
from offsite.watch.config_digest import digest_for
from offsite.constants import BackupType, RunType
from offsite.errors import MessageUnsent
from offsite.watch.deadman import DeadMansSwitch
from offsite.watch.ledger_lost import LedgerWatch, unjudged
from offsite.ledger.heartbeat import CONTROL_NODE, Heartbeat, interval_for
from offsite.wire.messages import NOTIFY_FAILURE, PRUNE, NotAFailedRun
from offsite.watch.alerts import report_failed_run
from offsite.watch.alerts import AlertOutbox
from offsite.host.settings import resolve_host
from offsite.proof.prune import prune_host as prune_one_host
from offsite.ledger.run_record import RunRecord
from offsite.schedule.specs import utcnow
from offsite.watch.watchdog import Watchdog
from tasks.base import CheckedTask, reject
from tasks.dispatch import enqueue_backup, enqueue_verify
from workers.app import app
from workers.context import current_config, host_lease, redis_client, run_store

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def alert_sink() -> AlertSink:
    return sink_for(current_config())


def outbox() -> AlertOutbox:
    from offsite.config.broker import is_sentinel
    return AlertOutbox(redis_client(), replicas=1 if is_sentinel(current_config().broker_url) else 0)


@app.task(bind=True, base=CheckedTask, name=NOTIFY_FAILURE)
def notify_failure(self: Task, failed_task_id: str, *, host: str, run_id: str) -> str:
    """Errback of every backup chain: store the alert, then try to deliver it now; what cannot
    be delivered stays in the outbox for the watchdog to retry. A report for a run whose
    record does not say failed or lost is refused (NotAFailedRun), never alerted."""
    del failed_task_id
    now, alerts = utcnow(), outbox()
    try:
        outcome = report_failed_run(run_store(), redis_client(), alerts, host, run_id, now)
    except NotAFailedRun as refused:
        reject(self, refused)
    alerts.deliver_due(alert_sink(), now)
    return outcome


@app.task(bind=True, base=CheckedTask, name=PRUNE)
def prune_host(self: Task, host: str, run_id: str) -> str:
    """A scheduled prune: with the prune identity (PRUNE_AWS_*) of this node, under the host
    lease; a failure is recorded (class prune_failed) and alerted by the chain's errback."""
    outcome = prune_one_host(resolve_host(current_config(), host), run_store(), host_lease(),
                             apply=True, run_id=run_id)
    return outcome.record.state.value if outcome.record else "not run"


def _rerun(lost: RunRecord, rerun_id: str) -> None:
    """Queue the lost run's re-run; one the broker does not take now is recorded and sent by
    a later tick (offsite.wire.outgoing), never left queued unsent."""
    note = f"re-run of lost run {lost.run_id}"
    if lost.type == RunType.PRUNE:
        log.warning("prune %s lost; the next scheduled prune does its work", lost.run_id)
        return
    try:
        if lost.type == RunType.VERIFY:
            enqueue_verify(current_config(), run_store(), lost.host, run_id=rerun_id,
                           scheduled_for=lost.scheduled_for, note=note)
        else:
            enqueue_backup(current_config(), run_store(), lost.host,
                           BackupType(lost.type.value), run_id=rerun_id,
                           scheduled_for=lost.scheduled_for, note=note)
    except MessageUnsent as unsent:
        log.warning("%s", unsent)


def watchdog() -> Watchdog:
    return Watchdog(config=current_config(), store=run_store(), client=redis_client(),
                    lease=host_lease(), outbox=outbox(), sink=alert_sink(),
                    redispatch=_rerun)


def run_watchdog(stop: threading.Event) -> None:
    """Tick until stopped; a failing tick (Redis away, a bug) is logged and the next one runs."""
    config = current_config()
    every = config.watchdog.every
    heartbeat = Heartbeat(redis_client, CONTROL_NODE, interval_for(config.watchdog.worker_timeout),
                          digest=lambda: digest_for(config, CONTROL_NODE)).start()
    dog = watchdog()
    ledger = LedgerWatch(config, dog.client, dog.store, dog.outbox)
    switch = DeadMansSwitch(config.alerts.heartbeat_url)
    try:
        while not stop.wait(every):
            try:
                ledger.check(utcnow())   # a lost ledger is rebuilt before it is judged
                dog.tick(utcnow())
                withheld = unjudged(dog.client)
            except Exception:
                log.exception("watchdog tick failed; retrying in %ss", every)
                continue
            # only a tick that ran and could judge the fleet tells the outside all is well
            switch.ping_unless(withheld)
    finally:
        heartbeat.stop()
