"""Hostile scripts: floods of output, leftover processes, snooping on the environment, files
readable by others, running as another user. Every case drives the real worker (or the real
CLI, or offsite.process.execute in this process) and checks what the system actually holds after it."""
from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from offsite.duplicity.command import parse_stats
from offsite.errors import CommandError, CommandTimedOut
from offsite.process.execute import run_command
from tests.helpers import AwsResources, ManagedProcess, describe, wait_until
from tests.procfs import environ_of, live_pids_with, peak_rss_bytes

KiB, MiB = 1024, 1024 * 1024
FLOOD_BYTES = 200_000_000
FLOOD_STDERR = f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x >&2; exit 1"
FLOOD_STDOUT = f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' y"
CUT_MARKER = "cut by offsite"


def backup_wait(run_offsite: Callable[..., Any], config: Path, host: str = "carcosa",
                expect_rc: int = 0, timeout: float = 240) -> str:
    """`offsite backup HOST --type full --wait`; returns the run id."""
    result = run_offsite("backup", host, "--type", "full", "--wait", "--timeout", str(timeout),
                         config=config, timeout=timeout + 60)
    assert result.returncode == expect_rc, describe(result)
    return result.stdout.split()[1]


def stored_record(redis_client: redis.Redis, run_id: str) -> dict[str, Any]:
    raw = redis_client.get("offsite:run:" + run_id)
    assert raw is not None
    return dict(json.loads(raw))


# --------------------------------------------------------------------------- item 6: bounded


@pytest.mark.slow
def test_one_200mb_line_on_stderr_keeps_memory_records_results_alerts_and_logs_bounded(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        start_control: Callable[..., ManagedProcess], run_offsite: Callable[..., Any],
        redis_client: redis.Redis, aws: AwsResources) -> None:
    config = make_config({"carcosa": {"scripts": {
        "flood_out": {"bash": FLOOD_STDOUT}, "flood_err": {"bash": FLOOD_STDERR}}}})
    worker = start_worker(config, "carcosa")
    control = start_control(config)

    run_id = backup_wait(run_offsite, config, expect_rc=1)

    record_raw = redis_client.get("offsite:run:" + run_id)
    assert record_raw is not None and len(record_raw) <= 64 * KiB, len(record_raw or b"")
    record = json.loads(record_raw)
    assert record["state"] == "failed"
    assert [(s["name"], s["exit_code"]) for s in record["steps"]] == [
        ("script:flood_out", 0), ("script:flood_err", 1)]
    error = record["error"]
    assert error["failure_class"] == "script_failed"
    assert len(error["stderr_tail"].encode()) <= 8 * KiB
    assert CUT_MARKER in error["stderr_tail"] and error["stderr_tail"].endswith("x" * 1000)
    assert len(error["message"].encode()) <= 8 * KiB and "exit code 1" in error["message"]

    alerts = aws.alerts(1, timeout=60)
    assert len(alerts) == 1
    alert = alerts[0]
    assert run_id in alert["Message"]
    assert len(alert["Message"].encode()) <= 40 * KiB
    assert len(json.dumps(alert).encode()) < 256 * KiB

    def results_written() -> bool:
        return len(list(redis_client.scan_iter("celery-task-meta-*"))) >= 2
    wait_until(results_written, 30, "the failed tasks' Celery results")
    sizes = {key: redis_client.strlen(key) for key in redis_client.scan_iter("celery-task-meta-*")}
    assert max(sizes.values()) <= 16 * KiB, sizes
    # nothing else in Redis (the alert outbox, indexes, events) holds the flood either
    usage = {key: redis_client.memory_usage(key) or 0 for key in redis_client.scan_iter("*")}
    assert max(usage.values()) <= 128 * KiB, {k: v for k, v in usage.items() if v > 128 * KiB}

    for process in (worker, control):
        assert peak_rss_bytes(process.pid) < 300 * MiB, (process.name, peak_rss_bytes(process.pid))
        assert process.log_path.stat().st_size < 512 * KiB, process.name
        assert "x" * 20 * KiB not in process.log_text()


def test_a_command_whose_whole_tree_is_terminated_is_seen_killed_by_the_signal() -> None:
    """A SIGTERM to the worker's whole tree reaches the command's reaper too: the reaper ends
    what the command left and dies of the signal, so the worker sees -15 (a stopped command,
    given its grace to be recorded lost), not the exit code 143 of a command that failed."""
    marker = "31.4159"
    sent: list[int] = []

    def terminate_the_tree() -> None:
        if not sent and (found := live_pids_with(marker)):   # the reaper and the command:
            sent.append(found[0])                              # one group
            os.killpg(os.getpgid(found[0]), signal.SIGTERM)
    with pytest.raises(CommandError) as caught:
        run_command(["sleep", marker], timeout_s=60, host="h", step="s",
                    on_tick=terminate_the_tree, tick_s=0.1)
    assert sent and caught.value.returncode == -signal.SIGTERM


