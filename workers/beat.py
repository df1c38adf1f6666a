"""Celery beat with its state in Redis (RedBeat, one lock for the fleet), sending slots as runs.

The entries are the config's (beat_schedule.scheduled_entries): Redis holds only when each
last ran and when it is next due. What Redis holds is not trusted: each tick an entry whose
state does not decode is removed and made again (one log line), an entry the config does not
name is removed (one log line) and never sent, and an entry the config names that Redis lost
(restarted without persistence, deleted) is made again within the tick, counted as run up to
its latest slot, so it sends its next slot and none twice.

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

from redbeat.decoder import RedBeatJSONEncoder

from beat_schedule import celery_schedule, entry_route, scheduled_entries
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
Expected = dict[str, tuple[str, RunType]]    # Redis key -> (host, run type), from the config


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


class LostState(Exception):
    """An entry the config names whose state Redis does not hold (or holds undecodable)."""


def decode_meta(meta: str | bytes | None) -> datetime | None:
    """When the entry last ran (None: never) from its stored `meta`; raises LostState when
    there is no meta (the entry's hash is gone) or it does not decode."""
    if meta is None:
        raise LostState("no state")
    try:
        value = json.loads(meta)
        return _stored_time(value.get("last_run_at"))
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise LostState(f"state does not decode ({type(exc).__name__})") from None


def _text(key: str | bytes) -> str:
    return key if isinstance(key, str) else key.decode(errors="replace")


class SlotScheduler(RedBeatScheduler):
    """Sends each due entry as a run whose id comes from the slot it stands for; a send
    repeated before the entry advanced (a crash between send and save) carries the same run
    id and is claimed once by the worker."""

    clock: Callable[[], datetime] = staticmethod(utcnow)
    _expected: tuple[int, Expected] | None = None

    def expected(self, config: Config) -> Expected:
        """The entries' Redis keys the config names (computed once per loaded config)."""
        if self._expected is None or self._expected[0] != id(config):
            prefix = self.app.redbeat_conf.key_prefix
            self._expected = (id(config), {prefix + name: value for name, value
                                           in scheduled_entries(config).items()})
        return self._expected[1]

    def setup_schedule(self) -> None:
        """Entries RedBeat could not read are removed first (it would stop on them); RedBeat
        then makes the config's missing entries (never run: due now). Each entry's due time
        is then offsite's, in one round trip (RedBeat's counts an interval from the start,
        not from the grid)."""
        client, config, now = get_redis(self.app), current_config(), self.clock()
        self.heal(client, config, now, make_missing=False)
        super().setup_schedule()
        expected, schedule_key = self.expected(config), self.app.redbeat_conf.schedule_key
        with client.pipeline(transaction=False) as pipe:
            for entry in self.load_entries(client, config, list(expected), now):
                spec = config.run_schedule(entry.host, entry.kind.value)
                if spec is None:
                    continue
                due = now if entry.last_run_at is None else \
                    due_after(spec, config.schedule.timezone, entry.last_run_at)
                pipe.zadd(schedule_key, {entry.key: due.timestamp()})
            pipe.execute()

    def heal(self, client: redis.Redis, config: Config, now: datetime,
             make_missing: bool = True) -> None:
        """Make Redis hold exactly the config's entries: remove the others (one line each),
        and make each missing one (one line each), counted as run up to its latest slot."""
        expected, schedule_key = self.expected(config), self.app.redbeat_conf.schedule_key
        prefix = self.app.redbeat_conf.key_prefix
        stored = {_text(cast("str | bytes", key)) for key in client.zrange(schedule_key, 0, -1)}
        foreign = sorted(key for key in stored if key not in expected)
        foreign += sorted(_text(key) for key in client.scan_iter(match=prefix + "*", count=1000)
                          if _text(key) not in expected and _text(key) not in stored
                          and client.type(key) in ("hash", b"hash"))
        if foreign:
            with client.pipeline(transaction=False) as pipe:
                pipe.zrem(schedule_key, *foreign)
                pipe.delete(*foreign)
                pipe.execute()
            for key in foreign:
                log.error("beat: removed entry %s: the config does not name it", key)
        with client.pipeline(transaction=False) as pipe:
            for key in expected:
                pipe.hget(key, "meta")
                pipe.hexists(key, "definition")
            answers = pipe.execute()
        metas, defined = answers[0::2], answers[1::2]
        broken: list[str] = []
        missing: list[str] = []
        for key, meta, has_definition in zip(expected, metas, defined):
            try:
                decode_meta(meta)
                if not make_missing and meta is not None:
                    self.Entry.from_key(key, app=self.app)   # what RedBeat reads at start
            except LostState as lost:
                (missing if meta is None else broken).append(key)
                if meta is not None:
                    log.error("beat: entry %s: %s; removed and made again from the config",
                              key, lost)
            except Exception as exc:   # RedBeat's decoder: whatever the definition holds
                broken.append(key)
                log.error("beat: entry %s: its definition does not decode (%s); removed and "
                          "made again from the config", key, type(exc).__name__)
            else:
                # a tick that saves an entry just deleted writes its meta back, not its
                # definition: as missing as an entry that is not there at all
                if key not in stored or not has_definition:
                    missing.append(key)
        if broken:
            client.delete(*broken)
        if make_missing and (missing or broken):
            self.remake(client, config, [*missing, *broken], now)

    def remake(self, client: redis.Redis, config: Config, keys: list[str], now: datetime) -> None:
        """Entries the config names that Redis lost: counted as run up to their latest slot
        (the run of that slot, if any, was sent before), due at the slot after it."""
        expected, decisions = self.expected(config), []
        for key in keys:
            host, kind = expected[key]
            spec = config.run_schedule(host, kind.value)
            if spec is None:
                continue
            zone = config.schedule.timezone
            ran_to = latest_slot(spec, zone, now) or now
            task, _ = entry_route(config, host, kind)
            entry = DueEntry(key=key, name=key.removeprefix(self.app.redbeat_conf.key_prefix),
                             task=task, host=host, kind=kind, last_run_at=ran_to)
            decisions.append(Decision(entry, None, ran_to, next_run(spec, zone, ran_to)))
            log.warning("beat: entry %s was missing from Redis; made again from the config, "
                        "next slot %s", entry.name, decisions[-1].next_at.isoformat())
        self.save_decisions(client, decisions, definitions=config)

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
        schedule_key, expected = self.app.redbeat_conf.schedule_key, self.expected(config)
        with client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(schedule_key, 0, now.timestamp())
            pipe.zrangebyscore(schedule_key, f"({now.timestamp()}", "+inf", start=0, num=1,
                               withscores=True)
            pipe.zcard(schedule_key)
            due_keys, upcoming, stored = pipe.execute()
        due = [_text(cast("str | bytes", key)) for key in due_keys]
        if stored != len(expected) or any(key not in expected for key in due):
            self.heal(client, config, now)
            due = [key for key in due if key in expected]
        decisions = []
        for entry in self.load_entries(client, config, due, now):
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

    def load_entries(self, client: redis.Redis, config: Config, keys: list[str],
                     now: datetime) -> list[DueEntry]:
        """The entries of `keys` the config names, with when each last ran. What the entry's
        stored definition says is not read: the config says what each entry sends. An entry
        whose state was lost meanwhile is made again (heal), not sent."""
        expected = self.expected(config)
        keys = [key for key in keys if key in expected]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "meta")
            metas = pipe.execute()
        entries, lost = [], False
        for key, meta in zip(keys, metas):
            try:
                last = decode_meta(meta)
            except LostState:
                lost = True
                continue
            host, kind = expected[key]
            task, _ = entry_route(config, host, kind)
            entries.append(DueEntry(key=key, name=key.removeprefix(
                self.app.redbeat_conf.key_prefix), task=task, host=host, kind=kind,
                last_run_at=last))
        if lost:
            self.heal(client, config, now)
        return entries

    def save_decisions(self, client: redis.Redis, decisions: list[Decision],
                       definitions: Config | None = None) -> None:
        """Each entry's new state; with `definitions`, also its definition as RedBeat writes
        it (for tools that read RedBeat's entries: beat itself reads only the state)."""
        schedule_key = self.app.redbeat_conf.schedule_key
        if not decisions:
            return
        with client.pipeline(transaction=False) as pipe:
            for decision in decisions:
                meta = {"last_run_at": _storable_time(decision.last_run_at)}
                pipe.hset(decision.entry.key, "meta", json.dumps(meta))
                if definitions is not None:
                    pipe.hset(decision.entry.key, "definition",
                              _definition(definitions, decision.entry))
            pipe.zadd(schedule_key, {d.entry.key: d.next_at.timestamp() for d in decisions})
            pipe.execute()

    @property
    def info(self) -> str:
        return cast(str, super().info) + f"\n       . node -> {socket.gethostname()}"


def _definition(config: Config, entry: DueEntry) -> str:
    """The entry's definition as RedBeat writes it, from the config."""
    task, queue = entry_route(config, entry.host, entry.kind)
    spec = config.run_schedule(entry.host, entry.kind.value)
    assert spec is not None
    return json.dumps({"name": entry.name, "task": task, "args": [entry.host, entry.kind.value],
                       "kwargs": {}, "options": {"queue": queue}, "enabled": True,
                       "schedule": celery_schedule(spec, config.schedule.timezone)},
                      cls=RedBeatJSONEncoder)
