"""One backup run, step by step, without Celery: the tasks and `--local` both call these."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Callable, Iterator

from offsite.run.admission import admit
from offsite.target.catalog import Catalog, format_stamp
from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.run.chain import (ChainPlan, check_target_before, confirm_uploaded,
                                 wait_for_a_new_second)
from offsite.constants import BackupType, RunState, RunType
from offsite.duplicity.command import upload
from offsite.target.thaw import tag_data_volumes
from offsite.errors import CommandError, CommandTimedOut, NoRestoreSpace, OffsiteError
from offsite.duplicity.keycheck import remember_written
from offsite.ledger.renewer import LeaseLost
from offsite.run.files_cache import FilesCache
from offsite.run.manifest import write_manifest
from offsite.crypto.passphrase import read_passphrase
from offsite.ledger.run_record import ErrorRecord, ManifestRecord, RunRecord, StepRecord
from offsite.run.context import RunContext
from offsite.run.working import working
from offsite.run.replicas import replicate_step
from offsite.schedule.specs import utcnow
from offsite.run.sealing import seal_new_set, uploaded_or_read
from offsite.duplicity.uploaded import read_uploaded
from offsite.run.scripts import (EMPTY_OUTPUT_NOTE, ScriptRun, empty_output_note, run_script,
                                 script_step)
from offsite.process.shutdown import stopping
from offsite.host.sources import (PathProblems, empty_host_staging, host_cache,
                                  prepare_host_staging)
from offsite.target.bucket import (TargetObject, TargetUnreadable, list_host_objects,
                                   object_digest, put_host_object)

log = logging.getLogger(__name__)

UPLOAD_STEP = "upload"
_KILLED_GRACE_S = 3.0


class StaleRun(OffsiteError):
    """A step of a run that already ended or lost its lease: it must not run, nor alert."""


@working
def begin_run(ctx: RunContext, requested: BackupType,
              scheduled_for: datetime | None = None) -> BackupType | None:
    """Admit the run (see offsite.run.admission), check that the passphrase can be read, decide
    the run's type from what the target holds (see offsite.run.chain) and prepare its staging
    folder; a failure here is recorded at step `start`, before any dump script runs."""
    admitted = admit(ctx, RunType(requested.value), scheduled_for)
    if admitted is None:
        return None
    effective = BackupType(admitted.value)
    try:
        if not ctx.settings.encryption.public_key:   # a public-key host holds no passphrase
            read_passphrase(ctx.settings, step="start")
        plan = check_target_before(ctx.settings, effective, utcnow())
        if plan.listing is not None:
            _planned_listings.keep(ctx.run_id, plan.listing)
        if plan.backup_type != effective or plan.notes:
            ctx.store.update(ctx.run_id, lambda record: _apply_plan(record, plan))
        prepare_host_staging(ctx.settings)
    except OffsiteError as error:
        fail_run(ctx, "start", error)
        raise
    except OSError as exc:
        problem = OffsiteError(f"cannot prepare staging: {exc}", host=ctx.host, step="start")
        fail_run(ctx, "start", problem)
        raise problem from None
    return plan.backup_type


def _apply_plan(record: RunRecord, plan: ChainPlan) -> None:
    record.type = RunType(plan.backup_type.value)
    record.notes.extend(note for note in plan.notes if note not in record.notes)


def lease_renewer(ctx: RunContext) -> Callable[[], None]:
    """A check, at each tick of a child and each batch of hashed or compared files, that the
    run still holds its lease. The renewal itself is the lease keeper's, a thread of its own
    (offsite.ledger.renewer); a lease it gave up stops the step at once (LeaseLost). A lease
    store that cannot be reached is logged, not raised: killing a healthy upload over a broker
    blip would lose work, and the keeper tries again."""
    def renew() -> None:
        try:
            renewed = ctx.lease.renew(ctx.host, ctx.run_id)
        except Exception as exc:  # the lease's store is unreachable: see above
            log.warning("run %s: cannot renew the host lease: %s", ctx.run_id, exc)
            return
        if not renewed:
            raise LeaseLost(f"run {ctx.run_id} no longer holds the host lease "
                            f"(held by {ctx.lease.holder(ctx.host) or 'nobody'})",
                            host=ctx.host)
    return renew


def _guard(ctx: RunContext, step: str) -> bool:
    """True when the step should run; False when it already finished (a redelivery)."""
    record = ctx.store.get(ctx.run_id)
    if record is None or record.state != RunState.RUNNING:
        state = record.state if record else "missing"
        end_stale(ctx)
        raise StaleRun(f"run {ctx.run_id} is {state}; step not run", host=ctx.host, step=step)
    if not ctx.lease.renew(ctx.host, ctx.run_id):
        lose_run(ctx, step, LeaseLost(f"run {ctx.run_id} no longer holds the host lease "
                                      f"(held by {ctx.lease.holder(ctx.host) or 'nobody'})",
                                      host=ctx.host, step=step))
        end_stale(ctx)
        raise StaleRun(f"run {ctx.run_id} no longer holds the host lease", host=ctx.host,
                       step=step)
    done = record.step(step)
    return not (done and done.finished_at)


def _start_step(ctx: RunContext, step: str) -> None:
    def mark(record: RunRecord) -> None:
        record.steps = [s for s in record.steps if s.name != step]
        record.steps.append(StepRecord(name=step, worker=ctx.worker, started_at=utcnow()))
    ctx.store.update(ctx.run_id, mark)


def finish_step(record: RunRecord, step: str, exit_code: int | None) -> None:
    current = record.step(step)
    if current is None:
        current = StepRecord(name=step)
        record.steps.append(current)
    current.finished_at = utcnow()
    current.exit_code = exit_code
    if current.started_at:
        current.duration_s = (current.finished_at - current.started_at).total_seconds()


@contextmanager
def recorded_step(ctx: RunContext, step: str) -> Iterator[None]:
    """Record the step's start; on any error record the failure, free the host, re-raise."""
    _start_step(ctx, step)
    try:
        yield
    except LeaseLost as lost:
        lose_run(ctx, step, lost)
        end_stale(ctx)
        raise StaleRun(lost.cause, host=ctx.host, step=step) from None
    except StaleRun:
        end_stale(ctx)
        raise
    except OffsiteError as error:
        if stopping(_KILLED_GRACE_S if _killed_by_signal(error) else 0.0):
            stop_run(ctx, step, error)
        else:
            fail_run(ctx, step, error)
        raise
    except Exception as exc:
        wrapped = OffsiteError(f"unexpected {type(exc).__name__}: {exc}", host=ctx.host,
                               step=step)
        fail_run(ctx, step, wrapped)
        raise wrapped from exc


