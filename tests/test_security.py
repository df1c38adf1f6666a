"""The security model end to end, with real duplicity and gpg: the leaked-key drill on a moto that
enforces IAM, archived data volumes and --thaw, public-key hosts that cannot decrypt, per-host
passphrases, the escrow check, and a change of object layout."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from offsite.host.settings import resolve_host
from offsite.target.catalog import read_catalog
from offsite.config.model import load_config
from tests.helpers import describe, wait_until
from tests.security_harness import (KeyPair, StrictAws, denied, grant_head_bucket, keys_of,
                                    make_key_pair, read_env_file)
from tests.test_backup_flow import same_tree
from tests.test_failures import Ledger, backup
from tests.test_hostile_outcomes import data_tree
from tests.test_provision import _as, _fleet, _operator, strict  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KeyPair]]:
    """Two key pairs: `backup` (the fleet's recipient) and `other` (a key that is not it)."""
    folder = tmp_path_factory.mktemp("keys")
    pairs = {name: make_key_pair(folder, name) for name in ("backup", "other")}
    try:
        yield pairs
    finally:
        for pair in pairs.values():
            for home in (pair.secret_home, pair.public_home):
                subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                               capture_output=True, timeout=30)


def local(run_offsite: Any, config: Path, host: str, kind: str,
          env_extra: dict[str, str | None] | None = None) -> str:
    result = run_offsite("backup", host, "--type", kind, "--local", config=config,
                         env_extra=env_extra, timeout=180)
    assert result.returncode == 0, describe(result)
    assert ": succeeded" in result.stdout, result.stdout
    return str(result.stdout)


def test_leaked_upload_keys_cannot_destroy_a_backup_recover_undoes_it(
        strict: StrictAws, tmp_path: Path, run_offsite: Any, redis_url: str) -> None:
    fleet = _fleet(strict, tmp_path, redis_url, hosts=("alpha",))
    config, creds, bucket = fleet["config"], fleet["creds"], fleet["bucket"]
    applied = run_offsite("provision", "--apply", "--credentials-out", str(creds),
                          config=config, env_extra=strict.admin)
    assert applied.returncode == 0, describe(applied)
    alpha_env = read_env_file(creds / "alpha.env")
    grant_head_bucket(strict, f"{fleet['prefix']}-host-alpha", bucket)
    local(run_offsite, config, "alpha", "full", _as(alpha_env))
    before = datetime.now(timezone.utc).replace(microsecond=0)
    wait_until(lambda: time.time() >= before.timestamp() + 2, 5, "a second after the backup")

    attacker = strict.client("s3", keys_of(alpha_env, "DUPLICITY_AWS_"))
    try:
        keys = [item["Key"] for item in attacker.list_objects_v2(
            Bucket=bucket, Prefix="alpha/")["Contents"]]
        manifest = next(key for key in keys if key.endswith(".manifest.gpg"))
        attacker.put_object(Bucket=bucket, Key=manifest, Body=b"ransom note")
        for key in keys:
            if key != manifest:
                attacker.delete_object(Bucket=bucket, Key=key)
    finally:
        attacker.close()
    broken = run_offsite("restore", "alpha", str(tmp_path / "nothing"), config=config,
                         env_extra=_as(alpha_env))
    assert broken.returncode == 1, describe(broken)

    at = before.strftime("%Y-%m-%dT%H:%M:%SZ")
    with_upload_keys = run_offsite("recover", "alpha", "--time", at, config=config, env_extra={
        "RECOVER_AWS_ACCESS_KEY_ID": alpha_env["DUPLICITY_AWS_ACCESS_KEY_ID"],
        "RECOVER_AWS_SECRET_ACCESS_KEY": alpha_env["DUPLICITY_AWS_SECRET_ACCESS_KEY"]})
    assert with_upload_keys.returncode == 1, describe(with_upload_keys)
    assert "recover identity" in with_upload_keys.stderr
    assert "Traceback" not in with_upload_keys.stderr

    recover_env: dict[str, str | None] = dict(read_env_file(creds / "recover.env"))
    plan = run_offsite("recover", "alpha", "--time", at, config=config, env_extra=recover_env)
    assert plan.returncode == 0, describe(plan)
    assert f"restore {manifest} from version" in plan.stdout
    assert plan.stdout.count("  undelete ") == len(keys) - 1
    assert "nothing was changed" in plan.stdout
    applied_recover = run_offsite("recover", "alpha", "--time", at, "--apply", config=config,
                                  env_extra=recover_env)
    assert applied_recover.returncode == 0, describe(applied_recover)
    assert f"put back {len(keys)} object(s)" in applied_recover.stdout
    restored = tmp_path / "restored"
    result = run_offsite("restore", "alpha", str(restored), config=config,
                         env_extra=_as(alpha_env), timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(fleet["data"]["alpha"], restored / "files")
    again = run_offsite("recover", "alpha", "--time", at, config=config, env_extra=recover_env)
    assert "0 object(s) to put back" in again.stdout

    prune = strict.client("s3", keys_of(read_env_file(creds / "control.env"), "PRUNE_AWS_"))
    admin = strict.client("s3")
    try:
        version = admin.head_object(Bucket=bucket, Key=manifest)["VersionId"]
        assert denied(prune.delete_object, Bucket=bucket, Key=manifest, VersionId=version)
        assert denied(prune.put_object, Bucket=bucket, Key=manifest, Body=b"x")
        prune.delete_object(Bucket=bucket, Key=manifest)   # a delete marker: undoable
        assert admin.head_object(Bucket=bucket, Key=manifest, VersionId=version)
    finally:
        prune.close()
        admin.close()


def _carcosa(make_config: Any, data: Path, **overrides: Any) -> Path:
    return make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                       **overrides)


