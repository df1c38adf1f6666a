"""A hostile target: sets judged by their seals (offsite.target.seal), not by the names present.
The judgement of tampered sets and a prune's plan on them (pure), and the tampering matrix
through the real CLI: for the full, a middle and the newest incremental, a volume, the manifest
and the signatures deleted, truncated, renamed, swapped with another set's, replaced by a
foreign-key file (and a volume's bytes flipped): what `list --json`, `prune --apply`,
`restore`, `verify` and the next incremental do."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from offsite.target.bucket import TargetObject
from offsite.target.catalog import build_catalog, parse_stamp
from offsite.target.seal import Seal, SealedObject, SealUnreadable, parse_seal, seal_name
from tests.helpers import (AwsResources, ConfigFactory, MotoServer, build_offsite_env,
                           describe, offsite_argv, run_command)

T1, T2, T3 = "20261101T000000Z", "20261108T000000Z", "20261115T000000Z"


# --------------------------------------------------------------------------- pure judgement


def _objects(kind: str, end: str, start: str | None, vols: int) -> list[tuple[str, str]]:
    base = f"full.{end}" if kind == "full" else f"inc.{start}.to.{end}"
    sig = (f"duplicity-full-signatures.{end}.sigtar.gpg" if kind == "full"
           else f"duplicity-new-signatures.{start}.to.{end}.sigtar.gpg")
    return ([(f"data-duplicity-{base}.vol{n}.difftar.gpg", "volume") for n in range(1, vols + 1)]
            + [(f"duplicity-{base}.manifest.gpg", "manifest"), (sig, "signatures")])


def sealed_set(kind: str, end: str, start: str | None = None, vols: int = 3,
               chain_start: str = T1, position: int = 0) -> tuple[Seal, list[TargetObject]]:
    named = _objects(kind, end, start, vols)
    seal = Seal(kind=kind, time=parse_stamp(end), start=parse_stamp(start) if start else None,
                chain_start=parse_stamp(chain_start), position=position,
                objects=tuple(SealedObject(name, 1000, "0" * 64, role)   # type: ignore[arg-type]
                              for name, role in named))
    return seal, [TargetObject(name, 1000) for name, _ in named] + [TargetObject(seal.name, 300)]


def judge(sets: list[tuple[Seal, list[TargetObject]]], extra: list[TargetObject] | None = None,
          drop: set[str] | None = None, sizes: dict[str, int] | None = None) -> Any:
    objects = [obj for _, objs in sets for obj in objs if obj.name not in (drop or set())]
    objects = [TargetObject(o.name, (sizes or {}).get(o.name, o.size)) for o in objects]
    return build_catalog("file:///t/h", objects + (extra or []),
                         {seal.key: seal for seal, _ in sets})


def three_sets() -> list[tuple[Seal, list[TargetObject]]]:
    return [sealed_set("full", T1), sealed_set("incr", T2, T1, 1, position=1),
            sealed_set("incr", T3, T2, 1, position=2)]


def test_sealed_sets_make_one_chain_and_a_forged_future_manifest_is_ignored() -> None:
    forged = TargetObject("duplicity-full.20991231T000000Z.manifest.gpg", 500)
    cat = judge(three_sets(), extra=[forged, TargetObject("duplicity-junk", 0)])
    (chain,) = cat.chains
    assert [s.kind for s in chain.sets] == ["full", "incr", "incr"]
    assert all(s.complete and s.seal is not None for s in chain.sets)
    assert forged.name in cat.ignored and "without a seal" in cat.ignored[forged.name]
    assert "duplicity-junk" in cat.ignored
    assert cat.as_json()["ignored"][0]["reason"]


@pytest.mark.parametrize("change", ["delete", "truncate", "rename"])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_tampered_volume_breaks_its_set_and_names_the_volume(change: str,
                                                               position: int) -> None:
    sets = three_sets()
    seal = sets[position][0]
    volume = seal.named("volume")[-1].name
    drop, sizes, extra = set(), {}, []
    if change in ("delete", "rename"):
        drop = {volume}
    if change == "rename":   # vol3 -> vol4: a name the seal does not hold
        extra = [TargetObject(volume.replace(".vol3.", ".vol4.").replace(".vol1.", ".vol2."),
                              1000)]
    if change == "truncate":
        sizes = {volume: 10}
    cat = judge(sets, extra=extra, drop=drop, sizes=sizes)
    chain_sets = [s for chain in cat.chains for s in chain.sets]
    assert len(chain_sets) == position   # the chain ends before the tampered set
    broken = next(s for s in cat.unfinished if s.time == seal.time)
    assert volume in broken.reason and not broken.restorable
    assert broken.as_json()["complete"] is False
    if cat.chains:
        assert cat.broken_after(cat.chains[-1])   # an incremental would be promoted
    for name in (o.name for o in extra):
        assert name in cat.ignored


def test_missing_signatures_leave_a_set_restorable_but_not_continuable() -> None:
    sets = three_sets()
    sig = sets[2][0].named("signatures")[0].name
    cat = judge(sets, drop={sig})
    (chain,) = cat.chains
    assert chain.last.restorable and not chain.last.complete
    assert f"signatures {sig} are missing" in chain.last.reason


def test_unsealed_sets_need_contiguous_volumes() -> None:
    names = [name for name, _ in _objects("full", T1, None, 3) if ".vol2." not in name]
    cat = build_catalog("file:///t/h", [TargetObject(n, 100) for n in names])
    assert not cat.chains and "volume(s) 2 of 1..3 missing" in cat.unfinished[0].reason


def test_an_unsealed_set_short_of_its_manifests_volumes_does_not_restore() -> None:
    """The last volume deleted leaves no gap: where the key reads the manifest's count, the
    set is broken (named); where it cannot, contiguity alone judges, and the set says so."""
    from offsite.proof.retention import plan_prune
    from offsite.target.catalog import ManifestCount
    names = [name for name, _ in _objects("full", T1, None, 2) + _objects("full", T2, None, 3)
             if not name.endswith(f"{T2}.vol3.difftar.gpg")]
    objects = [TargetObject(n, 100) for n in names]
    read: list[str] = []

    def three(name: str, size: int) -> ManifestCount:
        read.append(name)
        return ManifestCount(2 if T1 in name else 3)
    cat = build_catalog("file:///t/h", objects, read_manifest=three)
    (chain,) = cat.chains
    (broken,) = cat.unfinished
    assert chain.start == parse_stamp(T1) and "are the 2 its manifest lists" in chain.full.judged
    assert f"volume data-duplicity-full.{T2}.vol3.difftar.gpg is missing" in broken.reason
    assert "lists 3 volume(s), the target holds 1..2" in broken.reason
    assert cat.broken_after(chain) == [broken]   # the next incremental is promoted
    plan = plan_prune(cat, 1, None, "carcosa")
    assert plan.refused and plan.objects == [] and "vol3" in plan.refused[0]
    assert len(read) == 2
    blind = build_catalog("file:///t/h", objects, read_manifest=lambda name, size: ManifestCount(
        None, "this node holds no secret key to decrypt it (public-key mode)"))
    assert [c.start for c in blind.chains] == [parse_stamp(T1), parse_stamp(T2)]
    judged = blind.as_json()["chains"][1]["sets"][0]["judged"]
    assert "contiguous volumes 1..2 only" in judged and "public-key mode" in judged


def test_a_manifest_lists_its_volumes() -> None:
    from offsite.crypto.manifest_count import volumes_listed
    text = ("Hostname h\nFilelist 1\n    new      Volume 9:x\nVolume 1:\n    StartingPath   .\n"
            "Volume 2:\n    StartingPath   a\n")
    assert volumes_listed(text) == 2 and volumes_listed("Filelist 0\n") is None


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"format": "offsite-seal/1"}',
                                  b"\xff\xfe", json.dumps({"format": "offsite-seal/1"}).encode()
                                  + b" " * (1024 * 1024)])


def test_a_seal_that_is_not_a_seal_is_refused_by_name(data: bytes) -> None:
    name = seal_name("full", parse_stamp(T1), None)
    with pytest.raises(SealUnreadable, match="is not an offsite seal"):
        parse_seal(data, name)


def test_a_seal_round_trips_and_must_match_its_name() -> None:
    seal, _ = sealed_set("incr", T2, T1, 2, position=1)
    assert parse_seal(seal.to_bytes(), seal.name) == seal
    with pytest.raises(SealUnreadable, match="another set"):
        parse_seal(seal.to_bytes(), seal_name("full", parse_stamp(T1), None))


@pytest.mark.parametrize("restored", ["1 GB", [], {"files": 1}, {"files": 1, "bytes": -1},
                                      {"files": True, "bytes": 1}, {"files": 1, "bytes": 2**64},
                                      {"files": 1, "bytes": 1.5}])
def test_a_seals_restored_size_that_is_not_two_counts_is_refused(restored: Any) -> None:
    seal, _ = sealed_set("full", T1)
    body = json.loads(seal.to_bytes())
    body["restored"] = restored
    with pytest.raises(SealUnreadable, match="bad field"):
        parse_seal(json.dumps(body).encode(), seal.name)
    body["restored"] = {"files": 3, "bytes": 2**40}   # what a drill needs room for
    assert parse_seal(json.dumps(body).encode(), seal.name).restored_bytes == 2**40


# --------------------------------------------------------------------------- prune


def test_prune_of_a_target_whose_newest_full_is_broken_deletes_nothing() -> None:
    from offsite.proof.retention import plan_prune
    chain_a = [sealed_set("full", T1), sealed_set("incr", T2, T1, 1, position=1)]
    chain_b = [sealed_set("full", T3, vols=3, chain_start=T3)]
    vol2 = chain_b[0][0].named("volume")[1].name
    plan = plan_prune(judge(chain_a + chain_b, drop={vol2}), 1, None, "carcosa")
    assert plan.refused and vol2 in plan.refused[0] and plan.objects == []
    assert "refused, nothing deleted" in plan.describe()[0]
    whole = plan_prune(judge(chain_a + chain_b), 1, None, "carcosa")
    assert not whole.refused and len(whole.dropped) == 1


def test_once_drills_exist_a_chain_goes_only_when_a_newer_one_holds_a_verified_set() -> None:
    from offsite.proof.retention import plan_prune
    sets = [sealed_set("full", T1), sealed_set("full", T2, chain_start=T2),
            sealed_set("full", T3, chain_start=T3)]
    cat = judge(sets)
    verified_first = plan_prune(cat, 1, parse_stamp(T1), "carcosa")
    assert verified_first.dropped == [] and len(verified_first.kept) == 3
    verified_middle = plan_prune(cat, 1, parse_stamp(T2), "carcosa")
    assert [c.start for c in verified_middle.dropped] == [parse_stamp(T1)]
    lost_verified = plan_prune(cat, 1, parse_stamp("20261001T000000Z"), "carcosa")
    assert lost_verified.dropped == []


# --------------------------------------------------------------------------- the matrix
# A chain full + incr + incr (volsize 1, the full has 3 volumes) is made once per module; each
# case copies its target and cache, tampers with one object and asks every reader. The cases
# share the module's bucket, topic and queue (no command of theirs reaches S3 or SNS: their
# target is a folder), and the backup after the tampering copies a small folder of the case's
# own: what it proves is that it runs, promoted to a full, not how much it writes.


POSITIONS = {"full": 0, "middle": 1, "newest": 2}
OPERATIONS = ["delete", "truncate", "rename", "swap", "foreign", "flip"]
DEADLINE_S = 150   # no command of a case may run longer (the hang ran for 12 h)


class Template:
    def __init__(self, root: Path, factory: ConfigFactory, data: Path, env: dict[str, str]):
        self.root, self.factory, self.data, self.env = root, factory, data, env
        self.sets: list[dict[str, Any]] = []

    def case_config(self, folder: Path, broker_url: str, source: Path) -> Path:
        """A case's config: its own copy of the target and cache under `folder`, the
        template's passphrase and staging, the module's AWS resources, `source` backed up."""
        factory = ConfigFactory(folder, broker_url, self.factory.aws)
        return factory({"carcosa": {"scripts": {"files": {"bash": f"cp -a {source}/. ."}}}},
                       target={"url": f"file://{folder}/target", "volsize": 1},
                       encryption={"mode": "symmetric",
                                   "passphrase_file": str(self.factory.passphrase_file)},
                       staging_root=str(self.root / "staging"),
                       retention={"keep_full_chains": 1})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("template")
    aws = AwsResources(moto)
    factory = ConfigFactory(root, "redis://127.0.0.1:1/0", aws)
    data = root / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(2_500_000))
    home = root / "home"
    home.mkdir()
    env = dict(build_offsite_env(os.environ, home))
    made = Template(root, factory, data, env)
    config = factory({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                     target={"url": f"file://{root}/target", "volsize": 1})
    try:
        for number, kind in enumerate(("full", "incr", "incr")):
            (data / f"{number}.txt").write_text(f"{kind} {number}")
            result = run_command(offsite_argv(config, "backup", "carcosa", "--type", kind,
                                              "--local"), env=env, cwd=root, timeout=180)
            assert result.returncode == 0, describe(result)
        listed = run_command(offsite_argv(config, "list", "carcosa", "--json"), env=env,
                             cwd=root, timeout=60)
        made.sets = json.loads(listed.stdout)["chains"][0]["sets"]
        assert len(made.sets) == 3
        yield made
    finally:
        aws.close()


def _set_objects(folder: Path, position: int) -> dict[str, Seal]:
    seals = sorted((parse_seal(p.read_bytes(), p.name) for p in folder.glob("offsite-seal.*")),
                   key=lambda seal: seal.time)
    return {"this": seals[position], "other": seals[2 if position == 0 else 0]}


def _foreign(size: int, into: Path) -> None:
    """A gpg file encrypted with another passphrase, of about the original's size."""
    subprocess.run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase",
                    "not-the-fleet-passphrase", "--symmetric", "--compress-algo", "none", "-o",
                    str(into)], input=os.urandom(max(size - 200, 10)), check=True,
                   capture_output=True, timeout=60)


