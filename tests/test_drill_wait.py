"""A backup requested while a drill (or a prune) holds the host waits for it, queued, instead
of being skipped; an incremental meeting another backup is still skipped."""
from __future__ import annotations

from typing import Any

import pytest

from offsite.config.model import load_config
from offsite.constants import RunState, RunType
from offsite.host.settings import resolve_host
from offsite.ledger.lease import MemoryHostLease
from offsite.ledger.records import MemoryRunStore
from offsite.run.admission import MustWait, admit
from offsite.run.context import RunContext, queue_run

HOLDERS = {"verify": "carcosa-verify-20261204T000000Z", "prune": "carcosa-prune-20261204T000000Z",
           "full": "carcosa-full-20261204T000000Z"}


@pytest.mark.parametrize("holder", ["verify", "prune", "full"])
def test_an_incremental_waits_for_a_drill_or_prune_and_is_skipped_beside_a_backup(
        make_config: Any, holder: str) -> None:
    config = load_config(make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}}))
    store, lease = MemoryRunStore(), MemoryHostLease()
    holder_id = HOLDERS[holder]
    queue_run(store, "carcosa", RunType(holder), holder_id)
    assert lease.acquire("carcosa", holder_id)
    ctx = RunContext(config=config, settings=resolve_host(config, "carcosa"), store=store,
                     lease=lease, run_id="carcosa-incr-20261204T000001Z", worker="test")
    if holder == "full":
        assert admit(ctx, RunType.INCR) is None
        record = store.get(ctx.run_id)
        assert record is not None and record.state == RunState.SKIPPED
        return
    with pytest.raises(MustWait, match=f"host busy with run {holder_id}; the incremental "
                                       "backup waits"):
        admit(ctx, RunType.INCR)
    record = store.get(ctx.run_id)
    assert record is not None and record.state == RunState.QUEUED
