"""The dead man's switch: a real `offsite control` pings alerts.heartbeat_url after every
healthy watchdog tick; a hanging endpoint never holds the ticks back; `check --connect` says
whether one is configured."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import redis

from tests.helpers import describe, wait_until

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

WATCHDOG = {"every": "1s", "worker_timeout": "5m", "start_grace": "15m"}
CHECK_UUID = "5f0c1b7e-3d2a-4c1b-9f7e-0a1b2c3d4e5f"


class PingCounter(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _PingHandler)


class _PingHandler(BaseHTTPRequestHandler):
    server: PingCounter

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def pings() -> Iterator[PingCounter]:
    server = PingCounter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def alerts_with(make_config: Any, url: str) -> Any:
    defaults = make_config.defaults()["alerts"]
    return make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}}, watchdog=WATCHDOG,
                       alerts={**defaults, "heartbeat_url": url})


def test_control_pings_the_switch_on_every_healthy_tick(
        make_config: Any, start_control: Callable[..., Any], pings: PingCounter) -> None:
    port = pings.server_address[1]
    config = alerts_with(make_config, f"http://127.0.0.1:{port}/ping/{CHECK_UUID}")
    control = start_control(config)
    wait_until(lambda: len(pings.paths) >= 3, 60, "three pings of the dead man's switch")
    assert set(pings.paths) == {f"/ping/{CHECK_UUID}"}
    assert CHECK_UUID not in control.log_text()


def test_a_hanging_switch_never_holds_the_ticks_back(
        make_config: Any, start_control: Callable[..., Any], redis_client: redis.Redis) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)          # accepts connections (the kernel does) and never answers
    try:
        port = silent.getsockname()[1]
        config = alerts_with(make_config, f"http://127.0.0.1:{port}/{CHECK_UUID}")
        control = start_control(config)
        ticks: set[str] = set()

        def ticked() -> bool:
            at = redis_client.hget("offsite:watchdog:tick", "at")
            if at:
                ticks.add(at)
            return len(ticks) >= 6
        # six ticks of 1 s while every ping waits for its 10 s timeout
        wait_until(ticked, 30, "the watchdog ticking while the switch hangs")
        control.wait_for("not pinged", timeout=40)
        assert CHECK_UUID not in control.log_text()
    finally:
        silent.close()


def test_check_connect_says_whether_a_switch_is_configured(make_config: Any,
                                                           run_offsite: Any) -> None:
    config = alerts_with(make_config, f"https://hc-ping.example/{CHECK_UUID}")
    result = run_offsite("check", "--connect", config=config)
    assert "dead man's switch: alerts.heartbeat_url https://hc-ping.example/" in result.stdout, \
        describe(result)
    assert CHECK_UUID not in result.stdout + result.stderr
    bare = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}})
    result = run_offsite("check", "--connect", config=bare)
    assert "alerts.heartbeat_url is not set" in result.stdout, describe(result)
