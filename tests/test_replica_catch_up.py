"""The control node's replica catch-up holds the host lease: a backup asked for meanwhile waits.
(The catch-up end to end: tests/test_replicas.py, a replica stopped during a backup; with the
control node's provisioned keys under IAM: tests/test_replica_provision.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest


def test_a_backup_waits_while_the_catch_up_holds_the_host(
        redis_url: str, tmp_path: Path) -> None:
    """A backup asked for while the control node copies waits (MustWait) rather than being
    skipped: an incremental skipped there would be a backup missed."""
    import redis

    from offsite.config.model import parse_config
    from offsite.constants import BackupType, RunType
    from offsite.host.settings import resolve_host
    from offsite.ledger.lease import RedisHostLease, catch_up_holder
    from offsite.ledger.records import RedisRunStore
    from offsite.run.admission import MustWait, admit
    from offsite.run.context import RunContext, new_run_id
    from offsite.schedule.specs import utcnow

    config = parse_config({
        "broker_url": redis_url, "target": {"url": f"file://{tmp_path}/primary"},
        "replicas": {"second": {"url": f"file://{tmp_path}/second"}},
        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}})
    client = redis.Redis.from_url(redis_url)
    try:
        lease = RedisHostLease(client, 60)
        holder = catch_up_holder("carcosa", "20261204T000000Z")
        assert lease.acquire("carcosa", holder)
        ctx = RunContext(config=config, settings=resolve_host(config, "carcosa"),
                         store=RedisRunStore(client), lease=lease,
                         run_id=new_run_id("carcosa", BackupType.INCR, utcnow()), worker="w")
        with pytest.raises(MustWait, match="catch-up"):
            admit(ctx, RunType.INCR, None)
    finally:
        client.close()
