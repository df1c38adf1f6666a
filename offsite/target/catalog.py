"""What the target holds for a host: its duplicity backup sets and chains, read from the object
names alone (no download, no key, no local cache). The truth of a backup is in the target: the
chain check before an incremental, the check after every upload, `--time` bounds and `list` all
read it from here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Literal

from offsite.host.settings import HostSettings
from offsite.target.bucket import TargetObject, list_host_objects

_STAMP = r"\d{8}T\d{6}Z"
_NAME = re.compile(
    rf"^(?P<prefix>.*?)duplicity-(?:"
    rf"full\.(?P<full>{_STAMP})\.(?P<full_part>manifest|vol(?P<full_vol>\d+)\.difftar)"
    rf"|full-signatures\.(?P<full_sig>{_STAMP})\.sigtar"
    rf"|inc\.(?P<inc_from>{_STAMP})\.to\.(?P<inc_to>{_STAMP})\."
    rf"(?P<inc_part>manifest|vol(?P<inc_vol>\d+)\.difftar)"
    rf"|new-signatures\.(?P<sig_from>{_STAMP})\.to\.(?P<sig_to>{_STAMP})\.sigtar"
    rf")(?P<suffix>(?:\.gpg|\.gz|\.part)*)$")

SetKind = Literal["full", "incr"]


def parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def format_stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class BackupSet:
    """One full or incremental set: complete once its manifest is written (duplicity writes it
    after the last volume) and its signatures are there for the next incremental."""

    kind: SetKind
    time: datetime                      # a full's time, an incremental's end time
    start: datetime | None = None       # an incremental's start: the end of the set before
    volumes: set[int] = field(default_factory=set)
    bytes: int = 0
    manifest: str | None = None        # the manifest's object name once written
    signatures: bool = False
    archived: list[str] = field(default_factory=list)   # volume names in GLACIER/DEEP_ARCHIVE
    objects: list[str] = field(default_factory=list)    # every object of the set
    data_prefix: str = ""               # the name prefix of its volumes (the layout it was made in)
    volume_names: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest is not None and self.signatures and bool(self.volumes)

    def as_json(self) -> dict[str, object]:
        return {"type": self.kind, "time": format_stamp(self.time), "volumes": len(self.volumes),
                "bytes": self.bytes, "complete": self.complete}


@dataclass
class Chain:
    full: BackupSet
    incrementals: list[BackupSet] = field(default_factory=list)

    @property
    def sets(self) -> list[BackupSet]:
        return [self.full, *self.incrementals]

    @property
    def start(self) -> datetime:
        return self.full.time

    @property
    def end(self) -> datetime:
        return self.sets[-1].time

    @property
    def last(self) -> BackupSet:
        return self.sets[-1]

    def as_json(self) -> dict[str, object]:
        return {"start": format_stamp(self.start), "end": format_stamp(self.end),
                "sets": [backup_set.as_json() for backup_set in self.sets]}


@dataclass
class Catalog:
    """The host's chains, oldest first, each made only of complete sets; `orphans` are complete
    incrementals that no chain reaches (a set before them is missing or unfinished)."""

    location: str
    chains: list[Chain]
    orphans: list[BackupSet]
    unfinished: list[BackupSet]

    @property
    def newest_chain(self) -> Chain | None:
        return self.chains[-1] if self.chains else None

    @property
    def oldest_time(self) -> datetime | None:
        return self.chains[0].start if self.chains else None

    def broken_after(self, chain: Chain) -> list[BackupSet]:
        """Complete incrementals newer than the chain's end that do not continue it."""
        return [orphan for orphan in self.orphans if orphan.time > chain.end]


def build_catalog(location: str, objects: Iterable[TargetObject]) -> Catalog:
    """Group object names into sets and sets into chains (an incremental continues the set
    whose time is its start)."""
    sets: dict[tuple[SetKind, datetime, datetime | None], BackupSet] = {}

    def get(kind: SetKind, time: datetime, start: datetime | None) -> BackupSet:
        key = (kind, time, start)
        if key not in sets:
            sets[key] = BackupSet(kind=kind, time=time, start=start)
        return sets[key]

    for obj in objects:
        match = _NAME.match(obj.name)
        if match is None or ".part" in match["suffix"]:
            continue  # not duplicity's, or a local cache's unfinished manifest
        if match["full"] or match["full_sig"]:
            backup_set = get("full", parse_stamp(match["full"] or match["full_sig"]), None)
        elif match["inc_to"]:
            backup_set = get("incr", parse_stamp(match["inc_to"]), parse_stamp(match["inc_from"]))
        else:
            backup_set = get("incr", parse_stamp(match["sig_to"]), parse_stamp(match["sig_from"]))
        backup_set.objects.append(obj.name)
        volume = match["full_vol"] or match["inc_vol"]
        if volume:
            _add_volume(backup_set, int(volume), obj, match["prefix"])
        elif match["full_sig"] or match["sig_to"]:
            backup_set.signatures = True
        else:
            backup_set.manifest = obj.name
    complete = [s for s in sets.values() if s.complete]
    unfinished = sorted((s for s in sets.values() if not s.complete), key=lambda s: s.time)
    chains = [Chain(full) for full in sorted((s for s in complete if s.kind == "full"),
                                             key=lambda s: s.time)]
    by_start: dict[datetime, list[BackupSet]] = {}
    for inc in complete:
        if inc.kind == "incr" and inc.start is not None:
            by_start.setdefault(inc.start, []).append(inc)
    attached: set[int] = set()
    for chain in chains:
        while nexts := by_start.get(chain.end):
            following = min(nexts, key=lambda s: s.time)
            chain.incrementals.append(following)
            attached.add(id(following))
    orphans = sorted((s for s in complete if s.kind == "incr" and id(s) not in attached),
                     key=lambda s: s.time)
    return Catalog(location=location, chains=chains, orphans=orphans, unfinished=unfinished)


def _add_volume(backup_set: BackupSet, number: int, obj: TargetObject, prefix: str) -> None:
    backup_set.data_prefix = prefix
    backup_set.volume_names.append(obj.name)
    backup_set.volumes.add(number)
    backup_set.bytes += obj.size
    if obj.storage_class in ("GLACIER", "DEEP_ARCHIVE"):
        backup_set.archived.append(obj.name)


def read_catalog(settings: HostSettings) -> Catalog:
    """List the host's prefix in the target; raises TargetUnreadable."""
    return build_catalog(settings.target.url, list_host_objects(settings))
