"""A `paths:` entry: a folder read in place, as a plain string or `{path, exclude}`, and its
exclude patterns in duplicity's selection syntax (its `--exclude` globs: `*` and `?` within one
name, `**` across folders, `[...]` a set of characters).

A pattern is written relative to the entry's folder (`**/node_modules`, `cache/*.tmp`) or as an
absolute glob inside it (`/srv/app/tmp`); it is refused when it could name anything outside the
folder (absolute elsewhere, `..`, a leading `**` without a `/` after it). `duplicity_globs` turns
each into the absolute globs duplicity is given: a leading `**/` matches at any depth *including
the top* (`**/node_modules` also excludes `/srv/app/node_modules`, as in a .gitignore), which
duplicity's own `/srv/app/**/node_modules` would not. A pattern names a file or a folder (and
then everything in it) alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from offsite.config.sections import StrictModel

MAX_EXCLUDES = 100
MAX_PATTERN_CHARS = 1024


def check_pattern(value: str) -> str:
    """The checks that need no folder; raises ValueError naming the problem."""
    if not value.strip():
        raise ValueError("an exclude pattern is empty: remove it, or name what to leave out "
                         "(e.g. '**/node_modules')")
    if len(value) > MAX_PATTERN_CHARS:
        raise ValueError(f"an exclude pattern is longer than {MAX_PATTERN_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"exclude pattern {value[:80]!r} holds a control character (a "
                         "newline?): give one pattern per list item")
    if value != value.strip():
        raise ValueError(f"exclude pattern {value[:80]!r} starts or ends with a space: "
                         "remove it (duplicity would match it literally)")
    if value.endswith("/") or "//" in value:
        raise ValueError(f"exclude pattern {value[:80]!r}: no trailing or doubled '/' (a "
                         "pattern names a file or a folder alike)")
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise ValueError(f"exclude pattern {value[:80]!r}: no '.' or '..' parts (patterns "
                         "stay inside their folder)")
    return value


Pattern = Annotated[str, AfterValidator(check_pattern)]


def _plain(value: Any) -> Any:
    if isinstance(value, (str, Path)):
        return {"path": value}
    if not isinstance(value, dict):
        raise ValueError("give a folder, or {path: FOLDER, exclude: [PATTERN, ...]}")
    return value


class PathSource(StrictModel):
    path: Path = Field(description="the absolute folder read in place")
    exclude: tuple[Pattern, ...] = Field(
        (), max_length=MAX_EXCLUDES,
        description="duplicity exclude globs, relative to the folder (**/node_modules, "
                    "*.qcow2) or absolute inside it; neither backed up nor in the manifest")

    @model_validator(mode="after")
    def _inside(self) -> PathSource:
        for pattern in self.exclude:
            if problem := outside_problem(self.path, pattern):
                raise ValueError(problem)
        return self


PathEntry = Annotated[PathSource, BeforeValidator(_plain, json_schema_input_type=Path | PathSource)]


def outside_problem(folder: Path, pattern: str) -> str | None:
    """Why `pattern` could name something outside `folder`; None when it cannot."""
    top = str(folder).rstrip("/")
    if pattern.startswith("/"):
        if not pattern.startswith(top + "/") or pattern == top + "/":
            return (f"exclude pattern {pattern[:80]!r} is outside {top}: write it relative to "
                    "the folder (e.g. '**/cache') or as an absolute path inside it")
        return None
    first = pattern.split("/", 1)[0]
    if first.startswith("**") and first != "**":
        return (f"exclude pattern {pattern[:80]!r}: a leading '**' must be followed by '/' "
                "('**/*.qcow2'), else it reaches outside the folder")
    return None


def duplicity_globs(folder: Path, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The absolute globs duplicity is given for the entry's patterns (see the module)."""
    top = str(folder).rstrip("/")
    globs: list[str] = []
    for pattern in patterns:
        if pattern.startswith("/"):
            globs.append(pattern)
            continue
        if pattern.startswith("**/"):
            globs.append(f"{top}/{pattern[3:]}")
        globs.append(f"{top}/{pattern}")
    return tuple(dict.fromkeys(globs))
