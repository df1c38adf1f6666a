"""What the target holds, from object names: sets, chains, orphans; the plan of a run from it;
the confirmation of an upload; `--time` bounds; duplicity's error headlines. Pure."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from offsite.target.catalog import Catalog, build_catalog, parse_stamp
from offsite.run.chain import (ChainMissing, UploadUnconfirmed, confirm_uploaded, plan_run,
                                 wait_for_a_new_second)
from offsite.run.chain import last_full_time
from offsite.constants import BackupType
from offsite.duplicity.errors import describe_failure, error_records
from offsite.proof.restore import (BadRestoreRequest, RestoreRefused, check_time_covered,
                             parse_backup_time)
from offsite.target.bucket import TargetObject

T1, T2, T3, T4 = "20261101T000000Z", "20261108T000000Z", "20261115T000000Z", "20261122T000000Z"
NOW = parse_stamp(T4) + timedelta(days=1)
DAY = 86400


def full(stamp: str, *, manifest: bool = True, sigs: bool = True, vols: int = 2) -> list[str]:
    names = [f"duplicity-full.{stamp}.vol{n}.difftar.gpg" for n in range(1, vols + 1)]
    names += [f"duplicity-full.{stamp}.manifest.gpg"] if manifest else []
    names += [f"duplicity-full-signatures.{stamp}.sigtar.gpg"] if sigs else []
    return names


def inc(start: str, end: str, *, manifest: bool = True) -> list[str]:
    names = [f"duplicity-inc.{start}.to.{end}.vol1.difftar.gpg",
             f"duplicity-new-signatures.{start}.to.{end}.sigtar.gpg"]
    return names + ([f"duplicity-inc.{start}.to.{end}.manifest.gpg"] if manifest else [])


def catalog(*names: str, classes: dict[str, str] | None = None) -> Catalog:
    return build_catalog("file:///t/h", [TargetObject(name, 100, (classes or {}).get(
        name, "STANDARD")) for name in names])


def test_an_empty_target_has_no_chain() -> None:
    assert catalog().chains == [] and catalog().oldest_time is None


def test_a_full_and_its_incrementals_make_one_chain() -> None:
    cat = catalog(*full(T1), *inc(T1, T2), *inc(T2, T3), "unrelated.txt")
    (chain,) = cat.chains
    assert [s.kind for s in chain.sets] == ["full", "incr", "incr"]
    assert chain.start == parse_stamp(T1) and chain.end == parse_stamp(T3)
    assert chain.full.bytes == 200 and len(chain.full.volumes) == 2
    assert chain.as_json()["sets"][0] == {"type": "full", "time": "2026-11-01T00:00:00Z",
                                          "volumes": 2, "bytes": 200, "complete": True,
                                          "restorable": True, "sealed": False,
                                          "judged": "unsealed: judged by its contiguous "
                                          "volumes 1..2 only; its manifest's volume count was "
                                          "not checked (no key was given to read its "
                                          "manifest)"}


def test_a_set_without_manifest_is_unfinished_one_without_signatures_restores() -> None:
    cat = catalog(*full(T1, manifest=False), *full(T2, sigs=False), *full(T3))
    assert [c.start for c in cat.chains] == [parse_stamp(T2), parse_stamp(T3)]
    assert not cat.chains[0].full.complete and cat.chains[0].full.restorable
    assert "signatures are missing" in cat.chains[0].full.reason
    assert len(cat.unfinished) == 1 and cat.unfinished[0].reason == "unfinished: no manifest"


def test_a_missing_incremental_breaks_the_chain_and_leaves_orphans() -> None:
    cat = catalog(*full(T1), *inc(T2, T3), *inc(T3, T4))
    (chain,) = cat.chains
    assert chain.incrementals == []
    assert [o.time for o in cat.broken_after(chain)] == [parse_stamp(T3), parse_stamp(T4)]


def test_prefixed_names_and_glacier_volumes_are_read() -> None:
    names = [f"data/{n}" if ".difftar" in n else n for n in full(T1)]
    cat = catalog(*names, classes={names[0]: "GLACIER"})
    assert cat.chains[0].full.archived == [names[0]]


def test_local_part_manifests_are_not_sets() -> None:
    cat = catalog(*full(T1, manifest=False), f"duplicity-full.{T1}.manifest.part")
    assert cat.chains == []


# ------------------------------------------------------------------ plan_run

def plan(cat: Catalog, requested: BackupType = BackupType.INCR, *, cache: str | None = T1,
         max_full: int = 35 * DAY, allow: bool = True) -> tuple[BackupType, tuple[str, ...]]:
    result = plan_run(requested, cat, parse_stamp(cache) if cache else None,
                      max_full_interval_s=max_full, allow_promotion=allow, now=NOW, host="h")
    return result.backup_type, result.notes


def test_an_incremental_on_a_complete_chain_stays_incremental() -> None:
    assert plan(catalog(*full(T1), *inc(T1, T2))) == (BackupType.INCR, ())


def test_an_incremental_without_a_chain_in_the_target_is_promoted_naming_the_target() -> None:
    kind, (note,) = plan(catalog())
    assert kind == BackupType.FULL
    assert note == "promoted to full: the target file:///t/h holds no complete backup chain"


def test_a_broken_chain_promotes() -> None:
    kind, (note,) = plan(catalog(*full(T1), *inc(T2, T3)))
    assert kind == BackupType.FULL and "is broken" in note and "2026-11-15" in note


def test_an_old_full_promotes_with_its_age() -> None:
    kind, (note,) = plan(catalog(*full(T1)), max_full=7 * DAY)
    assert kind == BackupType.FULL
    assert note == "promoted to full: the last full is 22d old (max_full_interval 7d)"


def test_without_promotion_a_missing_chain_fails_as_chain_missing() -> None:
    with pytest.raises(ChainMissing) as caught:
        plan(catalog(), allow=False)
    assert caught.value.failure_class == "chain_missing"
    assert "promote_to_full" in caught.value.cause


def test_a_lost_cache_with_the_chain_present_stays_incremental_and_says_so() -> None:
    kind, (note,) = plan(catalog(*full(T1)), cache=None)
    assert kind == BackupType.INCR
    assert "resynced the cache from the target" in note and "no chain" in note


def test_a_full_needs_no_chain() -> None:
    assert plan(catalog(), BackupType.FULL) == (BackupType.FULL, ())


def test_the_cache_reads_its_newest_completed_full(tmp_path: Path) -> None:
    folder = tmp_path / "h"
    folder.mkdir()
    for name in (f"duplicity-full.{T1}.manifest", f"duplicity-full.{T2}.manifest",
                 f"duplicity-full.{T3}.manifest.part"):
        (folder / name).touch()
    assert last_full_time(tmp_path, "h") == parse_stamp(T2)
    assert last_full_time(tmp_path, "other") is None


# ------------------------------------------------------------------ confirm_uploaded

def test_an_upload_is_confirmed_by_a_new_set_of_its_type() -> None:
    before = catalog(*full(T1))
    after = catalog(*full(T1), *inc(T1, T2))
    assert confirm_uploaded(before, after, BackupType.INCR, "h", NOW).time == parse_stamp(T2)


@pytest.mark.parametrize("after_names", [
    full(T1),                               # nothing new
    [*full(T1), *inc(T1, T2, manifest=False)],  # the new set is unfinished
    [],                                     # the target was emptied
    [*full(T1), *inc(T2, T3)],              # the new set does not continue the chain
])
def test_an_upload_without_a_new_complete_set_is_unconfirmed(after_names: list[str]) -> None:
    with pytest.raises(UploadUnconfirmed) as caught:
        confirm_uploaded(catalog(*full(T1)), catalog(*after_names), BackupType.INCR, "h",
                         NOW)
    assert caught.value.failure_class == "upload_unconfirmed"


def test_a_resumed_full_with_an_older_time_is_still_new() -> None:
    assert confirm_uploaded(catalog(), catalog(*full(T1)), BackupType.FULL, "h", NOW)


# ------------------------------------------------------------------ restore --time

def test_backup_times_are_read_as_duplicity_reads_them() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    assert parse_backup_time("2026-11-01T00:00:00Z", now) == parse_stamp(T1)
    assert parse_backup_time("2h", now) == now - timedelta(hours=2)
    assert parse_backup_time("now", now) == now


@pytest.mark.parametrize("text", ["garbage", "", " ", "x" * 1000, "2026-13-45", "\x00", "-1"])
def test_bad_backup_times_are_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(BadRestoreRequest) as caught:
        parse_backup_time(text, NOW)
    assert "bad --time" in caught.value.cause and "ISO 8601" in caught.value.cause


def test_a_time_before_the_oldest_backup_is_refused_naming_it() -> None:
    with pytest.raises(RestoreRefused) as caught:
        check_time_covered(catalog(*full(T2)), parse_stamp(T1), "h")
    assert "oldest backup of h is from 2026-11-08T00:00:00Z" in caught.value.cause
    check_time_covered(catalog(*full(T2)), parse_stamp(T3), "h")
    check_time_covered(catalog(*full(T2)), None, "h")


def test_a_restore_from_an_empty_target_says_no_backup_yet() -> None:
    with pytest.raises(RestoreRefused, match="no backup yet"):
        check_time_covered(catalog(), None, "h")


# ------------------------------------------------------------------ error headlines

WRONG_PASSPHRASE_LOG = """NOTICE 1
. Synchronizing remote metadata to local cache...

