"""The dead man's switch: a real `offsite control` pings alerts.heartbeat_url after every
healthy watchdog tick; a hanging endpoint never holds the ticks back; `check --connect` says
whether one is configured."""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import redis

from tests.helpers import describe, offsite_argv, wait_until

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


def test_no_ping_while_a_redis_loss_is_not_rebuilt_then_pings_resume(
        make_config: Any, start_control: Callable[..., Any], start_process: Any,
        pings: PingCounter, redis_client: redis.Redis, aws: Any, tmp_path: Path) -> None:
    """FLUSHALL while the host's target cannot be read: the ledger cannot be rebuilt, so the
    control node judges nothing and must not tell the switch all is well; once the target
    reads again the next tick rebuilds it and the pings resume."""
    target = tmp_path / "target"
    target.mkdir()
    defaults = make_config.defaults()["alerts"]
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}}, watchdog=WATCHDOG,
                         target={"url": f"file://{target}"},
                         alerts={**defaults, "heartbeat_url":
                                 f"http://127.0.0.1:{pings.server_address[1]}/{CHECK_UUID}"})
    control = start_control(config)
    beat = start_process("beat", offsite_argv(config, "beat"), "beat: Acquired lock")
    wait_until(lambda: len(pings.paths) >= 2, 60, "pings before the loss")
    target.rename(tmp_path / "away")
    target.write_text("not a folder: the target cannot be listed")
    redis_client.flushall()
    control.wait_for("the run ledger was lost", timeout=30)
    control.wait_for("not pinged while the run ledger of host(s) carcosa is not rebuilt",
                     timeout=30)
    during = len(pings.paths)
    ticks: set[str] = set()

    def ticked(count: int) -> Callable[[], bool]:
        def check() -> bool:
            if at := redis_client.hget("offsite:watchdog:tick", "at"):
                ticks.add(str(at))
            return len(ticks) >= count
        return check
    wait_until(ticked(4), 30, "four ticks after the loss")
    assert len(pings.paths) == during, "pinged while the ledger was not rebuilt"
    wait_until(lambda: redis_client.zcard("offsite:redbeat::schedule") > 0, 30,
               "beat to make its schedule again")
    control.wait_for("beat's schedule is back in Redis", timeout=30)
    wait_until(ticked(len(ticks) + 2), 30, "two more ticks")
    assert len(pings.paths) == during, "pinged while the ledger was not rebuilt"

    target.unlink()
    (tmp_path / "away").rename(target)
    control.wait_for("the run ledger rebuilt from the target: carcosa", timeout=30)
    wait_until(lambda: len(pings.paths) > during, 30, "pings to resume after the rebuild")
    assert "pinged again" in control.log_text()
    assert CHECK_UUID not in control.log_text()
    assert beat.alive and "Traceback" not in control.log_text()
    # one ledger_lost alert naming the unreadable host, one recovery once it was rebuilt
    alerts = [(a["MessageAttributes"]["class"]["Value"], a["Message"])
              for a in aws.alerts(2, timeout=30)]
    lost = [text for kind, text in alerts if kind == "ledger_lost"]
    assert len(lost) == 1 and "carcosa: not rebuilt" in lost[0], alerts
    assert [text for kind, text in alerts if kind == "recovered"
            and "rebuilt now" in text and "carcosa" in text], alerts
