"""Flower as docs/operations.md and compose start it (`offsite flower`, basic auth from the
environment) against a real worker: its task list shows each task's host, type and run id, a
skipped run's result says why, and without credentials it answers 401. Flower listening
beyond loopback without auth is refused."""
from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from offsite.constants import RunState
from offsite.ledger.records import RedisRunStore
from tests.helpers import ConfigFactory, free_port, offsite_argv, wait_until

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

HOST = "carcosa"


def _get(url: str, auth: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_flower_shows_runs_and_why_a_run_did_not_run(
        tmp_path: Path, redis_url: str, redis_client: Any, aws: Any, processes: Any,
        start_worker: Any, run_offsite: Any, offsite_env: Any) -> None:
    factory = ConfigFactory(tmp_path, redis_url, aws)
    config = factory({HOST: {"scripts": {"data": {"bash": "echo data > data.txt"}}}})
    credentials = f"operator:{secrets.token_hex(12)}"
    port = free_port()
    flower = processes.start("flower", offsite_argv(config, "flower", "--port", str(port)),
                             "Visit me at", ready_timeout=60,
                             env_extra={"FLOWER_BASIC_AUTH": credentials})
    base = f"http://127.0.0.1:{port}"

    # a full and an incremental queued while no worker runs: the incremental meets the
    # queued full and is skipped, which its task's result must say
    full = run_offsite("backup", HOST, "--type", "full", config=config)
    incr = run_offsite("backup", HOST, "--type", "incr", config=config)
    assert full.returncode == 0 and incr.returncode == 0, full.stderr + incr.stderr
    full_id, incr_id = (r.stdout.split()[1] for r in (full, incr))
    start_worker(config, HOST)
    store = RedisRunStore(redis_client)
    wait_until(lambda: (r := store.get(full_id)) is not None and r.state == RunState.SUCCEEDED,
               timeout=120, what="the full backup to succeed", interval=0.5)
    skipped = store.get(incr_id)
    assert skipped is not None and skipped.state == RunState.SKIPPED

    def tasks() -> dict[str, Any]:
        status, body = _get(f"{base}/api/tasks?limit=100", credentials)
        return json.loads(body) if status == 200 else {}

    def flower_saw_both() -> bool:
        seen = tasks().values()
        return (any(t.get("args", "").startswith(f"{HOST} full {full_id}") and t.get("result")
                    for t in seen)
                and any(t.get("args") == f"{HOST} incr {incr_id}" and t.get("result")
                        for t in seen))
    wait_until(flower_saw_both, timeout=60, what="Flower to see both runs' tasks", interval=1)

    by_args = {task["args"]: task for task in tasks().values()}
    assert by_args[f"{HOST} full {full_id}"]["result"] == "'started'"
    assert f"{HOST} full {full_id} script data" in by_args
    assert f"{HOST} full {full_id} upload" in by_args
    reason = by_args[f"{HOST} incr {incr_id}"]["result"]
    assert reason.startswith("'not run: skipped: full backup") and full_id in reason
    # the list page's own columns include args and result (offsite flower sets them)
    status, page = _get(f"{base}/tasks", credentials)
    assert status == 200
    assert '<th data-column="args">' in page and '<th data-column="result">' in page
    # no credentials, or wrong ones: refused
    assert _get(f"{base}/api/tasks", None)[0] == 401
    assert _get(f"{base}/api/tasks", "operator:wrong")[0] == 401
    assert _get(f"{base}/", None)[0] == 401
    for monitoring in ("/metrics", "/healthcheck"):   # Flower's own, behind its auth too
        assert _get(f"{base}{monitoring}", None)[0] == 401, monitoring
        assert _get(f"{base}{monitoring}", "operator:wrong")[0] == 401, monitoring
        assert _get(f"{base}{monitoring}", credentials)[0] == 200, monitoring
    assert credentials.split(":")[1] not in flower.log_text()


def test_flower_beyond_loopback_needs_auth(tmp_path: Path, redis_url: str, aws: Any,
                                           run_offsite: Any) -> None:
    config = ConfigFactory(tmp_path, redis_url, aws)({HOST: {"scripts": {"d": {"bash": "true"}}}})
    result = run_offsite("flower", "--address", "0.0.0.0", "--port", str(free_port()),
                         config=config, env_extra={"FLOWER_BASIC_AUTH": None}, timeout=60)
    assert result.returncode == 1
    assert "without authentication" in result.stderr and "FLOWER_BASIC_AUTH" in result.stderr
    assert "Traceback" not in result.stderr
