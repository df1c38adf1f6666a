"""Proof that a backup restores from the target alone: restore the set at T into a private
temporary folder with an empty, throwaway duplicity cache (as after losing the host), then
compare every restored file with the digest manifest written at backup time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable
import shutil
import socket
import tempfile

from offsite.config.model import Config
from offsite.constants import RunState, RunType
from offsite.crypto.encryption import secret_keyring
from offsite.duplicity.command import run_restore
from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings, resolve_host
from offsite.ledger.lease import HostLease, MemoryHostLease
from offsite.ledger.records import MemoryRunStore, RunStore
from offsite.ledger.run_record import RunRecord, VerifyRecord
from offsite.proof.restore import check_time_covered
from offsite.run.admission import MustWait, admit
from offsite.run.context import RunContext, queue_manual_run
from offsite.run.manifest import Entry, ManifestUnreadable, manifest_path, read_manifest, walk
from offsite.run.steps import end_run, finish_step, lease_renewer, recorded_step
from offsite.schedule.specs import utcnow
from offsite.target.bucket import check_readable
from offsite.target.catalog import BackupSet, Catalog, format_stamp, read_catalog
from offsite.target.thaw import archived_volumes, refuse_if_frozen, sets_needed

VERIFY_STEP = "verify"


class VerifyFailed(OffsiteError):
    """The restore did not give back what the manifest recorded (or could not be made)."""

    failure_class = "verify_failed"


def set_at(catalog: Catalog, at: datetime | None) -> BackupSet:
    """The newest complete set at or before `at` (default: the newest), the one a restore as of
    `at` gives; callers check first that the target covers `at`."""
    candidates = [backup_set for chain in catalog.chains for backup_set in chain.sets
                  if at is None or backup_set.time <= at]
    return max(candidates, key=lambda backup_set: backup_set.time)


def compare(restored: Path, outcome: VerifyRecord) -> None:
    """Every manifest entry must be restored identically, and nothing else restored."""
    try:
        expected: dict[str, Entry] = {entry.path: entry
                                      for entry in read_manifest(manifest_path(restored))}
    except ManifestUnreadable as problem:
        outcome.add(f"manifest: {problem}")
        return
    for found in walk_restored(restored, outcome):
        wanted = expected.pop(found.path, None)
        if wanted is None:
            outcome.add(f"extra: {found.path} is in the restore but not in the manifest")
        elif wanted.kind != found.kind:
            outcome.add(f"different: {found.path} is a {found.kind}, the manifest says "
                        f"{wanted.kind}")
        elif found.kind == "symlink" and found.target != wanted.target:
            outcome.add(f"different: {found.path} links to {found.target}, the manifest says "
                        f"{wanted.target}")
        elif found.kind == "file" and found.size != wanted.size:
            outcome.add(f"different: {found.path} has {found.size} bytes, the manifest says "
                        f"{wanted.size}")
        elif found.kind == "file" and wanted.sha256 is not None \
                and found.sha256 != wanted.sha256:
            outcome.add(f"different: {found.path} has another SHA-256 than the manifest")
    for missing in sorted(expected):
        outcome.add(f"missing: {missing} is in the manifest but not in the restore")


def walk_restored(restored: Path, outcome: VerifyRecord) -> list[Entry]:
    entries = list(walk(restored))
    for entry in entries:
        if entry.kind == "file":
            outcome.files_checked += 1
            outcome.bytes_read += entry.size
    return entries


def verify_backup(settings: HostSettings, at: datetime | None,
                  on_tick: Callable[[], None] | None = None,
                  secret_keys_file: Path | None = None) -> VerifyRecord:
    """Restore and compare; returns the outcome (mismatches listed), raises VerifyFailed when
    the set cannot be restored at all (archived volumes not thawed included), RestoreRefused
    when the target does not cover `at`. In public-key mode the secret key comes from
    secret_keys_file or this node's GNUPGHOME."""
    host = settings.name
    catalog = read_catalog(settings)
    check_time_covered(catalog, at, host)
    chosen = set_at(catalog, at)
    outcome = VerifyRecord(backup_set=format_stamp(chosen.time))
    try:
        refuse_if_frozen(host, archived_volumes(settings, sets_needed(catalog, at)))
    except OffsiteError as frozen:
        raise VerifyFailed(frozen.cause, host=host, step=VERIFY_STEP) from None
    if chosen.manifest:
        check_readable(settings, chosen.manifest)   # a denied key named at once
    workspace = settings.cache_root / ".verify-tmp"   # no host name starts with a dot
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f"{host}-", dir=workspace))   # mode 0700
    try:
        dest, throwaway_cache = private / "restore", private / "cache"
        throwaway_cache.mkdir(mode=0o700)
        try:
            with secret_keyring(host, secret_keys_file) as gnupg_home:
                run_restore(settings, dest, throwaway_cache,
                            str(int(chosen.time.timestamp())), None, step=VERIFY_STEP,
                            on_tick=on_tick, data_prefix=chosen.data_prefix,
                            gnupg_home=gnupg_home)
        except OffsiteError as error:
            raise VerifyFailed(f"the set of {outcome.backup_set} does not restore: "
                               f"{error.cause}", host=host, step=VERIFY_STEP) from None
        compare(dest, outcome)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return outcome


