"""What a worker process knows about itself: its config, its host, its Redis connections."""
from __future__ import annotations

import os
from functools import lru_cache

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from offsite.config import Config, config_path, load_config
from offsite.lease import RedisHostLease
from offsite.records import RedisRunStore

WORKER_HOST_ENV = "OFFSITE_WORKER_HOST"


@lru_cache(maxsize=1)
def current_config() -> Config:
    return load_config(config_path(None))


def worker_host() -> str | None:
    """The host this worker serves (None on the control worker)."""
    return os.environ.get(WORKER_HOST_ENV)


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """Rides out a Redis restart of about a minute before an operation fails."""
    return redis.Redis.from_url(
        current_config().broker_url, socket_timeout=30, socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=5.0, base=0.2), retries=15),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def run_store() -> RedisRunStore:
    return RedisRunStore(redis_client())


def host_lease() -> RedisHostLease:
    return RedisHostLease(redis_client(), current_config().watchdog.lease_ttl)
