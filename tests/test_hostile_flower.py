"""Flower, started as compose.yaml starts it, on a fleet whose Redis asks for a password: after
beat sent a slot and the backup ran, no page of Flower shows the password, the passphrase or
an AWS key, and neither does any log of the fleet."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offsite.constants import RunState
from offsite.ledger.records import RedisRunStore
from tests.helpers import ConfigFactory, find_leaks, offsite_argv, wait_until
from tests.secure_redis import Flower, PasswordRedisServer

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

HOST = "carcosa"


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PasswordRedisServer]:
    directory = tmp_path / "redis-with-password"
    directory.mkdir()
    server = PasswordRedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_flower_never_shows_the_redis_password(
        password_redis: PasswordRedisServer, aws: Any, processes: Any, start_worker: Any,
        start_control: Any, offsite_env: Any, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    factory = ConfigFactory(config_dir, password_redis.url, aws)
    config = factory({HOST: {"scripts": {"data": {"bash": "echo data > data.txt"}}}},
                     schedule={"full": {"every": "4s"}, "incr": {"every": "1h"}})
    secrets = [password_redis.password, factory.passphrase, *offsite_env.secrets]
    node, control_node = f"{HOST}@{socket.gethostname()}", f"control@{socket.gethostname()}"

    worker = start_worker(config, HOST)
    control = start_control(config)
    flower = Flower(processes, config)
    beat = processes.start("beat", offsite_argv(config, "beat"), "beat: Acquired lock")

    client = password_redis.client(decode_responses=True)
    store = RedisRunStore(client)
    try:
        wait_until(lambda: any(r.state == RunState.SUCCEEDED and r.scheduled_for is not None
                               for r in store.recent(HOST, 20)),
                   timeout=120, what="a slot sent by beat to be backed up", interval=0.5)
    finally:
        client.close()
    beat.stop()
    run_id = next(r.run_id for r in store.recent(HOST, 20) if r.state == RunState.SUCCEEDED)

    def flower_saw_the_run() -> bool:
        status, body = flower.get("/api/tasks?limit=50")
        return status == 200 and run_id in body

    # Flower's task view comes from the workers' events; remote control is off on every
    # offsite process, so Flower's inspect gets no answer and shows no worker's settings
    wait_until(flower_saw_the_run, timeout=60, what="Flower to show the run's tasks",
               interval=1)
    task_id = json.loads(flower.get("/api/tasks?limit=50")[1]).popitem()[0]
    pages = ["/", "/workers", "/tasks",
             "/tasks/datatable?draw=1&start=0&length=100&search%5Bvalue%5D=&order%5B0%5D%5Bcolumn%5D=0"
             "&columns%5B0%5D%5Bdata%5D=name&order%5B0%5D%5Bdir%5D=desc",
             "/api/workers", "/api/workers?refresh=1", "/api/tasks", "/api/task/types",
             "/api/queues/length", f"/api/task/info/{task_id}", f"/task/{task_id}",
             "/broker", "/metrics"]
    seen: dict[str, str] = {}
    for page in pages:
        status, body = flower.get(page)
        assert status == 200, f"{page}: HTTP {status}: {body[:500]}"
        seen[page] = body
        assert find_leaks(body, secrets) == [], f"{page} shows a secret"
    for page in (f"/worker/{node}", f"/worker/{control_node}"):   # inspect-only pages
        status, body = flower.get(page)
        assert status in (200, 404), f"{page}: HTTP {status}"
        assert find_leaks(body, secrets) == [], f"{page} shows a secret"

    # no worker answers inspect: no settings (where the password would sit) are shown
    workers = json.loads(seen["/api/workers?refresh=1"])
    assert not any(info.get("conf") for info in workers.values()), workers
    assert "redbeat_redis_url" not in seen["/api/workers"]
    assert run_id in seen["/api/tasks"]
    logs = "".join(p.log_text() for p in (worker, control, beat, flower.process))
    assert find_leaks(logs, secrets) == []
