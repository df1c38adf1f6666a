"""The per-host summary read by `offsite hosts`, the fleet page, `/api/hosts` and `/metrics`.

Built from the ledger's per-host facts (offsite.ledger.facts), never from a scan of the records:
one pipelined round trip reads every host's facts hash and the newest member of its run index,
the open conditions, the heartbeats and the outbox; a second reads, in one MGET, the records
those facts name. O(hosts) commands in two round trips, whatever the ledger holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Iterable, cast

import redis
from pydantic import BaseModel, ConfigDict

from offsite.watch.conditions import CONDITIONS_KEY
from offsite.config.model import Config
from offsite.watch.config_digest import drifted_nodes, fleet_nodes
from offsite.constants import HOST_RUNS_KEY, RUN_KEY, RunState
from offsite.ledger.heartbeat import HEARTBEATS_KEY, parse_beat, worker_node
from offsite.ledger.facts import HOST_FACTS_KEY
from offsite.watch.alerts import PENDING_KEY

DRIFT_CONDITION = "config_drift"
# condition key prefix (offsite.watch.watchdog) -> the alert class it stands for
CONDITION_CLASSES = {"missed": "backup_missed", "stale": "backup_stale",
                     "unproven": "restore_unproven", "worker_down": "worker_down",
                     "overdue": "run_overdue", "stuck": "run_stuck",
                     "not_consuming": "worker_not_consuming", DRIFT_CONDITION: DRIFT_CONDITION,
                     "replica_behind": "replica_behind", "replica_failed": "replica_failed"}
RUN_TYPES = ("full", "incr", "verify")


class Health(StrEnum):
    """A host's state at a glance, worst first."""
    FAILED = "failed"
    LOST = "lost"
    STALE = "stale"
    UNPROVEN = "unproven"
    HEALTHY = "healthy"


HEALTH_RANK = {health: rank for rank, health in enumerate(Health)}


class ErrorBrief(BaseModel):
    model_config = ConfigDict(extra="ignore")
    step: str | None = None
    message: str = ""
    failure_class: str = "failed"


class ReplicaBrief(BaseModel):
    """A replica's state as a backup run recorded it (offsite.run.replicas)."""
    model_config = ConfigDict(extra="ignore")
    state: str
    newest_set: str | None = None


class RunBrief(BaseModel):
    """The fields of a run record the summary shows (the rest is not parsed)."""
    model_config = ConfigDict(extra="ignore")
    run_id: str
    host: str
    type: str
    state: RunState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    bytes_uploaded: int | None = None
    error: ErrorBrief | None = None
    replicas: dict[str, ReplicaBrief] | None = None

    @property
    def at(self) -> datetime:
        """When it last did something: its end, else its start, else its creation."""
        return self.finished_at or self.started_at or self.created_at

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {"run_id": self.run_id, "type": self.type, "state": self.state.value,
                "time": self.at.isoformat(), "age_s": round((now - self.at).total_seconds(), 1),
                "duration_s": self.duration_s, "bytes_uploaded": self.bytes_uploaded,
                "error": self.error.message if self.error else None}


@dataclass(frozen=True)
class OpenCondition:
    condition: str          # the alert class: backup_stale, worker_down, ...
    key: str                # the condition's key in the conditions hash
    since: str | None
    subject: str = ""


@dataclass
class HostRow:
    host: str
    health: Health = Health.HEALTHY
    reason: str = ""
    last: dict[str, RunBrief] = field(default_factory=dict)       # type -> latest started
    finished: dict[str, RunBrief] = field(default_factory=dict)   # type -> latest finished
    success_ts: float | None = None                   # latest successful backup (epoch s)
    success_by_type: dict[str, float] = field(default_factory=dict)   # type -> epoch s
    verified_ts: float | None = None                  # latest successful restore drill
    newest: RunBrief | None = None
    conditions: list[OpenCondition] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, state) -> runs
    config_drift: bool = False
    last_good: RunBrief | None = None                 # its latest successful backup
    stored_bytes: int | None = None                   # its objects in the target (facts)
    beat: datetime | None = None                      # its worker's last heartbeat

    @property
    def success_at(self) -> datetime | None:
        return _moment(self.success_ts) if self.success_ts is not None else None

    @property
    def verified_at(self) -> datetime | None:
        return _moment(self.verified_ts) if self.verified_ts is not None else None

    def success_age_s(self, now: datetime) -> float | None:
        return now.timestamp() - self.success_ts if self.success_ts is not None else None

    @property
    def replicas(self) -> dict[str, ReplicaBrief]:
        """Each replica's newest set and state, from the newest backup run that recorded them."""
        backups = [run for kind, run in self.last.items()
                   if kind in ("full", "incr") and run.replicas]
        newest = max(backups, key=lambda run: run.started_at or run.created_at, default=None)
        return dict(newest.replicas or {}) if newest is not None else {}

    @property
    def newest_backup(self) -> RunBrief | None:
        backups = [run for kind, run in self.last.items() if kind in ("full", "incr")]
        return max(backups, key=lambda run: run.started_at or run.created_at, default=None)

    def as_json(self, now: datetime) -> dict[str, Any]:
        def run(kind: str) -> dict[str, Any] | None:
            found = self.last.get(kind)
            return found.as_json(now) if found else None
        verify = run("verify")
        if verify is not None:
            verify["last_success"] = _iso(self.verified_at)
        age = self.success_age_s(now)
        return {"host": self.host, "health": self.health.value, "reason": self.reason,
                "last_full": run("full"), "last_incr": run("incr"), "last_verify": verify,
                "last_verify_success": _iso(self.verified_at),
                "last_success": _iso(self.success_at),
                "last_success_age_s": round(age, 1) if age is not None else None,
                "conditions": sorted({c.condition for c in self.conditions}),
                "newest_run": ({"run_id": self.newest.run_id, "type": self.newest.type,
                                "state": self.newest.state.value,
                                "time": self.newest.at.isoformat()} if self.newest else None),
                "config_drift": self.config_drift,
                "last_good_bytes_uploaded": (self.last_good.bytes_uploaded
                                             if self.last_good else None),
                "stored_bytes": self.stored_bytes,
                "replicas": {name: replica.model_dump()
                             for name, replica in self.replicas.items()}}


