"""`offsite check`: what the config schedules, and whether broker, bucket and SNS answer.

`--connect --role R` checks what the node of role R needs and nothing else, with the keys
that node holds (docs/operations.md, Deploying):
- host: the broker, the bucket with the upload keys (DUPLICITY_AWS_*), its passphrase (or
  public keys) and its own newest chain;
- control: the broker, the SNS topic with the alert keys (ALERT_AWS_*), the prune identity
  (PRUNE_AWS_*) when retention is set, and when drills run on the control node the drill's read
  (a listing and the newest manifest of each drilled host with the read identity READ_AWS_*)
  and the passphrase that opens it;
- operator: the broker, a listing of the bucket with the read identity (READ_AWS_*), the recover
  identity when RECOVER_AWS_* is set;
- all: everything from this node (provisioning and escrow included), as before roles.
Without --role, the role comes from the keys in the environment (detect_role)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable
import os
import redis
import socket

from offsite.config.broker import broker_client
from offsite.config.model import Config
from offsite.constants import BackupType
from offsite.crypto.escrow import escrow_problems
from offsite.crypto.passphrase import read_passphrase
from offsite.deploy.provision_apply import plan_differences
from offsite.duplicity.keycheck import check_key_opens
from offsite.durations import format_duration
from offsite.errors import OffsiteError, PassphraseError
from offsite.host.settings import HostSettings, TargetSettings, resolve_host
from offsite.schedule.specs import next_run, utcnow
from offsite.target.bucket import (READ_IDENTITY, bucket_name, credentials_problem,
                                   probe_bucket, read_s3_client, reading_identity)
from offsite.crypto.manifest_count import read_keyed_catalog
from offsite.watch.alerts import SnsSink
from offsite.watch.apprise_sink import apprise_problems

ROLES = ("host", "control", "operator", "all")
# the key families provision writes for each node (offsite.deploy.provision): whose keys are here
ROLE_KEYS = {"host": ("DUPLICITY_AWS_ACCESS_KEY_ID",),
             "control": ("ALERT_AWS_ACCESS_KEY_ID", "PRUNE_AWS_ACCESS_KEY_ID"),
             "operator": ("RECOVER_AWS_ACCESS_KEY_ID",)}


def detect_role(env: Mapping[str, str]) -> str:
    """The role whose keys alone are in the environment; `all` when none or several are (a
    single-machine fleet, or a node holding every key)."""
    present = [role for role, keys in ROLE_KEYS.items() if any(env.get(k) for k in keys)]
    return present[0] if len(present) == 1 else "all"


def host_of_this_node(config: Config, explicit: str | None) -> str:
    """--host, else this machine's short hostname when the config names it."""
    if explicit is not None:
        config.host(explicit)
        return explicit
    short = socket.gethostname().split(".")[0]
    if short in config.hosts:
        return short
    raise OffsiteError(f"this machine ({short[:63]}) is not a host of the config: give "
                       "--host HOST", step="check")


def describe_hosts(config: Config) -> str:
    now = utcnow()
    zone = config.schedule.timezone
    lines = [f"config OK: {len(config.hosts)} host(s), times in {zone}"]
    for host, host_config in config.hosts.items():
        lines.append(f"{host}: scripts {', '.join(host_config.scripts)}")
        if (limit := config.upload_limit(host)) is not None:
            lines.append(f"  upload limit {limit:,} bytes/s")
        if offset := config.spread_offset(host):
            lines.append(f"  spread +{format_duration(offset)} (schedule.spread "
                         f"{format_duration(config.schedule.spread or 0)})")
        for kind in BackupType:
            spec = config.host_schedule(host, kind)
            when = next_run(spec, zone, now)
            lines.append(f"  next {kind.value:<4} {when.strftime('%Y-%m-%d %H:%M %Z')}"
                         f"  ({spec.describe()})")
    return "\n".join(lines)


def hosts_as_json(config: Config) -> list[dict[str, Any]]:
    now = utcnow()
    zone = config.schedule.timezone
    return [{"host": host, "scripts": list(host_config.scripts),
             "paths": {name: str(path) for name, path in host_config.folders().items()},
             "spread_s": config.spread_offset(host),
             "next": {kind.value: next_run(config.host_schedule(host, kind), zone,
                                           now).isoformat() for kind in BackupType}}
            for host, host_config in config.hosts.items()]


