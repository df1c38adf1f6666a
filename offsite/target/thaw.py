"""Data volumes in archive storage: tagging new volumes for the lifecycle rule, finding the
archived volumes a restore needs, and asking S3 to thaw them (RestoreObject).

Only data volumes are ever archived (see offsite.deploy.iam_policy.lifecycle_rules): manifests and
signatures stay in STANDARD, so incrementals, `list` and the chain check never need a thaw.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from offsite.target.catalog import BackupSet, Catalog
from offsite.host.settings import HostSettings
from offsite.errors import OffsiteError
from offsite.config.security import VOLUME_TAG
from offsite.target.bucket import read_s3_client, upload_s3_client

log = logging.getLogger(__name__)

ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# AWS's Standard retrieval times, used to tell the user when to come back.
RETRIEVAL_HOURS = {"GLACIER": 5, "DEEP_ARCHIVE": 12}
MAX_THAW_DAYS = 365
TAG_THREADS = 8   # PutObjectTagging calls in flight (botocore pools 10 connections a client)
_NAMED = 3


class VolumesArchived(OffsiteError):
    """A restore needs data volumes that are in archive storage and not (yet) thawed."""

    failure_class = "volumes_archived"


@dataclass(frozen=True)
class ArchivedVolume:
    name: str
    storage_class: str
    state: str          # "archived", "thawing" or "thawed"


def tag_data_volumes(settings: HostSettings, written: BackupSet) -> str | None:
    """Tag the volumes of the set just written so the lifecycle rule may archive them, up to
    TAG_THREADS at a time (a 50 GB set has hundreds); a note naming the volumes that could not
    be tagged (they then stay in STANDARD: dearer, never broken)."""
    bucket, prefix = settings.target.bucket, settings.target.prefix
    if bucket is None or not written.data_prefix or not written.volume_names:
        return None
    client = upload_s3_client(settings.target)

    def tag(name: str) -> str | None:
        try:
            client.put_object_tagging(Bucket=bucket, Key=prefix + name, Tagging={
                "TagSet": [{"Key": VOLUME_TAG[0], "Value": VOLUME_TAG[1]}]})
        except (ClientError, BotoCoreError) as exc:
            return f"{name} ({exc})"
        return None
    try:
        with ThreadPoolExecutor(min(TAG_THREADS, len(written.volume_names))) as pool:
            failed = [problem for problem in pool.map(tag, written.volume_names) if problem]
    finally:
        client.close()
    if not failed:
        return None
    log.warning("host %s: cannot tag %d data volume(s): %s", settings.name, len(failed),
                "; ".join(failed[:_NAMED]))
    more = f" and {len(failed) - _NAMED} more" if len(failed) > _NAMED else ""
    return (f"{len(failed)} of {len(written.volume_names)} data volume(s) could not be tagged "
            f"for the lifecycle rule: {'; '.join(failed[:_NAMED])}{more}; they stay in "
            "STANDARD storage")


def sets_needed(catalog: Catalog, at: datetime | None) -> list[BackupSet]:
    """The sets a restore as of `at` reads: the chain covering it, up to that time."""
    chains = [chain for chain in catalog.chains if at is None or chain.start <= at]
    if not chains:
        return []
    chain = chains[-1]
    return [backup_set for backup_set in chain.sets if at is None or backup_set.time <= at]


def archived_volumes(settings: HostSettings, sets: list[BackupSet]) -> list[ArchivedVolume]:
    """The volumes of `sets` in archive storage, each with its thaw state (HeadObject's
    x-amz-restore header); a volume whose header cannot be read counts as archived."""
    names = [name for backup_set in sets for name in backup_set.archived]
    bucket, prefix = settings.target.bucket, settings.target.prefix
    if not names or bucket is None:
        return []
    client = read_s3_client(settings.target)
    found: list[ArchivedVolume] = []
    try:
        for name in names:
            found.append(_volume_state(client, bucket, prefix + name, name))
    finally:
        client.close()
    return found


def _volume_state(client: Any, bucket: str, key: str, name: str) -> ArchivedVolume:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError):
        return ArchivedVolume(name, "GLACIER", "archived")
    storage_class = head.get("StorageClass") or "GLACIER"
    restore = head.get("Restore") or ""
    if 'ongoing-request="true"' in restore:
        return ArchivedVolume(name, storage_class, "thawing")
    if 'ongoing-request="false"' in restore:
        return ArchivedVolume(name, storage_class, "thawed")
    return ArchivedVolume(name, storage_class, "archived")


def refuse_if_frozen(host: str, volumes: list[ArchivedVolume]) -> None:
    """Raise VolumesArchived naming every volume not yet readable."""
    frozen = [volume for volume in volumes if volume.state != "thawed"]
    if not frozen:
        return
    listed = ", ".join(f"{volume.name} ({volume.storage_class}, {volume.state})"
                       for volume in frozen)
    raise VolumesArchived(
        f"this restore needs {len(frozen)} data volume(s) that are archived (Glacier/Deep "
        f"Archive) and not thawed: {listed}. Run the same restore with --thaw [--days N] to "
        "request them, then again once they are thawed", host=host, step="restore")


def check_thaw_days(days: int, host: str) -> None:
    if not 1 <= days <= MAX_THAW_DAYS:
        raise OffsiteError(f"--days {days}: give 1 to {MAX_THAW_DAYS}", host=host,
                           step="thaw")


def request_thaw(settings: HostSettings, volumes: list[ArchivedVolume], days: int) -> str:
    """RestoreObject (Standard tier) for every archived volume; what to tell the user."""
    host = settings.name
    check_thaw_days(days, host)
    waiting = [volume for volume in volumes if volume.state != "thawed"]
    if not waiting:
        return "every volume this restore needs is readable: nothing to thaw"
    bucket, prefix = settings.target.bucket, settings.target.prefix
    client = upload_s3_client(settings.target)
    requested = 0
    try:
        for volume in waiting:
            if volume.state == "thawing":
                continue
            try:
                client.restore_object(Bucket=bucket, Key=prefix + volume.name, RestoreRequest={
                    "Days": days, "GlacierJobParameters": {"Tier": "Standard"}})
                requested += 1
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "RestoreAlreadyInProgress":
                    raise OffsiteError(f"cannot request the thaw of {volume.name}: {exc}",
                                       host=host, step="thaw") from None
    except BotoCoreError as exc:
        raise OffsiteError(f"cannot reach the bucket to request the thaw: {exc}", host=host,
                           step="thaw") from None
    finally:
        client.close()
    hours = max(RETRIEVAL_HOURS.get(volume.storage_class, 5) for volume in waiting)
    return (f"requested the thaw of {requested} volume(s) ({len(waiting) - requested} already "
            f"in progress); S3 Standard retrieval takes up to about {hours} hours: run the "
            f"restore again then. Thawed copies stay readable for {days} day(s)")