ERROR 31 GPGError
. GPGError: GPG Failed, see log below:
. ===== Begin GnuPG log =====
. gpg: decryption failed: Bad session key
. ===== End GnuPG log =====
. 
"""


def test_the_log_error_records_are_read() -> None:
    (record,) = error_records(WRONG_PASSPHRASE_LOG)
    assert "Bad session key" in record


@pytest.mark.parametrize(("code", "log", "stderr", "headline"), [
    (31, WRONG_PASSPHRASE_LOG, "===== End GnuPG log =====", "wrong passphrase"),
    (30, "ERROR 30 CollectionsError\n. CollectionsError: No backup chains found\n", "",
     "no backup yet"),
    (50, "ERROR 50\n. File x.difftar.gpg seems to be in a long term storage,Please use AWS\n",
     "", "archived (Glacier"),
    (23, "ERROR 23\n. Another duplicity instance is already running with this archive "
         "directory\n", "", "cache lock"),
    (31, "", "gpg: decryption failed: No secret key", "no secret key"),
    (50, "", "botocore.exceptions.EndpointConnectionError: Could not connect", "unreachable"),
    (44, "", "", "does not have the size"),
    (99, "", "boom", "duplicity failed"),
])
def test_failures_are_headed_by_their_real_cause(code: int, log: str, stderr: str,
                                                headline: str) -> None:
    assert headline in describe_failure(code, log, stderr).headline


def test_without_a_listing_before_the_upload_only_a_set_from_its_start_counts() -> None:
    after = catalog(*full(T1), *inc(T1, T2))
    assert confirm_uploaded(None, after, BackupType.INCR, "h", parse_stamp(T2)).time == \
        parse_stamp(T2)
    with pytest.raises(UploadUnconfirmed):   # an older set proves nothing about this upload
        confirm_uploaded(None, after, BackupType.INCR, "h", parse_stamp(T3))


def test_a_set_started_in_the_second_of_the_newest_set_waits_for_the_next_second() -> None:
    """duplicity names a set by its start second: a full right after another would take the
    previous set's name, so the upload waits for the next second; never for a set in the
    past, an empty target, or a clock far behind the target's newest set."""
    cat = catalog(*full(T1), *inc(T1, T2))
    newest = parse_stamp(T2)
    assert wait_for_a_new_second(cat, newest + timedelta(milliseconds=300)) == 0.7
    assert wait_for_a_new_second(cat, newest + timedelta(seconds=1)) == 0.0
    assert wait_for_a_new_second(cat, newest + timedelta(days=1)) == 0.0
    assert wait_for_a_new_second(catalog(), newest) == 0.0
    assert wait_for_a_new_second(None, newest) == 0.0
    assert wait_for_a_new_second(cat, newest - timedelta(minutes=5)) == 0.0   # clock behind
    unfinished = catalog(*full(T1), *full(T3, manifest=False))
    assert wait_for_a_new_second(unfinished, parse_stamp(T3)) == 1.0
