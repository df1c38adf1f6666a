"""systemd unit files for this installation (`offsite install-units`): pure builders that
return each unit's text, and the writer.

Why the settings are what they are:

- `KillMode=control-group` (systemd's default, spelled out): a stop sends SIGTERM to every
  process of the service at once. The worker's own handler marks the stop (offsite.process.shutdown),
  so a script or duplicity killed by it leaves its run `lost` (re-run by the watchdog), never
  `failed` with a misleading cause; whatever a script left running dies with the group.
- `TimeoutStopSec`: a graceful stop needs the stop grace (3 s) + TERM-then-KILL of the
  command's group (5 s) + the orphan sweep (10 s) + writing the run's record to Redis (up to
  its 30 s socket timeout) + Celery's own exit: under a minute. STOP_TIMEOUT_S doubles that.
- Sandboxing: beat, control and Flower write nothing but Redis (and the control node's cache
  for drills), so they get `ProtectSystem=strict`, `PrivateTmp`, `NoNewPrivileges`, and
  `ProtectHome=read-only` (not `yes`: a venv, a config or a GNUPGHOME may live in a home). The worker runs dump scripts, which may need to read anything on the host:
  it gets `ProtectSystem=full` (/usr, /boot and /etc read-only: no dump writes there) and not
  `ProtectHome` (data lives in /home too), not `PrivateTmp` (a database's socket may live in
  /tmp, e.g. `/tmp/.s.PGSQL.5432`), not `NoNewPrivileges` (a dump script may call `sudo -u
  postgres pg_dumpall`, which needs the setuid bit; `user:` in the config is the cleaner way).
- Secrets come from `EnvironmentFile=` (mode 0600, root-owned, read by systemd before it drops
  to the service's user), never from the unit.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

STOP_TIMEOUT_S = 120
FLOWER_PORT = 5555
DEFAULT_DEST = Path("/etc/systemd/system")
DEFAULT_ENV_DIR = Path("/etc/offsite")
WORKER_TEMPLATE = "offsite-worker@.service"
UNIT_NAMES = (WORKER_TEMPLATE, "offsite-beat.service", "offsite-control.service",
              "offsite-flower.service")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+@:,~ -]*$")


class UnitError(ValueError):
    """A path or name that cannot be written into a unit file as it is."""


@dataclass(frozen=True)
class Installation:
    """Where this installation lives: the paths every unit names."""
    offsite: Path          # the venv's `offsite` executable
    config: Path           # the YAML every node reads
    writable: tuple[Path, ...] = ()   # what the control node writes (staging, cache)
    env_dir: Path = DEFAULT_ENV_DIR
    service_user: str = "offsite"     # beat, control, Flower
    worker_user: str = "root"         # workers: dump scripts read what must be backed up

    def __post_init__(self) -> None:
        for path in (self.offsite, self.config, self.env_dir, *self.writable):
            _check_path(path)
        if " " in str(self.env_dir):
            raise UnitError(f"{str(self.env_dir)[:80]!r}: EnvironmentFile= takes no quoting; "
                            "use a folder without spaces")
        for user in (self.service_user, self.worker_user):
            if not _USER.match(user):
                raise UnitError(f"{user[:40]!r} is not a system user name")


def installed_offsite() -> Path:
    """The `offsite` beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "offsite"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("offsite")
    if found is None:
        raise UnitError("no `offsite` executable beside this Python or on PATH: install offsite "
                        "(pip install .) first")
    return Path(found).absolute()


def _check_path(path: Path) -> None:
    """Only characters a unit file reads back verbatim: no `%` (specifiers), `$` (variables),
    quotes, backslashes, `;` or control characters; a space is quoted."""
    text = str(path)
    if not path.is_absolute():
        raise UnitError(f"{text[:80]!r} is not an absolute path")
    if not _SAFE_PATH.match(text):
        raise UnitError(f"{text[:80]!r} holds a character a unit file would not read back as "
                        "it is (%, $, quotes, backslash, ';', control characters): use a path "
                        "without them")


def quote(word: str) -> str:
    """A word checked by _check_path (or a fixed one), quoted when it holds a space."""
    return f'"{word}"' if " " in word else word


def _exec(words: list[str], instance: bool = False) -> str:
    line = " ".join(quote(word) for word in words)
    return line + (" %i" if instance else "")


