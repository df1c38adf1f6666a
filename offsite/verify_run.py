"""A verify run in the ledger (type `verify`): admitted like a backup (claimed once, holding the
host lease so it never overlaps a backup of the host), then restore-and-compare; a mismatch or
an unrestorable set fails it with class `verify_failed`, alerted like any failure."""
from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

from offsite.admission import admit
from offsite.config import Config
from offsite.constants import RunState, RunType
from offsite.errors import OffsiteError
from offsite.lease import MemoryHostLease
from offsite.records import MemoryRunStore, RunRecord, VerifyRecord
from offsite.run_context import RunContext, new_run_id, queue_run
from offsite.runner import end_run, finish_step, lease_renewer, recorded_step
from offsite.schedules import utcnow
from offsite.verify import VERIFY_STEP, VerifyFailed, verify_backup


def run_verify(ctx: RunContext, at: datetime | None, scheduled_for: datetime | None = None,
               secret_keys_file: Path | None = None) -> RunRecord | None:
    """Run the verify `ctx.run_id`; None when it was not admitted (a duplicate message, a newer
    drill waiting). Raises MustWait when a backup holds the host, OffsiteError on failure
    (recorded)."""
    if admit(ctx, RunType.VERIFY, scheduled_for) is None:
        return None
    with recorded_step(ctx, VERIFY_STEP):
        outcome = verify_backup(ctx.config, ctx.host, at, on_tick=lease_renewer(ctx),
                                secret_keys_file=secret_keys_file)

        def record_outcome(record: RunRecord) -> None:
            record.verify = VerifyRecord.model_validate(outcome.as_dict())
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
                 secret_keys_file: Path | None = None) -> RunRecord:
    """A verify in this process, no broker: `offsite verify --local`."""
    config.host(host)
    store = MemoryRunStore()
    ctx = RunContext(config=config, store=store, lease=MemoryHostLease(), host=host,
                     run_id=new_run_id(host, RunType.VERIFY, utcnow()),
                     worker=f"local@{socket.gethostname()}")
    queue_run(store, host, RunType.VERIFY, ctx.run_id)
    try:
        run_verify(ctx, at, secret_keys_file=secret_keys_file)
    except OffsiteError:
        pass  # recorded by the step that failed
    record = store.get(ctx.run_id)
    assert record is not None
    return record