def run_verify(ctx: RunContext, at: datetime | None, scheduled_for: datetime | None = None,
               secret_keys_file: Path | None = None) -> RunRecord | None:
    """Run the verify `ctx.run_id`; None when it was not admitted (a duplicate message, a newer
    drill waiting). Raises MustWait when a backup holds the host, OffsiteError on failure
    (recorded)."""
    if admit(ctx, RunType.VERIFY, scheduled_for) is None:
        return None
    with recorded_step(ctx, VERIFY_STEP):
        outcome = verify_backup(ctx.settings, at, on_tick=lease_renewer(ctx),
                                secret_keys_file=secret_keys_file)

        def record_outcome(record: RunRecord) -> None:
            record.verify = outcome
            record.backup_set = outcome.backup_set
        ctx.store.update(ctx.run_id, record_outcome)
        if outcome.mismatch_count:
            raise VerifyFailed(
                f"the set of {outcome.backup_set} restored with {outcome.mismatch_count} "
                f"mismatch(es) against its manifest: {'; '.join(outcome.mismatches[:3])}",
                host=ctx.host, step=VERIFY_STEP)

    def succeed(record: RunRecord) -> None:
        finish_step(record, VERIFY_STEP, 0)
        record.state = RunState.SUCCEEDED
        record.finished_at = utcnow()
    try:
        return ctx.store.update(ctx.run_id, succeed)
    finally:
        end_run(ctx)


def verify_local(config: Config, host: str, at: datetime | None,
                 secret_keys_file: Path | None = None, *, store: RunStore | None = None,
                 lease: HostLease | None = None, alert: bool = False) -> RunRecord:
    """A verify in this process (`offsite verify --local`): recorded in `store` (the ledger,
    when the broker answers: a manual drill then counts as proof) under the host's `lease`,
    else in memory. `alert`: whether the control node alerts its failure (never sent from
    here). A host busy with another run leaves the drill skipped, saying which run."""
    settings = resolve_host(config, host)
    store = store if store is not None else MemoryRunStore()
    lease = lease if lease is not None else MemoryHostLease()
    worker = f"local@{socket.gethostname()}"
    queued = queue_manual_run(store, host, RunType.VERIFY, utcnow(),
                              note=f"asked by {worker[:120]} (verify --local)")
    if not alert:
        store.update(queued.run_id, _quiet)
    ctx = RunContext(config=config, settings=settings, store=store, lease=lease,
                     run_id=queued.run_id, worker=worker)
    try:
        run_verify(ctx, at, secret_keys_file=secret_keys_file)
    except MustWait as busy:
        reason = busy.cause
        store.update(ctx.run_id, lambda record: _skip(record, reason))
    except OffsiteError:
        pass  # recorded by the step that failed
    record = store.get(ctx.run_id)
    assert record is not None
    return record


def _quiet(record: RunRecord) -> None:
    record.alert = False


def _skip(record: RunRecord, reason: str) -> None:
    if record.state == RunState.QUEUED:
        record.state = RunState.SKIPPED
        record.finished_at = utcnow()
        record.notes.append(f"skipped: {reason}; try again when it ends")