def test_archived_volumes_are_named_and_thawed_manifests_never_archived(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data", files=2, size=100_000)
    config = _carcosa(make_config, data)
    local(run_offsite, config, "carcosa", "full")
    (data / "added.bin").write_bytes(os.urandom(50_000))
    local(run_offsite, config, "carcosa", "incr")
    keys = aws.object_keys("carcosa/")
    volumes = [key for key in keys if ".difftar." in key]
    assert volumes and all(key.startswith("carcosa/data-duplicity-") for key in volumes)
    for key in keys:
        tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=key)["TagSet"]
        expected = [{"Key": "offsite-class", "Value": "volume"}] if key in volumes else []
        assert tags == expected, key
    for key in volumes:   # what the lifecycle rule does to tagged volumes after 64 days
        aws.s3.copy_object(Bucket=aws.bucket, Key=key, StorageClass="GLACIER",
                           CopySource={"Bucket": aws.bucket, "Key": key})
    shutil.rmtree(tmp_path / "cache" / "carcosa")
    (data / "later.bin").write_bytes(os.urandom(50_000))
    outcome = local(run_offsite, config, "carcosa", "incr")
    assert "incr" in outcome and "resynced the cache from the target" in outcome
    catalog = read_catalog(resolve_host(load_config(config), "carcosa"))
    assert [len(chain.sets) for chain in catalog.chains] == [3]
    assert sorted(name for s in catalog.chains[0].sets for name in s.archived) == \
        sorted(key.removeprefix("carcosa/") for key in volumes)

    refused = run_offsite("restore", "carcosa", str(tmp_path / "r1"), config=config)
    assert refused.returncode == 1, describe(refused)
    assert "archived (Glacier/Deep Archive) and not thawed" in refused.stderr
    for key in volumes:
        assert key.removeprefix("carcosa/") in refused.stderr
    assert "--thaw" in refused.stderr and "Traceback" not in refused.stderr
    thaw = run_offsite("restore", "carcosa", str(tmp_path / "r1"), "--thaw", "--days", "2",
                       config=config)
    assert thaw.returncode == 0, describe(thaw)
    assert f"requested the thaw of {len(volumes)} volume(s)" in thaw.stdout
    assert "about 5 hours" in thaw.stdout and "2 day(s)" in thaw.stdout
    for key in volumes:
        assert "expiry-date" in aws.s3.head_object(Bucket=aws.bucket, Key=key)["Restore"]
    result = run_offsite("restore", "carcosa", str(tmp_path / "r1"), config=config,
                         timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(data, tmp_path / "r1" / "files")


def test_changing_the_layout_starts_a_new_full_chain_and_both_restore(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    data = data_tree(tmp_path / "data", files=2, size=50_000)
    target = {"url": f"boto3+s3://{aws.bucket}", "endpoint_url": aws.endpoint_url,
              "region": "eu-west-1"}
    flat = _carcosa(make_config, data, target={**target, "layout": "flat"})
    local(run_offsite, flat, "carcosa", "full")
    first = datetime.now(timezone.utc).replace(microsecond=0)
    wait_until(lambda: time.time() >= first.timestamp() + 2, 5, "a later second")
    old = {name.name: name.read_bytes() for name in data.iterdir()}
    (data / "part0.bin").write_bytes(os.urandom(50_000))
    split = _carcosa(make_config, data, target=target)
    outcome = local(run_offsite, split, "carcosa", "incr")
    assert "a new full chain starts: the object layout changed" in outcome, outcome
    chains = read_catalog(resolve_host(load_config(split), "carcosa")).chains
    assert [(chain.full.data_prefix, len(chain.sets)) for chain in chains] == [("", 1),
                                                                               ("data-", 1)]
    latest = run_offsite("restore", "carcosa", str(tmp_path / "new"), config=split, timeout=180)
    assert latest.returncode == 0, describe(latest)
    assert same_tree(data, tmp_path / "new" / "files")
    older = run_offsite("restore", "carcosa", str(tmp_path / "old"), "--time",
                        first.strftime("%Y-%m-%dT%H:%M:%SZ"), config=split, timeout=180)
    assert older.returncode == 0, describe(older)
    assert {p.name: p.read_bytes() for p in (tmp_path / "old" / "files").iterdir()} == old


def test_public_key_hosts_back_up_but_cannot_decrypt(
        make_config: Any, start_worker: Any, run_offsite: Any, aws: Any, tmp_path: Path,
        keys: dict[str, KeyPair], redis_client: Any) -> None:
    ledger = Ledger(redis_client)
    pair = keys["backup"]
    data = data_tree(tmp_path / "data", files=2, size=80_000)
    config = _carcosa(make_config, data, encryption={
        "mode": "public-key", "recipients": [pair.fingerprint],
        "public_keys_file": str(pair.public_file)})
    host_env: dict[str, str | None] = {"GNUPGHOME": str(pair.public_home), "PASSPHRASE": None}
    start_worker(config, "carcosa", env_extra=host_env)
    assert backup(run_offsite, config, "carcosa", "full", ledger=ledger)["state"] == "succeeded"
    (data / "more.bin").write_bytes(os.urandom(30_000))
    incr = backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    assert (incr["state"], incr["type"]) == ("succeeded", "incr"), incr

    on_host = run_offsite("restore", "carcosa", str(tmp_path / "r0"), config=config,
                          env_extra=host_env, timeout=180)
    assert on_host.returncode == 1, describe(on_host)
    assert "no secret key" in on_host.stderr and len(on_host.stderr.strip().splitlines()) == 1
    with_file = run_offsite("restore", "carcosa", str(tmp_path / "r1"), "--secret-keys-file",
                            str(pair.secret_file), config=config, env_extra=host_env,
                            timeout=180)
    assert with_file.returncode == 0, describe(with_file)
    assert same_tree(data, tmp_path / "r1" / "files")
    with_home = run_offsite("restore", "carcosa", str(tmp_path / "r2"), config=config,
                            env_extra={"GNUPGHOME": str(pair.secret_home)}, timeout=180)
    assert with_home.returncode == 0, describe(with_home)
    assert same_tree(data, tmp_path / "r2" / "files")
    drill = run_offsite("verify", "carcosa", "--local", "--secret-keys-file",
                        str(pair.secret_file), config=config, env_extra=host_env, timeout=180)
    assert drill.returncode == 0 and "0 mismatch(es)" in drill.stdout, describe(drill)
    keyless_drill = run_offsite("verify", "carcosa", "--local", config=config,
                                env_extra=host_env, timeout=180)
    assert keyless_drill.returncode == 1 and "no secret key" in keyless_drill.stdout, \
        describe(keyless_drill)

    escrow = run_offsite("check", "--connect", config=config,
                         env_extra={"GNUPGHOME": str(pair.secret_home)})
    assert escrow.returncode == 0, describe(escrow)
    lost = run_offsite("check", "--connect", config=config,
                       env_extra={"GNUPGHOME": str(keys["other"].secret_home)})
    assert lost.returncode == 1, describe(lost)
    assert "escrow: host carcosa: no secret key held here decrypts" in lost.stderr

    shutil.rmtree(tmp_path / "cache" / "carcosa" / "carcosa")
    after_loss = backup(run_offsite, config, "carcosa", "incr", ledger=ledger)
    assert (after_loss["state"], after_loss["type"]) == ("succeeded", "full"), after_loss
    assert any("holds only public keys" in note for note in after_loss["notes"])


def test_one_hosts_passphrase_does_not_open_another_hosts_backup(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    data = {host: data_tree(tmp_path / "data" / host, files=1, size=40_000)
            for host in ("alpha", "beta")}
    phrases = {}
    for host in ("alpha", "beta"):
        phrases[host] = tmp_path / f"{host}.passphrase"
        phrases[host].write_text(os.urandom(16).hex() + "\n")
    hosts = {host: {"scripts": {"files": {"bash": f"cp -a {data[host]}/. ."}},
                    "encryption": {"passphrase_file": str(phrases[host])}}
             for host in ("alpha", "beta")}
    config = make_config(hosts, encryption={"mode": "symmetric"})
    for host in ("alpha", "beta"):
        local(run_offsite, config, host, "full")
    local(run_offsite, config, "beta", "incr")   # the key check reads beta's own passphrase
    mine = run_offsite("restore", "alpha", str(tmp_path / "a"), config=config, timeout=180)
    assert mine.returncode == 0, describe(mine)
    assert same_tree(data["alpha"], tmp_path / "a" / "files")
    escrow = run_offsite("check", "--connect", config=config)
    assert escrow.returncode == 0, describe(escrow)

    hosts["alpha"]["encryption"] = {"passphrase_file": str(phrases["beta"])}
    swapped = make_config(hosts, filename="swapped.yaml", encryption={"mode": "symmetric"})
    theirs = run_offsite("restore", "alpha", str(tmp_path / "b"), config=swapped, timeout=180)
    assert theirs.returncode == 1, describe(theirs)
    assert "wrong passphrase" in theirs.stderr
    check = run_offsite("check", "--connect", config=swapped)
    assert check.returncode == 1, describe(check)
    assert "escrow: host alpha: the passphrase in" in check.stderr
    assert "escrow: host beta" not in check.stderr
