"""The host lock and run id of a command run in this process (`--local`, `prune` with no
broker): the same host lock as the worker's, so a local run never touches another run's staging.

The lock is the host's lock file on this machine (offsite.host.lock) and, when the broker
answers, the host's Redis lease too, kept alive by a lease keeper like a worker's
(offsite.ledger.renewer). A host that is busy refuses the local run with one line naming the
run that holds it. With no broker reachable (the embedded default: nothing but this machine)
the lock file alone is the lock.

Local run ids end in `-local` (a worker's run of the same second is another run, and the Redis
lease tells runs apart by id) and are never the id of the host's previous local run: a second
request within the same second takes the next second, as queued manual runs do.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

import redis

from offsite.config.model import Config
from offsite.constants import BackupType, RunType
from offsite.errors import OffsiteError
from offsite.host.lock import FileHostLease
from offsite.host.settings import HostSettings
from offsite.ledger.lease import HostLease, RedisHostLease
from offsite.ledger.renewer import RenewingLease
from offsite.run.context import new_run_id

log = logging.getLogger(__name__)

LOCAL_SUFFIX = "-local"
_PING_TIMEOUT_S = 2.0
_STAMP = re.compile(r"-(?P<stamp>\d{8}T\d{6}Z)" + LOCAL_SUFFIX + "$")


class HostBusy(OffsiteError):
    """A local command found its host held by another run."""


class LocalLease:
    """A HostLease made of the host's lock file and, when a broker answers, its Redis lease."""

    def __init__(self, file: FileHostLease, shared: HostLease | None) -> None:
        self.file = file
        self.shared = shared

    def acquire(self, host: str, run_id: str) -> bool:
        if not self.file.acquire(host, run_id):
            return False
        if self.shared is not None and not self.shared.acquire(host, run_id):
            self.file.release(host, run_id)
            return False
        return True

    def renew(self, host: str, run_id: str) -> bool:
        return self.file.renew(host, run_id) and (
            self.shared is None or self.shared.renew(host, run_id))

    def release(self, host: str, run_id: str) -> None:
        try:
            if self.shared is not None:
                self.shared.release(host, run_id)
        finally:
            self.file.release(host, run_id)

    def holder(self, host: str) -> str | None:
        shared = self.shared.holder(host) if self.shared is not None else None
        return shared or self.file.holder(host)


def reachable_broker(config: Config) -> redis.Redis | None:
    """A client of the broker when it answers a PING now; None when there is none to reach."""
    from offsite.config.broker import broker_client
    try:
        client = broker_client(config.broker_url, config.broker_sentinel_master,
                               socket_connect_timeout=_PING_TIMEOUT_S, socket_timeout=30)
        client.ping()
    except (redis.RedisError, OSError) as exc:
        log.info("no broker at hand (%s): this machine's host lock only", exc)
        return None
    return client


def local_lease(config: Config, settings: HostSettings,
                client: redis.Redis | None) -> LocalLease:
    """The host lock of a local command (see the module's docstring); `client`: the broker
    as reachable_broker found it (None: there is none, the lock file alone)."""
    ttl = config.watchdog.lease_ttl
    shared = RenewingLease(RedisHostLease(client, ttl), ttl) if client is not None else None
    return LocalLease(FileHostLease.for_host(settings), shared)


def local_run_id(lease: LocalLease, host: str, kind: BackupType | RunType,
                 now: datetime) -> str:
    """A run id of its own for a local run (see the module's docstring): the second of `now`,
    or the second after the last local run's when that is not earlier."""
    slot = now.replace(microsecond=0)
    if (found := _STAMP.search(lease.file.last_run_id() or "")) is not None:
        last = datetime.strptime(found["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=now.tzinfo)
        slot = max(slot, last + timedelta(seconds=1))
    return new_run_id(host, kind, slot) + LOCAL_SUFFIX


def take_host(lease: HostLease, host: str, run_id: str) -> None:
    """Take the host for a local run, or raise HostBusy naming the run that holds it."""
    if lease.acquire(host, run_id):
        return
    holder = lease.holder(host) or "another run"
    raise HostBusy(f"host busy with run {holder}: this local run did not start and touched "
                   f"nothing; try again when it ends (`offsite status {host}`)",
                   host=host, step="start")
