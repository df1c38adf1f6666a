"""One host's settings, resolved once from the fleet's config: the fleet's defaults with the
host's own overrides applied, the target's URL with the host appended, the encryption settings
merged. A run (and each command) calls `resolve_host` once and passes the result down; nothing
below it looks the host up in the Config again."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from offsite.config.model import Config
from offsite.config.sections import ScriptConfig, TargetConfig
from offsite.config.targets import host_replicas
from offsite.config.security import DATA_PREFIX, LifecycleConfig
from offsite.process.priority import Priority
from offsite.schedule.specs import ScheduleSpec

__all__ = ["EncryptionSettings", "HostSettings", "TargetSettings", "resolve_host"]


@dataclass(frozen=True)
class EncryptionSettings:
    """The fleet's encryption with the host's overrides (passphrase_file, recipients, keys)."""

    mode: str
    passphrase_file: Path | None
    recipients: tuple[str, ...]
    public_keys_file: Path | None

    @property
    def public_key(self) -> bool:
        """A public-key host holds no passphrase and cannot decrypt."""
        return self.mode == "public-key"


@dataclass(frozen=True)
class TargetSettings:
    """Where the host's backups go: `url` is the fleet's target URL with the host appended."""

    url: str
    endpoint_url: str | None
    region: str | None
    layout: str
    upload_timeout: int
    volsize: int
    retries: int
    retry_delay: int
    lifecycle: LifecycleConfig
    restore_progress_timeout: int = 1800   # see TargetConfig.restore_progress_timeout
    identity: str | None = None   # a replica's upper-cased name: its keys are <NAME>_AWS_*

    def keys(self, role: str) -> str:
        """The environment prefix (before `_AWS_ACCESS_KEY_ID`) of `role`'s keys (DUPLICITY,
        PRUNE, RECOVER) on this target: the role itself on the primary; on a replica
        `<NAME>_<ROLE>` when that is set, else `<NAME>` (offsite.config.replicas)."""
        if self.identity is None:
            return role
        if role != "DUPLICITY" and os.environ.get(f"{self.identity}_{role}_AWS_ACCESS_KEY_ID"):
            return f"{self.identity}_{role}"
        return self.identity

    @property
    def volume_prefix(self) -> str:
        """The name prefix new data volumes are written with ('' in the flat layout)."""
        return DATA_PREFIX if self.layout == "split" else ""

    @property
    def bucket(self) -> str | None:
        """The S3 bucket; None for a file:// target."""
        if not self.url.startswith(("boto3+s3://", "s3://")):
            return None
        return self.url.split("://", 1)[1].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix of the host's objects in the bucket (`[path/]host/`)."""
        rest = self.url.split("://", 1)[1]
        return rest.split("/", 1)[1].strip("/") + "/"

    @property
    def file_dir(self) -> Path | None:
        """The host's folder of a file:// target; None for S3."""
        return Path(self.url.removeprefix("file://")) if self.url.startswith("file://") else None


@dataclass(frozen=True)
class HostSettings:
    """Everything a run or a command needs to know about one host, resolved once."""

    name: str
    scripts: Mapping[str, ScriptConfig]
    paths: Mapping[str, Path]
    staging_root: Path
    cache_root: Path
    target: TargetSettings
    encryption: EncryptionSettings
    python_interpreter: Path | None
    keep_full_chains: int | None
    verify_on: str
    verify_schedule: ScheduleSpec | None
    promote_to_full: bool
    max_full_interval: int
    max_run_s: int
    priority: Priority = Priority()   # nice/ionice of its scripts and duplicity runs
    upload_limit: int | None = None   # bytes/s an upload may send (offsite.duplicity.bandwidth)
    # per `paths:` name, the absolute duplicity globs left out (offsite.config.excludes)
    excludes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    # the host's replicas (offsite.config.replicas), each as a target; see offsite.host.targets
    replicas: Mapping[str, TargetSettings] = field(
        default_factory=lambda: MappingProxyType({}))
    verify_scratch: Path | None = None   # `verify.scratch`; see the property `scratch`

    @property
    def scratch(self) -> Path:
        """Where drills restore (offsite.proof.verify): `verify.scratch`, else
        `<cache_root>/.verify-tmp` (no host name starts with a dot)."""
        return self.verify_scratch or self.cache_root / ".verify-tmp"

    @property
    def staging(self) -> Path:
        """Where the host's scripts write: `<staging_root>/<host>/`."""
        return self.staging_root / self.name

    @property
    def cache(self) -> Path:
        """duplicity's archive dir for the host (made private by offsite.host.sources.host_cache)."""
        return self.cache_root / self.name

    def script_staging(self, script: str) -> Path:
        return self.staging / script


def _target(target: TargetConfig, host: str, lifecycle: LifecycleConfig,
            identity: str | None) -> TargetSettings:
    return TargetSettings(
        url=target.host_url(host), endpoint_url=target.endpoint_url, region=target.region,
        layout=target.layout, upload_timeout=target.upload_timeout, volsize=target.volsize,
        retries=target.retries, retry_delay=target.retry_delay, lifecycle=lifecycle,
        restore_progress_timeout=target.restore_progress_timeout, identity=identity)


def resolve_host(config: Config, name: str) -> HostSettings:
    """The host's settings; raises UnknownHostError naming the configured hosts."""
    host = config.host(name)
    fleet, own = config.encryption, host.encryption
    recipients = own.recipients if own is not None and own.recipients is not None \
        else fleet.recipients
    encryption = EncryptionSettings(
        mode=fleet.mode,
        passphrase_file=(own.passphrase_file if own is not None and own.passphrase_file
                         is not None else fleet.passphrase_file),
        recipients=tuple(recipients),
        public_keys_file=(own.public_keys_file if own is not None and own.public_keys_file
                          is not None else fleet.public_keys_file))
    return HostSettings(
        name=name, scripts=MappingProxyType(dict(host.scripts)),
        paths=MappingProxyType(host.folders()),
        excludes=MappingProxyType(host.excludes()), upload_limit=config.upload_limit(name),
        staging_root=config.staging_root, cache_root=config.cache_dir,
        target=_target(config.target, name, config.provision.lifecycle,
                       config.target.identity),
        replicas=MappingProxyType({
            replica: _target(config.replicas[replica], name, config.provision.lifecycle,
                             replica.upper()) for replica in host_replicas(config, name)}),
        encryption=encryption,
        python_interpreter=host.python_interpreter,
        keep_full_chains=config.keep_full_chains(name), verify_on=config.verify_on(name),
        verify_schedule=config.verify_schedule(name),
        promote_to_full=config.promote_to_full(name),
        max_full_interval=config.max_full_interval(name), max_run_s=config.max_run_s(name),
        priority=Priority(nice=config.host_priority(name).nice, io=config.host_priority(name).io),
        verify_scratch=config.verify.scratch)