def _killed_by_signal(error: OffsiteError) -> bool:
    return (isinstance(error, CommandError) and not isinstance(error, CommandTimedOut)
            and error.returncode is not None and error.returncode < 0)


@working
def run_script_step(ctx: RunContext, script: str, backup_type: BackupType) -> None:
    step = script_step(script)
    if not _guard(ctx, step):
        return
    with recorded_step(ctx, step):
        run_script(ctx.settings, ScriptRun(ctx.host, ctx.run_id, backup_type.value, script),
                   on_tick=lease_renewer(ctx))
    note = empty_output_note(ctx.settings, script)

    def finish(record: RunRecord) -> None:
        finish_step(record, step, 0)
        if note and note not in record.notes:
            record.notes.append(note)
    ctx.store.update(ctx.run_id, finish)


@working
def upload_step(ctx: RunContext, backup_type: BackupType) -> RunRecord | None:
    """Write the digest manifest (offsite.run.manifest) into staging, upload, confirm the new set in
    the target, and finish the run in the same breath: the
    moment the set is confirmed the run is durably over, so a worker stopped right after
    (SIGTERM lets the current task end) never leaves a finished backup looking lost."""
    if not _guard(ctx, UPLOAD_STEP):
        return None
    with recorded_step(ctx, UPLOAD_STEP), FilesCache(
            host_cache(ctx.settings), reuse=backup_type == BackupType.INCR) as cache:
        problems = PathProblems()   # gathered on the manifest's walk of `paths:`
        summary = write_manifest(ctx.settings.staging, ctx.settings.paths,
                                 on_tick=lease_renewer(ctx), cache=cache,
                                 excludes=ctx.settings.excludes, problems=problems)
        before = _planned_listings.take(ctx.run_id) or _catalog_or_none(ctx)
        time.sleep(wait_for_a_new_second(before, utcnow()))
        started = utcnow()
        passphrase = (None if ctx.settings.encryption.public_key
                      else read_passphrase(ctx.settings, step=UPLOAD_STEP))
        stats = upload(ctx.settings, backup_type, on_tick=lease_renewer(ctx),
                       passphrase=passphrase, walked=problems.result())
        objects = list_host_objects(ctx.settings)   # the one listing after the upload
        judged = before or read_keyed_catalog(ctx.settings, objects=objects)
        seal = seal_new_set(ctx.host, objects, judged, backup_type, started, ctx.run_id,
                            uploaded_or_read(read_uploaded(host_cache(ctx.settings)),
                                             lambda name: object_digest(ctx.settings, name)),
                            restored=(summary.files, summary.bytes))
        sealed = seal.to_bytes()
        put_host_object(ctx.settings, seal.name, sealed)   # see offsite.run.sealing
        stored = sum(found.size for found in objects) + len(sealed)   # the fleet page's
        # judged again with the seal just written, on that listing and the seals already read:
        # this run holds the host, so nothing else wrote to its prefix meanwhile
        after = read_keyed_catalog(ctx.settings, objects=objects + [
            TargetObject(seal.name, len(sealed))], known=judged.seals_by_name())
        written = confirm_uploaded(before, after, backup_type, ctx.host, started)
        remember_written(ctx.host, written.manifest, passphrase)   # see offsite.duplicity.keycheck
        cache.commit()   # the digests of a confirmed set: the next incremental's files cache
    tag_note = tag_data_volumes(ctx.settings, written)   # for the lifecycle rule

    def done(record: RunRecord) -> None:
        finish_step(record, UPLOAD_STEP, 0)
        record.bytes_uploaded = stats.bytes_uploaded
        record.stored_bytes = stored
        record.stats = dict(stats.as_dict())
        record.backup_set = format_stamp(written.time)
        record.seal = f"{seal.name} sha256:{seal.digest}"
        record.manifest = ManifestRecord(files=summary.files, bytes=summary.bytes,
                                         sha256=summary.sha256)
        record.notes.extend(stats.problems)   # `paths:` files not backed up as they are
        if tag_note:
            record.notes.append(tag_note)
    ctx.store.update(ctx.run_id, done)
    if ctx.settings.replicas:   # never raises: see offsite.run.replicas
        replicate_step(ctx, lease_renewer(ctx))
    return finish_run(ctx)


