"""Where a host's scripts write: `<staging_root>/<host>/<script>/`, the same path on every run."""
from __future__ import annotations

import shutil
from pathlib import Path

from offsite.config import Config


def host_staging(config: Config, host: str) -> Path:
    return config.staging_root / host


def script_staging(config: Config, host: str, script: str) -> Path:
    return host_staging(config, host) / script


def prepare_host_staging(config: Config, host: str) -> Path:
    """An empty staging folder for the host, with one empty folder per script."""
    root = host_staging(config, host)
    empty_host_staging(config, host)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for script in config.host(host).scripts:
        (root / script).mkdir()
    return root


def empty_host_staging(config: Config, host: str) -> None:
    root = host_staging(config, host)
    if root.exists():
        shutil.rmtree(root)


def host_cache(config: Config, host: str) -> Path:
    """duplicity's archive dir for the host: kept between runs so incrementals need no download."""
    path = config.cache_dir / host
    path.mkdir(parents=True, exist_ok=True)
    return path
