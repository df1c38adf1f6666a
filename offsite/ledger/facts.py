"""Per-host facts kept as the ledger is written, so the watchdog judges each host from its own
facts (one hash per host, read for the whole fleet in one pipeline), never from a window of the
fleet's newest records.

Written in the same transaction as the record that establishes them:
- `offsite:host:<host>` hash: `started:<type>` / `finished:<type>` / `success` (a backup) /
  `success:<type>` / `verified` (a restore drill) -> epoch seconds (only ever raised), and
  `<field>:run` -> the run id that set it; `count:<type>:<state>` -> how many runs of the host
  ended in that state (counted once, when a record first becomes final: the fleet summary's
  and /metrics' `offsite_runs_total`);
  `verified_set` -> the backup set (a duplicity time stamp) that drill restored, with
  `verified_set_at` (raised with it, so it is always the newest drill's set: what prune keeps);
  `stored` -> the bytes the host's objects in the target held when its newest backup or prune
  ended (listed then), with `stored_at` (raised with it: the fleet page's and /metrics' bytes
  stored, with no listing of the target per request);
- `offsite:series:<host>` list: the host's last SERIES_RUNS finished backups, one
  "<finished epoch> <duration s> <bytes uploaded> <state> <type>" each, oldest first (the fleet
  page's chart, read with one LRANGE per host instead of the records);
- `offsite:running` hash: run id -> JSON {host, type, started_at} of every run in `running`;
- `offsite:attention` set: failed and lost runs the watchdog still has to report or re-run;
- `offsite:queued` sorted set: run id -> epoch of its request, of every run in `queued` (the
  watchdog's run_stuck reads only the ones queued too long).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from offsite.constants import FINAL_STATES, KEY_PREFIX, BackupType, RunState, RunType

if TYPE_CHECKING:
    from redis.client import Pipeline

    from offsite.ledger.run_record import RunRecord

HOST_FACTS_KEY = KEY_PREFIX + "host:"
SERIES_KEY = KEY_PREFIX + "series:"
SERIES_RUNS = 16
RUNNING_KEY = KEY_PREFIX + "running"
ATTENTION_KEY = KEY_PREFIX + "attention"
QUEUED_KEY = KEY_PREFIX + "queued"

STARTED_STATES = frozenset({RunState.RUNNING, RunState.SUCCEEDED, RunState.WARNING,
                            RunState.FAILED, RunState.SKIPPED, RunState.LOST})
SUCCESS_STATES = frozenset({RunState.SUCCEEDED, RunState.WARNING})

# Raise a field only when the new time is later: writes of older runs never move a fact back.
_RAISE = """
for i = 1, #ARGV, 3 do
  local current = tonumber(redis.call('hget', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i] .. ':run', ARGV[i + 2])
  end
end
return 0
"""

_RAISE_VERIFIED_SET = """
if tonumber(ARGV[1]) > tonumber(redis.call('hget', KEYS[1], 'verified_set_at') or '-1') then
  redis.call('hset', KEYS[1], 'verified_set_at', ARGV[1], 'verified_set', ARGV[2])
end
return 0
"""

_RAISE_STORED = """
if tonumber(ARGV[1]) > tonumber(redis.call('hget', KEYS[1], 'stored_at') or '-1') then
  redis.call('hset', KEYS[1], 'stored_at', ARGV[1], 'stored', ARGV[2])
