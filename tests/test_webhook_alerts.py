"""Alerts beyond SNS: `alerts.webhook_url` gets each alert as a JSON POST with the same subject,
message and attributes as the SNS message, beside SNS; a webhook that fails is retried through
the outbox without sending SNS the alert twice. Real worker, control, moto SNS and a local HTTP
receiver."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.test_backup_flow import backup
from tests.test_failures import FAST_WATCHDOG, attributes

HOOK_SECRET = "T0KEN-hook-7f3a"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failures_left = 0
        self.attempts = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.attempts += 1
        if self.server.failures_left > 0:
            self.server.failures_left -= 1
            self.send_response(503)
        else:
            assert self.headers["Content-Type"] == "application/json"
            self.server.posts.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_webhook_gets_the_same_alert_as_sns_and_a_failing_one_is_retried_alone(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any, aws: Any,
        receiver: Receiver, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/{HOOK_SECRET}"
    defaults = make_config.defaults()["alerts"]
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo broken >&2; exit 4"}},
                          "verify": {"where": "carcosa"}}},
                         watchdog=FAST_WATCHDOG, alerts={**defaults, "webhook_url": url})
    start_worker(config, "carcosa")
    receiver.failures_left = 2          # the hook is down for the first two attempts
    control = start_control(config)
    failed = backup(run_offsite, config, "carcosa", "full", expect_rc=1)
    (sns,) = aws.alerts(1, timeout=30)
    wait_until(lambda: len(receiver.posts) >= 1, timeout=60,
               what="the webhook to take the alert after its outage")
    (post,) = receiver.posts
    assert receiver.attempts == 3
    assert post["path"] == f"/hooks/{HOOK_SECRET}"
    assert post["subject"] == sns["Subject"] and post["message"] == sns["Message"]
    assert post["attributes"] == attributes(sns) == {
        "host": "carcosa", "type": "full", "class": "script_failed"}
    assert failed["run_id"] in post["message"]
    assert len(aws.alerts(2, timeout=3)) == 1, "SNS got the alert once, whatever the hook did"
    assert HOOK_SECRET not in control.log_text()


@pytest.mark.slow
def test_a_webhook_alone_is_the_fleets_only_sink(
        make_config: Any, start_worker: Any, start_control: Any, run_offsite: Any,
        receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "exit 3"}}}},
                         watchdog=FAST_WATCHDOG, alerts={"webhook_url": url})
    start_worker(config, "carcosa")
    start_control(config)
    backup(run_offsite, config, "carcosa", "incr", expect_rc=1)
    wait_until(lambda: len(receiver.posts) >= 1, timeout=30, what="the webhook's alert")
    assert receiver.posts[0]["attributes"]["class"] == "script_failed"
