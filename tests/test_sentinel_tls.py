"""Redis Sentinel over TLS (`sentinel://…?ssl_ca_certs=…`): a master, a replica and three
sentinels that speak only TLS, with a certificate from a throwaway CA. Workers, beat, the
control node and client commands reach the sentinels and the master over TLS, verified, and
follow a failover; without the CA every client is refused, never connected unverified."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offsite.config.broker import broker_client, redbeat_options, transport_options
from offsite.config.model import parse_config
from offsite.config.tls import client_url, tls_options
from tests.helpers import describe, offsite_argv, wait_until
from tests.sentinel_redis import MASTER_NAME, SentinelGroup

HOST = "carcosa"


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    directory = tmp_path / "sentinel"
    directory.mkdir()
    group = SentinelGroup(directory, password="tls-sentinel-pw", tls=True)
    group.start()
    try:
        yield group
    finally:
        group.stop()


def test_a_sentinel_urls_tls_options_reach_every_client() -> None:
    url = ("sentinel://:pw@10.0.0.1:26379/0?ssl_ca_certs=/etc/offsite/ca.pem;"
           "sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379")
    assert client_url(url) == ("sentinel://:pw@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;"
                               "sentinel://10.0.0.3:26379")
    tls = tls_options(url)
    assert tls is not None and tls["ssl_ca_certs"] == "/etc/offsite/ca.pem"
    sentinels = transport_options(url, "offsite")["sentinel_kwargs"]
    assert sentinels["ssl"] is True and sentinels["ssl_ca_certs"] == "/etc/offsite/ca.pem"
    beat = redbeat_options(url, "offsite")["redbeat_redis_options"]["sentinel_kwargs"]
    assert beat["ssl"] is True and beat["ssl_cert_reqs"] == tls["ssl_cert_reqs"]
    plain = url.split("?")[0] + ";sentinel://10.0.0.2:26379"
    assert tls_options(plain) is None and "ssl" not in transport_options(
        plain, "offsite")["sentinel_kwargs"]

    config = parse_config({"target": {"url": "file:///srv/backups"}, "broker_url": url,
                           "broker_sentinel_master": "offsite",
                           "hosts": {HOST: {"scripts": {"s": {"bash": "true"}}}}})
    assert config.broker_url == url   # refusals: tests/test_hostile_config.py (sentinel-*)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_fleet_reaches_tls_sentinels_verified_and_follows_a_failover(
        tls_sentinels: SentinelGroup, make_config: Any, start_worker: Any,
        start_process: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config({HOST: {"scripts": {"s": {"bash": "echo a > a"}}}},
                         broker_url=tls_sentinels.url, broker_sentinel_master=MASTER_NAME,
                         target={"url": f"file://{tmp_path}/target"}, alerts=None)
    worker = start_worker(config, HOST)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    first = run_offsite("backup", HOST, "--type", "full", "--wait", config=config, timeout=180)
    assert first.returncode == 0, describe(first)
    tls_sentinels.kill(tls_sentinels.data_ports[0])
    wait_until(lambda: tls_sentinels.master_port() == tls_sentinels.data_ports[1], timeout=60,
               what="the sentinels to promote the replica")
    second = run_offsite("backup", HOST, "--type", "incr", "--wait", config=config,
                         timeout=180)
    assert second.returncode == 0, describe(second)
    assert worker.alive and beat.alive, worker.log_text()[-2000:] + beat.log_text()[-2000:]
    assert "Traceback" not in worker.log_text() + beat.log_text()

    # the same group without the CA: the sentinels' certificate is not trusted, so no client
    # connects at all (verified, never accepted unverified)
    untrusted = tls_sentinels.url.replace(f"ssl_ca_certs={tls_sentinels.ca}",
                                          "ssl_cert_reqs=required")
    client = broker_client(untrusted, MASTER_NAME, socket_timeout=5, socket_connect_timeout=5)
    try:
        with pytest.raises(Exception) as refused:
            client.ping()
        assert "master" in str(refused.value).lower(), refused.value
    finally:
        client.close()
    plain = tls_sentinels.url.split("?")[0] + ";" + tls_sentinels.url.split(";", 1)[1]
    client = broker_client(plain, MASTER_NAME, socket_timeout=5, socket_connect_timeout=5)
    try:   # plain TCP to a TLS-only sentinel: no answer it can read
        with pytest.raises(Exception):
            client.ping()
    finally:
        client.close()
