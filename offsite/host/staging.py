"""Where a host's scripts write: `<staging_root>/<host>/<script>/`, the same path on every run.
The staging and cache trees are private to the worker's user (0700), fixed when found looser."""
from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from offsite.host.settings import HostSettings

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path, shared_ok: bool = False) -> Path:
    """`path` (and missing parents) created as 0700; an existing `path` made 0700.

    With `shared_ok` (the configured roots), a directory that is not ours or is a shared one
    (sticky bit, like /tmp) is left as it is, with a warning: the host folders below it are
    0700 anyway, and chmod-ing a system directory would break other users."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o777 == PRIVATE_DIR_MODE:
        return path
    if shared_ok and (info.st_uid != os.geteuid() or info.st_mode & stat.S_ISVTX):
        log.warning("%s is mode %o and not only ours: left as it is (its host folders are "
                    "0700); give offsite a directory of its own", path, info.st_mode & 0o7777)
        return path
    path.chmod(PRIVATE_DIR_MODE)
    return path


def prepare_host_staging(settings: HostSettings) -> Path:
    """An empty staging folder for the host, with one empty folder per script."""
    private_dir(settings.staging_root, shared_ok=True)
    root = settings.staging
    empty_host_staging(settings)
    private_dir(root)
    for script in settings.scripts:
        (root / script).mkdir(mode=PRIVATE_DIR_MODE)
        (root / script).chmod(PRIVATE_DIR_MODE)
    return root


def empty_host_staging(settings: HostSettings) -> None:
    root = settings.staging
    if root.exists():
        shutil.rmtree(root)


def host_cache(settings: HostSettings) -> Path:
    """duplicity's archive dir for the host, made private if need be: kept between runs so
    incrementals need no download."""
    private_dir(settings.cache_root, shared_ok=True)
    return private_dir(settings.cache)
