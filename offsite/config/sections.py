"""The parts of the configuration, each a strict pydantic model (unknown keys are errors); the
value types they share are in offsite.config.types. offsite.config.model assembles them into the
fleet's Config and reads the YAML."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field,
                      PrivateAttr, model_validator)

from offsite.config.rules import check_target_url
from offsite.config.types import (EPOCH, AbsolutePath, DataRoot, Duration, HttpUrl, Rate,
                                  Region, Schedule, ScriptCode, check_timezone,
                                  check_topic_arn)
from offsite.constants import DEFAULT_SCRIPT_TIMEOUT_S, DEFAULT_UPLOAD_TIMEOUT_S, MIN_LEASE_TTL_S
from offsite.schedule.specs import CronSpec, EverySpec
from offsite.config.security import Layout

MAX_SCRIPTS_PER_HOST = 100
MAX_TEXT_CHARS = 64 * 1024
DEFAULT_MIN_INTERVAL_S = 60


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_TEXT_CHARS)


class ScriptConfig(StrictModel):
    bash: ScriptCode | None = Field(None, description="bash code, run as "
                                    "`bash -e -o pipefail -c` (at most 64 KiB)")
    python: ScriptCode | None = Field(None, description="Python code, run with the host's "
                                      "python_interpreter (at most 64 KiB)")
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


def _drill_placement(data: Any) -> Any:
    """`where` (or the old key `"on"`, quoted; an unquoted `on:` is read by YAML as the
    boolean true and refused by offsite.config.rules.scan_data, naming `where`)."""
    if not isinstance(data, dict):
        return data
    if "where" in data and "on" in data:
        raise ValueError("give 'where' (or the old 'on'), not both")
    return data


_WHERE = AliasChoices("where", "on")


class PriorityConfig(StrictModel):
    nice: int = Field(0, ge=0, le=19, description="CPU priority of scripts and duplicity: "
                                                   "0 (normal) to 19 (lowest)")
    io: Literal["normal", "best-effort", "idle"] = Field(
        "normal", description="I/O priority of scripts and duplicity: normal, best-effort "
                              "(its lowest level) or idle (only when the disk is otherwise idle)")


class HostVerify(StrictModel):
    schedule: Schedule | None = Field(None, description="when this host's restore drills run "
                                                        "(overrides verify.schedule)")
    where: str | None = Field(None, validation_alias=_WHERE,
                              description="where this host's drills run: control, or the "
                                          "name of a host whose worker runs them (the old "
                                          "name `\"on\"` is accepted quoted)")

    @model_validator(mode="before")
    @classmethod
    def _placement(cls, data: Any) -> Any:
        return _drill_placement(data)


class HostRetention(StrictModel):
    keep_full_chains: int | None = Field(None, ge=1, le=1000,
                                         description="complete chains this host keeps")


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
    restore_progress_timeout: Duration = Field(
        1800, description="a restore, verify or drill that restores no byte (and downloads "
                          "none) for this long fails, naming the volume it was reading")
    upload_limit: Rate | None = Field(
        None, description="the most bytes per second a host's upload sends (10MB/s, 512KiB/s); "
                          "hosts.<host>.upload_limit overrides it; primary target only")
    layout: Layout = Field("split", description="split: data volumes under their own name "
                           "prefix (archivable by the lifecycle); flat: duplicity's names")

    # None: the primary target (DUPLICITY_AWS_* keys); a replica's upper-cased name when seen
    # through offsite.config.replicas.target_view (<NAME>_AWS_* keys). Not a config key.
    _identity: str | None = PrivateAttr(None)

    @property
    def identity(self) -> str | None:
        return self._identity

    def host_url(self, host: str) -> str:
        return f"{self.url}/{host}"


MAX_APPRISE_URLS = 20
_APPRISE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}://\S+$")


def check_apprise_url(value: str) -> str:
    """scheme://…; the message never repeats the URL (it may hold a token)."""
    if len(value) > 4096 or not _APPRISE_URL.match(value):
        raise ValueError("not an Apprise URL (scheme://…, no spaces, at most 4096 characters)")
    return value


AppriseUrl = Annotated[str, AfterValidator(check_apprise_url)]


