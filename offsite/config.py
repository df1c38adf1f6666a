"""The YAML configuration, validated strictly by pydantic; every problem is reported at once."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      PlainValidator, ValidationError, model_validator)

from offsite.constants import (DEFAULT_CONFIG_PATH, DEFAULT_SCRIPT_TIMEOUT_S,
                               DEFAULT_UPLOAD_TIMEOUT_S, BackupType)
from offsite.durations import parse_duration
from offsite.errors import ConfigError, UnknownHostError
from offsite.schedules import CronSpec, ScheduleSpec, parse_schedule_spec
from offsite.security_config import (EncryptionConfig, HostEncryption, Layout,
                                     ProvisionConfig)

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


def _check_target_url(value: str) -> str:
    if not re.match(r"^(file|boto3\+s3|s3)://.+", value):
        raise ValueError(f"target url {value!r} must start with file://, boto3+s3:// or s3://")
    return value.rstrip("/")


Duration = Annotated[int, BeforeValidator(parse_duration)]
Name = Annotated[str, AfterValidator(_check_name)]
Schedule = Annotated[Any, PlainValidator(parse_schedule_spec)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptConfig(StrictModel):
    bash: str | None = Field(None, description="bash code, run as `bash -e -o pipefail -c`")
    python: str | None = Field(None, description="Python code, run with the worker's interpreter")
    timeout: Duration = Field(DEFAULT_SCRIPT_TIMEOUT_S,
                              description="kill the script's process group after this long")

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


class HostConfig(StrictModel):
    scripts: dict[Name, ScriptConfig] = Field(
        description="dump scripts, run in this order, each in its own staging folder",
        min_length=1)
    schedule: HostSchedule = Field(default_factory=HostSchedule)
    encryption: HostEncryption | None = Field(
        None, description="this host's own passphrase_file (or recipients): see "
                          "offsite.security_config")


class TargetConfig(StrictModel):
    url: Annotated[str, AfterValidator(_check_target_url)] = Field(
        description="duplicity URL; the host name is appended")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Garage)")
    region: str | None = Field(None, description="S3 region name")
    upload_timeout: Duration = Field(DEFAULT_UPLOAD_TIMEOUT_S,
                                     description="kill duplicity after this long")
    volsize: int = Field(200, gt=0, description="duplicity volume size in MiB")
    retries: int = Field(3, ge=1, description="tries of a failing backend operation (network, "
                                             "5xx) before the upload fails")
    retry_delay: Duration = Field(10, description="wait between those tries")
    layout: Layout = Field("split", description="split: data volumes under their own name "
                           "prefix (archivable by the lifecycle); flat: duplicity's names")

    def host_url(self, host: str) -> str:
        return f"{self.url}/{host}"


class AlertsConfig(StrictModel):
    sns_topic_arn: str | None = Field(None, description="SNS topic alerts are published to")
    region: str | None = Field(None, description="SNS region; default: the topic ARN's region")
    endpoint_url: str | None = Field(None, description="SNS endpoint for non-AWS services")

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


class WatchdogConfig(StrictModel):
    every: Duration = Field(120, description="how often the watchdog checks")
    start_grace: Duration = Field(900, description="a slot not started by then is missed")
    lease_ttl: Duration = Field(60, description="a run whose lease is not renewed is lost")
    worker_timeout: Duration = Field(300, description="a silent host worker is reported down")
    stale_after: Duration | None = Field(
        None, description="alert when a host had no successful backup for this long; "
                          "default: twice its incremental interval")


class Config(StrictModel):
    broker_url: str = Field("redis://localhost:6379/0", description="Redis URL")
    staging_root: Path = Field(Path("/var/lib/offsite/staging"),
                               description="scripts write here; one folder per host")
    cache_root: Path | None = Field(None, description="duplicity archive dirs; default "
                                    "<staging_root>/../cache")
    target: TargetConfig
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)
    hosts: dict[Name, HostConfig] = Field(min_length=1, description="the hosts backed up")

    @model_validator(mode="after")
    def _staging_and_cache_apart(self) -> Config:
        if self.cache_root is not None and self.cache_root == self.staging_root:
            raise ValueError("cache_root must not be staging_root (staging is emptied per run)")
        return self

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
        return own if own is not None else getattr(self.schedule, backup_type.value)

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
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(["file not found: create it or pass --config FILE"],
                          path=str(path)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"YAML syntax error{where}: {problem}"], path=str(path)) from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of settings"], path=source)
    data = dict(data)
    if broker := os.environ.get("OFFSITE_BROKER_URL"):
        data["broker_url"] = broker
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()], path=source) from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and indentation)"
    elif error["type"] == "missing":
        message = "required but missing"
    message = message.removeprefix("Value error, ")
    return f"At '{where}': {message}" if where else message
