"""Celery beat with its state in Redis (RedBeat, one lock for the fleet), sending slots as runs.

Each tick reads every due entry in one pipelined round trip, decides each entry's slot with
offsite's own slot arithmetic (cron: next/previous fire time; `{every: D}`: the grid
anchor + k*D), writes all the run records in one round trip, publishes the messages on one
producer, and saves every entry's new state in one more round trip: thousands of due entries
go out in about a second, and a slot never drifts with the loop interval.
"""
from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import tzinfo as tzinfo_type
from typing import Any, Callable, cast
from zoneinfo import ZoneInfo

import redis
from redis.exceptions import LockNotOwnedError
from redbeat import RedBeatScheduler
from redbeat.schedulers import get_redis

from offsite.config.model import Config
from offsite.watch.config_digest import digest_for
from offsite.constants import RunType
from offsite.errors import UnknownHostError
from offsite.ledger.heartbeat import BEAT_NODE, beat_once
from offsite.schedule.specs import EverySpec, due_after, latest_slot, next_run, utcnow
from tasks.dispatch import SlotSend, send_slots
from workers.context import current_config, run_store

log = logging.getLogger(__name__)

OUTAGE_RETRY_S = 2.0
SENT_LOG = "Scheduler: Sending due task %s (%s)"
SENT_BATCH_LOG = "beat: sent %d due entries in %.3fs"


@dataclass(frozen=True)
class DueEntry:
    key: str
    name: str
    task: str
    host: str
    kind: RunType
    last_run_at: datetime | None


@dataclass(frozen=True)
class Decision:
    """What one tick does with a due entry: send `slot` (or nothing), then wait for `next_at`."""
    entry: DueEntry
    slot: datetime | None
    last_run_at: datetime
    next_at: datetime


def decide(config: Config, entry: DueEntry, now: datetime) -> Decision:
    """The entry's slot to send now, if any: the first slot after it last ran (a catch-up
    after downtime is one run standing for the first slot missed). It then counts as run up
    to the latest slot at or before now, and waits for the slot after that."""
    spec = config.run_schedule(entry.host, entry.kind.value)
    zone = config.schedule.timezone
    if spec is None:   # the config no longer schedules these runs: look again in an hour
        return Decision(entry, None, entry.last_run_at or now, now + timedelta(hours=1))
    if entry.last_run_at is None:   # never ran: run now, standing for the latest slot
        slot = (latest_slot(spec, zone, now) or now) if isinstance(spec, EverySpec) else now
    else:
        slot = due_after(spec, zone, entry.last_run_at)
        if slot > now:
            return Decision(entry, None, entry.last_run_at, slot)
    ran_to = max(slot, latest_slot(spec, zone, now) or slot)
    return Decision(entry, slot.astimezone(timezone.utc), ran_to, next_run(spec, zone, ran_to))


def _storable_time(moment: datetime) -> dict[str, Any]:
    """A UTC time as RedBeat's JSON encoder writes it (RedBeat reads it back at start-up)."""
    utc = moment.astimezone(timezone.utc)
    return {"__type__": "datetime", "year": utc.year, "month": utc.month, "day": utc.day,
            "hour": utc.hour, "minute": utc.minute, "second": utc.second,
            "microsecond": utc.microsecond, "timezone": "UTC"}


def _stored_time(value: Any) -> datetime | None:
    """What RedBeat's encoder wrote for a datetime (zone name, offset seconds or UTC)."""
    if not isinstance(value, dict) or value.get("__type__") != "datetime":
        return None
    zone = value.get("timezone", "UTC")
    tzinfo: tzinfo_type = (timezone(timedelta(seconds=zone)) if isinstance(zone, (int, float))
                           else timezone.utc if zone == "UTC" else ZoneInfo(zone))
    return datetime(value["year"], value["month"], value["day"], value["hour"],
                    value["minute"], value["second"], value["microsecond"], tzinfo=tzinfo)


