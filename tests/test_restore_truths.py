"""What restore, prune and the smaller outputs must never do, on real duplicity and gpg: prune
never deletes the last chain that restores (the audit's data loss); a restore that stops
receiving bytes fails naming the volume; a FIFO is refused, a blank PASSPHRASE refused, script
stderr cannot drive a terminal, a folder beside DEST is never touched, a script that writes
nothing ends `warning`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe


def _backup(run_offsite: Any, config: Path, kind: str) -> str:
    result = run_offsite("backup", "carcosa", "--type", kind, "--local", config=config,
                         timeout=180)
    assert result.returncode == 0 and "succeeded" in result.stdout, describe(result)
    return result.stdout


@pytest.mark.slow
def test_prune_never_deletes_the_last_chain_that_restores(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    """The audit's data loss: full, incr, full with volsize 1; chain B's vol2 deleted; prune
    --apply used to keep B (by its names) and delete A."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(2_500_000))
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/target", "volsize": 1},
                         retention={"keep_full_chains": 1})
    _backup(run_offsite, config, "full")
    (data / "second.txt").write_text("chain A's incremental")
    _backup(run_offsite, config, "incr")
    expected = {p.name: p.read_bytes() for p in data.iterdir()}
    (data / "third.txt").write_text("chain B")
    _backup(run_offsite, config, "full")
    folder = tmp_path / "target" / "carcosa"
    chains = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)["chains"]
    assert len(chains) == 2 and chains[1]["sets"][0]["volumes"] == 3
    chain_a_end = chains[0]["end"]
    vol2 = sorted(folder.glob("*duplicity-full.*.vol2.difftar.gpg"))[-1]   # chain B's
    vol2.unlink()
    before = sorted(p.name for p in folder.iterdir())

    plan = run_offsite("prune", "carcosa", config=config)
    assert "refused, nothing deleted" in plan.stdout and vol2.name in plan.stdout, describe(plan)
    applied = run_offsite("prune", "carcosa", "--apply", config=config)
    assert applied.returncode == 1, describe(applied)
    assert vol2.name in applied.stderr + applied.stdout
    assert sorted(p.name for p in folder.iterdir()) == before
    runs = json.loads(run_offsite("status", "carcosa", "--json", config=config).stdout)
    assert runs[0]["type"] == "prune" and runs[0]["error"]["failure_class"] == "prune_refused"

    refused = run_offsite("restore", "carcosa", str(tmp_path / "latest"), config=config)
    assert refused.returncode == 1 and vol2.name in refused.stderr, describe(refused)
    assert f"--time {chain_a_end}" in refused.stderr
    restored = run_offsite("restore", "carcosa", str(tmp_path / "a"), "--time", chain_a_end,
                           config=config, timeout=180)
    assert restored.returncode == 0, describe(restored)
    assert f"the incr set of {chain_a_end}" in restored.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "a" / "files").iterdir()} == expected


# --------------------------------------------------------------------------- progress deadline