@dataclass
class FleetSummary:
    at: datetime
    rows: list[HostRow]                  # worst first
    drift: OpenCondition | None          # the watchdog's config_drift condition, when open
    drifted_nodes: list[str]             # nodes whose published digest differs from ours
    outbox_pending: int

    def as_json(self) -> list[dict[str, Any]]:
        return [row.as_json(self.at) for row in self.rows]

    def counts(self) -> dict[Health, int]:
        found = {health: 0 for health in Health}
        for row in self.rows:
            found[row.health] += 1
        return found


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _moment(value: str | float) -> datetime:
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def read_summary(client: redis.Redis, config: Config, now: datetime | None = None,
                 hosts: Iterable[str] | None = None) -> FleetSummary:
    """The summary of `hosts` (default: every configured host), worst first."""
    now = now or datetime.now(timezone.utc)
    names = list(hosts) if hosts is not None else list(config.hosts)
    nodes = fleet_nodes(config)
    keys = [key for host in names for key in (HOST_FACTS_KEY + host, HOST_RUNS_KEY + host)]
    with client.pipeline(transaction=False) as pipe:
        pipe.eval(_READ_HOSTS, len(keys), *keys)
        pipe.hgetall(CONDITIONS_KEY)
        pipe.hmget(HEARTBEATS_KEY, nodes)
        pipe.zcard(PENDING_KEY)
        per_host, conditions_raw, beats, pending = pipe.execute()
    facts_raw, newest_raw = per_host[0::2], per_host[1::2]
    decoded = [_pairs(flat) for flat in facts_raw]
    rows = [_row_from_facts(host, fields) for host, fields in zip(names, decoded)]
    beat_of = dict(zip(nodes, beats))
    for row in rows:
        row.beat = parse_beat(beat_of.get(worker_node(row.host)))
    wanted: dict[str, None] = {}
    for fields, newest in zip(decoded, newest_raw):
        for name in _NAMED_RUNS:
            if name in fields:
                wanted[fields[name]] = None
        for item in newest:
            wanted[_text(item)] = None
    records = load_briefs(client, list(wanted))
    for row, fields, newest in zip(rows, decoded, newest_raw):
        for kind in RUN_TYPES:
            if (found := records.get(fields.get(f"started:{kind}:run", ""))) is not None:
                row.last[kind] = found
            if (found := records.get(fields.get(f"finished:{kind}:run", ""))) is not None:
                row.finished[kind] = found
        row.newest = records.get(_text(newest[0])) if newest else None
        row.last_good = records.get(fields.get("success:run", ""))
    open_conditions = _parse_conditions(cast("dict[bytes, bytes]", conditions_raw))
    drifted = drifted_nodes(config, dict(zip(nodes, beats)))
    by_host = _conditions_by_host(open_conditions, names, rows)
    for row in rows:
        row.conditions = by_host.get(row.host, [])
        row.config_drift = worker_node(row.host) in drifted
        row.health, row.reason = judge(row)
    rows.sort(key=lambda row: (HEALTH_RANK[row.health],
                               row.success_ts if row.success_ts is not None else float("-inf"),
                               row.host))
    drift = next((c for c in open_conditions if c.condition == DRIFT_CONDITION), None)
    return FleetSummary(at=now, rows=rows, drift=drift, drifted_nodes=drifted,
                        outbox_pending=int(pending))


