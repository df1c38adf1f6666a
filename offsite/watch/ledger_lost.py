"""A run ledger that Redis lost, noticed and rebuilt from the target.

The control node keeps a marker (`offsite:ledger:since`); when it is gone, Redis lost its data
(restarted without its append-only file, flushed, replaced). The node that claims the marker
again rebuilds, for each host whose facts hold no success, the records of the newest chain's
full and newest incremental from what the target holds (their times, sizes and backup sets),
so `offsite hosts`, /metrics and the stale/missed judgements start again from the backups
that exist, and raises one `ledger_lost` alert saying what was rebuilt and what is gone.
`offsite ledger-rebuild` does the same rebuild for an operator (without the alert).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, cast

import redis

from offsite.config.model import Config
from offsite.constants import BEAT_SCHEDULE_KEY, KEY_PREFIX, BackupType, RunState
from offsite.errors import OffsiteError
from offsite.ledger.facts import HOST_FACTS_KEY
from offsite.host.settings import resolve_host
from offsite.ledger.records import RunStore
from offsite.ledger.run_record import RunRecord
from offsite.target.catalog import BackupSet, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.watch.alerts import Alert, AlertOutbox, condition_alert, recovery_alert
from offsite.watch.drift import FLEET
from offsite.wire.messages import RUN_ID_STAMP

log = logging.getLogger(__name__)

MARKER_KEY = KEY_PREFIX + "ledger:since"
UNREBUILT_KEY = KEY_PREFIX + "ledger:unrebuilt"    # set: hosts a loss left unrebuilt
BEAT_LOST_KEY = KEY_PREFIX + "ledger:beat_lost"    # beat has not remade its schedule since
REBUILT_NOTE = "rebuilt from the target after the ledger was lost"


@dataclass
class HostRebuild:
    host: str
    full: str | None = None         # the backup set (duplicity time stamp) of the newest full
    incr: str | None = None         # of the newest incremental of the newest chain
    chains: int = 0
    bytes: int = 0
    problem: str | None = None      # why the host was not rebuilt
    created: list[str] = field(default_factory=list)   # the run ids written

    def describe(self) -> str:
        if self.problem:
            return f"{self.host}: not rebuilt ({self.problem})"
        if self.full is None:
            return f"{self.host}: no complete chain in the target"
        return (f"{self.host}: newest full {self.full}, newest incremental {self.incr or 'none'}"
                f", {self.chains} chain(s), {self.bytes} bytes")


def _record(host: str, kind: BackupType, backup_set: BackupSet) -> RunRecord:
    moment = backup_set.time.astimezone(timezone.utc)
    return RunRecord(run_id=f"{host}-{kind.value}-{moment.strftime(RUN_ID_STAMP)}", host=host,
                     type=kind, state=RunState.SUCCEEDED, created_at=moment,
                     started_at=moment, finished_at=moment, bytes_uploaded=backup_set.bytes,
                     backup_set=format_stamp(moment), notes=[REBUILT_NOTE])


def rebuild_host(config: Config, store: RunStore, host: str) -> HostRebuild:
    """The records of the host's newest full and newest incremental, from the target."""
    found = HostRebuild(host)
    try:
        catalog = read_keyed_catalog(resolve_host(config, host))
    except (OffsiteError, OSError) as exc:
        found.problem = " ".join(str(exc).split())[:300]
        return found
    chain = catalog.newest_chain
    found.chains = len(catalog.chains)
    found.bytes = sum(s.bytes for c in catalog.chains for s in c.sets)
    if chain is None:
        return found
    sets = [(BackupType.FULL, chain.full)]
    if chain.incrementals:
        sets.append((BackupType.INCR, chain.incrementals[-1]))
    for kind, backup_set in sets:
        record = _record(host, kind, backup_set)
        if store.create(record):
            found.created.append(record.run_id)
        if kind == BackupType.FULL:
            found.full = record.backup_set
        else:
            found.incr = record.backup_set
    return found


def rebuild_ledger(config: Config, store: RunStore, hosts: Iterable[str]) -> list[HostRebuild]:
    return [rebuild_host(config, store, host) for host in hosts]


def hosts_without_success(client: redis.Redis, config: Config) -> list[str]:
    with client.pipeline(transaction=False) as pipe:
        for host in config.hosts:
            pipe.hexists(HOST_FACTS_KEY + host, "success")
        known = pipe.execute()
    return [host for host, has in zip(config.hosts, known) if not has]


