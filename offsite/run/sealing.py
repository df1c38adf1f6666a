"""Sealing the set an upload wrote (see offsite.target.seal): after duplicity exits 0, the new
set is found in the target, every object of it is named with its SHA-256 (of the encrypted
bytes, as stored: hashed by the launcher as duplicity handed it to the backend, see
offsite.duplicity.uploaded, and confirmed in the target by its listed size; an object the
upload did not hash, such as a resumed set's earlier volumes, is read back and hashed), and the
seal is written beside it. A set is sealed only when it is
whole by its names (a manifest, volumes 1..N with none empty, signatures): duplicity exiting 0
on a short write must not be sealed as whole."""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Mapping

from offsite.constants import BackupType
from offsite.target.bucket import TargetObject
from offsite.target.catalog import BackupSet, Catalog, build_catalog, format_stamp
from offsite.target.seal import Seal, SealFailed, SealedObject


def find_new_set(raw: Catalog, sealed: Catalog, backup_type: BackupType,
                 started: datetime) -> BackupSet | None:
    """The set this upload wrote, from a catalog judged by names alone (`raw`): the first set
    of the run's type without a seal timed from the upload's start on (duplicity names a set by
    the second it starts in; a later-dated one, a forged 2099 set, is not this run's), else one
    that `sealed` (the listing before the upload) held unfinished: duplicity resumed it and it
    keeps its first start's name."""
    kind = "full" if backup_type == BackupType.FULL else "incr"
    have = {(s.kind, s.time) for chain in sealed.chains for s in chain.sets if s.seal}
    resumed = {(s.kind, s.time) for s in sealed.unfinished if s.seal is None}
    candidates = [s for chain in raw.chains for s in chain.sets] + raw.orphans + raw.unfinished
    mine = [s for s in candidates if s.kind == kind and (s.kind, s.time) not in have]
    fresh = [s for s in mine if s.time >= started.replace(microsecond=0)]
    if fresh:
        return min(fresh, key=lambda s: s.time)
    return max((s for s in mine if (s.kind, s.time) in resumed), key=lambda s: s.time,
               default=None)


def place_in_chain(new: BackupSet, sealed: Catalog) -> tuple[datetime, int]:
    """(the time of the chain's full, the set's position in it) for a new set."""
    if new.kind == "full" or new.start is None:
        return new.time, 0
    for chain in sealed.chains:
        if chain.end == new.start:
            return chain.start, len(chain.sets)
    return new.start, 1   # it continues a set this catalog does not chain: say what it knows


Digest = Callable[[str], tuple[int, str]]


def uploaded_or_read(uploaded: Mapping[str, tuple[int, str]], read_back: Digest) -> Digest:
    """(size, sha256) of an object: as the upload hashed it, else read back from the target
    (offsite.target.bucket.object_digest). seal_new_set confirms the size in the listing."""
    def digest(name: str) -> tuple[int, str]:
        return uploaded.get(name) or read_back(name)
    return digest


def seal_new_set(host: str, objects: list[TargetObject], sealed: Catalog,
                 backup_type: BackupType, started: datetime, run_id: str,
                 digest: Digest, restored: tuple[int, int] | None = None) -> Seal:
    """The seal of the set this upload wrote, found among `objects` (the host's prefix listed
    after the upload), each object named with `digest(name) -> (size, sha256)` (see
    uploaded_or_read) and its size confirmed in the listing; `restored`: the (files, bytes)
    the set restores to (the digest manifest's); the caller writes it beside the set. Raises
    SealFailed (the set is missing or not whole by its names, an object changed size while it
    was read) or TargetUnreadable."""
    raw = build_catalog(sealed.location, objects)
    new = find_new_set(raw, sealed, backup_type, started)
    kind = "full" if backup_type == BackupType.FULL else "incremental"
    if new is None:
        raise SealFailed(f"duplicity exited 0 but the target {sealed.location} holds no new "
                         f"{kind} set to seal: the backup is not counted; check the bucket and "
                         "run a full", host=host, step="upload")
    if not new.complete:
        raise SealFailed(f"the new {kind} set of {format_stamp(new.time)} in "
                         f"{sealed.location} is not whole ({new.reason}): not sealed, not "
                         "counted; run a full", host=host, step="upload")
    chain_start, position = place_in_chain(new, sealed)
    roles = [(name, "volume") for name in sorted(new.volume_names)]
    roles += [(new.manifest, "manifest")] if new.manifest else []
    roles += [(name, "signatures") for name in sorted(new.signature_names)]
    sealed_objects: list[SealedObject] = []
    for name, role in roles:
        size, sha256 = digest(name)
        if size != new.sizes.get(name):
            raise SealFailed(f"{name} is not what was uploaded ({new.sizes.get(name)} bytes "
                             f"listed, {size} uploaded or read): not sealed", host=host,
                             step="upload")
        sealed_objects.append(SealedObject(name, size, sha256, role))   # type: ignore[arg-type]
    seal = Seal(kind=new.kind, time=new.time, start=new.start, chain_start=chain_start,
                position=position, objects=tuple(sealed_objects), run_id=run_id,
                restored_files=restored[0] if restored else None,
                restored_bytes=restored[1] if restored else None)
    return seal
