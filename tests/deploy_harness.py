"""Helpers of the deployment tests: a minimal config file, the units' ExecStart lines."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

HOST = "carcosa"


def write_minimal_config(folder: Path, host: str = HOST, extra: str = "") -> Path:
    """A valid config with one file:// host, staging and cache inside `folder`."""
    config = folder / "offsite.yaml"
    data = {"staging_root": f"{folder}/staging", "cache_root": f"{folder}/cache",
            "target": {"url": f"file://{folder}/target"}}
    config.write_text(yaml.safe_dump(data) + extra + yaml.safe_dump(
        {"hosts": {host: {"scripts": {"data": {"bash": "echo data > d"}}}}}))
    return config


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (comments and sections left out)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        settings.setdefault(key, []).append(value)
    return settings


def exec_argv(text: str, instance: str) -> list[str]:
    """The unit's ExecStart as argv, `%i` replaced by the instance as systemd would."""
    (line,) = unit_settings(text)["ExecStart"]
    return shlex.split(re.sub(r"%i", instance, line))