def test_run_command_keeps_only_the_ends_of_huge_outputs() -> None:
    script = (f"head -c {50 * MiB} /dev/zero | tr '\\0' e >&2; echo >&2; echo last words >&2; "
              f"head -c {50 * MiB} /dev/zero | tr '\\0' o; echo; exit 4")
    with pytest.raises(CommandError) as caught:
        run_command(["bash", "-c", script], timeout_s=60, host="h", step="s")
    error = caught.value
    assert error.returncode == 4
    assert error.stderr_tail.endswith("last words")
    assert CUT_MARKER in error.stderr_tail and len(error.stderr_tail.encode()) <= 8 * KiB
    assert len(str(error).encode()) <= 2 * KiB + 512
    assert "exit code 4: last words" in str(error)


def test_one_huge_stderr_line_gives_a_short_headline() -> None:
    with pytest.raises(CommandError) as caught:
        run_command(["bash", "-c", f"head -c {20 * MiB} /dev/zero | tr '\\0' z >&2; exit 2"],
                    timeout_s=60, host="h", step="s")
    assert len(str(caught.value).encode()) < 1 * KiB
    assert CUT_MARKER in str(caught.value)


@pytest.mark.parametrize("what,script", [
    ("invalid UTF-8", f"head -c {5 * MiB} /dev/urandom >&2; exit 1"),
    ("NUL bytes", f"head -c {5 * MiB} /dev/zero >&2; exit 1"),
    ("carriage returns", "for i in $(seq 1 20000); do printf 'progress %d\\r' $i >&2; done; exit 1"),
    ("a million short lines", "seq 1 1000000 >&2; exit 1"),
    ("stderr closed early", "exec 2>&-; sleep 0.2; exit 1"),
    ("a leftover that keeps writing", "( while :; do echo spam >&2; done ) & sleep 0.3; exit 1"),
    ("a stopped leftover", "sleep 1000 & kill -STOP $!; exit 1"),
])
def test_hostile_stderr_gives_a_bounded_error(what: str, script: str) -> None:
    with pytest.raises(CommandError) as caught:
        run_command(["bash", "-c", script], timeout_s=60, host="h", step="s")
    error = caught.value
    assert error.returncode == 1, what
    assert len(error.stderr_tail.encode()) <= 8 * KiB, what
    assert len(str(error).encode()) <= 2 * KiB + 512, what
    assert json.loads(json.dumps(error.stderr_tail)) == error.stderr_tail, what


def test_statistics_after_a_flood_of_stdout_are_still_parsed() -> None:
    stats = ("--------------[ Backup Statistics ]--------------\n"
             "SourceFiles 3\nSourceFileSize 1000 (1000 bytes)\nNewFiles 3\n"
             "TotalDestinationSizeChange 512 (512 bytes)\nErrors 0\n"
             "-------------------------------------------------\n")
    code = (f"import sys\nfor _ in range(200): sys.stdout.write('n' * 100000 + '\\n')\n"
            f"sys.stdout.write({stats!r})\n")
    result = run_command([sys.executable, "-c", code], timeout_s=60, host=None, step="s")
    assert len(result.stdout.encode()) <= 64 * KiB
    parsed = parse_stats(result.stdout)
    assert (parsed.source_files, parsed.bytes_uploaded, parsed.errors) == (3, 512, 0)


def test_records_notes_are_bounded_in_number_and_length() -> None:
    from offsite.constants import BackupType
    from offsite.ledger.run_record import ErrorRecord, RunRecord
    record = RunRecord(run_id="carcosa-full-20261129T000000Z", host="carcosa",
                       type=BackupType.FULL)
    for index in range(500):
        record.notes.append(f"note {index} " + "n" * 5000)
    record.error = ErrorRecord(step="s", message="m" * MiB, stderr_tail="t" * MiB)
    text = record.to_json()
    assert len(text.encode()) <= 64 * KiB
    stored = RunRecord.model_validate_json(text)
    assert stored.notes[0].startswith("note 0 ") and stored.notes[-1].startswith("note 499 ")
    assert any("notes dropped" in note for note in stored.notes)
    assert stored.error is not None and CUT_MARKER in stored.error.stderr_tail


# --------------------------------------------------------------------------- item 13: env

