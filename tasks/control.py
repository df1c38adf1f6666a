"""The control worker (queue offsite.control): failure alerts and the watchdog. The alert keys
live on this node only."""
from __future__ import annotations

import logging
import threading
from functools import lru_cache

from offsite.alerts import AlertSink, sink_for
from offsite.heartbeat import CONTROL_NODE, Heartbeat, interval_for
from offsite.notify import report_failed_run
from offsite.outbox import AlertOutbox
from offsite.records import RunRecord
from offsite.schedules import utcnow
from offsite.watchdog import Watchdog
from tasks.dispatch import enqueue_backup
from workers.app import app
from workers.context import current_config, host_lease, redis_client, run_store

log = logging.getLogger(__name__)

@lru_cache(maxsize=1)
def alert_sink() -> AlertSink:
    return sink_for(current_config())


def outbox() -> AlertOutbox:
    return AlertOutbox(redis_client())


@app.task(name="tasks.control.notify_failure")
def notify_failure(failed_task_id: str, *, host: str, run_id: str) -> str:
    """Errback of every backup chain: store the alert, then try to deliver it now; what cannot
    be delivered stays in the outbox for the watchdog to retry."""
    del failed_task_id
    now, alerts = utcnow(), outbox()
    outcome = report_failed_run(run_store(), redis_client(), alerts, host, run_id, now)
    alerts.deliver_due(alert_sink(), now)
    return outcome


def _rerun(lost: RunRecord, rerun_id: str) -> None:
    enqueue_backup(current_config(), run_store(), lost.host, lost.type, run_id=rerun_id,
                   scheduled_for=lost.scheduled_for, note=f"re-run of lost run {lost.run_id}")


def watchdog() -> Watchdog:
    return Watchdog(config=current_config(), store=run_store(), client=redis_client(),
                    lease=host_lease(), outbox=outbox(), sink=alert_sink(),
                    redispatch=_rerun)


def run_watchdog(stop: threading.Event) -> None:
    """Tick until stopped; a failing tick (Redis away, a bug) is logged and the next one runs."""
    config = current_config()
    every = config.watchdog.every
    heartbeat = Heartbeat(redis_client, CONTROL_NODE,
                          interval_for(config.watchdog.worker_timeout)).start()
    dog = watchdog()
    try:
        while not stop.wait(every):
            try:
                dog.tick(utcnow())
            except Exception:
                log.exception("watchdog tick failed; retrying in %ss", every)
    finally:
        heartbeat.stop()