class StallingProxy:
    """An HTTP proxy in front of moto that answers every request but the GET of one object,
    whose body it never sends (a backend that hangs mid-restore)."""

    def __init__(self, upstream: str, stall: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit
        target = urlsplit(upstream)
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "GET" and stall in self.path:
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    proxy.release.wait(120)
                    return
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port,
                                                           timeout=30)
                upstream_conn.request(self.command, self.path, body=body,
                                      headers=dict(self.headers))
                answer = upstream_conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_a_restore_that_stops_receiving_bytes_fails_naming_the_volume(
        make_config: Any, run_offsite: Any, aws: Any, tmp_path: Path) -> None:
    import time
    data = tmp_path / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(2_500_000))
    hosts = {"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}}
    config = make_config(hosts, target={"url": f"boto3+s3://{aws.bucket}", "volsize": 1,
                                        "endpoint_url": aws.endpoint_url,
                                        "region": aws.region})
    _backup(run_offsite, config, "full")
    vol2 = next(k for k in aws.object_keys("carcosa/") if ".vol2." in k).split("/", 1)[1]
    proxy = StallingProxy(aws.endpoint_url, vol2)
    try:
        stalled = make_config(hosts, filename="stalled.yaml", target={
            "url": f"boto3+s3://{aws.bucket}", "volsize": 1, "endpoint_url": proxy.url,
            "region": aws.region, "restore_progress_timeout": "4s"})
        started = time.monotonic()
        result = run_offsite("restore", "carcosa", str(tmp_path / "out"), config=stalled,
                             timeout=90)
        took = time.monotonic() - started
    finally:
        proxy.close()
    assert result.returncode == 1, describe(result)
    assert "no progress for" in result.stderr and vol2 in result.stderr, describe(result)
    assert took < 60, took
    assert not (tmp_path / "out").exists() or (tmp_path / "out" / "OFFSITE-RESTORE-PARTIAL.txt"
                                               ).is_file()
    assert not list(tmp_path.glob(".out.restoring-*"))


# --------------------------------------------------------------------------- smaller truths


def test_a_fifo_as_config_or_basic_auth_file_is_refused_not_waited_on(
        run_offsite: Any, tmp_path: Path) -> None:
    from offsite.errors import ConfigError
    from offsite.fleet.http_auth import load_credentials
    fifo = tmp_path / "offsite.yaml"
    os.mkfifo(fifo)
    result = run_offsite("check", config=fifo, timeout=30)
    assert result.returncode == 2 and "not a regular file" in result.stderr, describe(result)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_credentials(fifo)


def test_a_blank_passphrase_in_the_environment_is_refused(make_config: Any, run_offsite: Any,
                                                          tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"files": {"bash": "echo a > a"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config,
                         env_extra={"PASSPHRASE": "   "})
    assert result.returncode == 1 and "PASSPHRASE is set but blank" in result.stdout, \
        describe(result)
    assert not (tmp_path / "target" / "carcosa").exists()


def test_script_stderr_cannot_drive_the_terminal_of_status() -> None:
    from offsite.bounded import printable
    from offsite.constants import RunState, RunType
    from offsite.ledger.run_record import ErrorRecord, RunRecord
    from offsite.ledger.status import format_outcome, format_table
    record = RunRecord(run_id="carcosa-full-1", host="carcosa", type=RunType.FULL,
                       state=RunState.FAILED, error=ErrorRecord(
                           step="script:pg", message="boom \x1b]0;owned\x07\x1b[2J\r done",
                           failure_class="script_failed"))
    for text in (format_outcome(record), format_table([record])):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
        assert "\\x1b]0;owned" in text
    assert printable("a\tb\x9bc") == "a\\x09b\\x9bc"


def test_a_restore_never_touches_a_folder_beside_its_destination(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}},
                                      "paths": {"extra": str(data)}}},
                         target={"url": f"file://{tmp_path}/target"})
    _backup(run_offsite, config, "full")
    mine = tmp_path / ".out.restoring"   # the name the old restore emptied with rm -rf
    mine.mkdir()
    (mine / "precious.txt").write_text("mine")
    result = run_offsite("restore", "carcosa", str(tmp_path / "out"), config=config)
    assert result.returncode == 0, describe(result)
    assert (mine / "precious.txt").read_text() == "mine"
    assert (tmp_path / "out" / "extra" / "a.txt").read_text() == "a"
    assert not list(tmp_path.glob(".out.restoring-*"))


def test_a_script_that_writes_nothing_ends_the_run_as_warning(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"empty": {"bash": "true"},
                                                  "files": {"bash": "echo a > a"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    assert ": warning" in result.stdout and "script empty exited 0 but wrote nothing" \
        in result.stdout, describe(result)
    assert "script files" not in result.stdout


@pytest.mark.slow
def test_junk_in_the_target_is_ignored_and_alerted_once_as_target_tampered(
        make_config: Any, run_offsite: Any, start_worker: Any, start_control: Any, aws: Any,
        tmp_path: Path) -> None:
    from tests.test_backup_flow import backup
    from tests.test_failures import FAST_WATCHDOG
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    config = make_config({"carcosa": {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}},
                         target={"url": f"file://{tmp_path}/target"}, watchdog=FAST_WATCHDOG)
    start_worker(config, "carcosa")
    start_control(config)
    assert backup(run_offsite, config, "carcosa", "full")["state"] == "succeeded"
    forged = "duplicity-full.20991231T000000Z.manifest.gpg"
    (tmp_path / "target" / "carcosa" / forged).write_bytes(os.urandom(300))
    (tmp_path / "target" / "carcosa" / "duplicity-junk").write_bytes(b"")
    (data / "b.txt").write_text("b")
    record = backup(run_offsite, config, "carcosa", "incr")
    assert record["state"] == "succeeded", record
    assert any(note.startswith("target_tampered:") and forged in note
               for note in record["notes"]), record
    listing = json.loads(run_offsite("list", "carcosa", "--json", config=config).stdout)
    assert [s["type"] for c in listing["chains"] for s in c["sets"]][-1] == record["type"]
    assert forged in {item["name"] for item in listing["ignored"]}
    alerts = aws.alerts(1, timeout=30)
    tampered = [a for a in alerts if a["MessageAttributes"]["class"]["Value"] == "target_tampered"]
    assert len(tampered) == 1 and forged in tampered[0]["Message"], alerts
    assert len([a for a in aws.alerts(2, timeout=4)
                if a["MessageAttributes"]["class"]["Value"] == "target_tampered"]) == 1
    restored = run_offsite("restore", "carcosa", str(tmp_path / "out"), config=config)
    assert restored.returncode == 0, describe(restored)
    assert (tmp_path / "out" / "files" / "b.txt").read_text() == "b"
