"""Copy a host's sets from the primary target to a replica, and check every copy.

What a replica lacks is judged object by object against the primary: every complete set the
primary holds, oldest first, is copied with *every object under the set's names* (its volumes,
manifest, signatures and any other object whose name carries the set's time, such as a seal),
so an object kind added later is carried without this module knowing it.

Each object is read from the primary into a temporary file (SHA-256 and MD5 computed on the way),
written to the replica (single part, with its digests as metadata `offsite-sha256` /
`offsite-md5`; a data volume with the lifecycle rule's tag, as on the primary, so the replica's
own lifecycle rules archive the same objects), then read back from the replica and its size
and SHA-256 compared with the primary's. A copy that differs is written once more; a second
difference is a failure (`replica_failed`). An object already on an S3 replica counts as there
only when its size is the primary's and its head still carries the digests this module wrote
with an ETag that matches them (an overwrite or a corruption replaces both), else it is copied
again.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from urllib.parse import urlencode

from offsite.config.security import VOLUME_TAG
from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings
from offsite.target.bucket import (UPLOAD_IDENTITY, TargetUnreadable, list_host_objects,
                                   reading_identity, s3_client)
from offsite.target.catalog import BackupSet, build_catalog, format_stamp

CHUNK = 1 << 20
SHA_KEY, MD5_KEY = "offsite-sha256", "offsite-md5"
MAX_SINGLE_PUT = 5 * 1024 ** 3


class ReplicaCopyFailed(OffsiteError):
    """A copy on the replica differs from the primary's object after it was written twice."""

    failure_class = "replica_failed"


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str
    md5: str


@dataclass
class ReplicaOutcome:
    """What one replication pass did for one host and one replica."""

    name: str
    state: str = "current"            # current | behind | failed
    newest_set: str | None = None     # the newest set the replica holds whole (format_stamp)
    copied_sets: list[str] = field(default_factory=list)
    copied_objects: int = 0
    recopied: list[str] = field(default_factory=list)   # objects found damaged, copied again
    lacking: list[str] = field(default_factory=list)    # sets still missing (format_stamp)
    problem: str | None = None