class _Listings:
    """The target's listing an incremental was planned on, kept (in this worker process, a
    few at most) for its upload: the set the upload must add is judged against it, so an
    incremental lists the target twice, not three times. Nothing but this run writes to the
    host's prefix between the two (it holds the host lease). A worker restarted between them
    lists again."""

    def __init__(self, most: int = 8) -> None:
        self.most = most
        self.kept: dict[str, Catalog] = {}

    def keep(self, run_id: str, catalog: Catalog) -> None:
        self.kept[run_id] = catalog
        while len(self.kept) > self.most:
            del self.kept[next(iter(self.kept))]

    def take(self, run_id: str) -> Catalog | None:
        return self.kept.pop(run_id, None)


_planned_listings = _Listings()


def _catalog_or_none(ctx: RunContext) -> Catalog | None:
    """The target before the upload; None when it cannot be listed now (duplicity retries an
    unreachable endpoint itself, and the check after the upload must then succeed)."""
    try:
        return read_keyed_catalog(ctx.settings)
    except TargetUnreadable as exc:
        log.warning("run %s: cannot list the target before the upload: %s", ctx.run_id, exc)
        return None


def finish_run(ctx: RunContext) -> RunRecord:
    """Mark success (warning when duplicity counted unreadable files) and free the host."""
    def finish(record: RunRecord) -> None:
        if record.state != RunState.RUNNING:
            raise StaleRun(f"run {ctx.run_id} is {record.state}", host=ctx.host, step="finish")
        complete_record(record, utcnow())
    try:
        return ctx.store.update(ctx.run_id, finish)
    finally:
        end_stale(ctx)   # a stale run leaves another run's staging and lease alone


def upload_confirmed(record: RunRecord) -> bool:
    """Whether the run's set was confirmed in the target: the evidence that it succeeded."""
    upload = record.step(UPLOAD_STEP)
    return bool(upload and upload.finished_at and upload.exit_code == 0 and record.backup_set)


