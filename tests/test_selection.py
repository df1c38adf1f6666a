"""offsite's launcher patches duplicity's file selection (offsite.duplicity.selection) so that
selecting a `paths:` host from `/` costs what the tree itself does: the patched selection must
make duplicity's exact decisions. Both are run in-process on the same tree, from `/`, with
offsite's own selection of a host (offsite.host.sources)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from duplicity import selection
from duplicity.globmatch import select_fn_from_glob
from duplicity.path import Path as DupPath

from offsite.config.model import parse_config
from offsite.duplicity.selection import install, joined_index, plain_glob, plain_path_test
from offsite.host.settings import resolve_host
from offsite.host.sources import host_sources, prepare_host_staging


class Patched(selection.Select):
    """duplicity's Select with offsite's patch; duplicity's own class stays as it is."""


install(Patched, lambda: False)

FILES = ["a", "sub/b", "sub/deep/c", "skip/x", "skip.txt", "notes.log", "keep/notes.log",
         "we[ird]/f", "star*/q?", "new\nline", "inner/i", "inner/skip/y"]


def make_tree(root: Path) -> None:
    for relative in FILES:
        for top in ("data", "data2", "dat", "br[ack"):
            (root / top / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / top / relative).write_text(relative)
    (root / "outside").mkdir()
    (root / "outside" / "o").write_text("o")
    os.symlink(root / "outside", root / "data" / "to-outside")
    os.symlink(root / "data2" / "a", root / "data" / "to-file")
    os.symlink(root / "nowhere", root / "data" / "dangling")
    os.symlink(root / "data", root / "data" / "sub" / "loop")


def selected(select_class: type, args: tuple[str, ...]) -> list[str]:
    select = select_class(DupPath("/"))
    for option, pattern in zip(args[::2], args[1::2]):
        select.add_pattern(pattern, 1 if option == "--include" else 0)
    select.set_iter()
    return [path.uc_name for path in select]


def test_the_patched_selection_selects_exactly_what_duplicity_does(tmp_path: Path) -> None:
    make_tree(tmp_path)
    config = parse_config({
        "target": {"url": f"file://{tmp_path}/target"},
        "staging_root": str(tmp_path / "staging"),
        "hosts": {"h": {"scripts": {"db": {"bash": "true"}}, "paths": {
            "data": {"path": str(tmp_path / "data"),
                     "exclude": ["skip", "*.log", "inner/skip", "sub/deep/c"]},
            "inner": str(tmp_path / "data" / "inner"),
            "data2": {"path": str(tmp_path / "data2"), "exclude": ["**/deep", "star*"]},
            "odd": str(tmp_path / "br[ack"), "link": str(tmp_path / "data" / "to-outside")}}}})
    settings = resolve_host(config, "h")
    (prepare_host_staging(settings) / "db" / "dump").write_text("dump")
    args = host_sources(settings).selection
    assert any(plain_glob(glob, 0, False) for glob in args[1::2])   # the fast path is used
    theirs, ours = selected(selection.Select, args), selected(Patched, args)
    assert ours == theirs
    assert f"{tmp_path}/data/sub/b" in ours and f"{tmp_path}/data/skip/x" not in ours
    assert not any(name.startswith(f"{tmp_path}/dat/") for name in ours)
    assert f"{tmp_path}/data2/sub/deep/c" not in ours and f"{tmp_path}/data2/a" in ours


def test_a_plain_glob_answers_as_duplicitys_regular_expressions_for_any_name() -> None:
    names = ["/", "/srv", "/srv/data", "/srv/data2", "/srv/dat", "/srv/data/x", "/srv/data\n",
             "/srv/data\n/x", "/srv\n", "/srv/data/x\n", "/srv/da", "/srvx/data", "/srv/data.",
             "srv/data", "/srv/data\\", "/srv/dat(a|b)"]
    for glob in ("/srv/data", "/srv", "/srv/data/x", "/srv/dat(a|b)", "/srv/data\\", "srv/data",
                 "/srv/a.b+c$"):
        for include in (0, 1):
            assert plain_glob(glob, include, False)
            theirs, ours = select_fn_from_glob(glob, include), plain_path_test(glob, include)
            for name in names + [glob, glob + "\n", glob + "/y"]:
                path: Any = type("P", (), {"uc_name": name})()
                assert ours(path) == theirs(path), (glob, include, name)
    assert not plain_glob("/srv/*.log", 0, False) and not plain_glob("/srv/", 1, False)
    assert not plain_glob("/srv/x", 1, True) and not plain_glob("/s[r]v", 1, False)


def test_a_joined_index_is_duplicitys_uindex_for_any_names() -> None:
    """The one-decode uindex gives duplicity's string for every index: names of any bytes
    (invalid UTF-8 split across names, surrogates, newlines, spaces), one name or many; and
    what it does not take (no names, an empty name, a name as str) goes to duplicity's own."""
    import random
    from duplicity import util
    ours = joined_index(util.uindex)
    rng = random.Random(18)
    alphabet = [b"a", b"Z", b"0", b" ", b"\n", b"\\", b"\xc3", b"\xa9", b"\xff", b"\x80",
                b"\xe2\x82\xac", b"caf\xc3\xa9", b".", b"..", b"'"]
    indexes: list[Any] = [(), (b"a",), (b"\xc3", b"\xa9"), (b"", b"x"), (b"x", b""), ("a", "b"),
                          (b"a", "b")]
    indexes += [tuple(b"".join(rng.choices(alphabet, k=rng.randint(1, 6)))
                      for _ in range(rng.randint(1, 9))) for _ in range(2000)]
    for index in indexes:
        assert ours(index) == util.uindex(index), index
