"""The Apprise sink (`alerts.apprise_urls`, `apprise_urls_file`, `$OFFSITE_APPRISE_URLS`): the
same alert texts and attributes as SNS, delivered through the real outbox in a real Redis to a
local `json://` receiver; a URL that fails is retried alone, and its secret never reaches a log
line or the outbox's error. Hostile values: tests/test_hostile_config.py."""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.config.model import parse_config
from offsite.watch.alerts import ALERT_KEY, AlertOutbox, condition_alert, sink_for

SECRET = "s3cr3t-apprise-token"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failures_left = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.server_address[1]}/{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        failing = self.server.failures_left > 0 and self.path.startswith("/flaky")
        if failing:
            self.server.failures_left -= 1
        else:
            self.server.posts.append({"path": self.path, **json.loads(body)})
        self.send_response(503 if failing else 200)
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


def fleet(tmp_path: Path, **alerts: Any) -> Any:
    return parse_config({"target": {"url": f"file://{tmp_path}/target"}, "alerts": alerts,
                         "hosts": {"carcosa": {"scripts": {"db": {"bash": "true"}}}}})


def test_each_apprise_url_gets_the_alert_and_a_failing_one_is_retried_alone(
        receiver: Receiver, redis_client: redis.Redis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    urls_file = tmp_path / "apprise-urls"
    urls_file.write_text(f"# the on-call channel\n{receiver.url('flaky/' + SECRET)}\n")
    monkeypatch.setenv("OFFSITE_APPRISE_URLS", receiver.url("from-env"))
    config = fleet(tmp_path, apprise_urls=[receiver.url("inline")],
                   apprise_urls_file=str(urls_file))
    outbox, now = AlertOutbox(redis_client), datetime.now(timezone.utc)
    alert = condition_alert("carcosa", "full", "script_failed", "Backup of host carcosa failed.")
    outbox.add("a1", alert, now)
    receiver.failures_left = 1
    sink = sink_for(config)
    with caplog.at_level(logging.INFO):   # the level offsite logs at
        assert outbox.deliver_due(sink, now) == 0          # the flaky URL refused it
        assert sorted(post["path"] for post in receiver.posts) == ["/from-env", "/inline"]
        assert outbox.deliver_due(sink, now + timedelta(seconds=3)) == 1
    assert sorted(post["path"] for post in receiver.posts) == [
        "/flaky/" + SECRET, "/from-env", "/inline"]       # none twice
    for post in receiver.posts:
        assert post["title"] == alert.subject
        assert post["message"] == (f"{alert.message}\n"
                                   "attributes: host=carcosa type=full class=script_failed")
        assert post["type"] == "failure"
    assert SECRET not in caplog.text
    assert SECRET not in str(redis_client.get(ALERT_KEY + "a1"))


def test_an_unreadable_urls_file_keeps_the_alert_and_says_why(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    config = fleet(tmp_path, apprise_urls_file=str(tmp_path / "missing"))
    outbox, now = AlertOutbox(redis_client), datetime.now(timezone.utc)
    outbox.add("a2", condition_alert("carcosa", "full", "script_failed", "text"), now)
    assert outbox.deliver_due(sink_for(config), now) == 0
    entry = json.loads(redis_client.get(ALERT_KEY + "a2") or "{}")
    assert "cannot read apprise_urls_file" in entry["error"] and entry["attempts"] == 1


def test_a_bad_apprise_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    from offsite.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        fleet(tmp_path, apprise_urls=[f"no-scheme/{SECRET}"])
    assert "alerts.apprise_urls.0" in str(caught.value) and SECRET not in str(caught.value)


def test_check_names_an_unknown_scheme_and_an_unreadable_file_by_number_only(
        tmp_path: Path) -> None:
    from offsite.watch.apprise_sink import apprise_problems
    known = fleet(tmp_path, apprise_urls=["json://127.0.0.1:9/", f"nosuchscheme://{SECRET}"])
    assert apprise_problems(known) == [
        "apprise #2 (nosuchscheme://…): not a URL Apprise can use"]
    unreadable = fleet(tmp_path, apprise_urls_file=str(tmp_path))
    (problem,) = apprise_problems(unreadable)
    assert problem.startswith(f"apprise: cannot read apprise_urls_file {tmp_path}")
