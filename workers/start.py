"""Starting the Celery workers: a host's worker bound to its own queue, and the control worker."""
from __future__ import annotations

import os
import socket
import threading

from celery.signals import worker_ready, worker_shutting_down

from offsite.config import Config
from offsite.constants import CONTROL_QUEUE, host_queue
from offsite.heartbeat import Heartbeat, interval_for, worker_node
from workers.app import app
from workers.context import WORKER_HOST_ENV, redis_client


def _worker_argv(queue: str, nodename: str, loglevel: str) -> list[str]:
    """threads pool, one slot: the main thread keeps answering pings and heartbeats while an
    upload runs, and children die with the worker (PR_SET_PDEATHSIG in offsite.execute)."""
    return ["worker", "--queues", queue, "--hostname", nodename, "--pool", "threads",
            "--concurrency", "1", "--task-events", "--loglevel", loglevel,
            "--without-mingle", "--without-gossip"]


def start_host_worker(config: Config, host: str, loglevel: str = "INFO") -> None:
    """Blocks running the worker of `host`; raises UnknownHostError for a host not configured."""
    config.host(host)
    os.environ[WORKER_HOST_ENV] = host
    heartbeats: list[Heartbeat] = []

    def start_heartbeat(**_: object) -> None:
        heartbeats.append(Heartbeat(redis_client, worker_node(host),
                                    interval_for(config.watchdog.worker_timeout)).start())

    worker_ready.connect(start_heartbeat, weak=False)
    def stop_heartbeat(**_: object) -> None:
        for heartbeat in heartbeats:
            heartbeat.stop()

    worker_shutting_down.connect(stop_heartbeat, weak=False)
    app.worker_main(_worker_argv(host_queue(host), f"{host}@{socket.gethostname()}", loglevel))


def start_control_worker(config: Config, loglevel: str = "INFO") -> None:
    """Blocks running the control worker; its watchdog thread lives as long as the worker."""
    del config
    os.environ.pop(WORKER_HOST_ENV, None)
    stop = threading.Event()

    def start_watchdog(**_: object) -> None:
        from tasks.control import run_watchdog
        threading.Thread(target=run_watchdog, args=(stop,), name="watchdog", daemon=True).start()

    worker_ready.connect(start_watchdog, weak=False)
    worker_shutting_down.connect(lambda **_: stop.set(), weak=False)
    app.worker_main(_worker_argv(CONTROL_QUEUE, f"control@{socket.gethostname()}", loglevel))


def start_beat(config: Config, loglevel: str = "INFO") -> None:
    """Blocks running beat; a second beat waits on the lock held in Redis."""
    del config
    app.start(["beat", "--loglevel", loglevel])
