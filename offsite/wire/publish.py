"""Sending one task message without loading Celery: a client command (`offsite backup`,
`offsite verify`) and the control node's re-runs publish the message Celery's own send_task
would (its protocol 2, the labels of offsite.wire.labels, the failure callback), with kombu on
a connection made from the config alone.

Why not app.send_task: loading Celery and its settings costs a client ~0.05 s, and the
settings hold every host's queue and beat entry, so they grow with the fleet (0.24 s more at
1,000 hosts) for a message to one queue. tests/test_publish.py holds this message to Celery's,
field by field. Beat's batches still go through Celery (tasks.dispatch.publish_batch)."""
from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from offsite.constants import CONTROL_QUEUE
from offsite.wire.messages import NOTIFY_FAILURE
from offsite.wire.labels import task_label
from offsite.config.broker import transport_options
from offsite.config.tls import client_url, tls_options

if TYPE_CHECKING:
    from kombu import Queue

# Celery's task_publish_retry_policy for every sender (workers.settings uses it too): a
# broker restart of about a minute is ridden out, a broker that stays down fails the send.
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0, "interval_step": 1,
                        "interval_max": 5}
PERSISTENT = 2   # Celery's task_default_delivery_mode


def failure_callback(host: str, run_id: str) -> dict[str, Any]:
    """The errback of every run's messages, as Celery serialises the signature
    `app.signature(NOTIFY_FAILURE, kwargs=…, queue=offsite.control)`: a task of its own on the
    control queue (the alert keys stay on the control node), called with the failed task id."""
    return {"task": NOTIFY_FAILURE, "args": [], "kwargs": {"host": host, "run_id": run_id},
            "options": {"queue": CONTROL_QUEUE}, "subtask_type": None, "immutable": False}


def task_queue(name: str) -> Queue:
    """A queue bound to its own exchange under its own name, as every worker declares it and
    every sender publishes to it: left to Celery, every queue is bound to the default
    (control) exchange and key, so a message published there would reach every host's queue
    at once."""
    from kombu import Exchange, Queue
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def task_message(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], task_id: str,
                 errbacks: list[dict[str, Any]]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(body, headers, properties) of Celery's protocol 2 for a task whose result nobody
    keeps (the ledger, not a result, says how a run ended)."""
    headers: dict[str, Any] = {
        "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": task_label(name, args, kwargs) or repr(args), "kwargsrepr": repr(kwargs),
        "origin": f"gen{os.getpid()}@{socket.gethostname()}", "ignore_result": True,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }
    body = (list(args), kwargs,
            {"callbacks": None, "errbacks": errbacks, "chain": None, "chord": None})
    return body, headers, {"correlation_id": task_id, "reply_to": ""}


def publish_task(broker_url: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 queue: str, errbacks: list[dict[str, Any]],
                 sentinel_master: str | None = None) -> str:
    """Publish the task on `queue` (declared as the workers declare it: its own direct
    exchange and routing key); returns the task id. Raises kombu's OperationalError when the
    broker stays unreachable through the retry policy."""
    from kombu import Connection, Producer
    task_id = str(uuid.uuid4())
    body, headers, properties = task_message(name, args, kwargs, task_id, errbacks)
    with Connection(client_url(broker_url), ssl=tls_options(broker_url) or False,
                    transport_options=transport_options(broker_url, sentinel_master)) \
            as connection:
        producer = Producer(connection, auto_declare=False)
        producer.publish(body, exchange="", routing_key=queue, serializer="json",
                         headers=headers, delivery_mode=PERSISTENT,
                         declare=[task_queue(queue)],
                         retry=True, retry_policy=PUBLISH_RETRY_POLICY, **properties)
    return task_id
