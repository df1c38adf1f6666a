"""The seal of a backup set: a plain JSON object written beside the set when it is uploaded,
naming every object of the set (volumes, manifest, signatures) with its size and the SHA-256 of
its encrypted bytes, and the set's place in its chain.

It is plain so that every node can judge a set without a key (the control node, `list`, a
public-key host that can decrypt nothing it wrote). A set is judged whole against its seal, not
against the names that happen to be in the target (see offsite.target.catalog); the seal's own
SHA-256 goes into the run record, so a forged seal does not match the run that made the set.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal, Mapping

from offsite.errors import OffsiteError
from offsite.target.bucket import TargetUnreadable

SEAL_FORMAT = "offsite-seal/1"
MAX_SEAL_BYTES = 1024 * 1024        # a seal names a set's objects: a few KiB, even for 1000s
_STAMP = r"\d{8}T\d{6}Z"
_SEAL_NAME = re.compile(
    rf"^offsite-seal\.(?:full\.(?P<full>{_STAMP})|inc\.(?P<start>{_STAMP})\.to\.(?P<end>{_STAMP}))"
    r"\.json$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Role = Literal["volume", "manifest", "signatures"]
_ROLES = ("volume", "manifest", "signatures")
SetKey = tuple[str, datetime, "datetime | None"]   # (kind, time, start) as in the catalog


class SealUnreadable(OffsiteError):
    """A seal object that is not a seal (bad JSON, wrong shape, too large)."""

    failure_class = "target_tampered"


class SealFailed(OffsiteError):
    """The seal of a new set could not be made or written."""

    failure_class = "upload_unconfirmed"


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def seal_name(kind: str, time: datetime, start: datetime | None) -> str:
    if kind == "full" or start is None:
        return f"offsite-seal.full.{stamp(time)}.json"
    return f"offsite-seal.inc.{stamp(start)}.to.{stamp(time)}.json"


def parse_seal_name(name: str) -> SetKey | None:
    """The (kind, time, start) of the set a seal's object name is for; None if not a seal."""
    match = _SEAL_NAME.match(name)
    if match is None:
        return None
    if match["full"]:
        return ("full", _parse(match["full"]), None)
    return ("incr", _parse(match["end"]), _parse(match["start"]))


@dataclass(frozen=True)
class SealedObject:
    name: str
    size: int
    sha256: str
    role: Role


@dataclass(frozen=True)
class Seal:
    kind: str                       # full | incr
    time: datetime                  # a full's time, an incremental's end
    start: datetime | None          # an incremental's start (the set before it)
    chain_start: datetime           # the time of the chain's full
    position: int                   # 0 for the full, 1 for its first incremental, ...
    objects: tuple[SealedObject, ...]
    run_id: str = ""
    # what the set restores to (the digest manifest's files and bytes at backup time): the
    # free space a restore needs (offsite.proof.space); None in seals written before it
    restored_files: int | None = None
    restored_bytes: int | None = None

    @property
    def name(self) -> str:
        return seal_name(self.kind, self.time, self.start)

    @property
    def key(self) -> SetKey:
        return (self.kind, self.time, self.start)

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "format": SEAL_FORMAT, "kind": self.kind, "time": stamp(self.time),
            "start": stamp(self.start) if self.start else None,
            "chain_start": stamp(self.chain_start), "position": self.position,
            "run_id": self.run_id,
            "objects": [{"name": o.name, "size": o.size, "sha256": o.sha256, "role": o.role}
                        for o in self.objects]}
        if self.restored_bytes is not None:
            body["restored"] = {"files": self.restored_files or 0, "bytes": self.restored_bytes}
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def named(self, role: Role) -> list[SealedObject]:
        return [o for o in self.objects if o.role == role]


def parse_seal(data: bytes, name: str) -> Seal:
    """A seal from its bytes; raises SealUnreadable naming what is wrong."""
    def bad(why: str) -> SealUnreadable:
        return SealUnreadable(f"{name} is not an offsite seal: {why}", step="catalog")
    if len(data) > MAX_SEAL_BYTES:
        raise bad(f"larger than {MAX_SEAL_BYTES} bytes")
    try:
        body = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(body, dict) or body.get("format") != SEAL_FORMAT:
        raise bad(f"no \"format\": \"{SEAL_FORMAT}\"")
    try:
        objects = tuple(_sealed_object(item) for item in body["objects"])
        restored = _restored(body.get("restored"))
        seal = Seal(kind=str(body["kind"]), time=_parse(body["time"]),
                    start=_parse(body["start"]) if body["start"] else None,
                    chain_start=_parse(body["chain_start"]), position=int(body["position"]),
                    objects=objects, run_id=str(body.get("run_id", ""))[:200],
                    restored_files=restored[0], restored_bytes=restored[1])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"bad field ({str(exc)[:80]})") from None
    if parse_seal_name(name) != seal.key or seal.kind not in ("full", "incr"):
        raise bad("its contents are for another set than its name says")
    if not seal.named("manifest") or not seal.named("volume"):
        raise bad("it names no manifest or no volume")
    return seal


def _restored(item: Any) -> tuple[int | None, int | None]:
    """The optional `restored` record: {"files": N, "bytes": N}, counts a set may hold."""
    if item is None:
        return None, None
    if not isinstance(item, dict):
        raise TypeError("restored is not a mapping")
    counts = [item.get("files"), item.get("bytes")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 63
               for n in counts):
        raise ValueError("bad restored files or bytes")
    return counts[0], counts[1]


def _sealed_object(item: Any) -> SealedObject:
    if not isinstance(item, dict):
        raise TypeError("an object entry is not a mapping")
    name, size, digest, role = item["name"], item["size"], item["sha256"], item["role"]
    if not isinstance(name, str) or "/" in name or not name or len(name) > 512:
        raise ValueError(f"bad object name {str(name)[:60]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"bad size for {name}")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ValueError(f"bad sha256 for {name}")
    if role not in _ROLES:
        raise ValueError(f"bad role for {name}")
    return SealedObject(name, size, digest, role)


def read_seals(fetch: Callable[[str, int], bytes], names: Iterable[str],
               known: Mapping[str, Seal] | None = None) -> tuple[dict[SetKey, Seal], list[str]]:
    """The seals among the host's object names, read with `fetch(name, max_bytes)`, and a
    problem line for each one that is not a seal (raises TargetUnreadable when the target
    cannot be read at all). `known`: seals this caller read a moment ago while it held the
    host (an upload's listing before and after), by object name, taken as they are."""
    seals: dict[SetKey, Seal] = {}
    problems: list[str] = []
    for name in names:
        if parse_seal_name(name) is None:
            continue
        if known and name in known:
            seals[known[name].key] = known[name]
            continue
        try:
            seal = parse_seal(fetch(name, MAX_SEAL_BYTES), name)
        except SealUnreadable as bad:
            problems.append(bad.cause)
            continue
        except TargetUnreadable as unreadable:
            if "larger than" in unreadable.cause:
                problems.append(f"{name} is not an offsite seal: {unreadable.cause}")
                continue
            raise
        seals[seal.key] = seal
    return seals, problems
