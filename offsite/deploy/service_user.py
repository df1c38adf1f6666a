"""The system users the units run as (`User=` in offsite.deploy.units): whether they exist on
this machine, and whether the files the control node reads as that user (the passphrase files
of the hosts it drills) are readable by it. `install-units` prints the commands that make it so;
nothing here changes the system."""
from __future__ import annotations

import grp
import pwd
import shlex
import stat
from pathlib import Path

from offsite.config.model import Config
from offsite.host.settings import resolve_host

SYSUSERS_LINE = 'u {user} - "offsite backups" /var/lib/offsite'


def create_user_commands(user: str) -> list[str]:
    """The two ways to create the service user: systemd-sysusers, or useradd."""
    return [f"echo '{SYSUSERS_LINE.format(user=user)}' > /etc/sysusers.d/offsite.conf && "
            "systemd-sysusers",
            f"useradd --system --home-dir /var/lib/offsite --shell /usr/sbin/nologin {user}"]


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def readable_by(path: Path, user: str) -> bool:
    """Whether `user` may read `path` by its mode bits (owner, group, other); root may."""
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return True
    info = path.stat()
    if info.st_uid == entry.pw_uid:
        return bool(info.st_mode & stat.S_IRUSR)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    if info.st_gid in groups:
        return bool(info.st_mode & stat.S_IRGRP)
    return bool(info.st_mode & stat.S_IROTH)


def drill_secrets(config: Config) -> list[Path]:
    """The passphrase files the control node reads for the drills it runs."""
    files = []
    for host in config.hosts:
        settings = resolve_host(config, host)
        if settings.verify_on != "control" or settings.verify_schedule is None:
            continue
        path = settings.encryption.passphrase_file
        if path is not None and Path(path) not in files:
            files.append(Path(path))
    return files


def user_advice(config: Config, service_user: str, worker_user: str,
                host_only: bool) -> list[str]:
    """One line per thing to do before the units start: a user to create, a passphrase file
    the control node's user cannot read (with the commands)."""
    users = [worker_user] if host_only else list(dict.fromkeys((service_user, worker_user)))
    lines = []
    for user in users:
        if not user_exists(user):
            commands = create_user_commands(user)
            lines.append(f"the units run as {user}, which does not exist here: create it with "
                         f"`{commands[0]}` or `{commands[1]}`")
    if host_only or not user_exists(service_user):
        return lines
    for path in drill_secrets(config):
        try:
            if readable_by(path, service_user):
                continue
        except OSError:
            continue   # a missing file is check's finding, not this one
        quoted = shlex.quote(str(path))
        lines.append(f"drills run on the control node as {service_user}, which cannot read "
                     f"{path}: `chgrp {service_user} {quoted} && chmod 0640 {quoted}`")
    return lines
