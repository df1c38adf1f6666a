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

import redis

from offsite.config.model import Config
from offsite.config.replicas import PRIMARY
from offsite.host.targets import on_target
from offsite.proof.drill_target import next_drill_target
from offsite.constants import RunState, RunType
from offsite.crypto.encryption import secret_keyring
from offsite.duplicity.command import run_restore
from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings, resolve_host
from offsite.ledger.records import MemoryRunStore, RunStore
from offsite.ledger.run_record import RunRecord, VerifyRecord
from offsite.proof.diagnose import explain_failure, volume_order
from offsite.proof.restore import choose_set
from offsite.proof.space import require_space, restore_size, tree_bytes, work_bytes
from offsite.run.admission import MustWait, admit
from offsite.proof.compare import compare
from offsite.run.context import RunContext, queue_run
from offsite.run.local import local_lease, local_run_id, take_host
from offsite.run.steps import StaleRun, end_stale, finish_step, lease_renewer, recorded_step
from offsite.run.working import working
from offsite.schedule.specs import utcnow
from offsite.target.bucket import check_readable
from offsite.target.catalog import format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.target.thaw import archived_volumes, refuse_if_frozen, sets_needed

VERIFY_STEP = "verify"


class VerifyFailed(OffsiteError):
    """The restore did not give back what the manifest recorded (or could not be made)."""

    failure_class = "verify_failed"


def verify_backup(settings: HostSettings, at: datetime | None,
                  on_tick: Callable[[], None] | None = None,
                  secret_keys_file: Path | None = None,
                  leftovers: list[Path] | None = None) -> VerifyRecord:
    """Restore and compare; returns the outcome (mismatches listed), raises VerifyFailed when
    the set cannot be restored at all (archived volumes not thawed included), RestoreRefused
    when the target does not cover `at`, NoRestoreSpace (before duplicity starts) when the
    scratch folder has less room than the set restores to (offsite.proof.space). In
    public-key mode the secret key comes from secret_keys_file or this node's GNUPGHOME. With
    `leftovers`, the drill's private folder is added to it for the caller to remove (after its
    record is final) instead of removed here."""
    with secret_keyring(settings.name, secret_keys_file) as gnupg_home:
        return _verify(settings, at, on_tick, gnupg_home, leftovers)


def _verify(settings: HostSettings, at: datetime | None, on_tick: Callable[[], None] | None,
            gnupg_home: Path | None, leftovers: list[Path] | None) -> VerifyRecord:
    host = settings.name
    catalog = read_keyed_catalog(settings, gnupg_home)
    try:   # the set `restore` would pick: newer sets it cannot use fail the drill, named
        chosen = choose_set(catalog, at, host, step=VERIFY_STEP)
    except OffsiteError as refused:
        if refused.cause.startswith("no backup yet"):
            raise
        raise VerifyFailed(refused.cause, host=host, step=VERIFY_STEP) from None
    outcome = VerifyRecord(backup_set=format_stamp(chosen.time))
    needed = sets_needed(catalog, chosen.time)
    try:
        refuse_if_frozen(host, archived_volumes(settings, needed))
    except OffsiteError as frozen:
        raise VerifyFailed(frozen.cause, host=host, step=VERIFY_STEP) from None
    if chosen.manifest:
        check_readable(settings, chosen.manifest)   # a denied key named at once
    workspace = settings.scratch   # `verify.scratch`
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    size = restore_size(needed)   # the tree and duplicity's temp both go in the workspace
    require_space([(workspace, tree_bytes(size) + work_bytes(needed))], size,
                  f"the set of {outcome.backup_set}", host, VERIFY_STEP,
                  "free space there, or set verify.scratch to a folder with room (not the "
                  "Redis volume)")
    private = Path(tempfile.mkdtemp(prefix=f"{host}-", dir=workspace))   # mode 0700
    try:
        dest, throwaway_cache = private / "restore", private / "cache"
        throwaway_cache.mkdir(mode=0o700)
        try:
            run_restore(settings, dest, throwaway_cache, str(int(chosen.time.timestamp())),
                        None, step=VERIFY_STEP, on_tick=on_tick,
                        data_prefix=chosen.data_prefix, gnupg_home=gnupg_home,
                        volume_names=volume_order(needed))
        except OffsiteError as error:
            raise VerifyFailed(f"the set of {outcome.backup_set} does not restore: "
                               f"{explain_failure(settings, needed, error.cause)}",
                               host=host, step=VERIFY_STEP) from None
        compare(dest, outcome, on_tick)
    finally:
        if leftovers is None:
            shutil.rmtree(private, ignore_errors=True)
        else:
            leftovers.append(private)
    return outcome