class SlotScheduler(RedBeatScheduler):
    """Sends each due entry as a run whose id comes from the slot it stands for; a send
    repeated before the entry advanced (a crash between send and save) carries the same run
    id and is claimed once by the worker."""

    clock: Callable[[], datetime] = staticmethod(utcnow)

    def setup_schedule(self) -> None:
        """RedBeat stores each entry with a due time from celery's own arithmetic (an
        interval counted from the start, not from the grid); replace every one with offsite's,
        in one round trip."""
        super().setup_schedule()
        client, config, now = get_redis(self.app), current_config(), self.clock()
        keys = client.zrange(self.app.redbeat_conf.schedule_key, 0, -1)
        schedule_key = self.app.redbeat_conf.schedule_key
        with client.pipeline(transaction=False) as pipe:
            for entry in self.load_entries(client, keys):
                try:
                    spec = config.run_schedule(entry.host, entry.kind.value)
                except UnknownHostError:
                    continue
                if spec is None:
                    continue
                due = now if entry.last_run_at is None else \
                    due_after(spec, config.schedule.timezone, entry.last_run_at)
                pipe.zadd(schedule_key, {entry.key: due.timestamp()})
            pipe.execute()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """A Redis outage pauses beat instead of ending it; slots due meanwhile are sent once
        when it returns (they collapse like any catch-up)."""
        try:
            return self.send_due()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("beat: Redis unreachable (%s); retrying in %ss", exc, OUTAGE_RETRY_S)
            return OUTAGE_RETRY_S
        except LockNotOwnedError:
            if self.lock is not None and self.lock.acquire(blocking=False):
                log.warning("beat: lock expired during an outage and was taken again")
                return 0.0
            raise

    def send_due(self) -> float:
        """One tick: returns the seconds until the next entry is due (at most max_interval)."""
        if self.lock_key and self.lock is not None:
            self.lock.extend(int(self.lock_timeout))
        began = time.perf_counter()
        client, config, now = get_redis(self.app), current_config(), self.clock()
        beat_once(client, BEAT_NODE, digest=digest_for(config, BEAT_NODE))
        schedule_key = self.app.redbeat_conf.schedule_key
        with client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(schedule_key, 0, now.timestamp())
            pipe.zrangebyscore(schedule_key, f"({now.timestamp()}", "+inf", start=0, num=1,
                               withscores=True)
            due_keys, upcoming = pipe.execute()
        decisions = []
        for entry in self.load_entries(client, due_keys):
            try:
                decisions.append(decide(config, entry, now))
            except UnknownHostError:
                log.error("beat: entry %s names a host no longer configured", entry.name)
        sends = [SlotSend(d.entry.host, d.entry.kind, d.slot) for d in decisions if d.slot]
        for decision in decisions:
            if decision.slot:
                log.info(SENT_LOG, decision.entry.name, decision.entry.task)
        send_slots(config, run_store(), sends, now)
        self.save_decisions(client, decisions)
        if sends:
            log.info(SENT_BATCH_LOG, len(sends), time.perf_counter() - began)
        next_times = [d.next_at.timestamp() for d in decisions]
        next_times += [score for _, score in upcoming]
        wait = min(next_times, default=now.timestamp() + self.max_interval) - now.timestamp()
        return max(0.0, min(wait, float(self.max_interval)))

    def load_entries(self, client: redis.Redis, keys: list[str | bytes]) -> list[DueEntry]:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "definition", "meta")
            replies = pipe.execute()
        entries = []
        for key, (definition, meta) in zip(keys, replies):
            if not definition:
                client.zrem(self.app.redbeat_conf.schedule_key, key)
                continue
            # plain JSON: the scheduler needs no celery schedule object (offsite's own slot
            # arithmetic decides), and building thousands of them is most of a tick's cost
            fields = json.loads(definition)
            last = _stored_time(json.loads(meta).get("last_run_at") if meta else None)
            if not fields.get("enabled", True):
                continue
            host, kind = fields["args"]
            name = key if isinstance(key, str) else key.decode()
            entries.append(DueEntry(key=name, name=fields["name"], task=fields["task"],
                                    host=host, kind=RunType(kind), last_run_at=last))
        return entries

    def save_decisions(self, client: redis.Redis, decisions: list[Decision]) -> None:
        schedule_key = self.app.redbeat_conf.schedule_key
        if not decisions:
            return
        with client.pipeline(transaction=False) as pipe:
            for decision in decisions:
                meta = {"last_run_at": _storable_time(decision.last_run_at)}
                pipe.hset(decision.entry.key, "meta", json.dumps(meta))
            pipe.zadd(schedule_key, {d.entry.key: d.next_at.timestamp() for d in decisions})
            pipe.execute()

    @property
    def info(self) -> str:
        return cast(str, super().info) + f"\n       . node -> {socket.gethostname()}"
