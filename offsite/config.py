"""The YAML configuration, validated strictly by pydantic; every problem is reported at once."""
from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field,
                      PlainValidator, ValidationError, model_validator)

from offsite.constants import (DEFAULT_CONFIG_PATH, DEFAULT_SCRIPT_TIMEOUT_S,
                               DEFAULT_UPLOAD_TIMEOUT_S, BackupType)
from offsite.config_rules import (ConfigProblems, PathProblem, check_absolute_path,
                                  check_broker_url, check_http_url, check_target_url, overlap,
                                  scan_data, system_dir_problem)
from offsite.durations import format_duration, parse_duration
from offsite.errors import ConfigError, UnknownHostError
from offsite.http_config import HttpConfig
from offsite.schedules import CronSpec, EverySpec, ScheduleSpec, parse_schedule_spec
from offsite.security_config import (EncryptionConfig, HostEncryption, Layout,
                                     ProvisionConfig)
from offsite.yaml_loader import MAX_CONFIG_BYTES, YamlProblem, decode_config_bytes, load_yaml

MAX_HOSTS = 10_000
MAX_SCRIPTS_PER_HOST = 100
MAX_SCRIPT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 64 * 1024
DEFAULT_MIN_INTERVAL_S = 60

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; "
                         "starting with a letter or digit; at most 63 characters)")
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC or "
                         "Europe/London)") from None
    return value


