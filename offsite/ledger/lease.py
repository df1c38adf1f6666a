"""The per-host lease: one run at a time per host, expiring by itself when its holder dies."""
from __future__ import annotations

from typing import Protocol

import redis

from offsite.constants import LEASE_KEY

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


CATCH_UP_MARK = "-catch-up-"   # the lease holder of the control node's replica catch-up


def catch_up_holder(host: str, stamp: str) -> str:
    """The name the control node's replica catch-up holds the host's lease under (no run
    record: it is not a run, it finishes the copies of runs that succeeded)."""
    return f"{host}{CATCH_UP_MARK}{stamp}"


def is_catch_up(holder: str | None) -> bool:
    return holder is not None and CATCH_UP_MARK in holder


class HostLease(Protocol):
    def acquire(self, host: str, run_id: str) -> bool: ...
    def renew(self, host: str, run_id: str) -> bool: ...
    def release(self, host: str, run_id: str) -> None: ...
    def holder(self, host: str) -> str | None: ...


class RedisHostLease:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_ms = ttl_s * 1000
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, host: str, run_id: str) -> bool:
        """True when the lease is now held by run_id (also when it already was)."""
        if self.client.set(LEASE_KEY + host, run_id, nx=True, px=self.ttl_ms):
            return True
        return self.renew(host, run_id)

    def renew(self, host: str, run_id: str) -> bool:
        return bool(self._renew(keys=[LEASE_KEY + host], args=[run_id, self.ttl_ms]))

    def release(self, host: str, run_id: str) -> None:
        self._release(keys=[LEASE_KEY + host], args=[run_id])

    def holder(self, host: str) -> str | None:
        raw = self.client.get(LEASE_KEY + host)
        return raw.decode() if isinstance(raw, bytes) else raw


class MemoryHostLease:
    """For one process running one backup (`--local`): duplicity's own lock guards the rest."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}

    def acquire(self, host: str, run_id: str) -> bool:
        return self.holders.setdefault(host, run_id) == run_id

    def renew(self, host: str, run_id: str) -> bool:
        return self.holders.get(host) == run_id

    def release(self, host: str, run_id: str) -> None:
        if self.holders.get(host) == run_id:
            del self.holders[host]

    def holder(self, host: str) -> str | None:
        return self.holders.get(host)
