"""Hostile input to the control node's HTTP server: huge headers, bad auth headers, path
traversal, methods other than GET/HEAD, bodies, a slowloris client, a flood of connections.
Each answer is bounded, and the server keeps serving afterwards."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from offsite.fleet.http import HEADER_TIMEOUT_S, MAX_CONNECTIONS
from offsite.fleet.http_auth import hash_password
from tests.fleet_states import HOSTS, write_fleet
from tests.helpers import free_port
from tests.http_client import basic, request, wait_serving

RIGHT = basic("ops", "correct horse battery")


@pytest.fixture
def port(make_config: Any, start_control: Callable[..., Any], redis_client: redis.Redis,
         tmp_path: Path) -> int:
    auth_file = tmp_path / "http-auth"
    auth_file.write_text(f"ops:{hash_password('correct horse battery', 1000)}\n")
    auth_file.chmod(0o600)
    chosen = free_port()
    config = make_config(HOSTS, http={"listen": f"127.0.0.1:{chosen}",
                                      "basic_auth_file": str(auth_file)})
    write_fleet(redis_client)
    start_control(config)
    wait_serving(chosen)
    return chosen


def raw_exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def still_serves(port: int) -> None:
    assert request(port, "/api/hosts", headers={"Authorization": RIGHT}).status == 200


@pytest.mark.slow
def test_huge_headers_are_refused_with_431(port: int) -> None:
    many = b"".join(b"X-Filler-%d: %s\r\n" % (index, b"a" * 900) for index in range(40))
    reply = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert reply.startswith(b"HTTP/1.0 431"), reply[:200]
    one_long = raw_exchange(port, b"GET / HTTP/1.1\r\nX-Long: " + b"b" * 200_000 + b"\r\n\r\n")
    assert one_long.startswith(b"HTTP/1.0 431") or one_long == b"", one_long[:200]
    long_target = raw_exchange(port, b"GET /" + b"c" * 100_000 + b" HTTP/1.1\r\n\r\n")
    assert long_target.startswith(b"HTTP/1.0 431") or long_target == b"", long_target[:200]
    still_serves(port)


BAD_HEADERS = [
    "Basic", "Basic !!!not-base64!!!", "Basic " + "QUFB" * 2000, "Bearer abc",
    basic("ops", ""), basic("", "correct horse battery"), basic("ops", "correct horse batter"),
    "Basic b3BzCg==",                       # "ops\n": no colon
    "Basic //79/Q==",                       # not UTF-8
    RIGHT.lower(), "basic", RIGHT + " extra",
]
BAD_PATHS = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/metrics/../../etc/passwd",
             "//etc/passwd", "/static/x.js", "/api/hosts/../../../root", "/index.html", "/\x7f",
             "/host/", "/host/../../etc/passwd", "/host/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
             "/host/healthy-1/../../../etc/passwd", "/host/%00"]


@pytest.mark.slow
def test_bad_authorization_headers_get_401(port: int) -> None:
    for header in BAD_HEADERS:
        reply = request(port, "/metrics", headers={"Authorization": header})
        assert reply.status == 401, header
        assert b"offsite_" not in reply.body
    still_serves(port)


def test_paths_outside_the_three_routes_are_404(port: int) -> None:
    for path in BAD_PATHS:
        reply = raw_exchange(port, f"GET {path} HTTP/1.0\r\nAuthorization: {RIGHT}\r\n\r\n"
                             .encode("latin-1"))
        status = reply.split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.0 404 Not Found", b"HTTP/1.0 400 Bad Request"), \
            (path, reply[:300])
        assert b"root:" not in reply


@pytest.mark.slow
def test_unauthenticated_traversal_is_401_not_a_file(port: int) -> None:
    reply = request(port, "/../../etc/passwd")
    assert reply.status == 401 and b"root:" not in reply.body


@pytest.mark.slow
def test_head_answers_without_a_body_and_post_is_405(port: int) -> None:
    head = request(port, "/metrics", method="HEAD", headers={"Authorization": RIGHT})
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) > 100
    post = raw_exchange(port, f"POST /metrics HTTP/1.1\r\nAuthorization: {RIGHT}\r\n"
                        "Content-Length: 10000000\r\n\r\n".encode() + b"x" * 65536)
    assert post.startswith(b"HTTP/1.0 405") and b"Allow: GET, HEAD" in post, post[:300]
    for method in ("PUT", "DELETE", "OPTIONS", "PATCH"):
        assert request(port, "/", method=method).status == 405
    assert request(port, "/", method="TRACE").status == 501
    still_serves(port)


@pytest.mark.slow
def test_a_get_with_a_body_is_refused_unread(port: int) -> None:
    reply = raw_exchange(port, f"GET /api/hosts HTTP/1.1\r\nAuthorization: {RIGHT}\r\n"
                         "Content-Length: 5000000\r\n\r\n".encode() + b"y" * 65536)
    assert reply.startswith(b"HTTP/1.0 413"), reply[:200]
    chunked = raw_exchange(port, f"GET / HTTP/1.1\r\nAuthorization: {RIGHT}\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode())
    assert chunked.startswith(b"HTTP/1.0 413"), chunked[:200]
    still_serves(port)


@pytest.mark.slow
def test_slowloris_client_is_cut_off_at_the_header_deadline(port: int) -> None:
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - began < HEADER_TIMEOUT_S + 20:
            try:
                sock.sendall(b"X-Slow: a\r\n")   # a header line every second, never the end
                sock.settimeout(1.0)
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
    elapsed = time.monotonic() - began
    assert closed, "the server kept a never-ending request open"
    assert HEADER_TIMEOUT_S - 1 <= elapsed <= HEADER_TIMEOUT_S + 10
    still_serves(port)


@pytest.mark.slow
def test_a_flood_of_idle_connections_gets_503_and_the_server_recovers(port: int) -> None:
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30)
            for _ in range(MAX_CONNECTIONS + 4)]
    try:
        time.sleep(0)   # nothing to wait for: the server answers the extra ones at once
        extra = idle[-1]
        extra.settimeout(10)
        assert extra.recv(1024).startswith(b"HTTP/1.0 503")
    finally:
        for sock in idle:
            sock.close()
    from tests.helpers import wait_until
    wait_until(lambda: _serves(port), 30, "the server answering again after the flood")


def _serves(port: int) -> bool:
    try:
        return request(port, "/api/hosts", headers={"Authorization": RIGHT},
                       timeout=5).status == 200
    except OSError:
        return False


# Text from the ledger (a script's stderr, a record written by anything that reaches Redis)
MARKUP = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_ledger_text_is_escaped_on_the_fleet_page_and_a_host_page() -> None:
    from datetime import datetime, timedelta, timezone

    from offsite.constants import RunState
    from offsite.fleet.host_page import history_html
    from offsite.fleet.page import page_html
    from offsite.fleet.summary import (ErrorBrief, FleetSummary, HostRow, OpenCondition,
                                       RunBrief)
    now = datetime.now(timezone.utc)
    run = RunBrief(run_id=MARKUP, host="carcosa", type=MARKUP, state=RunState.FAILED,
                   created_at=now - timedelta(minutes=5), started_at=now - timedelta(minutes=5),
                   finished_at=now, bytes_uploaded=5,
                   error=ErrorBrief(step=MARKUP, message=MARKUP + "\nmore", failure_class=MARKUP))
    row = HostRow(host="carcosa", reason=MARKUP, last={"full": run, "incr": run},
                  last_good=run, stored_bytes=10,
                  conditions=[OpenCondition(condition=MARKUP, key=MARKUP, since=None)])
    summary = FleetSummary(at=now, rows=[row], drift=OpenCondition("config_drift", MARKUP, None,
                                                                   MARKUP),
                           drifted_nodes=[MARKUP], outbox_pending=0)
    no_space = MARKUP.replace(" ", "")
    series = {"carcosa": (f"1 2 3 {no_space} {no_space}", "4 5 6 succeeded full")}
    for html in (page_html(summary, series), history_html("carcosa", [run], now)):
        assert "<script" not in html and "<img" not in html and MARKUP not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