ALLOWED = {"PATH", "HOME", "LANG", "LC_ALL", "LC_TIME", "TZ", "USER", "LOGNAME", "SHELL",
           "TMPDIR", "OFFSITE_HOST", "OFFSITE_RUN_ID", "OFFSITE_BACKUP_TYPE", "OFFSITE_SCRIPT"}


@pytest.mark.slow
def test_a_script_sees_only_the_allow_listed_environment(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        run_offsite: Callable[..., Any], redis_url: str, tmp_path: Path) -> None:
    dump = tmp_path / "script-environ"
    config = make_config({"carcosa": {"scripts": {
        "snoop": {"bash": f"cat /proc/$$/environ > {dump}"}}}})
    passphrase = (tmp_path / "passphrase").read_text().strip()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    hostile = {
        "OFFSITE_BROKER_URL": redis_url, "OFFSITE_CONFIG": str(config), "PASSPHRASE": passphrase,
        "AWS_ACCESS_KEY_ID": "AKIAWORKER", "AWS_SECRET_ACCESS_KEY": "worker-secret",
        "AWS_SESSION_TOKEN": "worker-token", "DUPLICITY_EXTRA": "dup", "ALERT_EXTRA": "alert",
        "REDIS_PASSWORD": "hunter2", "SOMETHING_ELSE": "1", "PYTHONPATH": "/nowhere",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC", "USER": "root",
        "LOGNAME": "root", "SHELL": "/bin/bash", "TMPDIR": str(tmpdir)}
    worker = start_worker(config, "carcosa", env_extra=hostile)
    run_id = backup_wait(run_offsite, config)

    seen = dict(part.partition("=")[::2] for part in dump.read_text().split("\0") if part)
    assert set(seen) == ALLOWED, sorted(set(seen) ^ ALLOWED)
    assert seen["OFFSITE_HOST"] == "carcosa" and seen["OFFSITE_RUN_ID"] == run_id
    assert seen["OFFSITE_BACKUP_TYPE"] == "full" and seen["OFFSITE_SCRIPT"] == "snoop"
    worker_env = environ_of(worker.pid)
    for name in ALLOWED - {"OFFSITE_HOST", "OFFSITE_RUN_ID", "OFFSITE_BACKUP_TYPE",
                           "OFFSITE_SCRIPT"}:
        assert seen[name] == worker_env[name], name
    for secret in (passphrase, "worker-secret", "worker-token", "hunter2", redis_url):
        assert secret not in dump.read_text()


# --------------------------------------------------------------------------- item 14: modes


def _modes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mode & 0o777 for p in [path, *path.rglob("*")]}


