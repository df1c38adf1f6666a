"""Script kinds (bash, python): how each is turned into a command, in one explicit registry."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Protocol

from offsite.config import Config, ScriptConfig
from offsite.execute import CommandResult, run_command
from offsite.staging import script_staging


class ScriptKind(Protocol):
    def __call__(self, code: str) -> list[str]: ...


def bash_argv(code: str) -> list[str]:
    return ["bash", "-e", "-o", "pipefail", "-c", code]


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SCRIPT_KINDS: dict[str, ScriptKind] = {"bash": bash_argv, "python": python_argv}


@dataclass(frozen=True)
class ScriptRun:
    host: str
    run_id: str
    backup_type: str
    name: str


def script_env(run: ScriptRun) -> dict[str, str]:
    """The worker's environment without offsite's own secrets, plus the run's identity."""
    env = {name: value for name, value in os.environ.items()
           if name not in {"PASSPHRASE"} and not name.startswith(("DUPLICITY_AWS_", "ALERT_AWS_"))}
    env.update(OFFSITE_HOST=run.host, OFFSITE_RUN_ID=run.run_id,
               OFFSITE_BACKUP_TYPE=run.backup_type, OFFSITE_SCRIPT=run.name)
    return env


def script_step(name: str) -> str:
    """The step name of a script in run records and errors."""
    return f"script:{name}"


def run_script(config: Config, run: ScriptRun,
               on_tick: Callable[[], None] | None = None) -> CommandResult:
    """Run one configured script in its staging folder; raises CommandError on failure or timeout."""
    script: ScriptConfig = config.host(run.host).scripts[run.name]
    argv = SCRIPT_KINDS[script.kind](script.code)
    return run_command(argv, timeout_s=script.timeout, host=run.host, step=script_step(run.name),
                       env=script_env(run), cwd=script_staging(config, run.host, run.name),
                       capture_stdout=False, on_tick=on_tick)
