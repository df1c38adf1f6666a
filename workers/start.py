"""Starting the Celery workers: a host's worker bound to its own queue, and the control worker."""
from __future__ import annotations

import logging
import os
import socket
import threading
import warnings

from celery.signals import (after_setup_logger, after_setup_task_logger, beat_init,
                            worker_ready, worker_shutting_down)

from offsite.config.model import Config
from offsite.constants import CONTROL_QUEUE, host_queue
from offsite.ledger.heartbeat import Heartbeat, interval_for, worker_node
from offsite.process.logbounds import bound_celery_logging
from offsite.process.shutdown import request_stop
from offsite.host.settings import resolve_host
from offsite.host.sources import empty_host_staging
from offsite.process.supervisor import StopReason
from workers.app import app
from workers.context import (WORKER_HOST_ENV, current_config, host_lease, redis_client,
                             refresh_config, run_store)
from workers.settings import beat_settings
from workers.transport import SENTINEL_TRANSPORT, TRANSPORT

log = logging.getLogger(__name__)

# Every line the worker, control or beat logs is bounded, whatever a task or a child put in it.
after_setup_logger.connect(bound_celery_logging, weak=False)
after_setup_task_logger.connect(bound_celery_logging, weak=False)


def _bound_incoming_messages() -> None:
    """An oversized message is dropped as it comes off the queue, before kombu decodes it.
    Behind Sentinel, kombu treats each `sentinel://` part of the URL as an alternate and, on
    a failover, builds the next connection from that part's scheme: the `sentinel` alias is
    pointed at offsite's transport in this process, so every alternate screens too."""
    from kombu.transport import TRANSPORT_ALIASES
    from offsite.config.broker import SENTINEL_SCHEME, is_sentinel
    if is_sentinel(current_config().broker_url):
        TRANSPORT_ALIASES[SENTINEL_SCHEME] = SENTINEL_TRANSPORT
        app.conf.broker_transport = SENTINEL_TRANSPORT
    else:
        app.conf.broker_transport = TRANSPORT


def _run_worker(argv: list[str], role: str) -> int:
    """Run the Celery worker; its exit code is non-zero unless its supervisor stopped it
    (offsite.process.supervisor)."""
    stop = StopReason()
    worker_shutting_down.connect(lambda sig=None, **_: stop.note(sig), weak=False)
    return stop.exit_code(role, app.start(argv))


def _worker_argv(queue: str, nodename: str, loglevel: str) -> list[str]:
    """threads pool, one slot: the main thread keeps answering pings and heartbeats while an
    upload runs, and children die with the worker (PR_SET_PDEATHSIG in offsite.process.execute)."""
    return ["worker", "--queues", queue, "--hostname", nodename, "--pool", "threads",
            "--concurrency", "1", "--task-events", "--loglevel", loglevel,
            "--without-mingle", "--without-gossip"]


def _report_passphrase(config: Config, host: str) -> None:
    """At start, say in the worker's log what `offsite check` says about the passphrase: runs
    would fail at their start step without it."""
    from offsite.crypto.passphrase import check_passphrase
    findings = check_passphrase(config, host)
    for problem in findings.problems:
        log.error("host %s: %s: every run will fail at its start step", host, problem)
    for warning in findings.warnings:
        log.warning("host %s: %s", host, warning)


def _root_is_the_documented_choice() -> None:
    """A host's worker runs as root by default (its dump scripts must read what they back up;
    a script's `user:` lowers it): Celery's superuser SecurityWarning would be printed at every
    start for the documented set-up, so it is replaced by one informative log line. Pickle is
    never accepted (workers.settings), so Celery's real refusal of root stays in force."""
    from celery.exceptions import SecurityWarning
    warnings.filterwarnings("ignore", message=r"You're running the worker with superuser",
                            category=SecurityWarning)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.info("running as root, the documented default for a host's worker (scripts read "
                 "what they back up; a script's `user:` runs it as another user)")


