"""Retention: `offsite prune` keeps the newest complete chains (and the verified one), deletes
the rest with the prune identity, never runs while the host is busy, and is recorded."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from offsite.constants import LEASE_KEY
from tests.helpers import describe
from tests.seaweed import S3_SERVERS
from tests.test_backup_flow import same_tree

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s


@pytest.mark.parametrize("target_store", S3_SERVERS, indirect=True)
def test_prune_keeps_two_of_four_chains_and_the_newest_restores(
        make_config: Any, run_offsite: Any, redis_client: redis.Redis, target_store: Any,
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         retention={"keep_full_chains": 2})
    for number, kind in enumerate(("full", "incr", "full", "full", "incr", "full", "incr")):
        (data / f"file{number}.txt").write_text(f"{kind} {number}\n")
        result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config)
        assert result.returncode == 0, describe(result)
    chains = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]
    assert len(chains) == 4
    times = [chain["start"] for chain in chains]

    plan = run_offsite("prune", "carcosa", config=config)
    assert plan.returncode == 0, describe(plan)
    assert "nothing deleted without --apply" in plan.stdout
    assert plan.stdout.count("delete chain") == 2 and plan.stdout.count("keep chain") == 2
    assert len(json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]) == 4

    redis_client.set(LEASE_KEY + "carcosa", "carcosa-full-20261129T000000Z", px=60_000)
    busy = run_offsite("prune", "carcosa", "--apply", config=config)
    assert busy.returncode == 1 and "busy with run carcosa-full-20261129T000000Z" in busy.stdout
    assert len(json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]) == 4
    redis_client.delete(LEASE_KEY + "carcosa")

    keyless = run_offsite("prune", "carcosa", "--apply", config=config)   # no prune identity
    assert keyless.returncode == 1 and "Unable to locate credentials" in keyless.stderr
    assert len(keyless.stderr.strip().splitlines()) == 1, keyless.stderr
    applied = run_offsite("prune", "carcosa", "--apply", config=config,
                          env_extra={"PRUNE_AWS_ACCESS_KEY_ID": "AKIAPRUNE",
                                     "PRUNE_AWS_SECRET_ACCESS_KEY": "prune-secret"})
    assert applied.returncode == 0, describe(applied)
    left = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]
    assert [chain["start"] for chain in left] == times[2:]
    assert not [k for k in target_store.object_keys("carcosa/") if any(
        t.replace("-", "").replace(":", "") in k for t in times[:2])]
    runs = json.loads(run_offsite("status", "carcosa", "--json", config=config).stdout)
    assert [(r["type"], r["state"]) for r in runs] == [
        ("prune", "succeeded"), ("prune", "failed"), ("prune", "skipped")]
    assert "deleted" in runs[0]["notes"][0]
    assert runs[0]["stored_bytes"] == target_store.stored_bytes("carcosa/")

    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(restored / "files", data)
    refused = run_offsite("restore", "carcosa", str(tmp_path / "old"), "--time", times[1],
                          config=config)
    assert refused.returncode == 1, describe(refused)
    assert f"oldest backup of carcosa is from {times[2]}" in refused.stderr


def test_prune_without_retention_is_a_usage_error(make_config: Any, run_offsite: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"files": {"bash": "true"}}}})
    result = run_offsite("prune", "carcosa", config=config)
    assert result.returncode == 2
    assert "set retention.keep_full_chains" in result.stderr
    assert run_offsite("prune", config=config).stdout.startswith("no host has retention")
