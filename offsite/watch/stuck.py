"""What a queue that nobody reads looks like from the ledger, judged on each watchdog tick:
- run_stuck: a run still `queued` longer than `watchdog.start_grace + watchdog.queued_grace`
  after it was requested (its message lost, refused before this was recorded, or on a queue
  its worker does not read); one condition per run, cleared when the run leaves `queued`;
- worker_not_consuming: a host worker that heartbeats but whose heartbeat does not name the
  host's queue among those it reads (one condition per host)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, cast

import redis

from offsite.config.model import Config
from offsite.constants import RunState, host_queue
from offsite.durations import format_duration
from offsite.ledger.facts import QUEUED_KEY
from offsite.ledger.heartbeat import CONSUMING_KEY, parse_consuming, worker_node
from offsite.ledger.records import RunRecord, RunStore
from offsite.watch.alerts import Alert, condition_alert, recovery_alert

AlertText = Callable[[], Alert]
Observed = dict[str, tuple[bool, AlertText, AlertText]]
STUCK_PREFIX = "stuck:"
NOT_CONSUMING_PREFIX = "not_consuming:"


def _never() -> Alert:
    raise AssertionError("this condition has no message in this direction")


def stuck_limit(config: Config) -> timedelta:
    return timedelta(seconds=config.watchdog.start_grace + config.watchdog.queued_grace)


def check_stuck(client: redis.Redis, store: RunStore, config: Config, active: set[str],
                observed: Observed, now: datetime) -> None:
    """Raise run_stuck for each run queued past the limit; clear it for runs that left
    `queued`. Reads only the runs past the limit (the index holds every queued run)."""
    limit = stuck_limit(config)
    raw = cast("list[bytes | str]", client.zrangebyscore(
        QUEUED_KEY, "-inf", (now - limit).timestamp()))
    stuck = set()
    for item in raw:
        run_id = item.decode() if isinstance(item, bytes) else item
        record = store.get(run_id)
        if record is None or record.state != RunState.QUEUED:
            client.zrem(QUEUED_KEY, run_id)   # an index entry the record no longer backs
            continue
        stuck.add(run_id)
        observed[STUCK_PREFIX + run_id] = (True, _stuck_alert(record, limit), _never)
    for key in active:
        if key.startswith(STUCK_PREFIX) and key[len(STUCK_PREFIX):] not in stuck:
            run_id = key[len(STUCK_PREFIX):]
            observed[key] = (False, _never, _stuck_recovery(run_id, store.get(run_id)))


def _stuck_alert(record: RunRecord, limit: timedelta) -> AlertText:
    queue = host_queue(record.host)
    return lambda: condition_alert(
        record.host, record.type.value, "run_stuck",
        f"Run {record.run_id} of host {record.host} was requested at "
        f"{record.created_at.isoformat()} and is still queued after "
        f"{format_duration(limit.total_seconds())} (watchdog.start_grace + "
        f"watchdog.queued_grace): nothing took its message. Is its worker running and "
        f"reading its queue ({queue} for a backup; `offsite hosts`)?")


def _stuck_recovery(run_id: str, record: RunRecord | None) -> AlertText:
    host, kind = (record.host, record.type.value) if record else ("?", "any")
    state = record.state.value if record else "no longer recorded"
    return lambda: recovery_alert(host, kind, "run_stuck",
                                  f"Run {run_id} of host {host} is no longer queued: {state}.")


def check_consuming(client: redis.Redis, config: Config,
                    heartbeats: dict[str, datetime | None], observed: Observed,
                    now: datetime) -> None:
    """worker_not_consuming for each host whose worker beats (within worker_timeout) but
    names queues without its own; a worker that never named its queues is not judged."""
    hosts = list(config.hosts)
    if not hosts:
        return
    raw = cast("list[bytes | None]",
               client.hmget(CONSUMING_KEY, [worker_node(host) for host in hosts]))
    timeout = config.watchdog.worker_timeout
    for host, value in zip(hosts, raw):
        queues, beat = parse_consuming(value), heartbeats.get(host)
        alive = beat is not None and (now - beat).total_seconds() <= timeout
        missing = alive and queues is not None and host_queue(host) not in queues
        shown = ", ".join(sorted(queues or ())) or "none"
        observed[NOT_CONSUMING_PREFIX + host] = (missing, _not_consuming_alert(host, shown),
                                                  _consuming_recovery(host))


def _not_consuming_alert(host: str, shown: str) -> AlertText:
    queue = host_queue(host)
    return lambda: condition_alert(
        host, "any", "worker_not_consuming",
        f"The worker of host {host} is alive but does not read its queue {queue} (it reads: "
        f"{shown}): its runs stay queued. Restart `offsite worker {host}`.")


def _consuming_recovery(host: str) -> AlertText:
    return lambda: recovery_alert(host, "any", "worker_not_consuming",
                                  f"The worker of host {host} reads its queue "
                                  f"{host_queue(host)} again.")
