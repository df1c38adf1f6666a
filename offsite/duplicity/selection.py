"""duplicity's file selection at the cost of the tree itself (installed by the launcher).

A host with `paths:` is backed up from `/` with `--include <staging>`, per path its
`--exclude <glob>`s and `--include <path>`, then `--exclude '**'` (offsite.host.sources). For
every file it walks, duplicity's `Select.Select` runs the selection functions in order until
one decides, and each of them is a regular expression made from its glob (`^<glob>($|/)`, and
for an include a second one matching the folders above it), with a debug log line formatted
per function per file even when nothing logs at debug level. On a tree of small files that is
the larger part of the 13-17% that selecting from `/` cost over the tree as the root
(docs/performance.md).

Two changes, neither changing a decision:
- a glob with no wildcard (`*`, `?`, `[`), the plain paths offsite passes, is tested as the
  same regular expressions decide it, by string comparison: the path equals the glob, or
  continues it with `/`, or is the glob followed by one newline (what `$` also matches); an
  include's "scan" answer for the folders above it is a set lookup of the glob's prefixes.
  Anything else (wildcards, a trailing `/`, `ignorecase:`) keeps duplicity's own function;
  duplicity's own construction still runs first, so its errors (FilePrefixError, consecutive
  slashes) are raised as before.
- `Select.Select` skips its per-function debug lines when debug logging is off (it calls
  duplicity's own when it is on).
And one outside the selection, with the same output: duplicity's `util.uindex` (see
joined_index), which its comparison of each walked file with the signatures formats twice for a
debug line whatever the log level, at a cost that grows with the path's depth (from `/`: ~2 s
of a 500,000-file incremental, docs/performance.md).
The archive's paths, chains and restores are untouched: only the work per walked file changes.
"""
from __future__ import annotations

import os
from typing import Any, Callable

_WILDCARDS = frozenset("*?[")
Decide = Callable[[Any], "int | None"]


def plain_glob(glob: str, include: int, ignore_case: bool) -> bool:
    """Whether duplicity's glob function for `glob` is a plain path test this module makes."""
    return (not ignore_case and glob not in ("", "/") and not glob.endswith("/")
            and _WILDCARDS.isdisjoint(glob) and include in (0, 1))


def plain_path_test(glob: str, include: int) -> Decide:
    """duplicity's `select_fn_from_glob(glob, include)` for a glob without wildcards: the same
    answer for every path name (see the module docstring)."""
    parts = glob.split("/")
    prefixes = {"/".join(parts[:i + 1]) for i in range(len(parts))}
    if "" in prefixes:
        prefixes.discard("")
        prefixes.add("/")
    length = len(glob)
    scan = 2 if include == 1 else None

    def test(path: Any) -> int | None:
        name: str = path.uc_name
        if name.startswith(glob):
            rest = name[length:]
            if not rest or rest[0] == "/" or rest == "\n":
                return include
        if scan is not None and (name in prefixes
                                 or (name[-1:] == "\n" and name[:-1] in prefixes)):
            return scan
        return None

    return test


def install(select_class: Any, logger_level: Callable[[], bool]) -> None:
    """Patch duplicity's `Select` class (duplicity.selection.Select); `logger_level()` says
    whether duplicity logs at debug level now."""
    original_glob_sf = select_class.glob_get_sf
    original_select = select_class.Select

    def glob_get_sf(self: Any, glob_str: str, include: int, ignore_case: bool = False) -> Any:
        made = original_glob_sf(self, glob_str, include, ignore_case)
        if glob_str == "**" or not plain_glob(glob_str, include, ignore_case):
            return made
        fast: Any = plain_path_test(glob_str, include)
        fast.exclude, fast.name = made.exclude, made.name
        return fast

    def select(self: Any, path: Any) -> int:
        if logger_level():
            return int(original_select(self, path))
        scan_pending = False
        result = None
        for function in self.selection_functions:
            result = function(path)
            if result == 2:
                scan_pending = True
            elif result == 0 or result == 1:
                break
        if scan_pending and result != 1:
            return 2
        return 1 if result is None else int(result)

    select_class.glob_get_sf = glob_get_sf
    select_class.Select = select


def joined_index(original: Callable[[Any], str]) -> Callable[[Any], str]:
    """duplicity's `util.uindex` (a path's index, a tuple of names as bytes, as one string: the
    names decoded one by one, then os.path.join) by one decode of the names joined with `/`:
    the same string, since `/` is never part of a multi-byte sequence (nor is a name, nor is a
    name empty), so decoding the whole is joining the decoded names; 0.2 µs, not 2.3, at a
    depth of 7. Anything else (no names, a name that is not bytes or is empty) goes to
    `original`."""
    def uindex(index: Any) -> str:
        if index and type(index) is tuple and b"" not in index:
            try:
                return os.fsdecode(b"/".join(index))
            except TypeError:
                pass   # a name that is not bytes
        return original(index)

    return uindex


def install_in_duplicity() -> None:
    """The patches on the duplicity this interpreter imports."""
    from duplicity import log, selection, util
    util.uindex = joined_index(util.uindex)

    def debug_on() -> bool:
        logger = log._logger
        return logger is None or logger.isEnabledFor(log.DupToLoggerLevel(log.DEBUG))

    install(selection.Select, debug_on)
