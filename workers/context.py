"""What a worker process knows about itself: its config, its host, its Redis connections."""
from __future__ import annotations

import os
from functools import lru_cache

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from offsite.config.broker import broker_client
from offsite.config.model import Config
from offsite.config.reload import ReloadableConfig
from offsite.errors import ConfigError
from offsite.constants import RunState
from offsite.ledger.lease import RedisHostLease
from offsite.ledger.renewer import RenewingLease
from offsite.ledger.records import RedisRunStore

WORKER_HOST_ENV = "OFFSITE_WORKER_HOST"

# The config this process runs with: loaded on first use; a host worker re-reads it at the
# start of each run (and while idle) when the file changed: see refresh_config.
current_config = ReloadableConfig()


def refresh_config(node: str) -> Config:
    """Re-read the config file if it changed; an invalid new file keeps the config in use and
    alerts once (class config_invalid) through the outbox the control node delivers."""
    return current_config.refresh(lambda error, digest: _alert_invalid(node, error, digest))


def _alert_invalid(node: str, error: ConfigError, digest: str) -> None:
    from offsite.watch.alerts import condition_alert
    from offsite.watch.alerts import AlertOutbox
    from offsite.schedule.specs import utcnow
    host = node.removeprefix("worker:")
    alert = condition_alert(host, "any", "config_invalid", (
        f"The config file {error.path} changed on node {node} and is invalid; that node "
        "keeps running with the config it had. Fix the file (`offsite check`):\n"
        + "\n".join(error.problems[:20])))
    AlertOutbox(redis_client()).add(f"config_invalid:{node}:{digest[:16]}", alert, utcnow())


def worker_host() -> str | None:
    """The host this worker serves (None on the control worker)."""
    return os.environ.get(WORKER_HOST_ENV)


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """Rides out a Redis restart of about a minute before an operation fails."""
    config = current_config()
    return broker_client(
        config.broker_url, config.broker_sentinel_master, socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=5.0, base=0.2), retries=15),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def run_store() -> RedisRunStore:
    from offsite.config.broker import is_sentinel
    return RedisRunStore(redis_client(),
                         replicas=1 if is_sentinel(current_config().broker_url) else 0)


def host_lease() -> RenewingLease:
    """This process's host lease: a run that takes it is kept alive by a lease keeper thread
    until it releases it (offsite.ledger.renewer), whatever the run is doing."""
    return _renewing_lease(current_config().watchdog.lease_ttl)


@lru_cache(maxsize=4)
def _renewing_lease(ttl_s: int) -> RenewingLease:
    store = run_store()

    def state_of(run_id: str) -> RunState | None:
        record = store.get(run_id)
        return record.state if record else None
    return RenewingLease(RedisHostLease(redis_client(), ttl_s), ttl_s, state_of)
