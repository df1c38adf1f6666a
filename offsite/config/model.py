"""The YAML configuration, validated strictly by pydantic; every problem is reported at once.
The parts of the config and the value types they share live in offsite.config.sections."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from offsite.config.rules import (ConfigProblems, PathProblem, check_broker_url, overlap,
                                  scan_data, system_dir_problem)
from offsite.config.sections import (MAX_SCRIPTS_PER_HOST, AlertsConfig, HostRetention,
                                     HostSchedule, HostVerify, PriorityConfig, RetentionConfig,
                                     ScheduleConfig,
                                     ScriptConfig, StrictModel, TargetConfig, VerifyConfig,
                                     WatchdogConfig)
from offsite.config.excludes import PathEntry, duplicity_globs
from offsite.config.types import DataRoot, Interpreter, Name, Rate
from offsite.config.replicas import MAX_REPLICAS, ReplicaName, replica_problems
from offsite.constants import DEFAULT_CONFIG_PATH, BackupType
from offsite.bounded import read_regular_file
from offsite.durations import format_duration
from offsite.errors import ConfigError, UnknownHostError
from offsite.config.http import HttpConfig
from offsite.schedule.spread import spread, spread_offset
from offsite.schedule.specs import EverySpec, ScheduleSpec
from offsite.config.security import EncryptionConfig, HostEncryption, ProvisionConfig
from offsite.config.yaml_loader import MAX_CONFIG_BYTES, YamlProblem, decode_config_bytes, load_yaml

__all__ = ["Config", "HostConfig", "ScriptConfig", "config_path", "load_config", "parse_config"]

MAX_HOSTS = 10_000


class HostConfig(StrictModel):
    scripts: dict[Name, ScriptConfig] = Field(
        description="dump scripts, run in this order, each in its own staging folder",
        min_length=1, max_length=MAX_SCRIPTS_PER_HOST)
    paths: dict[Name, PathEntry] = Field(
        default_factory=dict, description="folders backed up in place (not copied), restored "
                                          "as DEST/<name>/: a folder, or {path, exclude}")
    schedule: HostSchedule = Field(default_factory=HostSchedule)
    verify: HostVerify = Field(default_factory=HostVerify)
    priority: PriorityConfig | None = Field(
        None, description="this host's nice/ionice for scripts and duplicity (overrides "
                          "priority)")
    retention: HostRetention = Field(default_factory=HostRetention)
    upload_limit: Rate | None = Field(
        None, description="the most bytes per second this host's upload sends (overrides "
                          "target.upload_limit)")
    encryption: HostEncryption | None = Field(
        None, description="this host's own passphrase_file (or recipients): see "
                          "offsite.config.security")
    replicas: list[ReplicaName] | None = Field(
        None, max_length=MAX_REPLICAS, description="the replicas this host's sets are copied "
                                                   "to (absent: every replica; []: none)")
    python_interpreter: Interpreter | None = Field(
        None, description="absolute path of the interpreter `python:` scripts run with (e.g. "
                          "/usr/bin/python3 to import system packages such as psycopg2); "
                          "default: offsite's own; checked on the host when a script runs")

    @model_validator(mode="after")
    def _paths_absolute_and_apart(self) -> HostConfig:
        for name, path in self.folders().items():
            if not path.is_absolute() or ".." in path.parts or str(path) == "/":
                raise ValueError(f"paths.{name}: {str(path)!r} must be an absolute folder "
                                 "other than / (no '..')")
        clash = sorted(set(self.paths) & set(self.scripts))
        if clash:
            raise ValueError(f"paths and scripts share the name(s) {clash}: each is a folder "
                             "of the restore")
        return self

    def folders(self) -> dict[str, Path]:
        """Each `paths:` entry's folder, by name."""
        return {name: entry.path for name, entry in self.paths.items()}

    def excludes(self) -> dict[str, tuple[str, ...]]:
        """The absolute duplicity globs each entry with exclude patterns leaves out."""
        return {name: duplicity_globs(entry.path, entry.exclude)
                for name, entry in self.paths.items() if entry.exclude}