def tamper(folder: Path, position: int, role: str, operation: str) -> str:
    """Change one object of the set at `position` as a failing disk, a half copy or a holder
    of the upload keys would; returns its name."""
    seals = _set_objects(folder, position)
    victim = seals["this"].named(role)[-1]   # type: ignore[arg-type]
    path = folder / victim.name
    if operation == "delete":
        path.unlink()
    elif operation == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(victim.size // 2)
    elif operation == "rename":
        number = victim.name.rsplit(".vol", 1)[-1].split(".")[0] if role == "volume" else ""
        renamed = (victim.name.replace(f".vol{number}.", f".vol{int(number) + 1}.")
                   if number else victim.name.replace("duplicity-", "duplicity-renamed-"))
        path.rename(folder / renamed)
    elif operation == "swap":
        other = seals["other"].named(role)[0]   # type: ignore[arg-type]
        mine, theirs = path.read_bytes(), (folder / other.name).read_bytes()
        path.write_bytes(theirs)
        (folder / other.name).write_bytes(mine)
    elif operation == "foreign":
        _foreign(victim.size, path)
    elif operation == "flip":
        body = bytearray(path.read_bytes())
        middle = len(body) // 2
        body[middle:middle + 64] = bytes(byte ^ 0xFF for byte in body[middle:middle + 64])
        path.write_bytes(bytes(body))
    return victim.name


CASES = [(where, role, operation) for where in POSITIONS for role in ("volume", "manifest",
                                                                       "signatures")
         for operation in OPERATIONS if operation != "flip" or role == "volume"]


@pytest.mark.slow
@pytest.mark.parametrize(("where", "role", "operation"), CASES,
                         ids=["-".join(case) for case in CASES])


def test_a_tampered_target_is_never_reported_whole_nor_loses_what_restores(
        where: str, role: str, operation: str, template: Template, redis_url: str,
        run_offsite: Any, tmp_path: Path) -> None:
    position = POSITIONS[where]
    shutil.copytree(template.root / "target", tmp_path / "target", symlinks=True)
    shutil.copytree(template.root / "cache", tmp_path / "cache", symlinks=True)
    following_data = tmp_path / "following"
    following_data.mkdir()
    config = template.case_config(tmp_path, redis_url, following_data)
    folder = tmp_path / "target" / "carcosa"
    name = tamper(folder, position, role, operation)
    tampered_time = template.sets[position]["time"]
    # signatures that are missing leave the set restorable (a restore does not read them; the
    # launcher keeps duplicity from dropping a newest set without them), so the newest set
    # restores, byte-identical; present but not as sealed, an empty-cache restore fails on
    # them: the set does not restore
    signatures_missing = role == "signatures" and operation in ("delete", "rename")
    restores = signatures_missing
    detected_by_size = operation != "flip"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_offsite(*args, config=config, timeout=DEADLINE_S)

    listing = json.loads(run("list", "carcosa", "--json").stdout)
    in_chains = [s for chain in listing["chains"] for s in chain["sets"]]
    tampered = next((s for s in in_chains + listing["unfinished"] + listing["orphans"]
                     if s["time"] == tampered_time), None)
    assert tampered is not None, listing
    if detected_by_size:
        assert tampered["complete"] is False, listing
    if detected_by_size:
        assert name in tampered["reason"], listing
    if not signatures_missing and detected_by_size:
        assert tampered["restorable"] is False, listing
        assert all(s["time"] < tampered_time for s in in_chains), listing

    before = sorted(p.name for p in folder.iterdir())
    pruned = run("prune", "carcosa", "--apply")
    assert sorted(p.name for p in folder.iterdir()) == before, describe(pruned)

    restored = run("restore", "carcosa", str(tmp_path / "restored"))
    drill = run("verify", "carcosa", "--local")
    if restores:
        assert restored.returncode == 0, describe(restored)
        assert f"set of {template.sets[-1]['time']}" in restored.stdout, describe(restored)
        assert {p.name: p.read_bytes() for p in (tmp_path / "restored" / "files").iterdir()} \
            == {p.name: p.read_bytes() for p in template.data.iterdir()}
        assert drill.returncode == 0 and "0 mismatch(es)" in drill.stdout, describe(drill)
    else:
        assert restored.returncode == 1 and name in restored.stderr, describe(restored)
        assert "Error: 2" not in restored.stderr
        assert drill.returncode == 1 and name in drill.stdout, describe(drill)
        assert "succeeded" not in drill.stdout

    (following_data / "next.txt").write_text(f"after {where} {role} {operation}")
    following = run("backup", "carcosa", "--type", "incr", "--local")
    assert following.returncode == 0, describe(following)
    if detected_by_size:
        assert "promoted to full" in following.stdout, describe(following)


@pytest.mark.slow
def test_an_unsealed_chain_whose_last_volume_is_gone_is_judged_by_its_manifest(
        template: Template, redis_url: str, run_offsite: Any, tmp_path: Path) -> None:
    """Plain duplicity (no seals): chain A (the template's) and a newer full B whose last
    volume was deleted. Contiguity sees 1..2 whole; the manifest (decrypted: this node holds
    the passphrase) lists 3: B is broken, named, and prune keeps chain A."""
    shutil.copytree(template.root / "target", tmp_path / "target", symlinks=True)
    shutil.copytree(template.root / "cache", tmp_path / "cache", symlinks=True)
    config = template.case_config(tmp_path, redis_url, template.data)
    folder = tmp_path / "target" / "carcosa"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_offsite(*args, config=config, timeout=DEADLINE_S)
    made = run("backup", "carcosa", "--type", "full", "--local")
    assert made.returncode == 0, describe(made)
    for seal in folder.glob("offsite-seal.*"):
        seal.unlink()
    last = max(folder.glob("data-duplicity-full.*.vol3.difftar.gpg"))
    last.unlink()
    # chain A's manifests are read from duplicity's plain copies in the cache, B's decrypted
    stamp = last.name.split(".")[1]
    (tmp_path / "cache" / "carcosa" / "carcosa" / f"duplicity-full.{stamp}.manifest").unlink()
    listing = json.loads(run("list", "carcosa", "--json").stdout)
    (chain,) = listing["chains"]
    assert "are the 3 its manifest lists" in chain["sets"][0]["judged"], listing
    (broken,) = listing["unfinished"]
    assert broken["complete"] is False and broken["sealed"] is False, listing
    assert f"volume {last.name} is missing" in broken["reason"], listing
    before = sorted(p.name for p in folder.iterdir())
    pruned = run("prune", "carcosa", "--apply")
    assert pruned.returncode == 1 and last.name in pruned.stderr, describe(pruned)
    assert sorted(p.name for p in folder.iterdir()) == before
    restored = run("restore", "carcosa", str(tmp_path / "restored"))
    assert restored.returncode == 1 and last.name in restored.stderr, describe(restored)
    following = run("backup", "carcosa", "--type", "incr", "--local")
    assert following.returncode == 0 and "promoted to full" in following.stdout, \
        describe(following)
