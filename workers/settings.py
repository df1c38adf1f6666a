"""Celery settings for hours-long backup tasks on Redis, derived from the offsite config."""
from __future__ import annotations

from typing import Any

from beat_schedule import build_beat_schedule
from offsite.config.model import Config
from offsite.constants import CONTROL_QUEUE, REDBEAT_PREFIX, host_queue
from offsite.wire.publish import PUBLISH_RETRY_POLICY, task_queue
from offsite.config.broker import redbeat_options, transport_options
from offsite.config.tls import client_url, tls_options

_VISIBILITY_MARGIN_S = 3600


def longest_run_s(config: Config) -> int:
    return max(config.max_run_s(host) for host in config.hosts)


BEAT_LOOP_S = 5
BEAT_LOCK_TIMEOUT_S = 30


def beat_settings(config: Config) -> dict[str, Any]:
    """Beat keeps its state in Redis (RedBeat) under one lock: a standby beat waits on it, and a
    dead beat's lock expires within BEAT_LOCK_TIMEOUT_S. RedBeat's Redis is named explicitly
    (its fallback to broker_url and broker_transport_options is deprecated), and it retries a
    lost connection for ever (retry_period -1, backoff up to 30 s) instead of exiting.

    Applied in the beat process only (workers.start.start_beat): Celery masks the password
    of broker_url and result_backend when a worker shows its settings (`inspect conf`,
    Flower's worker page) but not of redbeat_redis_url, so no worker may carry it."""
    redbeat = redbeat_options(config.broker_url, config.broker_sentinel_master)
    return {
        "beat_scheduler": "workers.beat:SlotScheduler",
        "redbeat_redis_url": redbeat["redbeat_redis_url"],
        "redbeat_redis_options": {"retry_period": -1, **redbeat.get("redbeat_redis_options", {})},
        "redbeat_key_prefix": REDBEAT_PREFIX,
        "redbeat_lock_timeout": BEAT_LOCK_TIMEOUT_S,
        "beat_max_loop_interval": BEAT_LOOP_S,
        "beat_enable_remote_control": False,
        **({"redbeat_redis_use_ssl": tls} if (tls := tls_options(config.broker_url)) else {}),
    }


def celery_settings(config: Config) -> dict[str, Any]:
    """Why these values:

    - early ack + the run ledger: a redelivered message finds its run already claimed, and a
      killed worker's run is found by the watchdog through its expired lease;
    - the visibility timeout exceeds the longest run, so Redis never redelivers a message
      whose task is still running, and every client (workers, beat, Flower) shares it;
    - prefetch disabled, concurrency 1: one backup at a time per host, nothing waits reserved.
    """
    transport = {"visibility_timeout": longest_run_s(config) + _VISIBILITY_MARGIN_S,
                 **transport_options(config.broker_url, config.broker_sentinel_master)}
    queues = [task_queue(CONTROL_QUEUE)] + [task_queue(host_queue(host)) for host in config.hosts]
    tls = tls_options(config.broker_url)   # rediss:// or sentinel://…?ssl_…: verified
    return {
        **({"broker_use_ssl": tls, "redis_backend_use_ssl": tls} if tls else {}),
        "broker_url": client_url(config.broker_url),
        "result_backend": client_url(config.broker_url),
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": 7 * 86400,
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        "worker_concurrency": 1,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_track_started": True,
        "task_queues": queues,
        "task_default_queue": CONTROL_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {"tasks.control.*": {"queue": CONTROL_QUEUE}},
        "timezone": config.schedule.timezone,
        "beat_schedule": build_beat_schedule(config),
        "enable_utc": True,
        # no remote control: a broadcast (shutdown, rate_limit, cancel_consumer, add_consumer,
        # pool_restart, revoke) from anyone who can write to Redis reaches no offsite process;
        # the heartbeat hash replaces pings and Flower keeps its task view from events
        "worker_enable_remote_control": False,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        # refuses in one line what never reaches a task (pickle, unknown task names)
        "worker_consumer": "workers.consumer:OffsiteConsumer",
    }