class AlertsConfig(StrictModel):
    sns_topic_arn: Annotated[str, AfterValidator(check_topic_arn)] | None = Field(
        None, description="SNS topic alerts are published to")
    region: Region | None = Field(None, description="SNS region; default: the topic ARN's region")
    endpoint_url: HttpUrl | None = Field(None, description="SNS endpoint for non-AWS services")
    heartbeat_url: HttpUrl | None = Field(
        None, description="dead man's switch: a healthchecks.io-style push URL the control "
                          "node GETs on every healthy watchdog tick (none while a Redis loss "
                          "is not rebuilt)")
    webhook_url: HttpUrl | None = Field(
        None, description="alerts also (or only) as a JSON POST {subject, message, attributes} "
                          "to this URL, retried through the outbox like SNS")
    apprise_urls: tuple[AppriseUrl, ...] = Field(
        (), max_length=MAX_APPRISE_URLS,
        description="alerts also (or only) to these Apprise URLs (mailto://, slack://, "
                    "ntfy://, json://…); URLs holding secrets belong in apprise_urls_file or "
                    "$OFFSITE_APPRISE_URLS instead")
    apprise_urls_file: AbsolutePath | None = Field(
        None, description="a file of Apprise URLs, one a line (# comments), read on the "
                          "alerting node; keep it mode 600")

    @property
    def sns_region(self) -> str | None:
        if self.region:
            return self.region
        parts = (self.sns_topic_arn or "").split(":")
        return parts[3] if len(parts) > 3 and parts[3] else None


class ScheduleConfig(StrictModel):
    timezone: Annotated[str, AfterValidator(check_timezone)] = Field(
        "UTC", description="zone the cron expressions are read in")
    full: Schedule = Field(CronSpec("0 0 1 * *"), description="default full schedule")
    incr: Schedule = Field(CronSpec("0 4 * * 1"), description="default incremental schedule")
    max_full_interval: Duration = Field(35 * 86400, description="promote an incr to full after")
    promote_to_full: bool = Field(
        True, description="promote an incremental to full when the target holds no usable "
                          "chain (else the run fails with class chain_missing)")
    min_interval: Duration = Field(DEFAULT_MIN_INTERVAL_S, description="the shortest "
                                   "`{every: D}` allowed anywhere (default 1m)")
    anchor: AwareDatetime = Field(EPOCH, description="{every: D} slots fall at anchor + k*D")
    spread: Duration | None = Field(
        None, le=7 * 86400, description="fleet load control: each host's full and incr slots are shifted by "
                          "a fixed offset within this window, derived from its name (e.g. 1h: "
                          "fulls at 00:00 start between 00:00 and 01:00); `check` shows it")


class WatchdogConfig(StrictModel):
    every: Duration = Field(120, description="how often the watchdog checks")
    start_grace: Duration = Field(900, description="a slot not started by then is missed")
    queued_grace: Duration = Field(
        3600, description="a run still queued this long after start_grace (counted from its "
                          "request) raises run_stuck")
    lease_ttl: Duration = Field(
        60, ge=MIN_LEASE_TTL_S, description="a run whose lease is not renewed for this long is "
        f"lost; renewed every quarter of it, so at least {MIN_LEASE_TTL_S}s")
    worker_timeout: Duration = Field(300, description="a silent host worker is reported down")
    stale_after: Duration | None = Field(
        None, description="alert when a host had no successful backup for this long; "
                          "default: twice its incremental interval")
    replica_behind_after: Duration = Field(
        86400, description="alert (replica_behind) when a replica lacks a set the primary has "
                           "held for longer than this")
    replica_catch_up: Duration | None = Field(
        3600, description="how often the control node copies to each replica what it lacks "
                          "of the primary (hosts whose latest replica state is behind or "
                          "failed), oldest first, under the host lease, reading the primary "
                          "with READ_AWS_* and writing with <NAME>_AWS_*; null: only the "
                          "host's next backup catches up")
    escrow_every: Duration = Field(
        6 * 3600, description="how often the control node checks that the keys it holds "
                              "decrypt each host's newest backup (condition escrow_failed)")


class VerifyConfig(StrictModel):
    schedule: Schedule | None = Field(None, description="when restore drills run, e.g. "
                                                        "{every: 7d}; none by default")
    where: str = Field("control", validation_alias=_WHERE,
                       description="where drills run: control (the control node, which then "
                                   "needs the key and the read identity READ_AWS_*) or a "
                                   "host's name (the old name `\"on\"` is accepted quoted)")
    targets: list[str] | None = Field(
        None, min_length=1, max_length=17,
        description="the targets drills rotate over (primary and replica names); default: "
                    "primary and each of the host's replicas")
    scratch: DataRoot | None = Field(
        None, description="the folder drills restore into (a whole set: checked for free "
                          "space first); default <cache_root>/.verify-tmp. Not the Redis "
                          "volume: a drill must never fill the disk the ledger lives on")

    @model_validator(mode="before")
    @classmethod
    def _placement(cls, data: Any) -> Any:
        return _drill_placement(data)


class RetentionConfig(StrictModel):
    keep_full_chains: int | None = Field(
        None, ge=1, le=1000, description="complete chains each host keeps; none: keep all")
    schedule: Schedule = Field(EverySpec(86400), description="when the control node prunes "
                                                              "(hosts with keep_full_chains)")
