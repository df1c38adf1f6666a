"""Script kinds (bash, python): how each is turned into a command, in one explicit registry,
and what a script is given: its staging folder, an allow-listed environment, its user."""
from __future__ import annotations

import os
import pwd
import sys
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from offsite.config.sections import ScriptConfig
from offsite.errors import OffsiteError
from offsite.process.execute import CommandResult, RunAs, run_command
from offsite.host.settings import HostSettings

# The worker's variables a script sees; nothing else (no broker URL, config path, passphrase,
# AWS_*, DUPLICITY_*, ALERT_* or anything added later) ever reaches it.
PASSED_ENV = frozenset({"PATH", "HOME", "LANG", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR"})
PASSED_ENV_PREFIXES = ("LC_",)
RUN_ENV = ("OFFSITE_HOST", "OFFSITE_RUN_ID", "OFFSITE_BACKUP_TYPE", "OFFSITE_SCRIPT")


class ScriptKind(Protocol):
    def __call__(self, code: str, python: str) -> list[str]: ...


def bash_argv(code: str, python: str) -> list[str]:
    del python
    return ["bash", "-e", "-o", "pipefail", "-c", code]


def python_argv(code: str, python: str) -> list[str]:
    """`python` is the host's `python_interpreter`, by default offsite's own (sys.executable,
    the venv's: it sees offsite's packages, not the system's)."""
    return [python, "-c", code]


SCRIPT_KINDS: dict[str, ScriptKind] = {"bash": bash_argv, "python": python_argv}


@dataclass(frozen=True)
class ScriptRun:
    host: str
    run_id: str
    backup_type: str
    name: str


def script_env(run: ScriptRun, base: Mapping[str, str] | None = None,
               user: pwd.struct_passwd | None = None) -> dict[str, str]:
    """The allow-listed part of the worker's environment plus the run's identity; with a
    `user:`, that user's HOME, USER, LOGNAME and SHELL."""
    source = os.environ if base is None else base
    env = {name: value for name, value in source.items()
           if name in PASSED_ENV or name.startswith(PASSED_ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name,
                   SHELL=user.pw_shell or "/bin/sh")
    env.update(zip(RUN_ENV, (run.host, run.run_id, run.backup_type, run.name)))
    return env


def script_step(name: str) -> str:
    """The step name of a script in run records and errors."""
    return f"script:{name}"


def script_user(script: ScriptConfig, run: ScriptRun) -> pwd.struct_passwd | None:
    """The system user a script runs as (its `user:`), checked here, on the worker."""
    if script.user is None:
        return None
    step = script_step(run.name)
    try:
        user = pwd.getpwnam(script.user)
    except KeyError:
        raise OffsiteError(f"user {script.user!r} does not exist on this machine: create it "
                           "or remove `user:` from the script", host=run.host, step=step) from None
    if user.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise OffsiteError(f"`user: {script.user}` needs the worker to run as root (it runs as "
                           f"uid {os.geteuid()})", host=run.host, step=step)
    return user


def script_interpreter(settings: HostSettings, run: ScriptRun) -> str:
    """The host's python_interpreter, checked here on the host: a missing one fails the step
    with a line that says which path and what to do."""
    configured = settings.python_interpreter
    if configured is None:
        return sys.executable
    if not configured.is_file() or not os.access(configured, os.X_OK):
        raise OffsiteError(f"python_interpreter {configured} is not an executable file on this "
                           "machine: install it or fix hosts."
                           f"{run.host}.python_interpreter", host=run.host,
                           step=script_step(run.name))
    return str(configured)


def run_script(settings: HostSettings, run: ScriptRun,
               on_tick: Callable[[], None] | None = None) -> CommandResult:
    """Run one configured script in its staging folder; raises CommandError on failure or timeout."""
    script: ScriptConfig = settings.scripts[run.name]
    user = script_user(script, run)
    folder = settings.script_staging(run.name)
    run_as = None
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = RunAs(user.pw_uid, user.pw_gid, os.getgrouplist(user.pw_name, user.pw_gid))
    python = script_interpreter(settings, run) if script.kind == "python" else sys.executable
    argv = SCRIPT_KINDS[script.kind](script.code, python)
    return run_command(argv, timeout_s=script.timeout, host=run.host, step=script_step(run.name),
                       env=script_env(run, user=user), cwd=folder,
                       capture_stdout=False, on_tick=on_tick, run_as=run_as,
                       priority=settings.priority)


EMPTY_OUTPUT_NOTE = "empty output:"   # the head of the note that makes a run end `warning`


def empty_output_note(settings: HostSettings, name: str) -> str | None:
    """A note when the script exited 0 but left nothing in its folder (a dump that silently
    wrote nothing backs up nothing: the run ends `warning`, not `succeeded`)."""
    folder = settings.script_staging(name)
    try:
        if any(folder.iterdir()):
            return None
    except OSError:
        return None
    return (f"{EMPTY_OUTPUT_NOTE} script {name} exited 0 but wrote nothing into its folder: "
            "nothing of it is backed up")

