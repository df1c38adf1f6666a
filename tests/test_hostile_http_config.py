"""Hostile values in the new inputs: the `http:` section and `alerts.heartbeat_url` of the config,
the basic_auth_file, and what a node writes into the heartbeats hash (read by the drift check
and the fleet summary)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.config.model import parse_config
from offsite.watch.config_digest import digest_for, drifted_nodes
from offsite.errors import ConfigError
from offsite.fleet.summary import read_summary
from offsite.ledger.heartbeat import HEARTBEATS_KEY, parse_beat, parse_digest
from offsite.fleet.http_auth import hash_password, load_credentials, parse_credentials

BASE: dict[str, Any] = {"target": {"url": "file:///srv/backups"},
                        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}}


def problems(**extra: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, **extra})
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize(("http", "expected"), [
    ({"listen": "0.0.0.0:9808"}, "beyond loopback"),
    ({"listen": "[::]:9808"}, "beyond loopback"),
    ({"listen": "10.1.2.3:80"}, "beyond loopback"),
    ({"listen": "127.0.0.1"}, "HOST:PORT"),
    ({"listen": "127.0.0.1:0"}, "port from 1 to 65535"),
    ({"listen": "127.0.0.1:65536"}, "port from 1 to 65535"),
    ({"listen": "127.0.0.1:-1"}, "HOST:PORT"),
    ({"listen": "::1:9808"}, "in brackets"),
    ({"listen": "metrics.example.org:9808"}, "not an IP address"),
    ({"listen": "127.0.0.1:9808\n"}, "HOST:PORT"),
    ({"listen": "x" * 10_000}, "HOST:PORT"),
    ({"listen": ["127.0.0.1:9808"]}, "http.listen"),
    ({"listen": "127.0.0.1:9808", "basic_auth_file": "relative/auth"}, "absolute"),
    ({"listen": "127.0.0.1:9808", "tls": True}, "unknown key"),
    ("yes", "http"),
])
def test_bad_http_sections_are_refused_with_their_path(http: Any, expected: str) -> None:
    found = problems(http=http)
    assert "At 'http" in found and expected in found, found


def test_loopback_listens_need_no_password() -> None:
    for listen in ("127.0.0.1:9808", "[::1]:9808", "localhost:9808", "127.9.9.9:1"):
        assert parse_config({**BASE, "http": {"listen": listen}}).http is not None
    assert parse_config({**BASE, "http": {}}).http.listen == "127.0.0.1:9808"  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["ftp://hc.example/x", "javascript:alert(1)", "http://",
                                 "https://hc.example/ ping", "https://hc.example:99999/x"])
def test_bad_heartbeat_urls_are_refused(url: str) -> None:
    found = problems(alerts={"heartbeat_url": url})
    assert "At 'alerts.heartbeat_url'" in found, found


@pytest.mark.parametrize("line", [
    "", "no-colon", ":$pbkdf2-sha256$1000$c2FsdHNhbHQ$" + "A" * 43, "ops:plaintext-password",
    "ops:$pbkdf2-sha256$999$c2FsdHNhbHQ$" + "A" * 43,            # too few iterations
    "ops:$pbkdf2-sha256$99999999999$c2FsdHNhbHQ$" + "A" * 43,    # a CPU bomb
    "ops:$pbkdf2-sha256$1000$!!!$" + "A" * 43, "ops:$pbkdf2-sha256$1000$c2FsdHNhbHQ$short",
    "ops:$bcrypt$10$abc", "ops:$pbkdf2-sha256$1000$c2FsdA$" + "A" * 43,   # salt < 8 bytes
])
def test_malformed_auth_lines_are_config_errors_naming_the_file(line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_credentials(line, "/etc/offsite/http-auth")
    assert caught.value.path == "/etc/offsite/http-auth"


def test_auth_file_missing_huge_or_with_two_lines_is_refused(tmp_path: Path) -> None:
    good = f"ops:{hash_password('a long password', 1000)}"
    for name, content in (("two", f"{good}\n{good}\n"), ("huge", "x" * 100_000),
                          ("binary", "\0\xff" * 10)):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ConfigError):
            load_credentials(path)
    with pytest.raises(ConfigError):
        load_credentials(tmp_path / "absent")
    (tmp_path / "ok").write_text(f"\n{good}\n\n")
    assert load_credentials(tmp_path / "ok").user == "ops"


@pytest.mark.parametrize("value", ["", "garbage", "nan", "1e400", "-1e30 x", "1.5 " + "d" * 5000,
                                   "\xff\xfe", "12 34 56"])
def test_stray_heartbeat_values_count_as_no_beat_or_no_digest(
        value: str, redis_client: redis.Redis, redis_url: str) -> None:
    parse_beat(value)        # never raises
    parse_digest(value)
    config = parse_config({**BASE, "broker_url": redis_url})
    redis_client.hset(HEARTBEATS_KEY, "worker:carcosa", value)
    redis_client.hset(HEARTBEATS_KEY, "control", f"1 {digest_for(config, 'control')}")
    summary = read_summary(redis_client, config)
    drifted = drifted_nodes(config, {"worker:carcosa": value})
    assert summary.rows[0].config_drift == ("worker:carcosa" in drifted)
