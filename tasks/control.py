"""Tasks of the control worker (queue offsite.control): the alerts; it holds the alert keys."""
from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from offsite.alerts import sink_for
from offsite.notify import alert_failed_run
from workers.app import app
from workers.context import current_config, redis_client, run_store


@app.task(name="tasks.control.notify_failure", autoretry_for=(BotoCoreError, ClientError),
          retry_backoff=5, retry_backoff_max=600, retry_jitter=True, max_retries=None)
def notify_failure(failed_task_id: str, *, host: str, run_id: str) -> bool:
    """Errback of every backup chain; retried with backoff until the alert is delivered."""
    del failed_task_id
    return alert_failed_run(run_store(), redis_client(), sink_for(current_config()), host, run_id)