def start_host_worker(config: Config, host: str, loglevel: str = "INFO") -> int:
    """Blocks running the worker of `host`; returns its exit code; raises UnknownHostError for
    a host not configured."""
    config.host(host)
    _root_is_the_documented_choice()
    os.environ[WORKER_HOST_ENV] = host
    worker_ready.connect(lambda **_: _report_passphrase(config, host), weak=False)
    worker_ready.connect(lambda **_: _clear_leftover_staging(config, host), weak=False)
    worker_shutting_down.connect(lambda **_: request_stop(), weak=False)
    _bound_incoming_messages()
    heartbeats: list[Heartbeat] = []

    def start_heartbeat(sender: object = None, **_: object) -> None:
        heartbeats.append(Heartbeat(redis_client, worker_node(host),
                                    interval_for(config.watchdog.worker_timeout),
                                    digest=lambda: _idle_digest(host),
                                    queues=lambda: consumed_queues(sender)).start())

    def stop_heartbeat(**_: object) -> None:
        for heartbeat in heartbeats:
            heartbeat.stop()

    worker_ready.connect(start_heartbeat, weak=False)
    worker_shutting_down.connect(stop_heartbeat, weak=False)
    return _run_worker(_worker_argv(host_queue(host), f"{host}@{socket.gethostname()}",
                                    loglevel), f"the worker of host {host}")


def consumed_queues(consumer: object) -> list[str] | None:
    """The queues the worker's consumer reads now (None while it has no task consumer: it is
    connecting), for its heartbeat."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is None:
        return None
    return [str(queue.name) for queue in getattr(task_consumer, "queues", [])]


def _idle_digest(host: str) -> str | None:
    """The digest of the config the worker runs with, for its heartbeat; while no run holds
    the host it first re-reads a changed file (a run re-reads it at its start)."""
    from offsite.watch.config_digest import digest_for
    node = worker_node(host)
    try:
        config = refresh_config(node) if host_lease().holder(host) is None \
            else current_config()
        return digest_for(config, node)
    except Exception as exc:   # Redis away, the host removed from the file: beat without
        log.debug("no config digest for %s: %s", node, exc)
        return None


def _clear_leftover_staging(config: Config, host: str) -> None:
    """A dump left in staging by a run that was stopped is removed when the worker starts again
    (unless a run still holds the host)."""
    try:
        settings = resolve_host(config, host)
        if host_lease().holder(host) is None and settings.staging.exists():
            empty_host_staging(settings)
            log.warning("removed the staging folder a stopped run left for host %s", host)
    except Exception as exc:  # Redis away at start-up: the next run empties staging anyway
        log.warning("could not check for a stopped run's staging folder: %s", exc)


def start_control_worker(config: Config, loglevel: str = "INFO") -> int:
    """Blocks running the control worker; its watchdog thread (and, with `http:` set, its HTTP
    server's) lives as long as the worker. The HTTP address is bound first: a taken port or a
    bad basic_auth_file stops the start with one line."""
    from offsite.fleet.http import open_server, serve_in_thread
    server = open_server(config)
    os.environ.pop(WORKER_HOST_ENV, None)
    stop = threading.Event()
    if server is not None:
        serve_in_thread(server)
        worker_shutting_down.connect(lambda **_: server.shutdown(), weak=False)

    def start_watchdog(**_: object) -> None:
        from offsite.watch.escrow_watch import watch_escrow
        from offsite.watch.replica_catch_up import watch_replicas
        from tasks.control import run_watchdog
        threading.Thread(target=run_watchdog, args=(stop,), name="watchdog", daemon=True).start()
        threading.Thread(target=watch_escrow, args=(config, redis_client(), stop),
                         name="escrow", daemon=True).start()
        threading.Thread(target=watch_replicas, args=(config, run_store(), host_lease(), stop),
                         name="replica-catch-up", daemon=True).start()

    worker_ready.connect(start_watchdog, weak=False)
    worker_shutting_down.connect(lambda **_: stop.set(), weak=False)
    _bound_incoming_messages()
    return _run_worker(_worker_argv(CONTROL_QUEUE, f"control@{socket.gethostname()}", loglevel),
                       "the control worker")


def start_beat(config: Config, loglevel: str = "INFO") -> int:
    """Blocks running beat; a second beat waits on the lock held in Redis. RedBeat's settings
    (its Redis URL, with the password) exist in this process only. Returns its exit code:
    non-zero unless its supervisor stopped it."""
    app.conf.update(beat_settings(config))
    stop = StopReason()
    # beat installs its SIGTERM/SIGINT handlers just before beat_init: wrap them then
    beat_init.connect(lambda **_: stop.watch_signals(), weak=False)
    return stop.exit_code("beat", app.start(["beat", "--loglevel", loglevel]))
