"""`offsite check`: what the config schedules, and whether broker, bucket and SNS answer."""
from __future__ import annotations

import redis

from offsite.alerts import SnsSink
from offsite.catalog import read_catalog
from offsite.config import Config
from offsite.constants import BackupType
from offsite.errors import OffsiteError, PassphraseError
from offsite.keycheck import check_key_opens
from offsite.passphrase import read_passphrase
from offsite.schedules import next_run, utcnow
from offsite.target import probe_bucket


def describe_hosts(config: Config) -> str:
    now = utcnow()
    zone = config.schedule.timezone
    lines = [f"config OK: {len(config.hosts)} host(s), times in {zone}"]
    for host, host_config in config.hosts.items():
        lines.append(f"{host}: scripts {', '.join(host_config.scripts)}")
        for kind in BackupType:
            spec = config.host_schedule(host, kind)
            when = next_run(spec, zone, now)
            lines.append(f"  next {kind.value:<4} {when.strftime('%Y-%m-%d %H:%M %Z')}"
                         f"  ({spec.describe()})")
    return "\n".join(lines)


def check_connections(config: Config) -> list[str]:
    """One line per unreachable service; empty when all answer."""
    problems: list[str] = []
    try:
        redis.Redis.from_url(config.broker_url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        problems.append(f"broker unreachable: {exc}")
    if (bucket_problem := probe_bucket(config)) is not None:
        problems.append(bucket_problem[0])
    else:
        problems += key_problems(config)
    if config.alerts.sns_topic_arn:
        try:
            SnsSink(config).client.get_topic_attributes(TopicArn=config.alerts.sns_topic_arn)
        except Exception as exc:  # any failure to reach the topic is the finding
            problems.append(f"SNS topic not reachable: {exc}")
    from offsite.escrow import security_problems   # provisioning plan, escrow of the keys
    problems += security_problems(config)
    return problems


def key_problems(config: Config) -> list[str]:
    """Whether this node's passphrase opens each host's newest backup set (when it has one):
    a changed passphrase is found here, not at the next restore."""
    try:
        read_passphrase(config, None)
    except PassphraseError:
        return []   # reported by the passphrase check itself
    problems = []
    for host in config.hosts:
        try:
            chain = read_catalog(config, host).newest_chain
            if chain is not None and chain.last.manifest is not None:
                check_key_opens(config, host, chain.last.manifest, step="check")
        except OffsiteError as error:
            problems.append(error.one_line())
    return problems