@working
def run_verify(ctx: RunContext, at: datetime | None, scheduled_for: datetime | None = None,
               secret_keys_file: Path | None = None,
               target: str | None = None) -> RunRecord | None:
    """Run the verify `ctx.run_id`; None when it was not admitted (a duplicate message, a newer
    drill waiting). Raises MustWait when a backup holds the host, OffsiteError on failure
    (recorded), StaleRun when its record was made final meanwhile (kept as it is)."""
    if admit(ctx, RunType.VERIFY, scheduled_for) is None:
        return None
    leftovers: list[Path] = []   # the restored tree: removed once the record is final
    try:
        with recorded_step(ctx, VERIFY_STEP):
            target = target or next_drill_target(ctx.config, ctx.settings, ctx.store,
                                                 ctx.run_id)
            ctx.store.update(ctx.run_id, lambda record: setattr(record, "target", target))
            outcome = verify_backup(on_target(ctx.settings, target), at,
                                    on_tick=lease_renewer(ctx),
                                    secret_keys_file=secret_keys_file, leftovers=leftovers)

            def record_outcome(record: RunRecord) -> None:
                _still_running(ctx, record)
                record.verify = outcome
                record.backup_set = outcome.backup_set
            ctx.store.update(ctx.run_id, record_outcome)
            if outcome.mismatch_count:
                raise VerifyFailed(
                    f"the set of {outcome.backup_set} restored with {outcome.mismatch_count} "
                    f"mismatch(es) against its manifest: {'; '.join(outcome.mismatches[:3])}",
                    host=ctx.host, step=VERIFY_STEP)

        def succeed(record: RunRecord) -> None:
            _still_running(ctx, record)
            finish_step(record, VERIFY_STEP, 0)
            record.state = RunState.SUCCEEDED
            record.finished_at = utcnow()
        try:
            return ctx.store.update(ctx.run_id, succeed)
        finally:
            _remove(leftovers)   # under the lease, still renewed by its keeper
            end_stale(ctx)   # a stale run leaves another run's staging and lease alone
    finally:
        _remove(leftovers)


def _remove(folders: list[Path]) -> None:
    while folders:
        shutil.rmtree(folders.pop(), ignore_errors=True)


def _still_running(ctx: RunContext, record: RunRecord) -> None:
    """A drill that finishes after its record was made final (the watchdog settled it) leaves
    that record as it is: no final state is written over another."""
    if record.state != RunState.RUNNING:
        raise StaleRun(f"run {ctx.run_id} is already {record.state.value}; its outcome is "
                       "not recorded", host=ctx.host, step=VERIFY_STEP)


def verify_local(config: Config, host: str, at: datetime | None,
                 secret_keys_file: Path | None = None, target: str | None = None, *,
                 broker: redis.Redis | None = None, store: RunStore | None = None,
                 alert: bool = False) -> RunRecord:
    """A verify in this process, no worker (`offsite verify --local`), under the host lock the
    workers take (offsite.run.local, with the Redis lease when `broker` answers); raises
    HostBusy, recording nothing, when another run holds the host. Recorded in `store` (the
    ledger, when the broker answers: a manual drill then counts as proof), else in memory.
    `alert`: whether the control node alerts its failure (never sent from here). `target`: the
    primary (default) or a replica of the host."""
    settings = resolve_host(config, host)
    store = store if store is not None else MemoryRunStore()
    lease = local_lease(config, settings, broker)
    run_id = local_run_id(lease, host, RunType.VERIFY, utcnow())
    take_host(lease, host, run_id)
    worker = f"local@{socket.gethostname()}"
    try:
        queue_run(store, host, RunType.VERIFY, run_id,
                  note=f"asked by {worker[:120]} (verify --local)")
        if not alert:
            store.update(run_id, _quiet)
    except BaseException:
        lease.release(host, run_id)
        raise
    ctx = RunContext(config=config, settings=settings, store=store, lease=lease, run_id=run_id,
                     worker=worker)
    try:
        run_verify(ctx, at, secret_keys_file=secret_keys_file, target=target or PRIMARY)
    except MustWait as busy:
        reason = busy.cause
        store.update(ctx.run_id, lambda record: _skip(record, reason))
    except OffsiteError:
        pass  # recorded by the step that failed
    finally:
        lease.release(host, run_id)
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