def load_briefs(client: redis.Redis, run_ids: list[str]) -> dict[str, RunBrief]:
    """The records among `run_ids` that exist, in one MGET."""
    if not run_ids:
        return {}
    raws = client.mget([RUN_KEY + run_id for run_id in run_ids])
    return {run_id: RunBrief.model_validate_json(raw)
            for run_id, raw in zip(run_ids, raws) if raw}


_NAMED_RUNS = [f"{fact}:{kind}:run" for fact in ("started", "finished")
               for kind in RUN_TYPES] + ["success:run"]


# Every host's facts hash and newest run id in one command: one request to pack and one reply
# to parse (in C with hiredis), not two per host.
_READ_HOSTS = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('hgetall', KEYS[i])
  out[#out + 1] = redis.call('zrevrange', KEYS[i + 1], 0, 0)
end
return out
"""


def _pairs(flat: list[Any]) -> dict[str, str]:
    """HGETALL's flat reply as a dict of text, whether the client decodes replies or not."""
    if flat and isinstance(flat[0], bytes):
        flat = [item.decode() for item in flat]
    return dict(zip(flat[0::2], flat[1::2]))


def _row_from_facts(host: str, fields: dict[str, str]) -> HostRow:
    row = HostRow(host=host)
    get = fields.get
    if (found := get("success")) is not None:
        row.success_ts = float(found)
    if (found := get("verified")) is not None:
        row.verified_ts = float(found)
    if (found := get("stored")) is not None:
        row.stored_bytes = int(found)
    for kind in ("full", "incr"):
        if (found := get(f"success:{kind}")) is not None:
            row.success_by_type[kind] = float(found)
    for name, text in fields.items():
        if name.startswith("count:"):
            _, kind, state = name.split(":", 2)
            row.counts[(kind, state)] = int(text)
    return row


def _parse_conditions(raw: dict[bytes, bytes]) -> list[OpenCondition]:
    found = []
    for key, value in raw.items():
        name = _text(key)
        try:
            data = json.loads(value)
        except ValueError:
            data = {}
        found.append(OpenCondition(
            condition=CONDITION_CLASSES.get(name.split(":", 1)[0], name.split(":", 1)[0]),
            key=name, since=data.get("since"), subject=str(data.get("subject", ""))))
    return found


def _conditions_by_host(conditions: list[OpenCondition], hosts: list[str],
                        rows: list[HostRow]) -> dict[str, list[OpenCondition]]:
    """Host conditions are keyed `<prefix>:<host>[:<type>]`; an overdue run's key names the
    run, whose host is the one whose newest run it is (else the longest host-name prefix)."""
    known = set(hosts)
    newest = {row.newest.run_id: row.host for row in rows if row.newest}
    by_host: dict[str, list[OpenCondition]] = {}
    for condition in conditions:
        rest = condition.key.split(":", 1)[1] if ":" in condition.key else ""
        host: str | None
        if condition.condition in ("run_overdue", "run_stuck"):
            host = newest.get(rest) or max((h for h in known if rest.startswith(h + "-")),
                                           key=len, default=None)
        elif condition.condition in ("backup_missed", "replica_behind", "replica_failed"):
            host = rest.rsplit(":", 1)[0]
        else:
            host = rest
        if host in known:
            by_host.setdefault(host, []).append(condition)
    return by_host


def _cause(run: RunBrief) -> str:
    from offsite.ledger.run_record import ErrorRecord
    from offsite.ledger.status import error_cause
    if run.error is None:
        return run.run_id
    return error_cause(ErrorRecord(step=run.error.step, message=run.error.message))


def judge(row: HostRow) -> tuple[Health, str]:
    """failed: its newest backup or its last drill failed; lost: its worker is down or its
    newest backup was lost; stale: no recent success (or none yet), a slot missed or a run
    overdue; unproven: no recent successful drill; else healthy. The reason says which."""
    classes = {condition.condition for condition in row.conditions}
    backup, drill = row.newest_backup, row.last.get("verify")
    if backup is not None and backup.state == RunState.FAILED:
        return Health.FAILED, f"{backup.type} failed: {_cause(backup)}"
    if drill is not None and drill.state == RunState.FAILED:
        return Health.FAILED, f"restore drill failed: {_cause(drill)}"
    if "worker_down" in classes:
        return Health.LOST, "its worker sends no heartbeat"
    if "worker_not_consuming" in classes:
        return Health.LOST, "its worker does not read its queue"
    if backup is not None and backup.state == RunState.LOST:
        return Health.LOST, f"{backup.type} {backup.run_id} was lost"
    if row.success_ts is None:
        return Health.STALE, "no successful backup yet"
    for condition, reason in (("backup_stale", "no recent successful backup"),
                              ("backup_missed", "a scheduled backup did not start"),
                              ("run_overdue", "a run is past its maximum duration"),
                              ("run_stuck", "a run is queued long past its request")):
        if condition in classes:
            return Health.STALE, reason
    if "restore_unproven" in classes:
        return Health.UNPROVEN, "no recent successful restore drill"
    return Health.HEALTHY, ""
