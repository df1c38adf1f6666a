"""Hostile values for the keys this work added: `hosts.X.paths` and `schedule.anchor`."""
from __future__ import annotations

from typing import Any

import pytest

from offsite.config.model import parse_config
from offsite.errors import ConfigError


def config_with(host: dict[str, Any] | None = None, schedule: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = {"target": {"url": "file:///backups"},
                            "hosts": {"carcosa": {"scripts": {"db": {"bash": "true"}},
                                                  **(host or {})}}}
    if schedule is not None:
        data["schedule"] = schedule
    return data


@pytest.mark.parametrize(("paths", "expected"), [
    ({"pdfs": "srv/pdfs"}, "must be an absolute folder"),
    ({"pdfs": "/"}, "must be an absolute folder"),
    ({"pdfs": "/srv/../etc"}, "no '..'"),
    ({"db": "/srv/db"}, "share the name"),
    ({"../up": "/srv/x"}, "not a valid name"),
    ({"pdfs": ["/srv/a"]}, "paths.pdfs"),
    ({"pdfs": None}, "paths.pdfs"),
    ("/srv/pdfs", "hosts.carcosa.paths"),
])
def test_bad_paths_are_refused_with_their_place(paths: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with({"paths": paths}))
    assert expected in str(caught.value), str(caught.value)


@pytest.mark.parametrize("anchor", ["yesterday", "2026-01-01T00:00", 12.5e99, [1], {"a": 1}])
def test_bad_anchors_are_refused(anchor: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(schedule={"anchor": anchor}))
    assert "schedule.anchor" in str(caught.value), str(caught.value)


def test_a_good_path_and_anchor_are_taken() -> None:
    config = parse_config(config_with({"paths": {"pdfs": "/srv/pdfs"}},
                                      schedule={"anchor": "2026-01-01T00:00:30+01:00",
                                                "incr": {"every": "1h"}}))
    assert str(config.host("carcosa").paths["pdfs"].path) == "/srv/pdfs"
    assert config.schedule.anchor.utcoffset() is not None
