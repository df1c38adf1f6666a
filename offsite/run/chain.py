"""Whether a run's backup really is in the target: the chain an incremental builds on (checked
before it runs) and the set an upload wrote (checked after duplicity exits 0).

The local duplicity cache is only a cache: an incremental built on a chain the target no
longer holds would upload, report success and restore nothing. So the target decides; the
cache is only compared with it, to say in the record when duplicity resyncs it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
import re

from offsite.constants import BackupType
from offsite.duplicity.keycheck import check_key_opens
from offsite.durations import format_duration
from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings
from offsite.host.sources import change_reason
from offsite.host.sources import host_cache
from offsite.target.bucket import TargetUnreadable
from offsite.target.catalog import BackupSet, Catalog, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog


TAMPERED_NOTE = "target_tampered:"   # the head of the note the watchdog alerts on


class ChainMissing(OffsiteError):
    """An incremental has no complete chain to build on and may not be promoted to full."""

    failure_class = "chain_missing"


class UploadUnconfirmed(OffsiteError):
    """duplicity exited 0 but the target does not show the set it should have written."""

    failure_class = "upload_unconfirmed"


@dataclass(frozen=True)
class ChainPlan:
    backup_type: BackupType
    notes: tuple[str, ...] = ()
    builds_on: BackupSet | None = None   # the set an incremental continues
    listing: Catalog | None = None       # what the target held when planned (an incremental)


def plan_run(requested: BackupType, catalog: Catalog, cache_full: datetime | None, *,
             max_full_interval_s: int, allow_promotion: bool, now: datetime,
             host: str, sources_changed: str | None = None, data_prefix: str = "",
             cache_required: bool = False) -> ChainPlan:
    """The type to run and why, from what the target holds (see the module docstring) and
    whether the host's sources changed since the last upload (offsite.host.sources).

    data_prefix: the layout new volumes are written in; a chain written in another layout
    cannot be continued. cache_required: this node cannot decrypt the target's signatures
    (public-key mode), so only a chain its own cache holds can be continued."""
    if requested == BackupType.FULL:
        return ChainPlan(BackupType.FULL, ignored_notes(catalog))
    chain = catalog.newest_chain
    reason: str | None = None
    if sources_changed is not None:
        reason = sources_changed
    elif chain is None:
        reason = f"the target {catalog.location} holds no complete backup chain"
    elif broken := catalog.broken_after(chain):
        reason = (f"the newest chain in the target {catalog.location} is broken: the "
                  f"{broken[0].kind} set of {format_stamp(broken[0].time)} does not continue it "
                  f"({broken[0].reason or 'a set before it is missing or does not restore'})")
    elif newer := [s for s in catalog.ignored_sets if s.time > chain.end]:
        reason = (f"the target {catalog.location} holds a finished {newer[-1].kind} set of "
                  f"{format_stamp(newer[-1].time)} without a seal, newer than the newest chain "
                  "(duplicity would continue it)")
    elif unsigned := [s for s in chain.sets if not s.signatures]:
        reason = (f"the newest chain in the target {catalog.location} cannot be continued: the "
                  f"signatures of its {unsigned[0].kind} set of "
                  f"{format_stamp(unsigned[0].time)} are missing")
    elif (age := (now - chain.start).total_seconds()) > max_full_interval_s:
        return _promote(f"the last full is {format_duration(age)} old (max_full_interval "
                        f"{format_duration(max_full_interval_s)})", allow_promotion, host)
    if reason is not None:
        promoted = _promote(reason, allow_promotion, host)
        return replace(promoted, notes=promoted.notes + ignored_notes(catalog))
    assert chain is not None
    if chain.full.data_prefix != data_prefix:
        return ChainPlan(BackupType.FULL, (
            f"a new full chain starts: the object layout changed (data volumes are now named "
            f"{data_prefix or 'without a prefix'}…; the chain from {format_stamp(chain.start)} "
            f"was written with {chain.full.data_prefix or 'no prefix'})",))
    if cache_required and cache_full != chain.start:
        return ChainPlan(BackupType.FULL, (
            f"a new full chain starts: this host holds only public keys and its cache does not "
            f"hold the chain from {format_stamp(chain.start)} (cache lost?); the chain's "
            "signatures in the target are encrypted and cannot be read here",))
    notes: tuple[str, ...] = ignored_notes(catalog)
    if cache_full != chain.start:
        cached = f"a chain from {format_stamp(cache_full)}" if cache_full else "no chain"
        notes += (f"the local cache held {cached}, the target a chain from "
                  f"{format_stamp(chain.start)}: duplicity resynced the cache from the target",)
    return ChainPlan(BackupType.INCR, notes, chain.last)


def ignored_notes(catalog: Catalog) -> tuple[str, ...]:
    """One note naming the objects of the target that belong to no sealed set."""
    if not catalog.ignored:
        return ()
    names = sorted(catalog.ignored)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{TAMPERED_NOTE} {len(names)} object(s) in {catalog.location} belong to no sealed "
            f"set and were ignored: {shown} ({catalog.ignored[names[0]]})",)


def check_target_before(settings: HostSettings, requested: BackupType,
                        now: datetime) -> ChainPlan:
    """Plan an admitted run from the target, and for an incremental prove that this node's key
    opens the chain it continues; raises ChainMissing, KeyDoesNotOpen or TargetUnreadable (a
    full that cannot list the target runs: duplicity retries the backend itself)."""
    if requested == BackupType.FULL:
        try:
            listing = read_keyed_catalog(settings)
        except TargetUnreadable:
            return ChainPlan(BackupType.FULL)
        return ChainPlan(BackupType.FULL, ignored_notes(listing), listing=listing)
    host, public_key = settings.name, settings.encryption.public_key
    catalog = read_keyed_catalog(settings)
    plan = plan_run(requested, catalog, last_full_time(
        host_cache(settings), host), max_full_interval_s=settings.max_full_interval,
        allow_promotion=settings.promote_to_full, now=now, host=host,
        sources_changed=change_reason(settings), data_prefix=settings.target.volume_prefix,
        cache_required=public_key)
    # in public-key mode this node holds no secret key: the escrow check (offsite.crypto.escrow)
    # proves decryption on a node that holds it
    if plan.builds_on is not None and plan.builds_on.manifest is not None \
            and not public_key:
        check_key_opens(settings, plan.builds_on.manifest)
    return replace(plan, listing=catalog)


def _promote(reason: str, allow_promotion: bool, host: str) -> ChainPlan:
    if not allow_promotion:
        raise ChainMissing(f"cannot run an incremental: {reason}; promotion to full is off "
                           "(schedule.promote_to_full): run a full backup", host=host,
                           step="start")
    return ChainPlan(BackupType.FULL, (f"promoted to full: {reason}",))


def wait_for_a_new_second(before: Catalog | None, now: datetime) -> float:
    """Seconds to wait before duplicity starts, so the set it writes cannot have the name of
    the newest set already there: duplicity names a set by the second it starts in, and a full
    started in the second of the previous set (a run right after another) would take its name.
    (duplicity delays an incremental itself.) Nothing to wait for a newest set in the past, nor
    for one in the future by more than a moment: a clock that far off is the confirmation's to
    report, not a delay's to hide."""
    if before is None:
        return 0.0
    times = [backup_set.time for chain in before.chains for backup_set in chain.sets]
    times += [other.time for other in before.orphans + before.unfinished]
    if not times:
        return 0.0
    gap = (max(times) + timedelta(seconds=1) - now).total_seconds()
    return gap if 0 < gap <= 2 else 0.0


