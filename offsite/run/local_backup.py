"""A whole backup run in this process, no worker: `offsite backup --local`, the
single-machine mode."""
from __future__ import annotations

import socket

from offsite.config.model import Config
from offsite.constants import BackupType
from offsite.errors import OffsiteError
from offsite.host.settings import resolve_host
from offsite.ledger.records import MemoryRunStore
from offsite.ledger.run_record import RunRecord
from offsite.run.context import RunContext
from offsite.run.local import local_lease, local_run_id, reachable_broker, take_host
from offsite.run.steps import begin_run, run_script_step, upload_step
from offsite.schedule.specs import utcnow


def run_local(config: Config, host: str, backup_type: BackupType) -> RunRecord:
    """Every step of a run in this process, no worker: the single-machine mode. It takes the
    host lock the worker takes (offsite.run.local) and raises HostBusy, touching nothing, when
    another run holds the host."""
    settings = resolve_host(config, host)
    lease = local_lease(config, settings, reachable_broker(config))
    run_id = local_run_id(lease, host, backup_type, utcnow())
    take_host(lease, host, run_id)
    ctx = RunContext(config=config, settings=settings, store=MemoryRunStore(), lease=lease,
                     run_id=run_id, worker=f"local@{socket.gethostname()}")
    try:
        effective = begin_run(ctx, backup_type)
        if effective is not None:
            for script in settings.scripts:
                run_script_step(ctx, script, effective)
            upload_step(ctx, effective)
    except OffsiteError:
        pass  # recorded in the run record by the step that failed
    finally:
        lease.release(host, run_id)
    record = ctx.store.get(ctx.run_id)
    assert record is not None
    return record
