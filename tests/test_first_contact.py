"""First contact: progress on a terminal and silence when piped, `--json` on the read
commands, and bash completion through the script `offsite completion bash` prints."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import OFFSITE, VENV_BIN, ConfigFactory, offsite_argv

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

HOST = "carcosa"


def _run_on_terminal(argv: list[str], env: dict[str, str], cwd: Path,
                     timeout: float) -> tuple[int, str, str]:
    """argv with stderr on a pseudo-terminal (stdout piped): (exit, stdout, terminal text)."""
    leader, follower = pty.openpty()
    with subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=follower, text=True) as proc:
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:   # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.stdout.read() if proc.stdout else ""
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(leader)
    return code, stdout, seen.decode(errors="replace")


def test_backup_wait_shows_progress_on_a_terminal_and_nothing_when_piped(
        tmp_path: Path, redis_url: str, aws: Any, start_worker: Any, run_offsite: Any,
        offsite_env: Any) -> None:
    config = ConfigFactory(tmp_path, redis_url, aws)(
        {HOST: {"scripts": {"slow": {"bash": "sleep 3; echo data > d"}}}})
    start_worker(config, HOST)
    code, stdout, terminal = _run_on_terminal(
        offsite_argv(config, "backup", HOST, "--type", "full", "--wait"), dict(offsite_env),
        tmp_path, timeout=120)
    assert code == 0, stdout + terminal
    assert "\r\x1b[K" in terminal                       # a line rewritten in place
    assert f"{HOST}-full-" in terminal and "step script:slow" in terminal
    assert "succeeded" in stdout and "\r" not in stdout
    piped = run_offsite("backup", HOST, "--type", "incr", "--wait", config=config)
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "step " not in piped.stderr

    dest = tmp_path / "restored"
    code, stdout, terminal = _run_on_terminal(
        offsite_argv(config, "restore", HOST, str(dest)), dict(offsite_env), tmp_path, 120)
    assert code == 0, stdout + terminal
    assert f"restoring {HOST}:" in terminal and "MB in" in terminal
    piped_restore = run_offsite("restore", HOST, str(tmp_path / "again"), config=config)
    assert piped_restore.returncode == 0 and piped_restore.stderr == ""


def test_read_commands_answer_in_json(tmp_path: Path, redis_url: str, aws: Any,
                                      run_offsite: Any) -> None:
    config = ConfigFactory(tmp_path, redis_url, aws)(
        {HOST: {"scripts": {"data": {"bash": "echo data > d"}},
                "retention": {"keep_full_chains": 1}}})
    for _ in range(2):
        backup = run_offsite("backup", HOST, "--type", "full", "--local", config=config)
        assert backup.returncode == 0, backup.stderr
    check = json.loads(run_offsite("check", "--json", config=config).stdout)
    assert [h["host"] for h in check["hosts"]] == [HOST] and check["problems"] == []
    assert set(check["hosts"][0]["next"]) == {"full", "incr"}

    verify = run_offsite("verify", HOST, "--local", "--json", config=config, timeout=180)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    record = json.loads(verify.stdout)
    assert record["type"] == "verify" and record["state"] == "succeeded"
    assert record["verify"]["files_checked"] >= 1 and record["verify"]["mismatch_count"] == 0

    prune = run_offsite("prune", HOST, "--json", config=config)
    assert prune.returncode == 0, prune.stderr
    (plan,) = json.loads(prune.stdout)
    assert plan["host"] == HOST and plan["applied"] is False
    assert len(plan["plan"]["keep"]) == 1 and len(plan["plan"]["delete"]) == 1
    assert plan["plan"]["objects"] > 0

    listing = json.loads(run_offsite("list", HOST, "--json", config=config).stdout)["chains"]
    assert len(listing) == 2


def _complete(script: Path, line: str) -> list[str]:
    """What bash offers for `line<TAB>`, through the completion function the script registers."""
    words = line.split(" ")
    program = (f"source {script}\n"
               f"COMP_LINE={json.dumps(line)}; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n"
               f"COMP_WORDS=({' '.join(json.dumps(w) for w in words)}); "
               f"COMP_CWORD={len(words) - 1}\n"
               "fn=$(complete -p offsite | sed -E 's/.*-F ([^ ]+).*/\\1/')\n"
               f"$fn offsite {json.dumps(words[-1])} {json.dumps(words[-2])}\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return sorted(word.strip() for word in result.stdout.splitlines() if word.strip())


def test_bash_completion(tmp_path: Path) -> None:
    script = tmp_path / "offsite.bash"
    printed = subprocess.run([str(OFFSITE), "completion", "bash"], capture_output=True,
                             text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    script.write_text(printed.stdout)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert _complete(script, "offsite ba") == ["backup"]
    assert _complete(script, "offsite check --ro") == ["--role"]
    assert _complete(script, "offsite check --role ") == ["all", "control", "host", "operator"]
    assert "install-units" in _complete(script, "offsite ")