def set_keys(catalog: Catalog | None) -> set[tuple[str, datetime]]:
    """Identities of the complete sets in the catalog, to tell a new set from an old one."""
    if catalog is None:
        return set()
    return {(backup_set.kind, backup_set.time)
            for chain in catalog.chains for backup_set in chain.sets}


def confirm_uploaded(before: Catalog | None, after: Catalog, backup_type: BackupType,
                     host: str, started: datetime) -> BackupSet:
    """The set this upload wrote: the newest chain must end with a complete set of the run's
    type that was not there before; raises UploadUnconfirmed otherwise. When the target could
    not be listed before the upload (`before` None), only a set timed from the upload's start
    on counts: an older one proves nothing about this run."""
    kind = "full" if backup_type == BackupType.FULL else "incr"
    chain = after.newest_chain
    newest = chain.last if chain else None
    too_old = before is None and newest is not None \
        and newest.time < started.replace(microsecond=0)
    if newest is None or newest.kind != kind or too_old \
            or (newest.kind, newest.time) in set_keys(before):
        found = (f"its newest complete set is the {newest.kind} of {format_stamp(newest.time)}"
                 if newest else "it holds no complete chain")
        raise UploadUnconfirmed(
            f"duplicity exited 0 but the target {after.location} shows no new complete {kind} "
            f"set ({found}): the backup is not counted; check the bucket and run a full",
            host=host, step="upload")
    return newest


_FULL_MANIFEST = re.compile(r"^duplicity-full\.(\d{8}T\d{6}Z)\.manifest(\.gpg)?$")


def last_full_time(archive_dir: Path, name: str) -> datetime | None:
    """The newest completed full backup in the cache (a `.part` manifest is an unfinished one)."""
    folder = archive_dir / name
    times = [datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
             for entry in (folder.iterdir() if folder.is_dir() else [])
             if (match := _FULL_MANIFEST.match(entry.name))]
    return max(times, default=None)