class LedgerWatch:
    """Run by the control node before each watchdog tick.

    After a loss the fleet cannot be judged until each host's facts are rebuilt and beat has
    remade its schedule: hosts whose target could not be read are kept in UNREBUILT_KEY and
    tried again every tick (or by `offsite ledger-rebuild`), and BEAT_LOST_KEY stays until
    beat's schedule is back in Redis. `unjudged` says why, and the control node does not
    ping its dead man's switch meanwhile (offsite.watch.deadman)."""

    def __init__(self, config: Config, client: redis.Redis, store: RunStore,
                 outbox: AlertOutbox) -> None:
        self.config, self.client, self.store, self.outbox = config, client, store, outbox
        self.seen = False   # this process saw the marker: its absence now is a loss

    def check(self, now: datetime) -> list[HostRebuild] | None:
        """None while the marker is there (after trying again the hosts still unrebuilt);
        else the rebuild (by whichever node set the marker again: one rebuild, one alert)."""
        if self.client.exists(MARKER_KEY):
            self.seen = True
            self._heal(now)
            return None
        if not self.client.set(MARKER_KEY, now.isoformat(), nx=True):
            self.seen = True
            return None
        lost, self.seen = self.seen, True
        rebuilt = rebuild_ledger(self.config, self.store,
                                 hosts_without_success(self.client, self.config))
        if lost or any(item.created for item in rebuilt):
            with self.client.pipeline() as pipe:
                pipe.set(BEAT_LOST_KEY, now.isoformat())
                if failed := [item.host for item in rebuilt if item.problem]:
                    pipe.sadd(UNREBUILT_KEY, *failed)
                self.outbox.stage(pipe, f"ledger_lost:{now.timestamp():.0f}",
                                  ledger_lost_alert(rebuilt), now)
                pipe.execute()
            log.error("the run ledger was lost; rebuilt from the target: %s",
                      "; ".join(item.describe() for item in rebuilt))
        return rebuilt

    def _heal(self, now: datetime) -> None:
        """Try again the hosts a loss left unrebuilt; note beat's schedule when it is back."""
        if self.client.exists(BEAT_LOST_KEY) and self.client.exists(BEAT_SCHEDULE_KEY):
            self.client.delete(BEAT_LOST_KEY)
            log.info("beat's schedule is back in Redis")
        pending = sorted(_text(raw) for raw in cast("set[bytes]",
                                                    self.client.smembers(UNREBUILT_KEY)))
        rebuilt = [item for item in rebuild_ledger(self.config, self.store,
                                                   [h for h in pending if h in self.config.hosts])
                   if not item.problem]
        done = [item.host for item in rebuilt] + [h for h in pending if h not in self.config.hosts]
        if not done:
            return
        with self.client.pipeline() as pipe:
            pipe.srem(UNREBUILT_KEY, *done)
            if rebuilt:
                self.outbox.stage(pipe, f"ledger_rebuilt:{now.timestamp():.0f}", recovery_alert(
                    FLEET, "any", "ledger_lost", "The run ledger is rebuilt now for the "
                    "host(s) whose target could not be read when Redis lost its data:\n"
                    + "\n".join(item.describe() for item in rebuilt)), now)
            pipe.execute()
        log.warning("the run ledger rebuilt from the target: %s",
                    "; ".join(item.describe() for item in rebuilt) or "(hosts removed)")


def unjudged(client: redis.Redis) -> str | None:
    """Why the watchdog cannot judge the fleet now (None when it can): the ledger is lost and
    not rebuilt for every host, or beat has not remade its schedule since."""
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(MARKER_KEY)
        pipe.smembers(UNREBUILT_KEY)
        pipe.exists(BEAT_LOST_KEY)
        marker, pending, beat_lost = pipe.execute()
    if not marker:
        return "the run ledger is lost (its marker offsite:ledger:since is gone) and not rebuilt"
    if pending:
        hosts = sorted(_text(raw) for raw in pending)
        return (f"the run ledger of host(s) {', '.join(hosts[:10])} is not rebuilt: their "
                "target could not be read (`offsite ledger-rebuild`)")
    if beat_lost:
        return ("beat has not remade its schedule since Redis lost its data (is `offsite beat` "
                "running?)")
    return None


def forget_unrebuilt(client: redis.Redis, rebuilt: list[HostRebuild]) -> None:
    """`offsite ledger-rebuild` took care of these hosts."""
    if done := [item.host for item in rebuilt if not item.problem]:
        client.srem(UNREBUILT_KEY, *done)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def ledger_lost_alert(rebuilt: list[HostRebuild]) -> Alert:
    lines = "\n".join(item.describe() for item in rebuilt) or "(every host's facts were there)"
    return condition_alert(
        FLEET, "any", "ledger_lost",
        "The run ledger in Redis was lost (its marker offsite:ledger:since is gone: Redis "
        "restarted without its append-only file, was flushed or replaced). Rebuilt from the "
        "target, per host:\n" + lines + "\nGone for good: the run history (durations, "
        "failures, notes), open conditions, alerts not yet delivered and failure streaks. "
        "Beat made its schedule again from the config. Make Redis persistent (`appendonly "
        "yes`, `appendfsync everysec`; `offsite check --connect --role control`).")