def complete_record(record: RunRecord, now: datetime) -> None:
    """A confirmed upload's outcome: succeeded, or warning when duplicity counted files it
    could not read."""
    errors = int((record.stats or {}).get("errors", 0))
    empty = any(note.startswith(EMPTY_OUTPUT_NOTE) for note in record.notes)
    record.state = RunState.WARNING if errors or empty else RunState.SUCCEEDED
    if errors:
        record.notes.append(f"duplicity could not read {errors} file(s) in staging")
    record.finished_at = now


def failure_class(step: str, error: OffsiteError) -> str:
    if step == "verify":   # whatever stopped it, the backup is not proven restorable
        return str(error.failure_class) if isinstance(error, NoRestoreSpace) else "verify_failed"
    if error.failure_class:
        return error.failure_class
    if step.startswith(script_step("")):
        if isinstance(error, CommandTimedOut):
            return "script_timeout"
        return "disk_full" if "No space left" in _stderr(error) else "script_failed"
    if step == UPLOAD_STEP:
        return "disk_full" if "No space left" in _stderr(error) else "upload_failed"
    return "failed"


def _stderr(error: OffsiteError) -> str:
    return error.stderr_tail if isinstance(error, CommandError) else ""


def _end_record(ctx: RunContext, step: str, state: RunState, error: ErrorRecord,
                exit_code: int | None) -> RunRecord:
    """End the run's record at `step` with `state` and its error (a final record is kept as it
    is: a late or doubled report changes nothing)."""
    def end(record: RunRecord) -> None:
        if record.is_final:
            return
        if record.step(step):
            finish_step(record, step, exit_code)
        record.state = state
        record.finished_at = utcnow()
        record.error = error
    return ctx.store.update(ctx.run_id, end)


def fail_run(ctx: RunContext, step: str, error: OffsiteError) -> RunRecord:
    """Record the failure with its step, exit code and stderr tail; empty staging; free the host."""
    log.error("run %s failed at %s: %s", ctx.run_id, step, error.one_line())
    exit_code = error.returncode if isinstance(error, CommandError) else None
    try:
        return _end_record(ctx, step, RunState.FAILED, ErrorRecord(
            step=step, exit_code=exit_code, message=error.one_line(),
            stderr_tail=_stderr(error), failure_class=failure_class(step, error)), exit_code)
    finally:
        end_stale(ctx)


def stop_run(ctx: RunContext, step: str, error: OffsiteError) -> RunRecord:
    """The worker is being stopped and the step's command died with it: the run is lost with
    the step named (the watchdog alerts once and queues its re-run), not a failure."""
    log.warning("run %s stopped at %s by the worker's shutdown: %s", ctx.run_id, step,
                error.one_line())
    try:
        return _end_record(ctx, step, RunState.LOST, ErrorRecord(
            step=step, failure_class="run_lost",
            message=f"the worker was stopped during {step} before the backup was confirmed "
                    "in the target"), None)
    finally:
        end_stale(ctx)


def lose_run(ctx: RunContext, step: str, lost: OffsiteError) -> RunRecord:
    """The run gave up its lease (another run holds the host, or the record was settled): it
    is recorded `lost` with the step and why (a final record is kept as it is; the watchdog
    alerts once and queues the re-run), and nothing of the host is touched: its staging and
    lease may be another run's now."""
    log.error("run %s stopped at %s: %s", ctx.run_id, step, lost.one_line())
    return _end_record(ctx, step, RunState.LOST, ErrorRecord(
        step=step, failure_class="run_lost",
        message=f"{lost.cause}; the run stopped during {step}"), None)


def end_stale(ctx: RunContext) -> None:
    """The end of a run found stale: its staging is emptied and its lease freed only while it
    still holds the host (else both may be another run's now); its lease keeper is stopped."""
    if ctx.lease.holder(ctx.host) == ctx.run_id:
        end_run(ctx)
    else:
        ctx.lease.release(ctx.host, ctx.run_id)


def end_run(ctx: RunContext) -> None:
    try:
        empty_host_staging(ctx.settings)
    finally:
        ctx.lease.release(ctx.host, ctx.run_id)
