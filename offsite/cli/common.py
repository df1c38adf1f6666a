"""What the command modules share: exit codes, the ledger client, waiting for a run, alerting
from a node that has no control worker."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from offsite.config.model import Config
from offsite.errors import OffsiteError
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def masked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def ledger_store(config: Config) -> RedisRunStore:
    from offsite.config.broker import broker_client, is_sentinel
    return RedisRunStore(broker_client(config.broker_url, config.broker_sentinel_master,
                                       socket_connect_timeout=5, socket_timeout=30),
                         replicas=1 if is_sentinel(config.broker_url) else 0)


def reachable_ledger(config: Config) -> tuple[RedisRunStore | None, redis.Redis | None]:
    """The ledger and the broker's client when the broker answers within seconds, else (None,
    None): a command that works without a broker records there when it can."""
    from offsite.config.broker import is_sentinel
    from offsite.run.local import reachable_broker
    client = reachable_broker(config)
    if client is None:
        return None, None
    return RedisRunStore(client, replicas=1 if is_sentinel(config.broker_url) else 0), client


def alert_locally(config: Config, record: RunRecord) -> None:
    from offsite.watch.alerts import failure_alert, sink_for
    try:
        sink_for(config).send(failure_alert(record))
    except Exception as exc:  # an alert failure must never hide the backup's own failure
        logging.getLogger(__name__).error("could not send the alert: %s", exc)


def wait_for(store: RedisRunStore, run_id: str, timeout_s: float | None) -> RunRecord:
    """Woken by the run's end (pub/sub on the ledger), not by polling; on a terminal a status
    line shows the run's step meanwhile (offsite.cli.progress)."""
    from offsite.cli.progress import progress_line, run_progress
    with progress_line(run_progress(store, run_id)):
        record = store.wait_final(run_id, timeout_s)
    if record is None:
        current = store.get(run_id)
        state = current.state.value if current else "unknown"
        raise OffsiteError(f"run {run_id} still {state} after {timeout_s or 0:.0f}s; "
                           f"follow it with `offsite status`", step="wait")
    return record


def path_or_none(text: str | None) -> Path | None:
    return Path(text) if text else None


def add_target_argument(parser: Any) -> None:
    parser.add_argument("--target", default=None, metavar="NAME",
                        help="the target to read: primary (the default) or a replica's name")


def targeted(config: Config, args: Any) -> Config:
    """The config as seen through `--target NAME` (offsite.config.replicas.target_view);
    raises UsageError for a name that is not a target."""
    from offsite.config.targets import target_view
    return target_view(config, getattr(args, "target", None))
