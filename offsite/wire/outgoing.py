"""Nothing written is left unsent. A run's message is published under a note in Redis
(`offsite:unsent`, one entry per run id holding the message), written before the publish and
dropped after it; a run that must wait for its host (MustWait: a full behind another backup, a
backup behind a drill or a prune) is parked there too instead of being held unacked in a worker
as a retry with an ETA. On each watchdog tick the control node re-sends (resend_due):

- an entry whose publish failed (broker refused, connection lost) or whose sender died before
  dropping it, once its publish budget (PUBLISH_BUDGET_S, the retry policy's length) is over;
- a parked entry once the run it waits for no longer holds the host lease (the worker that
  parked it does so itself within a second, wake_when_free; the tick is the fallback).

A re-send is routed again from the config (route_of), never by the queue the entry names: an
entry a Redis writer edited to reach another queue, or whose message a worker would refuse, is
dropped unsent and refused as a worker refuses a message (offsite.wire.rejections: the run it
names fails `message_refused`, which alerts). A re-send is idempotent by run id: the worker
starts a run only from `queued` and claims it
(offsite.run.admission), so a message sent twice still makes one run. Entries of runs no longer
`queued` are dropped unsent. Entries are replaced and dropped only if unchanged (a worker
parking the run again while the watchdog re-sends it keeps its entry)."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, cast

import redis

from offsite.config.model import Config
from offsite.constants import CONTROL_QUEUE, RunState, host_queue
from offsite.ledger.lease import HostLease
from offsite.ledger.records import RunStore
from offsite.schedule.specs import utcnow
from offsite.wire.messages import PRUNE, START_BACKUP, VERIFY, MessageRejected, validate_message
from offsite.wire.publish import failure_callback, publish_task
from offsite.wire.rejections import fail_refused_run, refuse

log = logging.getLogger(__name__)

UNSENT_KEY = "offsite:unsent"
PUBLISH_BUDGET_S = 180.0   # longer than PUBLISH_RETRY_POLICY rides out a broker restart
WAKE_POLL_S = 1.0          # how often a worker looks whether the run its parked run waits for ended

_SWAP = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[3] == '' then return redis.call('hdel', KEYS[1], ARGV[1]) end
  return redis.call('hset', KEYS[1], ARGV[1], ARGV[3]) + 1
end
return 0
"""


