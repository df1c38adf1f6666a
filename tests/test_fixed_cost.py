"""The fixed cost of a run through the queue: `offsite backup --wait` returns once the run has
ended, no gpg-agent is left behind, the key check is not repeated, the collector is back on.
How fast the wait wakes up and how small an idle worker stays are figures, not assertions:
`python -m bench.gates` measures them against their goals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import load_config
from offsite.crypto.encryption import S2K_COUNT
from offsite.duplicity.keycheck import check_key_opens, remember_written
from offsite.host.settings import resolve_host
from offsite.ledger.records import RedisRunStore
from offsite.target.bucket import TargetUnreadable
from tests.helpers import describe, offsite_argv

@pytest.mark.slow
def test_wait_returns_once_the_run_has_finished(
        make_config: Any, start_worker: Any, offsite_env: Any, tmp_path: Path,
        redis_client: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo hi > hi"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    for kind in ("full", "incr", "incr"):
        proc = subprocess.run(offsite_argv(config, "backup", "carcosa", "--type", kind,
                                           "--wait", "--timeout", "120"),
                              env=dict(offsite_env), cwd=tmp_path, capture_output=True,
                              text=True, timeout=180)
        assert proc.returncode == 0, describe(proc)
        run_id = proc.stdout.split()[1]
        record = RedisRunStore(redis_client).get(run_id)
        assert record is not None and record.finished_at is not None


@pytest.mark.slow
def test_no_duplicity_command_starts_a_gpg_agent_and_sets_keep_the_strongest_key_derivation(
        make_config: Any, start_worker: Any, run_offsite: Any, offsite_env: Any,
        tmp_path: Path) -> None:
    """Left to itself gpg asks an agent for the key-derivation count; the agent it starts times
    ~0.7 s of hashing, and dies with the command (offsite.process.reaper): every command paid
    it, a restore and a listing too (duplicity's loopback check encrypts a test message before
    any action). With the count on duplicity's gpg command line no agent starts, and the sets
    keep the count gpg picked before (the largest OpenPGP can encode). With the count given,
    duplicity's loopback test never reaches an agent, so the launcher skips it: no gpg runs
    it (a `gpg` first on PATH notes every run, then runs the real one)."""
    target = tmp_path / "target"
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "echo hi > hi"}}}},
                         target={"url": f"file://{target}"})
    noted = tmp_path / "gpg-runs"
    wrapper = tmp_path / "bin" / "gpg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {noted}\nexec /usr/bin/gpg "$@"\n')
    wrapper.chmod(0o755)
    path = {"PATH": f"{wrapper.parent}:{offsite_env['PATH']}"}
    worker = start_worker(config, "carcosa", env_extra=path)
    for kind in ("full", "incr"):
        result = run_offsite("backup", "carcosa", "--type", kind, "--wait", config=config,
                             env_extra=path)
        assert result.returncode == 0, describe(result)
    assert "left behind by command" not in worker.log_text(), worker.log_text()[-3000:]
    manifests = sorted((target / "carcosa").glob("duplicity-*.manifest.gpg"))
    assert len(manifests) == 2, manifests
    passphrase = (tmp_path / "passphrase").read_text().strip()
    for manifest in manifests:
        packets = subprocess.run(
            ["gpg", "--batch", "--homedir", str(tmp_path / "gnupg-probe"), "--pinentry-mode",
             "loopback", "--passphrase", passphrase, "--list-packets", str(manifest)],
            capture_output=True, text=True, timeout=60)
        assert f"count {S2K_COUNT} " in packets.stdout, packets.stdout + packets.stderr
    for command in (("restore", "carcosa", str(tmp_path / "restored")), ("ls", "carcosa")):
        result = run_offsite(*command, "--loglevel", "INFO", config=config, env_extra=path)
        assert result.returncode == 0, describe(result)
        assert "left behind by command" not in result.stderr, describe(result)
    assert (tmp_path / "restored" / "s" / "hi").read_text() == "hi\n"
    runs = noted.read_text().splitlines()
    assert sum("--symmetric" in run for run in runs) >= 6, runs   # 3 files a set, 2 sets
    assert not [run for run in runs if "--passphrase test" in run], runs


def test_a_set_this_process_wrote_is_not_decrypted_again_with_the_same_passphrase(
        make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key check of an incremental skips a set this worker wrote with the passphrase it
    holds now; any other passphrase, or another set, is checked against the target."""
    config = load_config(make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                                     target={"url": f"file://{tmp_path}/target"}))
    written = "duplicity-full.20261129T000000Z.manifest.gpg"   # not in the (empty) target
    monkeypatch.setenv("PASSPHRASE", "the passphrase it was written with")
    remember_written("carcosa", written, "the passphrase it was written with")

    check_key_opens(resolve_host(config, "carcosa"), written)   # remembered: nothing fetched

    with pytest.raises(TargetUnreadable):         # another set: fetched (and missing)
        check_key_opens(resolve_host(config, "carcosa"), "duplicity-full.20261130T000000Z.manifest.gpg")
    monkeypatch.setenv("PASSPHRASE", "a changed passphrase")
    with pytest.raises(TargetUnreadable):         # another passphrase: checked again
        check_key_opens(resolve_host(config, "carcosa"), written)


@pytest.mark.parametrize("args", [["config-schema"], ["--config", "CONFIG", "check"]])
def test_the_command_line_turns_the_collector_back_on_before_its_work(
        args: list[str], make_config: Any, offsite_env: Any, tmp_path: Path) -> None:
    """offsite.entry loads a command with the cyclic GC off; it must be on again (with the
    loaded objects frozen out of its view) whatever the command, or a long one would never
    collect a cycle."""
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    argv = [str(config) if arg == "CONFIG" else arg for arg in args]
    probe = ("import gc, sys\n"
             "from offsite.cli import main as cli\n"
             "seen = []\n"
             "real = cli.settle\n"
             "def settle(*a):\n"
             "    real(*a)\n"
             "    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
             "cli.settle = settle\n"
             "from offsite.entry import main\n"
             f"sys.argv = ['offsite'] + {argv!r}\n"
             "code = main()\n"
             "print('SEEN', seen, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], env=dict(offsite_env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "SEEN [(True, True)]" in proc.stderr, describe(proc)


@pytest.mark.slow
def test_fulls_back_to_back_each_get_a_set_of_their_own(
        make_config: Any, start_worker: Any, run_offsite: Any, tmp_path: Path) -> None:
    """Fulls in quick succession each end as a new, confirmed set. (On a machine where an
    empty run takes under a second, one could start in the second of the previous set, whose
    name duplicity would reuse: the wait that prevents it is checked exactly in
    tests/test_catalog.py; here, that the whole path holds up.)"""
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    start_worker(config, "carcosa")
    for _ in range(3):
        result = run_offsite("backup", "carcosa", "--type", "full", "--wait", config=config)
        assert result.returncode == 0, describe(result)
    chains = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]
    assert len({chain["start"] for chain in chains}) == 3, chains