def _check_script_code(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
        raise ValueError(f"script code is longer than {MAX_SCRIPT_BYTES // 1024} KiB: put it in "
                         "a file on the host and call that file")
    if not value.strip():
        raise ValueError("script code is empty")
    return value


def _check_data_root(value: Path) -> Path:
    path = check_absolute_path(value)
    if (problem := system_dir_problem(path)) is not None:
        raise ValueError(problem)
    return path


def _check_region(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,40}", value):
        raise ValueError(f"{value[:60]!r} is not a region name like eu-west-1")
    return value


def _check_topic_arn(value: str) -> str:
    if not re.fullmatch(r"arn:[a-z-]{1,20}:sns:[a-z0-9-]{0,40}:[0-9]{0,12}:[A-Za-z0-9_.-]{1,256}",
                        value):
        raise ValueError(f"{value[:80]!r} is not an SNS topic ARN "
                         "(arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
Name = Annotated[str, AfterValidator(_check_name)]
Schedule = Annotated[Any, PlainValidator(parse_schedule_spec)]
DataRoot = Annotated[Path, AfterValidator(_check_data_root)]
AbsolutePath = Annotated[Path, AfterValidator(check_absolute_path)]
HttpUrl = Annotated[str, AfterValidator(check_http_url)]
Region = Annotated[str, AfterValidator(_check_region)]
ScriptCode = Annotated[str, AfterValidator(_check_script_code)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_TEXT_CHARS)


class ScriptConfig(StrictModel):
    bash: ScriptCode | None = Field(None, description="bash code, run as "
                                    "`bash -e -o pipefail -c` (at most 64 KiB)")
    python: ScriptCode | None = Field(None, description="Python code, run with the worker's "
                                      "interpreter (at most 64 KiB)")
    timeout: Duration = Field(DEFAULT_SCRIPT_TIMEOUT_S,
                              description="kill the script's process group after this long")
    user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
                             description="run the script as this system user (the worker must "
                             "run as root); checked on the worker when the script runs")

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptConfig:
        if (self.bash is None) == (self.python is None):
            raise ValueError("give exactly one of 'bash' or 'python'")
        return self

    @property
    def kind(self) -> str:
        return "bash" if self.bash is not None else "python"

    @property
    def code(self) -> str:
        return self.bash if self.bash is not None else str(self.python)


class HostSchedule(StrictModel):
    full: Schedule | None = Field(None, description="when full backups run (overrides the fleet)")
    incr: Schedule | None = Field(None, description="when incrementals run (overrides the fleet)")
    max_full_interval: Duration | None = Field(
        None, description="an incremental is promoted to full when the last full is older")
    promote_to_full: bool | None = Field(
        None, description="promote an incremental to full when the target holds no usable "
                          "chain (else the run fails with class chain_missing)")


class HostVerify(StrictModel):
    schedule: Schedule | None = Field(None, description="when this host's restore drills run "
                                                        "(overrides verify.schedule)")
    on: str | None = Field(None, description="where this host's drills run: control, or the "
                                            "name of a host whose worker runs them")


class HostRetention(StrictModel):
    keep_full_chains: int | None = Field(None, ge=1, le=1000,
                                         description="complete chains this host keeps")


class HostConfig(StrictModel):
    scripts: dict[Name, ScriptConfig] = Field(
        description="dump scripts, run in this order, each in its own staging folder",
        min_length=1, max_length=MAX_SCRIPTS_PER_HOST)
    paths: dict[Name, AbsolutePath] = Field(
        default_factory=dict, description="folders backed up in place (not copied), restored "
                                          "as DEST/<name>/")
    schedule: HostSchedule = Field(default_factory=HostSchedule)
    verify: HostVerify = Field(default_factory=HostVerify)
    retention: HostRetention = Field(default_factory=HostRetention)
    encryption: HostEncryption | None = Field(
        None, description="this host's own passphrase_file (or recipients): see "
                          "offsite.security_config")

    @model_validator(mode="after")
    def _paths_absolute_and_apart(self) -> HostConfig:
        for name, path in self.paths.items():
            if not path.is_absolute() or ".." in path.parts or str(path) == "/":
                raise ValueError(f"paths.{name}: {str(path)!r} must be an absolute folder "
                                 "other than / (no '..')")
        clash = sorted(set(self.paths) & set(self.scripts))
        if clash:
            raise ValueError(f"paths and scripts share the name(s) {clash}: each is a folder "
                             "of the restore")
        return self


class TargetConfig(StrictModel):
    url: Annotated[str, AfterValidator(check_target_url)] = Field(
        description="duplicity URL with a bucket or an absolute folder; the host name is "
                    "appended")
    endpoint_url: HttpUrl | None = Field(None, description="S3-compatible endpoint (MinIO, "
                                         "Garage)")
    region: Region | None = Field(None, description="S3 region name")
    upload_timeout: Duration = Field(DEFAULT_UPLOAD_TIMEOUT_S,
                                     description="kill duplicity after this long")
    volsize: int = Field(200, gt=0, le=10240, strict=True,
                         description="duplicity volume size in MiB")
    retries: int = Field(3, ge=1, le=100, strict=True,
                         description="tries of a failing backend operation (network, 5xx) "
                                     "before the upload fails")
    retry_delay: Duration = Field(10, description="wait between those tries")
    layout: Layout = Field("split", description="split: data volumes under their own name "
                           "prefix (archivable by the lifecycle); flat: duplicity's names")

    def host_url(self, host: str) -> str:
        return f"{self.url}/{host}"


class AlertsConfig(StrictModel):
    sns_topic_arn: Annotated[str, AfterValidator(_check_topic_arn)] | None = Field(
        None, description="SNS topic alerts are published to")
    region: Region | None = Field(None, description="SNS region; default: the topic ARN's region")
    endpoint_url: HttpUrl | None = Field(None, description="SNS endpoint for non-AWS services")
    heartbeat_url: HttpUrl | None = Field(
        None, description="dead man's switch: a healthchecks.io-style push URL the control "
                          "node GETs on every healthy watchdog tick")

    @property
    def sns_region(self) -> str | None:
        if self.region:
            return self.region
        parts = (self.sns_topic_arn or "").split(":")
        return parts[3] if len(parts) > 3 and parts[3] else None


class ScheduleConfig(StrictModel):
    timezone: Annotated[str, AfterValidator(_check_timezone)] = Field(
        "UTC", description="zone the cron expressions are read in")
    full: Schedule = Field(CronSpec("0 0 1 * *"), description="default full schedule")
    incr: Schedule = Field(CronSpec("0 4 * * 1"), description="default incremental schedule")
    max_full_interval: Duration = Field(35 * 86400, description="promote an incr to full after")
    promote_to_full: bool = Field(
        True, description="promote an incremental to full when the target holds no usable "
                          "chain (else the run fails with class chain_missing)")
    min_interval: Duration = Field(DEFAULT_MIN_INTERVAL_S, description="the shortest "
                                   "`{every: D}` allowed anywhere (default 1m)")
    anchor: AwareDatetime = Field(_EPOCH, description="{every: D} slots fall at anchor + k*D")


class WatchdogConfig(StrictModel):
    every: Duration = Field(120, description="how often the watchdog checks")
    start_grace: Duration = Field(900, description="a slot not started by then is missed")
    lease_ttl: Duration = Field(60, description="a run whose lease is not renewed is lost")
    worker_timeout: Duration = Field(300, description="a silent host worker is reported down")
    stale_after: Duration | None = Field(
        None, description="alert when a host had no successful backup for this long; "
                          "default: twice its incremental interval")


class VerifyConfig(StrictModel):
    schedule: Schedule | None = Field(None, description="when restore drills run, e.g. "
                                                        "{every: 7d}; none by default")
    on: str = Field("control", description="where drills run: control (the control node, "
                                           "which then needs the key) or a host's name")


class RetentionConfig(StrictModel):
    keep_full_chains: int | None = Field(
        None, ge=1, le=1000, description="complete chains each host keeps; none: keep all")
    schedule: Schedule = Field(EverySpec(86400), description="when the control node prunes "
                                                              "(hosts with keep_full_chains)")


class Config(StrictModel):
    broker_url: Annotated[str, AfterValidator(check_broker_url)] = Field(
        "redis://localhost:6379/0", description="redis:// or rediss:// URL")
    staging_root: DataRoot = Field(Path("/var/lib/offsite/staging"),
                                   description="scripts write here; one folder per host")
    cache_root: DataRoot | None = Field(None, description="duplicity archive dirs; default "
                                        "<staging_root>/../cache")
    target: TargetConfig
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)
    http: HttpConfig | None = Field(None, description="served by `offsite control` when set: "
                                    "/metrics, /api/hosts, the fleet page")
    hosts: dict[Name, HostConfig] = Field(min_length=1, max_length=MAX_HOSTS,
                                          description="the hosts backed up")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Config:
        problems = (self._folder_problems() + self._interval_problems()
                    + self._drill_node_problems())
        if problems:
            raise ConfigProblems(problems)
        return self

    def _drill_node_problems(self) -> list[PathProblem]:
        """A drill runs on the control node or on a configured host's worker."""
        problems = []
        for name, host in self.hosts.items():
            on = host.verify.on or self.verify.on
            if on != "control" and on not in self.hosts:
                where = f"hosts.{name}.verify.on" if host.verify.on else "verify.on"
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
            return replace(spec, anchor=self.schedule.anchor.timestamp())
        return spec

    def verify_schedule(self, name: str) -> ScheduleSpec | None:
        own = self.host(name).verify.schedule
        return own if own is not None else self.verify.schedule

    def run_schedule(self, name: str, kind: str) -> ScheduleSpec | None:
        """When beat sends runs of `kind` (full, incr, verify, prune) for the host; None for
        none (no drills, or no retention)."""
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
        return self.host(name).verify.on or self.verify.on

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
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
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
