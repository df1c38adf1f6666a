"""`offsite check`: what the config schedules, and whether broker, bucket and SNS answer."""
from __future__ import annotations

import os

import boto3
import redis
from botocore.config import Config as BotoConfig

from offsite.config import Config
from offsite.constants import BackupType
from offsite.schedules import next_run, utcnow


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
    target = config.target.url
    if target.startswith(("boto3+s3://", "s3://")):
        bucket = target.split("://", 1)[1].split("/", 1)[0]
        s3 = boto3.client(
            "s3", endpoint_url=config.target.endpoint_url, region_name=config.target.region,
            aws_access_key_id=os.environ.get("DUPLICITY_AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("DUPLICITY_AWS_SECRET_ACCESS_KEY"),
            config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=5))
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            problems.append(f"bucket {bucket} not reachable: {exc}")
    if config.alerts.sns_topic_arn:
        sns = boto3.client(
            "sns", endpoint_url=config.alerts.endpoint_url, region_name=config.alerts.sns_region,
            aws_access_key_id=os.environ.get("ALERT_AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("ALERT_AWS_SECRET_ACCESS_KEY"),
            config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=5))
        try:
            sns.get_topic_attributes(TopicArn=config.alerts.sns_topic_arn)
        except Exception as exc:
            problems.append(f"SNS topic not reachable: {exc}")
    return problems