class _Side:
    """One target (primary or replica) of one host, as the copy needs it: the primary is read
    with this node's reading identity (READ_AWS_* on the control node, the upload keys on a
    host), a replica written with its own keys (`<NAME>_AWS_*`)."""

    def __init__(self, settings: HostSettings, identity: str) -> None:
        self.host = settings.name
        self.folder = settings.target.file_dir
        self.bucket, self.prefix = settings.target.bucket, ""
        self.client: Any = None
        if self.folder is None:
            self.client = s3_client(settings.target, identity, max_attempts=3,
                                    read_timeout=60)
            self.prefix = settings.target.prefix

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def read_into(self, name: str, sink: BinaryIO) -> Digest:
        if self.folder is not None:
            with open(self.folder / name, "rb") as source:
                return _pump(source, sink)
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        try:
            return _pump(body, sink)
        finally:
            body.close()

    def write(self, name: str, source: Path, digest: Digest, tagged: bool = False) -> None:
        """Write the object; `tagged`: a data volume, which carries the lifecycle rule's tag
        (offsite-class=volume) on the replica as on the primary."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{name}.offsite-copy"
            shutil.copyfile(source, partial)
            os.replace(partial, self.folder / name)
            return
        if digest.size > MAX_SINGLE_PUT:
            raise ReplicaCopyFailed(f"{name} is larger than 5 GiB: lower target.volsize",
                                    host=self.host, step="replicate")
        extra = {"Tagging": urlencode([VOLUME_TAG])} if tagged else {}
        with open(source, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=body,
                                   ContentLength=digest.size,
                                   Metadata={SHA_KEY: digest.sha256, MD5_KEY: digest.md5},
                                   **extra)

    def intact(self, name: str, size: int) -> bool:
        """An S3 object written and checked by this module and not replaced since."""
        if self.folder is not None:
            return True   # a folder keeps no metadata: the size (already equal) must do
        head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
        meta = head.get("Metadata") or {}
        return (int(head.get("ContentLength", -1)) == size and bool(meta.get(SHA_KEY))
                and head.get("ETag", "").strip('"') == meta.get(MD5_KEY))


def _pump(source: Any, sink: BinaryIO) -> Digest:
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
        sink.write(chunk)
    return Digest(size, sha.hexdigest(), md5.hexdigest())


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


_STAMP = re.compile(r"\d{8}T\d{6}Z")


def set_objects(backup_set: BackupSet, names: list[str], claimed: set[str]) -> list[str]:
    """The set's objects: those the catalog gave it, and every other object (not claimed by a
    set) whose name carries the set's time stamp; volumes first, then signatures, the manifest
    (and the rest) last, so a replica never shows a manifest before its volumes."""
    stamp = backup_set.time.strftime("%Y%m%dT%H%M%SZ")
    own = set(backup_set.objects)
    if backup_set.seal is not None:
        own.add(backup_set.seal.name)
    # an incremental's names carry the set it follows, then its own time: the last stamp counts
    extra = [name for name in names if _STAMP.findall(name)[-1:] == [stamp]
             and name not in claimed and name not in own]
    ordered = sorted(own, key=lambda name: (0 if ".difftar" in name else
                                            1 if ".sigtar" in name else 2, name))
    return ordered + sorted(extra)


def replicate_host(primary: HostSettings, replica: HostSettings, name: str,
                   on_object: Callable[[], None] | None = None) -> ReplicaOutcome:
    """Copy what the replica lacks of the host's sets, oldest first, checking every copy.
    Never raises for a replica that cannot be reached (the outcome says `behind`, with the
    cause) nor for a copy that fails its check (`failed`); raises TargetUnreadable when the
    primary cannot be listed (there is nothing to copy from)."""
    outcome = ReplicaOutcome(name)
    host = primary.name
    primary_objects = list_host_objects(primary)
    sizes = {obj.name: obj.size for obj in primary_objects}
    catalog = build_catalog(primary.target.url, primary_objects)
    sets = sorted([s for chain in catalog.chains for s in chain.sets] + catalog.orphans,
                  key=lambda s: s.time)
    whole: list[str] = []
    claimed = {name for backup_set in [*sets, *catalog.unfinished]
               for name in backup_set.objects}
    source, dest = _Side(primary, reading_identity()), None
    try:
        dest = _Side(replica, UPLOAD_IDENTITY)
        present = {obj.name: obj.size for obj in list_host_objects(replica)}
        scratch = Path(tempfile.mkdtemp(prefix="replicate-", dir=_scratch_root(primary)))
        try:
            for backup_set in sets:
                stamp = format_stamp(backup_set.time)
                names = set_objects(backup_set, list(sizes), claimed)
                volumes = set(backup_set.volume_names) if backup_set.data_prefix else set()
                todo = [n for n in names if present.get(n) != sizes[n]]
                damaged = [n for n in names if n not in todo and not dest.intact(n, sizes[n])]
                outcome.recopied += damaged
                for object_name in todo + damaged:
                    _copy_checked(source, dest, object_name, scratch, host,
                                  object_name in volumes)
                    present[object_name] = sizes[object_name]
                    outcome.copied_objects += 1
                    if on_object is not None:
                        on_object()
                if todo or damaged:
                    outcome.copied_sets.append(stamp)
                whole.append(stamp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except ReplicaCopyFailed as failed:
        outcome.state, outcome.problem = "failed", failed.cause
    except Exception as exc:  # noqa: BLE001 - narrowed below (botocore is imported lazily)
        if not isinstance(exc, (TargetUnreadable, OSError, *_boto_errors())):
            raise
        outcome.state = "behind"
        outcome.problem = getattr(exc, "cause", None) or f"{type(exc).__name__}: {exc}"
    finally:
        source.close()
        if dest is not None:
            dest.close()
    outcome.newest_set = whole[-1] if whole else None
    outcome.lacking = [stamp for stamp in (format_stamp(s.time) for s in sets)
                       if stamp not in whole]
    return outcome


def _copy_checked(source: _Side, dest: _Side, name: str, scratch: Path, host: str,
                  tagged: bool) -> None:
    staged = scratch / "object"
    with open(staged, "wb") as sink:
        digest = source.read_into(name, sink)
    for attempt in (1, 2):
        dest.write(name, staged, digest, tagged)
        copied = dest.read_into(name, _Discard())   # type: ignore[arg-type]
        if (copied.size, copied.sha256) == (digest.size, digest.sha256):
            staged.unlink()
            return
        if attempt == 2:
            raise ReplicaCopyFailed(
                f"{name}: the copy on the replica has {copied.size} bytes, SHA-256 "
                f"{copied.sha256[:16]}…, the primary's {digest.size} bytes, "
                f"{digest.sha256[:16]}… (written twice)", host=host, step="replicate")


def _scratch_root(settings: HostSettings) -> Path:
    root = settings.cache_root / ".replicate-tmp"   # no host name starts with a dot
    root.mkdir(parents=True, exist_ok=True)
    return root


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    return (BotoCoreError, ClientError)
