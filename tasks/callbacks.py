"""The failure callback signature: a task on the control queue, called with the failed task id."""
from __future__ import annotations

from celery import Signature

from offsite.constants import CONTROL_QUEUE
from offsite.messages import NOTIFY_FAILURE
from workers.app import app


def failure_callback(host: str, run_id: str) -> Signature:
    """Celery sends an errback taking only the task id as a task of its own (routed to the
    control queue) instead of calling it inside the failing worker: so the alert keys stay
    on the control node."""
    return app.signature(NOTIFY_FAILURE, kwargs={"host": host, "run_id": run_id},
                         queue=CONTROL_QUEUE)