end
return 0
"""


def stage_facts(pipe: Pipeline, record: RunRecord, newly_final: bool = False) -> None:
    """Queue, in the record's own transaction, the facts this state of the record establishes;
    `newly_final`: this write is the one that makes the record final (it is counted)."""
    args: list[Any] = []
    kind = record.type.value
    if record.state in STARTED_STATES:
        began = record.started_at or record.finished_at or record.created_at
        args += [f"started:{kind}", began.timestamp(), record.run_id]
    if record.state in FINAL_STATES and record.finished_at:
        args += [f"finished:{kind}", record.finished_at.timestamp(), record.run_id]
    if record.state in SUCCESS_STATES and record.finished_at:
        # a backup's success is the host's success; a drill's proves the backup restores
        done = record.finished_at.timestamp()
        if record.type == RunType.VERIFY:
            args += ["verified", done, record.run_id]
            if record.verify is not None:
                pipe.eval(_RAISE_VERIFIED_SET, 1, HOST_FACTS_KEY + record.host, done,
                          record.verify.backup_set)
        elif record.type in (RunType.FULL, RunType.INCR):
            args += ["success", done, record.run_id, f"success:{kind}", done, record.run_id]
    if args:
        pipe.eval(_RAISE, 1, HOST_FACTS_KEY + record.host, *args)
    if record.stored_bytes is not None and record.state in FINAL_STATES and record.finished_at:
        pipe.eval(_RAISE_STORED, 1, HOST_FACTS_KEY + record.host,
                  record.finished_at.timestamp(), record.stored_bytes)
    if newly_final:
        pipe.hincrby(HOST_FACTS_KEY + record.host, f"count:{kind}:{record.state.value}", 1)
        if record.type in (RunType.FULL, RunType.INCR) and record.finished_at:
            began = record.started_at or record.finished_at
            pipe.rpush(SERIES_KEY + record.host, " ".join((
                f"{record.finished_at.timestamp():.0f}",
                f"{(record.finished_at - began).total_seconds():.1f}",
                str(record.bytes_uploaded or 0), record.state.value, kind)))
            pipe.ltrim(SERIES_KEY + record.host, -SERIES_RUNS, -1)
    if record.state == RunState.RUNNING:
        pipe.hset(RUNNING_KEY, record.run_id, json.dumps({
            "host": record.host, "type": record.type.value,
            "started_at": (record.started_at or record.created_at).timestamp()}))
    else:
        pipe.hdel(RUNNING_KEY, record.run_id)
    if record.state == RunState.QUEUED:
        pipe.zadd(QUEUED_KEY, {record.run_id: record.created_at.timestamp()})
    else:
        pipe.zrem(QUEUED_KEY, record.run_id)
    if record.state in (RunState.FAILED, RunState.LOST):
        pipe.sadd(ATTENTION_KEY, record.run_id)


def unstage_run(pipe: Pipeline, run_id: str) -> None:
    """Queue the removal of a trimmed run from the fleet-wide facts."""
    pipe.hdel(RUNNING_KEY, run_id)
    pipe.zrem(QUEUED_KEY, run_id)
    pipe.srem(ATTENTION_KEY, run_id)


@dataclass(frozen=True)
class HostFacts:
    """What the ledger says about one host: its latest start per backup type, its latest
    successful backup and its latest successful restore drill."""
    started: dict[BackupType, tuple[datetime, str]]
    success: tuple[datetime, str] | None
    verified: tuple[datetime, str] | None = None

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> HostFacts:
        fields = {key.decode(): value.decode() for key, value in raw.items()}

        def moment(name: str) -> tuple[datetime, str] | None:
            if name not in fields:
                return None
            when = datetime.fromtimestamp(float(fields[name]), tz=timezone.utc)
            return when, fields.get(name + ":run", "?")
        started = {kind: found for kind in BackupType
                   if (found := moment(f"started:{kind.value}")) is not None}
        return cls(started=started, success=moment("success"), verified=moment("verified"))

    def latest_start(self, kinds: set[BackupType]) -> tuple[datetime, str] | None:
        found = [self.started[kind] for kind in kinds if kind in self.started]
        return max(found) if found else None


@dataclass(frozen=True)
class RunningRun:
    run_id: str
    host: str
    type: RunType
    started_at: datetime

    @classmethod
    def parse(cls, run_id: bytes, raw: bytes) -> RunningRun:
        data = json.loads(raw)
        return cls(run_id=run_id.decode(), host=data["host"], type=RunType(data["type"]),
                   started_at=datetime.fromtimestamp(data["started_at"], tz=timezone.utc))
