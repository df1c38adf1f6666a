"""The broker's Redis, reached directly (`redis://`, `rediss://`) or through Redis Sentinel
(`sentinel://[:PASSWORD@]H1:P1[/DB];sentinel://H2:P2;…`, kombu's form, with the master's name
in the top-level key `broker_sentinel_master`). Every client of offsite (the ledger, the
control node, the CLI, the HTTP server) gets its connection here, and the Celery face its
transport options, so all of them follow a failover to the current master.

The password of the first sentinel URL is the master's and the sentinels' (as kombu reads
it), and so are its `ssl_*` options: TLS to the sentinels and to the master, verified as for a
`rediss://` broker (offsite.config.tls)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from offsite.config.tls import tls_options

SENTINEL_SCHEME = "sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    nodes: tuple[tuple[str, int], ...]
    password: str | None
    db: int


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError naming what is wrong with a sentinel:// broker URL."""
    nodes, password, db = [], None, 0
    for part in url.split(";"):
        try:
            parts = urlsplit(part)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"sentinel url is not a URL: {exc}") from None
        if parts.scheme != SENTINEL_SCHEME or not parts.hostname or port is None:
            raise ValueError("each part must be sentinel://HOST:PORT (parts separated by ';')")
        if parts.path not in ("", "/"):
            if not re.fullmatch(r"/[0-9]{1,5}", parts.path):
                raise ValueError("the path must be a database number like /0")
            db = int(parts.path[1:])
        if parts.password is not None and password is None:
            password = unquote(parts.password)
        nodes.append((parts.hostname, port))
    return SentinelUrl(tuple(nodes), password, db)


class _Following:
    """A connection to the master that asks the sentinels where the master is each time it
    connects. redis-py's own asks only when a connection is taken from its pool: a command
    (or a pipeline) it retries after the master died reconnects to the dead master's address
    until its retries are spent, even once the sentinels have promoted a replica."""

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        connection: Any = self
        if connection._sock is None and connection.connection_pool.is_master:
            connection.host, connection.port = connection.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health,  # type: ignore[misc]
                                     retry_socket_connect=retry_socket_connect)


class FollowingConnection(_Following, SentinelManagedConnection):
    pass


class FollowingSSLConnection(_Following, SentinelManagedSSLConnection):
    pass


def _sentinel_tls(broker_url: str) -> dict[str, Any]:
    """redis-py's options for TLS to the sentinels and the master ({} without TLS)."""
    tls = tls_options(broker_url)
    return {"ssl": True, **tls} if tls else {}


def broker_client(broker_url: str, master: str | None, **options: Any) -> redis.Redis:
    """A client of the broker's current master; `options` are redis-py's (timeouts, retry,
    decode_responses…)."""
    if not is_sentinel(broker_url):
        return redis.Redis.from_url(broker_url, **options)
    if not master:
        raise ValueError("a sentinel:// broker_url needs broker_sentinel_master")
    parsed = parse_sentinel_url(broker_url)
    timeouts: dict[str, Any] = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")
                if key in options}
    tls = _sentinel_tls(broker_url)
    sentinel = Sentinel(list(parsed.nodes), sentinel_kwargs={"password": parsed.password,
                                                             **timeouts, **tls})
    return sentinel.master_for(master, password=parsed.password, db=parsed.db, **{
        key: value for key, value in tls.items() if key != "ssl"},
        connection_class=FollowingSSLConnection if tls else FollowingConnection, **options)


def transport_options(broker_url: str, master: str | None) -> dict[str, Any]:
    """kombu's (and Celery's result backend's) options for the broker URL; TLS to the master
    comes from broker_use_ssl / redis_backend_use_ssl (tls_options), to the sentinels from
    here."""
    if not is_sentinel(broker_url):
        return {}
    password = parse_sentinel_url(broker_url).password
    return {"master_name": master,
            "sentinel_kwargs": {"password": password, **_sentinel_tls(broker_url)}}


def redbeat_options(broker_url: str, master: str | None) -> dict[str, Any]:
    """RedBeat's URL and options for the broker (its sentinel form is its own; TLS to the
    master comes from redbeat_redis_use_ssl)."""
    if not is_sentinel(broker_url):
        return {"redbeat_redis_url": broker_url}
    parsed = parse_sentinel_url(broker_url)
    host, port = parsed.nodes[0]   # RedBeat reaches the sentinels of its options
    return {"redbeat_redis_url": f"redis-sentinel://{host}:{port}/{parsed.db}",
            "redbeat_redis_options": {"sentinels": list(parsed.nodes), "service_name": master,
                                      "password": parsed.password, "db": parsed.db,
                                      "sentinel_kwargs": {"password": parsed.password,
                                                          **_sentinel_tls(broker_url)},
                                      "socket_timeout": 30}}

