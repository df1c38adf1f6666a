"""Every documented example runs as written: each YAML block in README.md and docs/*.md loads
(a fragment merged into a minimal config), each `offsite …` line of a shell block is a command
line the CLI accepts, and the README's tour after the demo and proof.md's plain-duplicity
disaster recovery run for real (duplicity, gpg, a file:// target)."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from offsite.cli.main import build_parser
from offsite.config.model import parse_config
from offsite.config.yaml_loader import load_yaml
from tests.helpers import VENV_BIN, describe
from tests.processes import merged_env, run_command
from tests.test_backup_flow import same_tree

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASE = {"target": {"url": "file:///srv/backups"},
        "hosts": {"carcosa": {"scripts": {"s": {"bash": "true"}}}}}


def blocks(kind: str) -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            if match.group(1) == kind:
                line = text[:match.start()].count("\n") + 1
                found.append((path.name, line, match.group(2)))
    return found


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_cases() -> list[Any]:
    return [pytest.param(where, line, text, id=f"{where}:{line}")
            for where, line, text in blocks("yaml")]


@pytest.mark.parametrize("where, line, text", _yaml_cases())
def test_every_yaml_example_loads(where: str, line: int, text: str) -> None:
    data = load_yaml(text)
    assert isinstance(data, dict), f"{where}:{line} is not a mapping"
    parse_config(_merge(BASE, data), source=f"{where}:{line}")


def offsite_lines() -> list[tuple[str, int, list[str]]]:
    lines = []
    for where, start, text in blocks("sh"):
        for offset, raw in enumerate(text.replace("\\\n", " ").splitlines()):
            words = shlex.split(raw, comments=True) if not raw.lstrip().startswith(
                ("source", "#")) else []
            if words and Path(words[0]).name == "offsite" and not {"|", "<", ">"} & set(words):
                lines.append((where, start + offset + 1, words[1:]))
    return lines


@pytest.mark.parametrize("where, line, argv", offsite_lines(), ids=lambda v: str(v)[:40])
def test_every_offsite_command_line_is_accepted(where: str, line: int, argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}:{line}: `offsite {' '.join(argv)}` is refused (exit {exit_.code})")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_after_the_demo_and_plain_duplicity_recovery_run_as_written(
        tmp_path: Path, run_offsite: Any, offsite_env: Any) -> None:
    demo = tmp_path / ".offsite" / "demo"
    (demo / "sample").mkdir(parents=True)
    (demo / "sample" / "when.txt").write_text("now\n")
    (demo / "sample" / "notes.md").write_text("notes\n" * 100)
    (demo / "passphrase").write_text("demo-passphrase\n")
    config = demo / "offsite.yaml"   # as bin/demo writes it
    config.write_text(yaml.safe_dump({
        "staging_root": f"{demo}/staging", "cache_root": f"{demo}/cache",
        "target": {"url": f"file://{demo}/target"},
        "encryption": {"mode": "symmetric", "passphrase_file": f"{demo}/passphrase"},
        "hosts": {"demo": {"scripts": {"sample": {"bash": f"cp -a {demo}/sample/. ."}}}}}))
    first = run_offsite("backup", "demo", "--type", "full", "--local", config=config)
    assert first.returncode == 0, describe(first)    # what bin/demo did

    (section,) = [text for where, _, text in blocks("sh")
                  if where == "README.md" and "OFFSITE_CONFIG=.offsite/demo" in text]
    for raw in section.splitlines():
        words = shlex.split(raw, comments=True) if not raw.startswith("source") else []
        if not words or Path(words[0]).name != "offsite":
            continue
        argv = [word.replace("/tmp/", f"{tmp_path}/") for word in words[1:]]
        result = run_offsite(*argv, config=config, timeout=180)
        assert result.returncode == 0, describe(result)
    assert same_tree(demo / "sample", tmp_path / "restored" / "sample")
    assert (tmp_path / "one" / "sample" / "when.txt").read_text() == "now\n"

    # disaster recovery as documented: duplicity alone, with the data- prefix option
    plain = tmp_path / "plain"
    env = merged_env(offsite_env, {"PASSPHRASE": "demo-passphrase"})
    restored = run_command([str(VENV_BIN / "duplicity"), "restore", "--file-prefix-archive",
                            "data-", "--archive-dir", str(tmp_path / "fresh-cache"),
                            f"file://{demo}/target/demo", str(plain)], env=env, cwd=tmp_path,
                           timeout=180)
    assert restored.returncode == 0, describe(restored)
    assert same_tree(demo / "sample", plain / "sample")
    without = run_command([str(VENV_BIN / "duplicity"), "restore", "--archive-dir",
                           str(tmp_path / "fresh-cache-2"), f"file://{demo}/target/demo",
                           str(tmp_path / "no-prefix")], env=env, cwd=tmp_path, timeout=180)
    assert without.returncode != 0, "the prefix option is what makes it work"
    shutil.rmtree(tmp_path / "no-prefix", ignore_errors=True)
