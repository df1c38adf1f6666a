"""The seal of every uploaded set (offsite.target.seal, offsite.run.sealing): its round trip on
S3 (moto) and file://, symmetric and public-key (the host writes a seal it cannot decrypt
anything from; a node without any key judges it), made from the upload's own hashes without
reading the set back (moto's request log), and its digest in the run record."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from offsite.target.seal import parse_seal
from tests.helpers import describe
from tests.security_harness import KeyPair, make_key_pair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyPair]:
    pair = make_key_pair(tmp_path_factory.mktemp("keys"), "backup")
    try:
        yield pair
    finally:
        for home in (pair.secret_home, pair.public_home):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                           capture_output=True, timeout=30)


def _read_target(aws: Any, tmp_path: Path, store: str) -> dict[str, bytes]:
    if store == "file":
        folder = tmp_path / "target" / "carcosa"
        return {p.name: p.read_bytes() for p in folder.iterdir()}
    return {key.split("/", 1)[1]: aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read()
            for key in aws.object_keys("carcosa/")}


@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3", "file"])
@pytest.mark.parametrize("mode", ["symmetric", "public-key"])
def test_every_set_is_sealed_with_the_sha256_of_its_stored_objects(
        store: str, mode: str, make_config: Any, run_offsite: Any, aws: Any, moto: Any,
        tmp_path: Path, keys: KeyPair) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(1_500_000))
    overrides: dict[str, Any] = {}
    env: dict[str, str | None] = {}
    if store == "file":
        overrides["target"] = {"url": f"file://{tmp_path}/target", "volsize": 1}
    else:
        overrides["target"] = {"url": f"boto3+s3://{aws.bucket}", "volsize": 1,
                               "endpoint_url": aws.endpoint_url, "region": aws.region}
    if mode == "public-key":
        overrides["encryption"] = {"mode": "public-key", "recipients": [keys.fingerprint],
                                   "public_keys_file": str(keys.public_file)}
        env = {"GNUPGHOME": str(keys.public_home), "PASSPHRASE": None}
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         **overrides)
    requests_before = moto.log_path.stat().st_size
    for kind in ("full", "incr"):
        (data / f"{kind}.txt").write_text(kind)
        result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config,
                             env_extra=env, timeout=180)
        assert result.returncode == 0 and "succeeded" in result.stdout, describe(result)
    with open(moto.log_path, "rb") as log:
        log.seek(requests_before)
        requests = log.read().decode(errors="replace").splitlines()
    # sealing hashed what duplicity uploaded: no volume or signatures was read back
    read_back = [line for line in requests if f"GET /{aws.bucket}/carcosa/" in line
                 and ("difftar" in line or "sigtar" in line)]
    assert read_back == []
    if store == "s3":   # each run lists the host twice (before and after duplicity, which lists
        # on its own too) and reads each seal once: the one it wrote, and the full's in the incr
        ours = [line for line in requests if "list-type=2&prefix=carcosa/&delimiter" in line]
        seal_reads = [line for line in requests if f"GET /{aws.bucket}/carcosa/offsite-seal"
                      in line]
        assert (len(ours), len(seal_reads)) == (4, 3), "\n".join(requests)
    stored = _read_target(aws, tmp_path, store)
    seals = [parse_seal(body, name) for name, body in stored.items()
             if name.startswith("offsite-seal.")]
    assert [(s.kind, s.position) for s in sorted(seals, key=lambda s: s.time)] == [
        ("full", 0), ("incr", 1)]
    sealed = {o.name for seal in seals for o in seal.objects}
    assert sealed == {name for name in stored if name.startswith(("duplicity-", "data-"))}
    staged = [p.stat().st_size for p in data.iterdir()]
    assert [(s.restored_files, s.restored_bytes) for s in sorted(seals, key=lambda s: s.time)] \
        == [(len(staged) - 1, sum(staged) - len("incr")), (len(staged), sum(staged))]
    for seal in seals:
        assert seal.chain_start == min(s.time for s in seals)
        for obj in seal.objects:
            assert obj.size == len(stored[obj.name])
            assert obj.sha256 == hashlib.sha256(stored[obj.name]).hexdigest()
    # the control node judges it without any key
    listed = run_offsite("list", "carcosa", "--json", config=config,
                         env_extra={"PASSPHRASE": None, "GNUPGHOME": str(tmp_path)})
    assert listed.returncode == 0, describe(listed)
    (chain,) = json.loads(listed.stdout)["chains"]
    assert [(s["type"], s["sealed"], s["complete"]) for s in chain["sets"]] == [
        ("full", True, True), ("incr", True, True)]


@pytest.mark.slow
def test_a_run_records_the_digest_of_its_seal(make_config: Any, run_offsite: Any,
                                              start_worker: Any, aws: Any,
                                              tmp_path: Path) -> None:
    from tests.test_backup_flow import backup
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}})
    start_worker(config, "carcosa")
    record = backup(run_offsite, config, "carcosa", "full")
    name, digest = record["seal"].split(" sha256:")
    body = aws.s3.get_object(Bucket=aws.bucket, Key=f"carcosa/{name}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    assert parse_seal(body, name).run_id == record["run_id"]
    assert datetime.now(timezone.utc) >= parse_seal(body, name).time
