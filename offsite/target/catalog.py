"""What the target holds for a host: its duplicity backup sets and chains, judged against the
sets' seals (offsite.target.seal; no key, no local cache). The truth of a backup is in the
target, and this module is its one judge: the chain check before an incremental, the check after
every upload, `list`, `verify`, `restore` and `prune` all read it from here.

- A sealed set is whole when every object its seal names is present with that size (sizes are
  read from the listing; the SHA-256s are checked by whoever downloads the objects).
- A set without a seal (plain duplicity, an offsite from before seals) is whole with a manifest
  and contiguous volumes 1..N, and, where this node holds the key, N equal to the volume count
  its manifest lists (a `read_manifest` given by the caller: offsite.crypto.manifest_count
  decrypts it; the last volume(s) deleted leave no gap to see). Without the key it is judged
  by contiguity alone, and its `judged` says so.
- Once the target holds sealed sets, a finished set without a seal newer than the first seal, and
  any object a seal does not name, belong to no sealed set: they are ignored and listed in
  `Catalog.ignored` (junk, a forged manifest, an upload cut short before its seal was written).
- A set whose volumes and manifest are whole restores (`restorable`); it continues a chain for an
  incremental only with its signatures too (`complete`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Literal, Mapping

from offsite.host.settings import HostSettings
from offsite.target.bucket import TargetObject, fetch_host_object, list_host_objects
from offsite.target.seal import Seal, SetKey, parse_seal_name, read_seals

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


@dataclass(frozen=True)
class ManifestCount:
    """What an unsealed set's manifest says of its volumes: `volumes` the count it lists, or
    None with `why_not` (this node holds no key, the manifest does not open, too large)."""

    volumes: int | None
    why_not: str = ""


ManifestReader = Callable[[str, int], ManifestCount]   # (manifest name, its size) -> count


def parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def format_stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class BackupSet:
    """One full or incremental set; `problems` says why it does not restore (missing or short
    objects), judged against its seal when it has one (see the module docstring)."""

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
    sizes: dict[str, int] = field(default_factory=dict)     # object name -> size in the target
    seal: Seal | None = None
    problems: list[str] = field(default_factory=list)   # why it does not restore
    signature_names: list[str] = field(default_factory=list)
    judged: str = ""                    # how an unsealed set was judged whole

    @property
    def restorable(self) -> bool:
        return not self.problems and self.manifest is not None and bool(self.volumes)

    @property
    def complete(self) -> bool:
        """Restorable, and its signatures are there for the next incremental."""
        return self.restorable and self.signatures

    @property
    def reason(self) -> str:
        """Why the set is not complete ('' when it is)."""
        if self.problems:
            return "; ".join(self.problems)
        if self.manifest is None or not self.volumes:
            return "unfinished: no manifest" if self.manifest is None else "no volume"
        if self.signatures:
            return ""
        names = ", ".join(o.name for o in self.seal.named("signatures")) if self.seal else ""
        return (f"its signatures {names + ' ' if names else ''}are missing (no incremental can "
                "continue it)")

    def as_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "type": self.kind, "time": format_stamp(self.time), "volumes": len(self.volumes),
            "bytes": self.bytes, "complete": self.complete, "restorable": self.restorable,
            "sealed": self.seal is not None}
        if self.reason:
            answer["reason"] = self.reason
        if self.judged:
            answer["judged"] = self.judged
        return answer


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
    """The host's chains, oldest first, each made only of restorable sets; `orphans` are
    restorable incrementals that no chain reaches (a set before them is missing or broken);
    `unfinished` the sets that do not restore (with their `reason`); `ignored` the objects that
    belong to no sealed set, with why."""

    location: str
    chains: list[Chain]
    orphans: list[BackupSet]
    unfinished: list[BackupSet]
    ignored: dict[str, str] = field(default_factory=dict)
    ignored_sets: list[BackupSet] = field(default_factory=list)   # finished, without a seal

    def as_json(self) -> dict[str, object]:
        return {"location": self.location,
                "chains": [chain.as_json() for chain in self.chains],
                "orphans": [{**s.as_json(), "reason": "no chain reaches it: a set before it is "
                             "missing or does not restore"} for s in self.orphans],
                "unfinished": [{**s.as_json(), "reason": s.reason or "unfinished"}
                               for s in self.unfinished],
                "ignored": [{"name": name, "reason": why}
                            for name, why in sorted(self.ignored.items())]}

    def seals_by_name(self) -> dict[str, Seal]:
        """The seals this catalog was judged with, by object name (see read_seals' `known`)."""
        sets = [s for chain in self.chains for s in chain.sets] + self.orphans + self.unfinished
        return {s.seal.name: s.seal for s in sets if s.seal is not None}

    @property
    def newest_chain(self) -> Chain | None:
        return self.chains[-1] if self.chains else None

    @property
    def oldest_time(self) -> datetime | None:
        return self.chains[0].start if self.chains else None

    def broken_after(self, chain: Chain) -> list[BackupSet]:
        """Sets newer than the chain's end that do not continue it: restorable incrementals no
        chain reaches, and finished sets (a manifest, or a seal) that do not restore."""
        broken = [s for s in self.unfinished if s.time > chain.end
                  and (s.seal is not None or s.manifest is not None)]
        return sorted([orphan for orphan in self.orphans if orphan.time > chain.end] + broken,
                      key=lambda s: s.time)

    def unusable_after(self, at: datetime) -> list[BackupSet]:
        """Sets newer than `at` that a restore cannot use (not in a chain, or not restorable
        though finished): what a restore of the newest set would silently skip."""
        return [s for s in [*self.orphans, *self.unfinished] if s.time > at
                and (s.seal is not None or s.manifest is not None)]


def build_catalog(location: str, objects: Iterable[TargetObject],
                  seals: Mapping[SetKey, Seal] | None = None,
                  seal_problems: Iterable[str] = (),
                  read_manifest: ManifestReader | None = None) -> Catalog:
    """Group object names into sets, judge each set (see the module docstring) and the
    restorable ones into chains (an incremental continues the set whose time is its start).
    `read_manifest` counts an unsealed set's volumes from its manifest (None: not read)."""
    seals = seals or {}
    sets: dict[SetKey, BackupSet] = {}
    ignored: dict[str, str] = {problem.split(" ", 1)[0]: problem for problem in seal_problems}

    def get(kind: SetKind, time: datetime, start: datetime | None) -> BackupSet:
        key = (kind, time, start)
        if key not in sets:
            sets[key] = BackupSet(kind=kind, time=time, start=start, seal=seals.get(key))
        return sets[key]

    for key in seals:
        get(key[0], key[1], key[2])   # type: ignore[arg-type]
    for obj in objects:
        match = _NAME.match(obj.name)
        if match is None or ".part" in match["suffix"]:
            if match is None and parse_seal_name(obj.name) is None \
                    and obj.name.startswith(("duplicity-", "data-duplicity-")):
                ignored[obj.name] = f"{obj.name}: not a name duplicity writes"
            continue  # not duplicity's, or a local cache's unfinished manifest
        if match["full"] or match["full_sig"]:
            backup_set = get("full", parse_stamp(match["full"] or match["full_sig"]), None)
        elif match["inc_to"]:
            backup_set = get("incr", parse_stamp(match["inc_to"]), parse_stamp(match["inc_from"]))
        else:
            backup_set = get("incr", parse_stamp(match["sig_to"]), parse_stamp(match["sig_from"]))
        backup_set.objects.append(obj.name)
        backup_set.sizes[obj.name] = obj.size
        volume = match["full_vol"] or match["inc_vol"]
        if volume:
            _add_volume(backup_set, int(volume), obj, match["prefix"])
        elif match["full_sig"] or match["sig_to"]:
            backup_set.signatures = True
            backup_set.signature_names.append(obj.name)
        else:
            backup_set.manifest = obj.name
    sealed_since = min((seal.time for seal in seals.values()), default=None)
    ignored_sets: list[BackupSet] = []
    for key in list(sets):
        backup_set = sets[key]
        if backup_set.seal is not None:
            _judge_sealed(backup_set, ignored)
        elif sealed_since is not None and backup_set.time >= sealed_since \
                and backup_set.manifest is not None:
            for name in sorted(backup_set.objects):
                ignored[name] = (f"{name}: a finished {backup_set.kind} set of "
                                 f"{format_stamp(backup_set.time)} without a seal, newer than "
                                 "the first sealed set (junk, a forged object, or an upload cut "
                                 "short before its seal was written)")
            ignored_sets.append(sets.pop(key))
        else:
            _judge_unsealed(backup_set, read_manifest)
    catalog = _chains(location, list(sets.values()), ignored)
    catalog.ignored_sets = sorted(ignored_sets, key=lambda s: s.time)
    return catalog


def _chains(location: str, sets: list[BackupSet], ignored: dict[str, str]) -> Catalog:
    usable = [s for s in sets if s.restorable]
    unfinished = sorted((s for s in sets if not s.restorable), key=lambda s: s.time)
    chains = [Chain(full) for full in sorted((s for s in usable if s.kind == "full"),
                                             key=lambda s: s.time)]
    by_start: dict[datetime, list[BackupSet]] = {}
    for inc in usable:
        if inc.kind == "incr" and inc.start is not None:
            by_start.setdefault(inc.start, []).append(inc)
    attached: set[int] = set()
    for chain in chains:
        while nexts := by_start.get(chain.end):
            following = min(nexts, key=lambda s: s.time)
            chain.incrementals.append(following)
            attached.add(id(following))
    orphans = sorted((s for s in usable if s.kind == "incr" and id(s) not in attached),
                     key=lambda s: s.time)
    return Catalog(location=location, chains=chains, orphans=orphans, unfinished=unfinished,
                   ignored=ignored)


def _judge_sealed(backup_set: BackupSet, ignored: dict[str, str]) -> None:
    """Against the seal: what it names must be there with its size; what it does not name is
    not part of the set."""
    seal = backup_set.seal
    assert seal is not None
    named = {o.name for o in seal.objects}
    for name in [n for n in backup_set.objects if n not in named]:
        ignored[name] = (f"{name}: not named by the seal of the {backup_set.kind} set of "
                         f"{format_stamp(backup_set.time)}")
    found = dict(backup_set.sizes)
    backup_set.objects = [n for n in backup_set.objects if n in named] + [seal.name]
    backup_set.volumes, backup_set.volume_names, backup_set.bytes = set(), [], 0
    backup_set.manifest, backup_set.signatures, backup_set.signature_names = None, False, []
    archived = set(backup_set.archived)
    backup_set.archived = []
    for sealed in seal.objects:
        size = found.get(sealed.name)
        if size is None:
            problem = f"{sealed.role} {sealed.name} is missing"
        elif size != sealed.size:
            problem = (f"{sealed.role} {sealed.name} has {size} bytes, its seal records "
                       f"{sealed.size}")
        else:
            problem = ""
        if sealed.role == "signatures":
            # missing, the set restores (duplicity does not need them); present but not as
            # sealed, an empty-cache restore fails on it (duplicity syncs and decrypts it)
            if size is not None and problem:
                backup_set.problems.append(problem)
            elif not problem:
                backup_set.signatures = True
                backup_set.signature_names.append(sealed.name)
            continue
        if problem:
            backup_set.problems.append(problem)
        elif sealed.role == "manifest":
            backup_set.manifest = sealed.name
        else:
            match = _NAME.match(sealed.name)
            number = match["full_vol"] or match["inc_vol"] if match else None
            if number:
                backup_set.volumes.add(int(number))
                backup_set.data_prefix = match["prefix"] if match else ""
            backup_set.volume_names.append(sealed.name)
            backup_set.bytes += sealed.size
            if sealed.name in archived:
                backup_set.archived.append(sealed.name)


def _judge_unsealed(backup_set: BackupSet, read_manifest: ManifestReader | None) -> None:
    """Without a seal: a manifest and volumes 1..N with no gap, none empty, and N the count
    its manifest lists when `read_manifest` can read it."""
    if backup_set.manifest is not None and backup_set.sizes.get(backup_set.manifest) == 0:
        backup_set.problems.append(f"manifest {backup_set.manifest} is empty")
    if backup_set.volumes:
        gaps = sorted(set(range(1, max(backup_set.volumes) + 1)) - backup_set.volumes)
        if gaps:
            backup_set.problems.append(
                f"volume(s) {', '.join(map(str, gaps[:10]))} of 1..{max(backup_set.volumes)} "
                "missing")
        empty = [n for n in backup_set.volume_names if backup_set.sizes.get(n) == 0]
        if empty:
            backup_set.problems.append(f"volume {empty[0]} is empty")
    if backup_set.problems or backup_set.manifest is None or not backup_set.volumes:
        return
    highest = max(backup_set.volumes)
    count = (read_manifest(backup_set.manifest, backup_set.sizes.get(backup_set.manifest, 0))
             if read_manifest is not None else ManifestCount(None, "no key was given to read "
                                                                   "its manifest"))
    if count.volumes is None:
        backup_set.judged = (f"unsealed: judged by its contiguous volumes 1..{highest} only; "
                             f"its manifest's volume count was not checked ({count.why_not})")
    elif highest < count.volumes:
        model = max(backup_set.volume_names, key=_volume_number)
        missing = [model.replace(f".vol{_volume_number(model)}.", f".vol{number}.")
                   for number in range(highest + 1, count.volumes + 1)]
        backup_set.problems.append(
            f"volume {', '.join(missing[:5])}{' and more' if len(missing) > 5 else ''} "
            f"{'is' if len(missing) == 1 else 'are'} missing: its manifest "
            f"{backup_set.manifest} lists {count.volumes} volume(s), the target holds "
            f"1..{highest}")
    else:
        backup_set.judged = (f"unsealed: its volumes 1..{highest} are the {count.volumes} its "
                             "manifest lists")


def _volume_number(name: str) -> int:
    digits = name.rsplit(".vol", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _add_volume(backup_set: BackupSet, number: int, obj: TargetObject, prefix: str) -> None:
    backup_set.data_prefix = prefix
    backup_set.volume_names.append(obj.name)
    backup_set.volumes.add(number)
    backup_set.bytes += obj.size
    if obj.storage_class in ("GLACIER", "DEEP_ARCHIVE"):
        backup_set.archived.append(obj.name)


def read_catalog(settings: HostSettings,
                 read_manifest: ManifestReader | None = None) -> Catalog:
    """List the host's prefix in the target and read its seals; raises TargetUnreadable.
    Readers that may hold the key use offsite.crypto.manifest_count.read_keyed_catalog, which
    gives `read_manifest`."""
    return catalog_of(settings.target.url, list_host_objects(settings),
                      lambda name, most: fetch_host_object(settings, name, most), read_manifest)


def catalog_of(location: str, objects: list[TargetObject],
               fetch: Callable[[str, int], bytes],
               read_manifest: ManifestReader | None = None,
               known: Mapping[str, Seal] | None = None) -> Catalog:
    """The catalog of a listing: its seals read with `fetch(name, most_bytes)` (but those
    `known`, see read_seals), then judged. The reading stays with the caller, so this module
    is handed names, not a host's settings."""
    seals, problems = read_seals(fetch, [obj.name for obj in objects], known)
    return build_catalog(location, objects, seals, problems, read_manifest)
