"""Exclude patterns on `paths:` entries: duplicity leaves the excluded files out of the set, the
digest manifest leaves them out too (so a drill's compare agrees with what was stored), and a
plain string entry keeps working. Hostile patterns: tests/test_hostile_config.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offsite.config.excludes import duplicity_globs
from offsite.config.model import parse_config
from offsite.host.settings import resolve_host
from offsite.host.sources import exclusion, host_sources
from offsite.run.manifest import read_manifest, write_manifest
from tests.helpers import describe

EXCLUDE = ["**/node_modules", "**/*.qcow2", "/APP/cache"]


def app_tree(root: Path) -> None:
    for relative, text in {"index.js": "top\n", "node_modules/left-pad/i.js": "pad\n",
                           "web/node_modules/x.js": "x\n", "web/page.html": "<p>\n",
                           "vm/disk.qcow2": "image\n", "vm/notes.txt": "keep\n",
                           "cache/blob": "tmp\n", "cached/kept": "kept\n"}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


KEPT = ["app/cached/kept", "app/index.js", "app/vm/notes.txt", "app/web/page.html"]


def config_for(tmp_path: Path, app: Path) -> dict[str, Any]:
    return {"target": {"url": f"file://{tmp_path}/target"},
            "staging_root": str(tmp_path / "staging"),
            "hosts": {"carcosa": {"scripts": {"db": {"bash": "true"}}, "paths": {
                "app": {"path": str(app),
                        "exclude": [p.replace("/APP", str(app)) for p in EXCLUDE]},
                "plain": "/srv/plain"}}}}


def test_a_leading_double_star_also_matches_at_the_top_of_the_folder() -> None:
    assert duplicity_globs(Path("/srv/app"), ("**/node_modules", "*.tmp", "/srv/app/x")) == (
        "/srv/app/node_modules", "/srv/app/**/node_modules", "/srv/app/*.tmp", "/srv/app/x")
    left_out = exclusion(duplicity_globs(Path("/srv/app"), ("**/node_modules",)))
    assert left_out is not None
    assert left_out("/srv/app/node_modules") and left_out("/srv/app/a/node_modules/b.js")
    assert not left_out("/srv/app/node_modules2") and not left_out("/srv/other/node_modules")


def test_excludes_come_before_their_path_in_the_selection_and_leave_the_manifest(
        tmp_path: Path) -> None:
    app = tmp_path / "app"
    app_tree(app)
    settings = resolve_host(parse_config(config_for(tmp_path, app)), "carcosa")
    assert settings.paths["plain"] == Path("/srv/plain") and "plain" not in settings.excludes
    selection = list(host_sources(settings).selection)
    assert selection.index(f"{app}/**/node_modules") < selection.index(str(app))
    assert selection[-2:] == ["--exclude", "**"]
    staging = tmp_path / "staging" / "carcosa"
    staging.mkdir(parents=True)
    write_manifest(staging, {"app": app}, excludes=settings.excludes)
    assert sorted(e.path for e in read_manifest(staging / ".offsite" / "manifest.jsonl")) == KEPT


@pytest.mark.slow
def test_excluded_files_are_not_restored_and_the_drill_agrees(
        make_config: Any, run_offsite: Any, tmp_path: Path) -> None:
    app = tmp_path / "srv" / "app"
    app_tree(app)
    hosts = config_for(tmp_path, app)["hosts"]
    del hosts["carcosa"]["paths"]["plain"]
    config = make_config(hosts, target={"url": f"file://{tmp_path}/target"})
    result = run_offsite("backup", "carcosa", "--type", "full", "--local", config=config)
    assert result.returncode == 0, describe(result)
    result = run_offsite("verify", "carcosa", "--local", config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    assert "0 mismatch(es)" in result.stdout, result.stdout
    restored = tmp_path / "restored"
    result = run_offsite("restore", "carcosa", str(restored), config=config, timeout=180)
    assert result.returncode == 0, describe(result)
    files = sorted(str(p.relative_to(restored)) for p in (restored / "app").rglob("*")
                   if p.is_file())
    assert files == KEPT