class Config(StrictModel):
    broker_url: Annotated[str, AfterValidator(check_broker_url)] = Field(
        "redis://localhost:6379/0", description="redis:// or rediss:// URL, or Redis "
        "Sentinel's sentinel://H1:P1;sentinel://H2:P2;… with broker_sentinel_master (TLS: "
        "ssl_ca_certs=… on its first part, as on a rediss:// URL)")
    broker_sentinel_master: Name | None = Field(
        None, description="the master's name the sentinels of a sentinel:// broker_url know")
    staging_root: DataRoot = Field(Path("/var/lib/offsite/staging"),
                                   description="scripts write here; one folder per host")
    cache_root: DataRoot | None = Field(None, description="duplicity archive dirs; default "
                                        "<staging_root>/../cache")
    target: TargetConfig
    replicas: dict[ReplicaName, TargetConfig] = Field(
        default_factory=dict, max_length=MAX_REPLICAS,
        description="more targets every set is copied to (same fields as target); credentials "
                    "from <NAME>_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, else the default chain")
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    priority: PriorityConfig = Field(default_factory=PriorityConfig,
                                     description="nice/ionice of every host's scripts and "
                                                 "duplicity runs")
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)
    http: HttpConfig | None = Field(None, description="served by `offsite control` when set: "
                                    "/metrics, /api/hosts, the fleet page")
    hosts: dict[Name, HostConfig] = Field(min_length=1, max_length=MAX_HOSTS,
                                          description="the hosts backed up")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Config:
        problems = (self._folder_problems() + self._interval_problems()
                    + [PathProblem(f"replicas.{name}.upload_limit", "caps the primary "
                                   "target's uploads only: remove it here")
                       for name, replica in self.replicas.items() if replica.upload_limit]
                    + self._drill_node_problems() + self._sentinel_problems()
                    + replica_problems(
                        self.target, self.replicas,
                        {name: host.replicas for name, host in self.hosts.items()},
                        self.verify.targets))
        if problems:
            raise ConfigProblems(problems)
        return self

    def _sentinel_problems(self) -> list[PathProblem]:
        from offsite.config.broker import is_sentinel
        if is_sentinel(self.broker_url) and not self.broker_sentinel_master:
            return [PathProblem("broker_sentinel_master", "a sentinel:// broker_url needs the "
                                "master's name the sentinels know (e.g. offsite)")]
        if self.broker_sentinel_master and not is_sentinel(self.broker_url):
            return [PathProblem("broker_sentinel_master", "set only with a sentinel:// "
                                "broker_url")]
        return []

    def _drill_node_problems(self) -> list[PathProblem]:
        """A drill runs on the control node or on a configured host's worker."""
        problems = []
        for name, host in self.hosts.items():
            on = host.verify.where or self.verify.where
            if on != "control" and on not in self.hosts:
                where = f"hosts.{name}.verify.where" if host.verify.where else "verify.where"
                problems.append(PathProblem(where, f"{on[:64]!r} is neither 'control' nor a "
                                            "configured host"))
        return problems

    def _folder_problems(self) -> list[PathProblem]:
        """Staging is uploaded and emptied on every run: the cache inside it would be backed
        up and deleted (every incremental a full), staging inside the cache likewise."""
        problems: list[PathProblem] = []
        cache_key = ("cache_root" if self.cache_root
                     else "cache_root (default <staging_root>/../cache)")
        if overlap(self.staging_root, self.cache_dir):
            problems.append(PathProblem(cache_key, f"{self.cache_dir} and staging_root "
                                        f"{self.staging_root} overlap: keep them apart, "
                                        "neither inside the other"))
        elif (problem := system_dir_problem(self.cache_dir)) is not None:
            problems.append(PathProblem(cache_key, problem))
        scratch = self.verify.scratch
        if scratch is not None and overlap(scratch, self.staging_root):
            problems.append(PathProblem("verify.scratch", f"{scratch} and staging_root "
                                        f"{self.staging_root} overlap: staging is emptied on "
                                        "every run; keep them apart"))
        secret = self.encryption.passphrase_file
        for key, folder in (("staging_root", self.staging_root), ("cache_root", self.cache_dir)):
            if secret is not None and overlap(secret, folder):
                problems.append(PathProblem("encryption.passphrase_file",
                                            f"{secret} is inside {key} {folder}: it would be "
                                            "backed up or deleted; keep it elsewhere"))
        return problems

    def _interval_problems(self) -> list[PathProblem]:
        floor = self.schedule.min_interval
        specs = [(f"schedule.{kind}", getattr(self.schedule, kind)) for kind in ("full", "incr")]
        specs += [("verify.schedule", self.verify.schedule),
                  ("retention.schedule", self.retention.schedule)]
        for host, host_config in self.hosts.items():
            specs += [(f"hosts.{host}.schedule.{kind}", getattr(host_config.schedule, kind))
                      for kind in ("full", "incr")]
            specs.append((f"hosts.{host}.verify.schedule", host_config.verify.schedule))
        return [PathProblem(where, f"every {format_duration(spec.seconds)} is shorter than "
                            f"schedule.min_interval ({format_duration(floor)}); raise the "
                            "interval, or lower schedule.min_interval if you mean it")
                for where, spec in specs if isinstance(spec, EverySpec) and spec.seconds < floor]

    @property
    def cache_dir(self) -> Path:
        return self.cache_root or self.staging_root.parent / "cache"

    def host(self, name: str) -> HostConfig:
        """The host's config; raises UnknownHostError naming the configured hosts."""
        try:
            return self.hosts[name]
        except KeyError:
            raise UnknownHostError(name, sorted(self.hosts)) from None

    def host_schedule(self, name: str, backup_type: BackupType) -> ScheduleSpec:
        own = getattr(self.host(name).schedule, backup_type.value)
        spec = own if own is not None else getattr(self.schedule, backup_type.value)
        if isinstance(spec, EverySpec):  # interval slots sit on the fleet's grid
            spec = replace(spec, anchor=self.schedule.anchor.timestamp())
        return spread(spec, self.spread_offset(name))

    def host_priority(self, name: str) -> PriorityConfig:
        own = self.host(name).priority
        return own if own is not None else self.priority

    def upload_limit(self, name: str) -> int | None:
        """Bytes per second the host's upload may send; None: no cap."""
        own = self.host(name).upload_limit
        return own if own is not None else self.target.upload_limit

    def spread_offset(self, name: str) -> int:
        """The host's fixed offset within schedule.spread (0 without one)."""
        return spread_offset(name, self.schedule.spread)

    def verify_schedule(self, name: str) -> ScheduleSpec | None:
        own = self.host(name).verify.schedule
        return own if own is not None else self.verify.schedule

    def run_schedule(self, name: str, kind: str) -> ScheduleSpec | None:
        """When beat sends runs of `kind` (full, incr, verify, prune) for the host; None for
        none (no drills, or no retention; an operator's restore is never scheduled)."""
        if kind == "restore":
            return None
        if kind == "verify":
            return self.verify_schedule(name)
        if kind == "prune":
            return self.retention.schedule if self.keep_full_chains(name) is not None else None
        return self.host_schedule(name, BackupType(kind))

    def keep_full_chains(self, name: str) -> int | None:
        own = self.host(name).retention.keep_full_chains
        return own if own is not None else self.retention.keep_full_chains

    def verify_on(self, name: str) -> str:
        """Where the host's drills run: "control" or a host name."""
        return self.host(name).verify.where or self.verify.where

    def max_run_s(self, name: str) -> int:
        """The longest a run of the host may take: every script's timeout plus the upload's."""
        scripts = self.host(name).scripts.values()
        return sum(script.timeout for script in scripts) + self.target.upload_timeout

    def promote_to_full(self, name: str) -> bool:
        own = self.host(name).schedule.promote_to_full
        return own if own is not None else self.schedule.promote_to_full

    def max_full_interval(self, name: str) -> int:
        own = self.host(name).schedule.max_full_interval
        return own if own is not None else self.schedule.max_full_interval


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("OFFSITE_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    """Read and validate the file; raises ConfigError listing every problem with its path."""
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)   # a FIFO is refused, not waited on
    except FileNotFoundError:
        raise ConfigError(["file not found: create it or pass --config FILE"],
                          path=str(path)) from None
    except IsADirectoryError:
        raise ConfigError(["is a folder, not a file: pass --config FILE"], path=str(path)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError([f"cannot read: {getattr(exc, 'strerror', None) or exc}"],
                          path=str(path)) from None
    try:
        data = load_yaml(decode_config_bytes(raw))
    except YamlProblem as exc:
        raise ConfigError([str(exc)], path=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"YAML syntax error{where}: {problem}"], path=str(path)) from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str | None = None) -> Config:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError([f"the top level must be a mapping of settings (this file is {kind})"],
                          path=source)
    if data_problems := scan_data(data):
        raise ConfigError([problem.line() for problem in data_problems], path=source)
    data = dict(data)
    from_env = os.environ.get("OFFSITE_BROKER_URL")
    if from_env:
        data["broker_url"] = from_env
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [line for error in exc.errors() for line in _describe(error)]
        if from_env:
            problems = [line.replace("At 'broker_url':", "At 'broker_url' (from "
                                     "$OFFSITE_BROKER_URL):") for line in problems]
        raise ConfigError(problems, path=source) from None


def _describe(error: Any) -> list[str]:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigProblems):
        return [problem.line() for problem in cause.problems]
    where = ".".join(str(part)[:80] for part in error["loc"]
                     if not str(part).startswith("function-") and part != "[key]")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and indentation)"
    elif error["type"] == "missing":
        message = "required but missing"
    message = message.removeprefix("Value error, ")
    return [f"At '{where}': {message}" if where else message]