@pytest.mark.slow
def test_dumps_staging_and_cache_are_private(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        run_offsite: Callable[..., Any], tmp_path: Path) -> None:
    staging, cache = tmp_path / "staging", tmp_path / "cache"
    for loose in (staging, cache, cache / "carcosa", cache / "carcosa" / ".upload-tmp"):
        loose.mkdir(mode=0o755)
        loose.chmod(0o755)
    report = tmp_path / "modes"
    script = (f"echo secret > dump.sql; mkdir sub; echo x > sub/more; "
              f"{{ umask; stat -c '%a %n' dump.sql sub sub/more . .. ../..; }} > {report}")
    config = make_config({"carcosa": {"scripts": {"db": {"bash": script}}}})
    start_worker(config, "carcosa")
    backup_wait(run_offsite, config)

    lines = report.read_text().split("\n")
    assert lines[0] == "0077"
    modes = {name: mode for mode, name in (line.split(" ", 1) for line in lines[1:] if line)}
    assert modes == {"dump.sql": "600", "sub": "700", "sub/more": "600", ".": "700",
                     "..": "700", "../..": "700"}, modes
    for directory in (staging, cache, cache / "carcosa"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    cached = _modes(cache / "carcosa")
    assert len(cached) > 2, cached
    assert not {name: oct(mode) for name, mode in cached.items() if mode & 0o077}


@pytest.mark.slow
def test_a_shared_staging_root_is_not_made_private_but_its_host_folder_is(
        make_config: Callable[..., Path], run_offsite: Callable[..., Any], tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    report = tmp_path / "modes"
    config = make_config({"carcosa": {"scripts": {"db": {
        "bash": f"echo x > dump.sql; stat -c '%a' . .. > {report}"}}}}, staging_root=shared)
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert report.read_text().split() == ["700", "700"]
    assert "left as it is" in result.stderr


# --------------------------------------------------------------------------- item 15: leftovers


def _leftover_script(marker: str, ending: str) -> str:
    """Leaves one process of each kind behind; each sleeps with `marker` among its args."""
    return (f"sleep {marker}1 & "
            f"nohup sleep {marker}2 >/dev/null 2>&1 & "
            f"setsid sleep {marker}3 & "
            f"( setsid bash -c 'sleep {marker}4 & sleep {marker}5' & ) ; "
            f"( trap '' TERM; exec sleep {marker}6 ) & "
            f"sleep 0.5; {ending}")


def _markers(marker: str) -> list[str]:
    return [f"{marker}{n}" for n in range(1, 7)]


def _none_left(marker: str) -> Callable[[], bool]:
    return lambda: not any(live_pids_with(m) for m in _markers(marker))


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique sleep duration prefix; whatever still runs with it is killed at teardown."""
    value = f"10{random.randint(100, 999)}.{random.randint(1000, 9999)}"
    yield value
    for name in _markers(value):
        for pid in live_pids_with(name):
            os.kill(pid, 9)


@pytest.mark.parametrize("outcome,ending,timeout,rc", [
    ("succeeds", "true", "1h", 0),
    ("fails", "exit 3", "1h", 1),
    ("times out", "sleep 600", "3s", 1),
])
@pytest.mark.slow
def test_processes_a_script_leaves_behind_are_ended_with_its_step(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        run_offsite: Callable[..., Any], redis_client: redis.Redis, marker: str,
        outcome: str, ending: str, timeout: str, rc: int) -> None:
    config = make_config({"carcosa": {"scripts": {
        "messy": {"bash": "echo m > m; " + _leftover_script(marker, ending),
                  "timeout": timeout},
        "after": {"bash": "echo after > after"}}}})   # a script writing nothing: `warning`
    worker = start_worker(config, "carcosa")
    run_id = backup_wait(run_offsite, config, expect_rc=rc)
    wait_until(_none_left(marker), 20, f"the leftovers of a script that {outcome} to end")
    assert stored_record(redis_client, run_id)["state"] == ("succeeded" if rc == 0 else "failed")
    assert worker.alive


def test_leftovers_are_ended_but_unrelated_children_survive(marker: str) -> None:
    bystander = subprocess.Popen(["sleep", f"{marker}9"])
    try:
        result = run_command(["bash", "-c", _leftover_script(marker, "true")], timeout_s=60,
                             host=None, step="s")
        assert result.exit_code == 0
        wait_until(_none_left(marker), 20, "the leftovers to end")
        assert bystander.poll() is None, "a child the command did not start was killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_leftovers_of_a_timed_out_command_are_ended(marker: str) -> None:
    with pytest.raises(CommandTimedOut):
        run_command(["bash", "-c", _leftover_script(marker, "sleep 600")], timeout_s=2,
                    host=None, step="s")
    wait_until(_none_left(marker), 20, "the leftovers of the timed-out command to end")


def test_concurrent_commands_do_not_end_each_others_leftovers(marker: str,
                                                               tmp_path: Path) -> None:
    """Two commands from two threads of one process (the control node's drill and escrow
    check): the end of one leaves the other's orphans running; they end with their own."""
    go_a, go_b, b_started = tmp_path / "go-a", tmp_path / "go-b", tmp_path / "b-started"
    wait = "while [ ! -e {} ]; do sleep 0.05; done"
    results: dict[str, Any] = {}

    def run(name: str, script: str) -> None:
        results[name] = run_command(["bash", "-c", script], timeout_s=60, host=None, step=name)

    b = threading.Thread(target=run, args=("b", f"touch {b_started}; {wait.format(go_b)}"))
    b.start()
    wait_until(b_started.exists, 20, "command b to start")
    a = threading.Thread(target=run, args=(
        "a", f"( setsid sleep {marker}1 & ); {wait.format(go_a)}"))   # an orphan, adopted
    a.start()
    try:
        wait_until(lambda: bool(live_pids_with(f"{marker}1")), 20, "a's orphan to start")
        go_b.touch()
        b.join(30)
        assert results["b"].exit_code == 0
        assert live_pids_with(f"{marker}1"), "the end of command b ended command a's orphan"
    finally:
        go_a.touch()
        a.join(30)
    assert results["a"].exit_code == 0
    wait_until(lambda: not live_pids_with(f"{marker}1"), 20, "a's orphan to end with a")


def test_no_command_is_started_with_preexec_fn() -> None:
    """Code run between fork and exec is unsafe in a threaded process (the worker, the
    control node): every command's setup happens in its own reaper (offsite.process.reaper)."""
    root = Path(__file__).resolve().parents[1]
    sources = [path for folder in ("offsite", "tasks", "workers")
               for path in (root / folder).rglob("*.py")]
    assert sources
    assert [str(path) for path in sources if "preexec_fn=" in path.read_text()] == []


def _gpg_agents_of(home: Path) -> list[int]:
    agents = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if argv and argv[0].endswith(b"gpg-agent") and str(home).encode() in env:
            agents.append(int(entry.name))
    return agents


@pytest.mark.slow
def test_no_gpg_agent_outlives_a_backup(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        run_offsite: Callable[..., Any], offsite_env: dict[str, str]) -> None:
    config = make_config({"carcosa": {"scripts": {"db": {"bash": "echo data > dump.sql"}}}})
    start_worker(config, "carcosa")
    backup_wait(run_offsite, config)
    home = Path(offsite_env["HOME"])
    wait_until(lambda: not _gpg_agents_of(home), 20, "gpg-agent daemons to be gone")


# --------------------------------------------------------------------------- item 16: user


TEST_USER = "offsite-hostile"


@pytest.fixture
def system_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("running a script as another user needs the tests to run as root")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                        TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


@pytest.mark.slow
def test_a_script_runs_as_its_user_and_cannot_read_the_workers_files(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        run_offsite: Callable[..., Any], system_user: pwd.struct_passwd,
        tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("root secret\n")
    secret.chmod(0o600)
    outbox = Path(tempfile.mkdtemp(prefix="offsite-user-test-"))
    outbox.chmod(0o777)
    try:
        script = (f"{{ id -un; stat -c '%U %a' .; echo dump > dump.sql; stat -c '%U %a' dump.sql; "
                  f"cat {secret} 2>/dev/null || echo cannot-read; }} > {outbox}/report")
        config = make_config({"carcosa": {"scripts": {
            "db": {"bash": script, "user": TEST_USER}, "as_worker": {"bash": "id -un > me"}}}})
        start_worker(config, "carcosa")
        backup_wait(run_offsite, config)
        report = (outbox / "report").read_text().splitlines()
        assert report == [TEST_USER, f"{TEST_USER} 700", f"{TEST_USER} 600", "cannot-read"]
    finally:
        shutil.rmtree(outbox)


@pytest.mark.slow
def test_a_script_user_that_does_not_exist_fails_the_run_with_a_clear_error(
        make_config: Callable[..., Path], run_offsite: Callable[..., Any]) -> None:
    config = make_config({"carcosa": {"scripts": {
        "db": {"bash": "echo dump > dump.sql", "user": "no-such-user-x"}}}})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 1, describe(result)
    assert "user 'no-such-user-x' does not exist on this machine" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["Root", "a b", "x" * 40, "../etc", ""])
@pytest.mark.slow
def test_a_malformed_script_user_is_a_config_error(
        make_config: Callable[..., Path], run_offsite: Callable[..., Any], name: str) -> None:
    config = make_config({"carcosa": {"scripts": {"db": {"bash": "true", "user": name}}}})
    result = run_offsite("check", config=config)
    assert result.returncode == 2, describe(result)
    assert "user" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- item 6: log lines


@pytest.mark.slow
def test_a_huge_value_in_a_message_gives_bounded_log_lines(
        make_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess],
        redis_url: str) -> None:
    from celery import Celery
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}})
    worker = start_worker(config, "carcosa")
    huge_host = "h" * (2 * MiB)
    rogue = Celery(broker=redis_url)
    rogue.conf.task_serializer = "json"
    try:
        rogue.send_task("tasks.backup.start_backup", args=(huge_host, "full", "x-full-1"),
                        queue="backup.carcosa")
        sentinel = rogue.send_task("tasks.backup.start_backup",
                                   args=("hali", "full", "hali-full-2"), queue="backup.carcosa")
    finally:
        rogue.close()
    # one task at a time: once the second message is taken, the first one has been handled
    wait_until(lambda: sentinel.id in worker.log_text(), 60, "the worker to take the sentinel")
    log_bytes = worker.log_path.stat().st_size
    assert log_bytes < 256 * KiB, log_bytes
    assert "h" * 20 * KiB not in worker.log_text()


def test_log_filter_cuts_messages_and_tracebacks(tmp_path: Path) -> None:
    import logging
    from offsite.process.logbounds import bound_handlers
    path = tmp_path / "log"
    logger = logging.getLogger("offsite.test-hostile")
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        bound_handlers(logger)
        logger.error("value %s", "v" * (5 * MiB))
        try:
            raise ValueError("e" * (5 * MiB))
        except ValueError:
            logger.exception("failed with %d", 1)
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert len(text.encode()) < 64 * KiB
    assert text.count(CUT_MARKER) == 2 and "failed with 1" in text