def _common(description: str, install: Installation, user: str, env_file: str,
            optional_env: bool, exec_start: str) -> list[str]:
    env_path = f"{install.env_dir}/{env_file}"
    return [
        "# Written by `offsite install-units`; secrets live in the EnvironmentFile (mode 0600),",
        "# never here.",
        "[Unit]", f"Description={description}",
        "After=network-online.target", "Wants=network-online.target", "",
        "[Service]", "Type=simple", f"User={user}",
        "Environment=" + quote(f"OFFSITE_CONFIG={install.config}"),
        f"EnvironmentFile={'-' if optional_env else ''}{env_path}",
        f"ExecStart={exec_start}",
        "Restart=on-failure", "RestartSec=10s",
        "KillMode=control-group", f"TimeoutStopSec={STOP_TIMEOUT_S}s",
    ]


def _strict_sandbox(writable: tuple[Path, ...]) -> list[str]:
    lines = ["ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
             "NoNewPrivileges=yes", "ProtectKernelTunables=yes", "ProtectControlGroups=yes"]
    if writable:   # "-": a folder not made yet is no reason to refuse the start
        lines.append("ReadWritePaths=" + " ".join("-" + quote(str(p)) for p in writable))
    return lines


def _install(wanted_by: str = "multi-user.target") -> list[str]:
    return ["", "[Install]", f"WantedBy={wanted_by}", ""]


def worker_unit(install: Installation) -> str:
    base = [str(install.offsite), "--config", str(install.config), "worker"]
    lines = _common("offsite worker of host %i (queue backup.%i)", install, install.worker_user,
                    "%i.env", False, _exec(base, instance=True))
    lines += ["# dump scripts may read anything: only /usr, /boot and /etc are read-only",
              "ProtectSystem=full",
              "# not ProtectHome (data lives there), not PrivateTmp (database sockets in /tmp),",
              "# not NoNewPrivileges (a dump script may use sudo): see offsite/units.py"]
    return "\n".join(lines + _install())


def beat_unit(install: Installation) -> str:
    argv = [str(install.offsite), "--config", str(install.config), "beat"]
    lines = _common("offsite beat (the fleet's schedule; one active, others wait)", install,
                    install.service_user, "beat.env", True, _exec(argv))
    return "\n".join(lines + _strict_sandbox(()) + _install())


def control_unit(install: Installation) -> str:
    argv = [str(install.offsite), "--config", str(install.config), "control"]
    lines = _common("offsite control node (alerts, watchdog, drills, prunes)", install,
                    install.service_user, "control.env", False, _exec(argv))
    return "\n".join(lines + _strict_sandbox(install.writable) + _install())


def flower_unit(install: Installation) -> str:
    argv = [str(install.offsite), "--config", str(install.config), "flower",
            "--address", "127.0.0.1", "--port", str(FLOWER_PORT)]
    lines = _common("Flower for offsite (basic auth from flower.env)", install,
                    install.service_user, "flower.env", False, _exec(argv))
    return "\n".join(lines + _strict_sandbox(()) + _install())


def build_units(install: Installation, host_only: bool = False) -> dict[str, str]:
    """File name -> text; a host node needs only the worker template."""
    units = {WORKER_TEMPLATE: worker_unit(install)}
    if not host_only:
        units.update({"offsite-beat.service": beat_unit(install),
                      "offsite-control.service": control_unit(install),
                      "offsite-flower.service": flower_unit(install)})
    return units


def write_units(units: dict[str, str], dest: Path) -> list[Path]:
    """Writes each unit (mode 0644) into dest, which must be an existing folder."""
    if not dest.is_dir():
        raise UnitError(f"{str(dest)[:200]!r} is not an existing folder")
    written = []
    for name, text in units.items():
        path = dest / name
        if path.is_symlink():
            raise UnitError(f"{path} is a symlink: remove it first, offsite will not write "
                            "through it")
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
        written.append(path)
    return written


# The units in the repository (deploy/systemd/) are these, for an installation in /opt/offsite
# (python3 -m venv /opt/offsite/.venv; /opt/offsite/.venv/bin/pip install offsite).
REFERENCE_INSTALLATION = Installation(
    offsite=Path("/opt/offsite/.venv/bin/offsite"), config=Path("/etc/offsite/offsite.yaml"),
    writable=(Path("/var/lib/offsite/staging"), Path("/var/lib/offsite/cache")))


if __name__ == "__main__":   # python -m offsite.deploy.units DIR: rewrite the repository's units
    write_units(build_units(REFERENCE_INSTALLATION), Path(sys.argv[1]))
