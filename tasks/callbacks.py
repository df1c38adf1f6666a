"""The failure callback signature: a task on the control queue, called with the failed task id."""
from __future__ import annotations

from celery import Signature

from offsite.wire import publish
from workers.app import app


def failure_callback(host: str, run_id: str) -> Signature:
    """Celery sends an errback taking only the task id as a task of its own (routed to the
    control queue) instead of calling it inside the failing worker: so the alert keys stay
    on the control node. The same signature as the clients' (offsite.wire.publish)."""
    return Signature(publish.failure_callback(host, run_id), app=app)
