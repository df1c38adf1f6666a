"""`offsite control` serving HTTP: /metrics parsed by prometheus_client, /api/hosts, the fleet
page loaded in a real headless Chromium, basic auth; and the config rule for listening beyond
loopback."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from offsite.fleet.http_auth import hash_password
from tests.fleet_states import EXPECTED_ORDER, FAILURE_MESSAGE, HOSTS, STORED_HEALTHY, write_fleet
from tests.helpers import describe, free_port, wait_until
from tests.http_client import basic, dump_dom_at_width, request, screenshot, wait_serving

# Where the fleet page's screenshot is kept for a person to look at; by default the test's own
# folder (a fixed path would be shared by parallel runs).
SCREENSHOT_DIR = os.environ.get("OFFSITE_SCREENSHOT_DIR")


@pytest.fixture
def serving(make_config: Any, start_control: Callable[..., Any],
            redis_client: redis.Redis) -> int:
    """A real `offsite control` with http.listen on a free loopback port, over a fleet in
    known states."""
    port = free_port()
    config = make_config(HOSTS, http={"listen": f"127.0.0.1:{port}"})
    write_fleet(redis_client)
    start_control(config)
    wait_serving(port)
    return port


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.mark.slow
def test_metrics_scrape_parses_and_says_what_the_ledger_holds(serving: int) -> None:
    reply = request(serving, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(reply.text)
    names = {name for name, _ in found}
    assert names >= {"offsite_last_success_timestamp_seconds",
                     "offsite_last_run_duration_seconds", "offsite_last_run_uploaded_bytes",
                     "offsite_runs_total", "offsite_last_verify_success_timestamp_seconds",
                     "offsite_condition_active", "offsite_alert_outbox_pending",
                     "offsite_worker_up", "offsite_target_stored_bytes",
                     "offsite_next_run_timestamp_seconds", "offsite_build_info"}
    assert "offsite_last_run_bytes_uploaded" not in names
    for family in text_string_to_metric_families(reply.text):   # Prometheus' naming rules
        assert re.fullmatch(r"offsite_[a-z_]+", family.name), family.name
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name
        if "timestamp" in family.name or "duration" in family.name:
            assert family.name.endswith("_seconds"), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
    # no worker runs here: every host's up gauge is there, and 0
    assert {host: value(found, "offsite_worker_up", host=host) for host in HOSTS} == \
        {host: 0.0 for host in HOSTS}
    assert value(found, "offsite_target_stored_bytes", host="healthy-1") == STORED_HEALTHY
    assert ("offsite_target_stored_bytes", frozenset({("host", "stale-1")})) not in found
    now = time.time()
    for host in HOSTS:
        for kind in ("full", "incr"):   # the default schedule: a full monthly, incr daily
            due = value(found, "offsite_next_run_timestamp_seconds", host=host, type=kind)
            assert now - 60 < due <= now + 32 * 86400, (host, kind, due)
    [build] = [labels for name, labels in found if name == "offsite_build_info"]
    assert dict(build)["version"] == importlib.metadata.version("offsite")
    assert value(found, "offsite_runs_total", host="failing-1", type="incr",
                 state="failed") == 1
    assert value(found, "offsite_runs_total", host="healthy-1", type="incr",
                 state="succeeded") == 5
    assert value(found, "offsite_last_run_duration_seconds", host="healthy-1",
                 type="incr") == 40
    assert value(found, "offsite_last_run_uploaded_bytes", host="healthy-1",
                 type="full") == 6_000_000
    assert value(found, "offsite_condition_active", host="stale-1",
                 condition="backup_stale") == 1
    assert ("offsite_condition_active", frozenset({("host", "healthy-1"),
                                                  ("condition", "backup_stale")})) not in found
    assert value(found, "offsite_alert_outbox_pending") >= 0
    stale_success = value(found, "offsite_last_success_timestamp_seconds", host="stale-1",
                          type="full")
    healthy_success = value(found, "offsite_last_success_timestamp_seconds",
                            host="healthy-1", type="incr")
    assert healthy_success - stale_success > 18 * 86400
    assert ("offsite_last_verify_success_timestamp_seconds",
            frozenset({("host", "healthy-1")})) in found


@pytest.mark.slow
def test_api_hosts_is_the_json_of_offsite_hosts(serving: int, run_offsite: Any,
                                                make_config: Any) -> None:
    reply = request(serving, "/api/hosts")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    served = json.loads(reply.body)
    printed = run_offsite("hosts", "--json", config=Path(make_config.tmp_path / "offsite.yaml"))
    assert printed.returncode == 0, describe(printed)
    assert [row["host"] for row in served] == EXPECTED_ORDER
    strip = {"age_s", "last_success_age_s"}

    def comparable(rows: list[dict[str, Any]]) -> list[Any]:
        return json.loads(json.dumps(rows), object_hook=lambda d: {
            k: v for k, v in d.items() if k not in strip})
    assert comparable(served) == comparable(json.loads(printed.stdout))


@pytest.mark.slow
def test_worker_up_gauge_is_1_while_a_real_worker_beats_and_0_once_it_stops(
        make_config: Any, start_control: Callable[..., Any],
        start_worker: Callable[..., Any]) -> None:
    port = free_port()
    config = make_config(HOSTS, http={"listen": f"127.0.0.1:{port}"},
                         watchdog={"worker_timeout": "6s"})
    start_control(config)
    worker = start_worker(config, "healthy-1")
    wait_serving(port)

    def up() -> dict[str, float]:
        found = samples(request(port, "/metrics").text)
        return {host: value(found, "offsite_worker_up", host=host) for host in HOSTS}
    wait_until(lambda: up() == {"healthy-1": 1.0, "failing-1": 0.0, "stale-1": 0.0}, 30,
               "healthy-1's worker counted up, the two without a worker down")
    worker.stop()
    wait_until(lambda: up() == {host: 0.0 for host in HOSTS}, 30,
               "healthy-1's up gauge at 0 (still there) once its worker stopped")


LONG_HOST = "h" * 63   # the longest name the config takes, with no place to break


@pytest.mark.slow
def test_fleet_page_fits_1280px_in_headless_chromium_and_links_each_host_history(
        make_config: Any, start_control: Callable[..., Any], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    port = free_port()
    config = make_config({**HOSTS, LONG_HOST: {"scripts": {"s": {"bash": "true"}}}},
                         http={"listen": f"127.0.0.1:{port}"})
    written = write_fleet(redis_client)
    start_control(config)
    wait_serving(port)
    served = request(port, "/").text
    # the failing run's message carries markup: shown as text, never run
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in served and "<script" not in served
    assert '<meta http-equiv="refresh" content="60">' in served
    dom, scroll_width, inner_width = dump_dom_at_width(served, tmp_path / "chromium", 1280)
    assert inner_width == 1280 and scroll_width <= inner_width, (scroll_width, inner_width)
    rows = re.findall(r'<tr class="health-(\w+)" data-host="([^"]+)"', dom)
    assert [host for _, host in rows if host != LONG_HOST] == EXPECTED_ORDER
    assert [health for health, host in rows if host != LONG_HOST] == ["failed", "stale", "healthy"]
    assert "4 hosts: 1 failed, 0 lost, 2 stale, 0 unproven, 1 healthy" in dom

    def row_of(host: str) -> str:
        found = dom[dom.index(f'data-host="{host}"'):]
        return found[:found.index("</tr>")]
    healthy, failing = row_of("healthy-1"), row_of("failing-1")
    assert healthy.count("<rect") == 6          # six backups charted, with their scales
    assert "<polyline" in healthy
    assert re.search(r'class="scale-bytes"[^>]*>5\.7 MiB</text>', healthy)
    assert re.search(r'class="scale-seconds"[^>]*>90 s</text>', healthy)
    assert '<td class="stored">20.1 MiB</td>' in healthy
    # its newest backup failed: the last good one's size is still shown
    assert re.search(r'<td class="good">4\.8 MiB <span class="age">full</span>', failing)
    assert '<a href="/host/failing-1">failing-1</a>' in failing
    if SCREENSHOT_DIR:   # for a person to look at
        screenshot(f"http://127.0.0.1:{port}/", tmp_path / "chromium",
                   Path(SCREENSHOT_DIR) / "offsite-fleet-page.png")

    history = request(port, "/host/failing-1")
    assert history.status == 200 and history.headers["content-type"].startswith("text/html")
    runs = re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', history.text)
    assert [run_id for run_id, _ in runs] == [r.run_id for r in reversed(written["failing-1"])]
    newest = runs[0][1]
    assert ">incr<" in newest and "state-failed" in newest and ">upload_failed<" in newest
    assert ">12s<" in newest and ">0 B<" in newest
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in newest and "<script" not in history.text
    assert FAILURE_MESSAGE.split("<")[0].strip() in newest
    assert ">4.8 MiB<" in runs[1][1] and ">1m<" in runs[1][1]
    for missing in ("/host/nobody", "/host/..%2F..%2Fetc%2Fpasswd", "/host/failing-1%00",
                    "/host/%3Cscript%3E"):
        reply = request(port, missing)
        assert reply.status == 404 and b"failing-1" not in reply.body, missing


def _auth_config(make_config: Any, tmp_path: Path, port: int, listen_host: str) -> Path:
    auth_file = tmp_path / "http-auth"
    auth_file.write_text(f"prometheus:{hash_password('correct horse', 1000)}\n")
    auth_file.chmod(0o600)
    return make_config(HOSTS, http={"listen": f"{listen_host}:{port}",
                                    "basic_auth_file": str(auth_file)})


@pytest.mark.slow
def test_basic_auth_required_accepted_and_refused(make_config: Any, tmp_path: Path,
                                                  start_control: Callable[..., Any],
                                                  redis_client: redis.Redis) -> None:
    port = free_port()
    start_control(_auth_config(make_config, tmp_path, port, "0.0.0.0"))
    wait_serving(port)
    for path in ("/", "/metrics", "/api/hosts", "/host/healthy-1"):
        refused = request(port, path)
        assert refused.status == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
        assert b"healthy-1" not in refused.body
    wrong = request(port, "/metrics", headers={"Authorization": basic("prometheus", "wrong")})
    assert wrong.status == 401
    other_user = request(port, "/metrics",
                         headers={"Authorization": basic("admin", "correct horse")})
    assert other_user.status == 401
    for _ in range(2):   # the second time from the remembered header
        right = request(port, "/metrics",
                        headers={"Authorization": basic("prometheus", "correct horse")})
        assert right.status == 200 and b"offsite_alert_outbox_pending" in right.body


@pytest.mark.parametrize("listen", ["0.0.0.0:9808", "192.0.2.10:9808", "[::]:9808"])
@pytest.mark.slow
def test_listen_beyond_loopback_without_auth_is_a_config_error(
        make_config: Any, run_offsite: Any, listen: str) -> None:
    config = make_config(HOSTS, http={"listen": listen})
    result = run_offsite("check", config=config)
    assert result.returncode == 2, describe(result)
    assert str(config) in result.stderr
    assert "At 'http'" in result.stderr and "basic_auth_file" in result.stderr


@pytest.mark.slow
def test_unreadable_auth_file_stops_control_with_one_line(make_config: Any,
                                                          run_offsite: Any,
                                                          tmp_path: Path) -> None:
    config = make_config(HOSTS, http={"listen": f"127.0.0.1:{free_port()}",
                                      "basic_auth_file": str(tmp_path / "missing")})
    result = run_offsite("control", config=config, timeout=60)
    assert result.returncode == 2, describe(result)
    assert "basic_auth_file" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_fast_exposition_says_what_prometheus_client_says(make_config: Any,
                                                          redis_client: redis.Redis) -> None:
    from offsite.config.model import load_config
    from offsite.fleet.summary import read_summary
    from offsite.fleet.metrics import exposition, fleet_families, reference_exposition
    config = load_config(make_config(HOSTS))
    write_fleet(redis_client)
    families = fleet_families(read_summary(redis_client, config))
    ours, reference = exposition(families).decode(), reference_exposition(families).decode()
    assert samples(ours) == samples(reference)
    assert len(samples(ours)) > 15

    def described(text: str) -> list[tuple[str, str, str]]:
        return sorted((f.name, f.type, f.documentation)
                      for f in text_string_to_metric_families(text))
    assert described(ours) == described(reference)


@pytest.mark.slow
def test_http_password_line_is_accepted_by_the_server_check(make_config: Any,
                                                             offsite_env: Any,
                                                             tmp_path: Path) -> None:
    import subprocess

    from offsite.fleet.http_auth import parse_credentials
    from tests.helpers import offsite_argv
    config = make_config(HOSTS)
    made = subprocess.run(offsite_argv(config, "http-password", "prometheus"),
                          input="a long enough password\n", capture_output=True, text=True,
                          env=offsite_env, cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    assert "a long enough password" not in made.stdout
    credentials = parse_credentials(made.stdout.strip(), "stdout")
    assert credentials.check_header(basic("prometheus", "a long enough password"))
    assert not credentials.check_header(basic("prometheus", "another password"))
    short = subprocess.run(offsite_argv(config, "http-password", "prometheus"), input="short\n",
                           capture_output=True, text=True, env=offsite_env, cwd=tmp_path,
                           timeout=60)
    assert short.returncode == 2 and "shorter than 8" in short.stderr


@pytest.mark.slow
def test_broker_down_answers_503_and_recovers(serving: int, redis_server: Any) -> None:
    redis_server.stop(save=True)
    try:
        down = request(serving, "/metrics")
        assert down.status == 503 and b"unreachable" in down.body
    finally:
        redis_server.start()
    from tests.helpers import wait_until
    wait_until(lambda: request(serving, "/api/hosts").status == 200, 60,
               "the HTTP server answering again once Redis is back")