RUN_TASKS = (START_BACKUP, VERIFY, PRUNE)   # the only messages an entry may hold
MAX_ENTRY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outgoing:
    """A run's task message as it is published (name, arguments, queue), and when the
    watchdog may send it: not before `due` (a POSIX time), and while parked not before
    `waiting_for` (a run id) has left the host lease."""
    run_id: str
    host: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    due: float = 0.0
    waiting_for: str | None = None
    nonce: str = ""

    def encoded(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decoded(cls, raw: bytes | str) -> Outgoing:
        """Raises ValueError for anything but an entry as send() and park() write it."""
        if len(raw) > MAX_ENTRY_BYTES:
            raise ValueError("entry too large")
        data = json.loads(raw)
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise ValueError("not an unsent entry")
        entry = cls(**data)
        if not (all(isinstance(v, str) for v in (entry.run_id, entry.host, entry.queue,
                                                   entry.nonce))
                and entry.task in RUN_TASKS and isinstance(entry.args, list)
                and isinstance(entry.kwargs, dict) and isinstance(entry.due, (int, float))
                and isinstance(entry.waiting_for, (str, type(None)))):
            raise ValueError("not an unsent entry")
        return entry

    def renewed(self, due: float, waiting_for: str | None = None) -> Outgoing:
        return replace(self, due=due, waiting_for=waiting_for, nonce=uuid.uuid4().hex)


_FIELDS = {f.name for f in fields(Outgoing)}


def send(client: redis.Redis, broker_url: str, sentinel_master: str | None,
         message: Outgoing, now: datetime) -> str:
    """Publish the run's message under an entry the watchdog re-sends from if this fails or
    this process dies; returns the task id. Raises what publish_task raises (the entry stays,
    due now)."""
    entry = message.renewed(now.timestamp() + PUBLISH_BUDGET_S)
    client.hset(UNSENT_KEY, entry.run_id, entry.encoded())
    return _publish_then_drop(client, broker_url, sentinel_master, entry, now)


def send_many(client: redis.Redis, messages: list[Outgoing], now: datetime) -> list[Outgoing]:
    """The entries of a batch about to be published by another producer (beat's); drop them
    with drop() once it is."""
    entries = [m.renewed(now.timestamp() + PUBLISH_BUDGET_S) for m in messages]
    if entries:
        client.hset(UNSENT_KEY, mapping={e.run_id: e.encoded() for e in entries})
    return entries


def drop(client: redis.Redis, entries: list[Outgoing]) -> None:
    """Drop the entries of messages now published (each only if unchanged), in one pipeline."""
    swap = client.register_script(_SWAP)
    with client.pipeline(transaction=False) as pipe:
        for entry in entries:
            swap(keys=[UNSENT_KEY], args=[entry.run_id, entry.encoded(), ""], client=pipe)
        pipe.execute()


def park(client: redis.Redis, message: Outgoing, waiting_for: str | None,
         now: datetime) -> None:
    """Leave a run that must wait for `waiting_for` to the watchdog, which sends it again once
    that run no longer holds the host (the message that brought it here is acked)."""
    entry = message.renewed(now.timestamp(), waiting_for)
    client.hset(UNSENT_KEY, entry.run_id, entry.encoded())
    log.info("run %s waits for %s; the control node sends it again then", entry.run_id,
             waiting_for or "the host")


def route(config: Config, task: str, host: str) -> tuple[str | None, str]:
    """Where offsite sends a run's message for `host`: (the host whose worker takes it, None
    for the control node; its queue). A backup goes to the host's own queue, a drill where
    `verify.where` says, a prune to the control queue."""
    node = (host if task == START_BACKUP
            else on if task == VERIFY and (on := config.verify_on(host)) != "control" else None)
    return node, CONTROL_QUEUE if node is None else host_queue(node)


def route_of(entry: Outgoing, config: Config) -> str:
    """The queue offsite publishes the entry's message to, derived from the config as the
    sender derived it (route); raises ValueError for an entry whose message a worker would
    refuse, or that names another queue (a Redis writer's edit to route a run elsewhere)."""
    if entry.host not in config.hosts:
        raise ValueError(f"host {entry.host[:80]!r} is not in this config")
    worker, queue = route(config, entry.task, entry.host)
    try:
        message = validate_message(entry.task, entry.args, entry.kwargs, config, worker)
    except MessageRejected as exc:
        raise ValueError(f"its message would be refused: {exc}") from None
    if (message.host, message.run_id) != (entry.host, entry.run_id):
        raise ValueError("its message names another host or run")
    if entry.queue != queue:
        raise ValueError(f"it names queue {entry.queue[:80]!r}, not the host's {queue!r}")
    return queue


def resend_due(client: redis.Redis, store: RunStore, lease: HostLease, config: Config,
               now: datetime) -> list[str]:
    """Send what is due (see the module's docstring); returns the run ids sent. A publish that
    fails leaves its entry due for the next tick."""
    raw = cast("dict[bytes, bytes]", client.hgetall(UNSENT_KEY))
    return [key.decode() if isinstance(key, bytes) else key for key, value in raw.items()
            if _resend(client, store, lease, config, key, value, now)]


def wake_when_free(client: redis.Redis, store: RunStore, lease: HostLease, config: Config,
                   run_id: str) -> threading.Thread:
    """In the worker that parked a run: send it again the moment its host is free (the
    watchdog's tick does it otherwise: this worker stopped, Redis was away)."""
    def watch() -> None:
        try:
            while (value := client.hget(UNSENT_KEY, run_id)) is not None:
                entry = Outgoing.decoded(value)
                if not entry.waiting_for or lease.holder(entry.host) != entry.waiting_for:
                    _resend(client, store, lease, config, run_id, value, utcnow())
                    return
                time.sleep(WAKE_POLL_S)
        except (redis.RedisError, ValueError, TypeError, RecursionError) as exc:
            log.warning("stopped watching waiting run %s (%s); the control node sends it",
                        run_id, exc)
    thread = threading.Thread(target=watch, name=f"wake-{run_id}", daemon=True)
    thread.start()
    return thread


def _resend(client: redis.Redis, store: RunStore, lease: HostLease, config: Config,
            key: bytes | str, value: bytes | str, now: datetime) -> bool:
    """Send one entry again if it is due and still unchanged; whether it was sent."""
    try:
        entry = Outgoing.decoded(value)
        if entry.run_id != (key.decode() if isinstance(key, bytes) else key):
            raise ValueError("filed under another run id")
    except (ValueError, TypeError, RecursionError) as exc:
        log.warning("dropping an unsent entry under %.80r: %s", key, exc)
        client.hdel(UNSENT_KEY, key)
        return False
    try:
        route_of(entry, config)
    except ValueError as exc:   # as a worker refuses a message: logged, listed, the run failed
        cause = f"its unsent entry was not offsite's: {exc}"
        refuse(client, now, "re-send", entry.task, entry.run_id, cause)
        fail_refused_run(store, entry.run_id, cause, now)
        client.hdel(UNSENT_KEY, key)
        return False
    swap = client.register_script(_SWAP)
    record = store.get(entry.run_id)
    if record is None or record.state != RunState.QUEUED or record.host != entry.host:
        swap(keys=[UNSENT_KEY], args=[entry.run_id, value, ""])
        return False
    if entry.due > now.timestamp() or (
            entry.waiting_for and lease.holder(entry.host) == entry.waiting_for):
        return False
    claimed = entry.renewed(now.timestamp() + PUBLISH_BUDGET_S)
    if not swap(keys=[UNSENT_KEY], args=[entry.run_id, value, claimed.encoded()]):
        return False   # parked again or sent by another meanwhile
    try:
        _publish_then_drop(client, config.broker_url, config.broker_sentinel_master, claimed,
                           now)
    except Exception as exc:
        log.warning("could not send run %s again (%s); the next watchdog tick retries",
                    entry.run_id, exc)
        return False
    log.warning("sent run %s again: %s", entry.run_id,
                f"{entry.waiting_for} no longer holds the host" if entry.waiting_for
                else "its message had not been published")
    return True


def _publish_then_drop(client: redis.Redis, broker_url: str, sentinel_master: str | None,
                       entry: Outgoing, now: datetime) -> str:
    swap = client.register_script(_SWAP)
    try:
        task_id = publish_task(broker_url, entry.task, tuple(entry.args), entry.kwargs,
                               entry.queue, [failure_callback(entry.host, entry.run_id)],
                               sentinel_master)
    except BaseException:
        try:
            swap(keys=[UNSENT_KEY], args=[entry.run_id, entry.encoded(),
                                          replace(entry, due=now.timestamp()).encoded()])
        except redis.RedisError:
            pass   # the entry stays due at the end of its budget
        raise
    swap(keys=[UNSENT_KEY], args=[entry.run_id, entry.encoded(), ""])
    return task_id
