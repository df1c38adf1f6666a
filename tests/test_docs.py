"""The documentation holds together: every relative link in README.md, CHANGELOG.md,
bench/README.md and docs/*.md names a file that exists and, for `#anchor`, a heading of that
file (GitHub's slug of it); the README stays a user's page (at most 250 lines). Pure."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#+ (.*)", line)
        if heading:
            name = slug(heading.group(1))
            count = seen.get(name, 0)
            seen[name] = count + 1
            found.add(name if count == 0 else f"{name}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for link in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading")
    return broken


def test_the_pages_exist() -> None:
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {"operations.md", "configuration.md", "security.md", "proof.md", "architecture.md",
            "performance.md", "testing.md"} <= names
    assert all(page.exists() for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_a_link_to_a_missing_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Title\n\n## A section: `code` (2026)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section-code-2026) [bad](other.md#nope) [gone](none.md)\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["other.md#nope: no such heading", "none.md: no such file"]


def test_the_readme_is_a_users_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, len(readme.splitlines())
    for command in ("./bin/demo", "./bin/test", '-m "not slow"'):
        assert command in readme, command
    for page in PAGES:
        if page.parent.name == "docs":
            assert f"](docs/{page.name})" in readme, f"README's map of docs/ misses {page.name}"