def broker_problems(config: Config) -> list[str]:
    try:
        client = broker_client(config.broker_url, config.broker_sentinel_master,
                               socket_connect_timeout=5, socket_timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return [f"broker unreachable: {exc}"]
    return []


PERSISTENCE_LINES = "`appendonly yes` and `appendfsync everysec`"


def persistence_problems(config: Config) -> list[str]:
    """The broker's Redis must keep an append-only file: it holds beat's schedule, the run
    ledger and the pending alerts, and a restart without one loses them all."""
    try:
        client = broker_client(config.broker_url, config.broker_sentinel_master,
                               socket_connect_timeout=5, socket_timeout=10)
        try:
            info = client.info("persistence")
        finally:
            client.close()
    except redis.RedisError as exc:
        return [f"broker persistence unknown: INFO persistence failed ({exc}); it must have "
                f"{PERSISTENCE_LINES} in its redis.conf"]
    if str(info.get("aof_enabled", "0")) != "1":
        return ["broker Redis keeps no append-only file (aof_enabled:0): a restart loses "
                "beat's schedule, the run ledger and pending alerts; add "
                f"{PERSISTENCE_LINES} to its redis.conf (deploy/redis.conf.example)"]
    return []


def sns_problems(config: Config) -> list[str]:
    if not config.alerts.sns_topic_arn:
        return []
    try:
        SnsSink(config).client.get_topic_attributes(TopicArn=config.alerts.sns_topic_arn)
    except Exception as exc:  # any failure to reach the topic is the finding
        return [f"SNS topic not reachable with the alert keys (ALERT_AWS_*): {exc}"]
    return []


def _fleet_target(config: Config) -> TargetSettings:
    """The target as any host sees it: the bucket, endpoint and region are the fleet's."""
    return resolve_host(config, next(iter(config.hosts))).target


def _listing_problem(config: Config, what: str, client_of: Callable[[TargetSettings], Any],
                     prefix: str = "", identity: str | None = None) -> list[str]:
    """Whether `what`'s identity can list the bucket (under prefix); a missing key is named by
    its variables."""
    bucket = bucket_name(config)
    if bucket is None:
        return []
    try:
        client = client_of(_fleet_target(config))
        try:
            client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        finally:
            client.close()
    except Exception as exc:  # botocore's errors, credentials missing: the finding
        missing = credentials_problem(exc, identity) if identity else None
        return [f"bucket {bucket} not listable with the {what}: {missing or exc}"]
    return []


def _drill_read_problems(config: Config, hosts: list[str]) -> list[str]:
    """The read a drill of each host makes on this node: the bucket listed and the host's
    newest manifest fetched (and opened by the passphrase) with the reading identity."""
    if not hosts or bucket_name(config) is None:
        return []
    identity = reading_identity()
    if identity != READ_IDENTITY and not os.environ.get(f"{identity}_AWS_ACCESS_KEY_ID"):
        identity = READ_IDENTITY   # the default chain: a missing key is the read identity's
    problems = _listing_problem(config, f"read identity of drills ({identity}_AWS_*)",
                                read_s3_client, identity=identity)
    return problems or key_problems(config, hosts)


def check_connections(config: Config, role: str = "all", host: str | None = None) -> list[str]:
    """One line per unreachable service or unusable key of the node's role; empty when all
    answer. `host` is the host of a `host` node."""
    problems = broker_problems(config)
    if role == "host":
        assert host is not None
        settings = resolve_host(config, host)
        problems += public_key_problems(settings)
        if (bucket_problem := probe_bucket(settings.target)) is not None:
            return problems + [f"{bucket_problem[0]} (upload keys DUPLICITY_AWS_*)"]
        return problems + key_problems(config, [host])
    if role == "control":
        if not problems:
            problems += persistence_problems(config)
        problems += sns_problems(config) + apprise_problems(config)
        if any(config.keep_full_chains(h) is not None for h in config.hosts):
            from offsite.proof.retention import prune_s3_client
            problems += _listing_problem(config, "prune identity (PRUNE_AWS_*)",
                                         prune_s3_client)
        drilled_here = [h for h in config.hosts if config.verify_on(h) == "control"
                        and config.verify_schedule(h) is not None]
        problems += _passphrase_problems(config, drilled_here)
        problems += _drill_read_problems(config, drilled_here)
        return problems
    if role == "operator":
        identity = reading_identity()
        problems += _listing_problem(
            config, f"read identity ({identity}_AWS_*)" if identity == READ_IDENTITY
            else "operator's keys (READ_AWS_* not set: the default AWS chain)",
            read_s3_client, identity=identity if identity == READ_IDENTITY else None)
        if os.environ.get("RECOVER_AWS_ACCESS_KEY_ID"):
            from offsite.proof.recover import recover_client
            problems += _listing_problem(config, "recover identity (RECOVER_AWS_*)",
                                         recover_client)
        return problems
    if (bucket_problem := probe_bucket(_fleet_target(config))) is not None:
        problems.append(bucket_problem[0])
    else:
        problems += key_problems(config)
    problems += sns_problems(config) + apprise_problems(config)
    problems += security_problems(config)   # provisioning plan, escrow of the keys
    return problems


def public_key_problems(settings: HostSettings) -> list[str]:
    """In public-key mode: the host's public keys file holds the recipients' keys (and no
    secret one), as a run would import them."""
    from offsite.crypto.encryption import public_keyring
    try:
        with public_keyring(settings):
            return []
    except OffsiteError as error:
        return [f"public keys: {error.one_line()}"]


def _passphrase_problems(config: Config, hosts: list[str]) -> list[str]:
    from offsite.crypto.passphrase import check_passphrase
    return [f"passphrase for drills of {host}: {problem}" for host in hosts
            for problem in check_passphrase(config, host).problems]


def key_problems(config: Config, hosts: list[str] | None = None) -> list[str]:
    """Whether this node's passphrase opens each host's newest backup set (when it has one):
    a changed passphrase is found here, not at the next restore."""
    problems = []
    for host in hosts if hosts is not None else list(config.hosts):
        settings = resolve_host(config, host)
        try:
            read_passphrase(settings)
        except PassphraseError:
            continue   # reported by the passphrase check itself
        try:
            chain = read_keyed_catalog(settings).newest_chain
            if chain is not None and chain.last.manifest is not None:
                check_key_opens(settings, chain.last.manifest, step="check")
        except OffsiteError as error:
            problems.append(error.one_line())
    return problems


def security_problems(config: Config) -> list[str]:
    """For `offsite check --connect`: differences from the provisioning plan (when the fleet is
    managed by `offsite provision`) and hosts no key held here can decrypt."""
    problems: list[str] = []
    if config.provision.managed:
        problems += [f"provisioning: {line}" for line in plan_differences(config)]
    try:
        problems += [f"escrow: host {result.host}: {result.detail}"
                     for result in escrow_problems(config)]
    except OffsiteError as exc:
        problems.append(f"escrow: {exc.one_line()}")
    return problems
