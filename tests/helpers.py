"""Real services for the tests: redis-server, moto_server, offsite processes. No mocks.

The classes here hold no pytest state; tests/conftest.py wraps them in fixtures.
"""
from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.harness import (OFFSITE, REGION, TEST_AWS_KEY_ID, TEST_AWS_SECRET, VENV_BIN,
                           _SCRUBBED_ENV, HarnessError, describe, find_leaks, free_port,
                           read_tail, tail, wait_until)
from tests.processes import (ManagedProcess, ProcessFactory, merged_env,
                             offsite_argv, run_command)
from tests.servers import MotoServer, RedisServer

__all__ = ["OFFSITE", "REGION", "TEST_AWS_KEY_ID", "TEST_AWS_SECRET", "VENV_BIN", "AwsResources",
           "ConfigFactory", "HarnessError", "ManagedProcess", "MotoServer", "OffsiteEnv",
           "ProcessFactory", "RedisServer", "build_offsite_env", "describe", "find_leaks",
           "free_port", "merged_env", "offsite_argv", "read_tail", "run_command", "ledger_json",
           "tail", "wait_until"]


class AwsResources:
    """One test's S3 bucket (versioned), SNS topic and the SQS queue subscribed to it."""

    def __init__(self, moto: MotoServer) -> None:
        self.endpoint_url = moto.endpoint_url
        self.region = REGION
        self.s3 = moto.client("s3")
        self.sns = moto.client("sns")
        self.sqs = moto.client("sqs")
        self._received: list[dict[str, Any]] = []
        suffix = uuid.uuid4().hex[:12]
        self.bucket = f"offsite-{suffix}"
        self.s3.create_bucket(Bucket=self.bucket,
                              CreateBucketConfiguration={"LocationConstraint": REGION})
        self.s3.put_bucket_versioning(Bucket=self.bucket,
                                      VersioningConfiguration={"Status": "Enabled"})
        name = f"offsite-alerts-{suffix}"
        self.topic_arn: str = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue_url: str = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def alerts(self, expected: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every alert published to the topic so far in this test (cumulative across calls),
        waiting up to timeout seconds for there to be at least `expected`.

        Each is the SNS notification: Subject, Message (str), MessageAttributes
        ({name: {"Type": ..., "Value": ...}}), MessageId, TopicArn. To assert "exactly one",
        call alerts(1, t) then alerts(2, a few seconds) and check the length is still 1.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            enough = len(self._received) >= expected
            # Once enough have arrived, one non-waiting receive picks up extras already queued.
            wait = 0 if enough or remaining < 1 else min(int(remaining), 20)
            got = self._receive(wait)
            if enough or (remaining <= 0 and not got):
                return list(self._received)

    def _receive(self, wait_seconds: int) -> int:
        response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=wait_seconds)
        messages = response.get("Messages", [])
        for message in messages:
            body = json.loads(message["Body"])
            body.setdefault("Subject", None)
            body.setdefault("MessageAttributes", {})
            self._received.append(body)
            self.sqs.delete_message(QueueUrl=self.queue_url,
                                    ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def object_keys(self, prefix: str = "") -> list[str]:
        """Current (latest, not deleted) keys under prefix, sorted."""
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def object_versions(self, prefix: str = "") -> list[dict[str, Any]]:
        """Every stored version under prefix (Key, VersionId, IsLatest, Size, LastModified):
        a key with two versions was uploaded twice."""
        versions: list[dict[str, Any]] = []
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            versions.extend(page.get("Versions", []))
        return versions

    def close(self) -> None:
        for client in (self.s3, self.sns, self.sqs):
            client.close()


# --------------------------------------------------------------------------- the ledger


def ledger_json(config: Path, host: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """What `offsite status [HOST] --json --limit LIMIT --config CONFIG` prints, read in this
    process with the command's own code (the ledger of the config's broker, record_as_json):
    for tests that wait on or assert about run records, without a CLI start (~0.3 CPU-s) each."""
    from offsite.cli.common import ledger_store
    from offsite.config.model import load_config
    from offsite.ledger.run_record import record_as_json
    store = ledger_store(load_config(config))
    try:
        records = store.recent(host, limit)
        return list(json.loads(json.dumps([record_as_json(r) for r in records])))
    finally:
        store.client.close()


# --------------------------------------------------------------------------- config, env


def _plain(value: Any) -> Any:
    """Paths to str, recursively, so yaml.safe_dump accepts the tree."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ConfigFactory:
    """make_config(hosts, **overrides) -> Path of an offsite YAML config in tmp_path.

    overrides replace top-level keys; an override of None removes the key (its default applies).
    The passphrase file ends with a newline, as one written by `echo` would. Tests schedule runs
    seconds apart, so `schedule.min_interval` is 1s unless an overriding `schedule` sets it.
    """

    def __init__(self, tmp_path: Path, broker_url: str, aws: AwsResources,
                 store: Any = None) -> None:
        self.tmp_path = tmp_path
        self.broker_url = broker_url
        self.aws = aws
        self.store = store   # the target's S3 server (tests/seaweed.S3Store); None: aws's bucket
        self.passphrase = secrets.token_hex(20)
        self.passphrase_file = tmp_path / "passphrase"
        fd = os.open(self.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.passphrase + "\n")
        self.last: dict[str, Any] | None = None

    def defaults(self) -> dict[str, Any]:
        return {
            "broker_url": self.broker_url,
            "staging_root": self.tmp_path / "staging",
            "cache_root": self.tmp_path / "cache",
            "target": (self.store.target() if self.store is not None else
                       {"url": f"boto3+s3://{self.aws.bucket}",
                        "endpoint_url": self.aws.endpoint_url, "region": REGION}),
            "encryption": {"mode": "symmetric", "passphrase_file": self.passphrase_file},
            "alerts": {"sns_topic_arn": self.aws.topic_arn,
                       "endpoint_url": self.aws.endpoint_url, "region": REGION},
            "schedule": {"min_interval": "1s"},
        }

    def __call__(self, hosts: Mapping[str, Any], *, filename: str = "offsite.yaml",
                 **overrides: Any) -> Path:
        data = self.defaults()
        data["hosts"] = hosts
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            elif key == "schedule" and isinstance(value, Mapping):
                data[key] = {"min_interval": "1s", **value}
            else:
                data[key] = value
        self.last = _plain(data)
        path = self.tmp_path / filename
        path.write_text(yaml.safe_dump(self.last, sort_keys=False))
        return path


class OffsiteEnv(dict[str, str]):
    """The environment of offsite child processes; .secrets lists the credential values."""

    SECRET_KEYS = ("DUPLICITY_AWS_ACCESS_KEY_ID", "DUPLICITY_AWS_SECRET_ACCESS_KEY",
                   "ALERT_AWS_ACCESS_KEY_ID", "ALERT_AWS_SECRET_ACCESS_KEY")

    @property
    def secrets(self) -> list[str]:
        return [self[key] for key in self.SECRET_KEYS if key in self]


def build_offsite_env(base: Mapping[str, str], home: Path) -> OffsiteEnv:
    """base minus inherited AWS/offsite secrets, plus distinct fake upload and alert keys.

    HOME and the AWS config paths point into the test's directory so no real ~/.aws or
    ~/.cache/duplicity is read, and instance metadata lookups are off (they stall for seconds).
    """
    env = OffsiteEnv({k: v for k, v in base.items() if k not in _SCRUBBED_ENV})
    env["PATH"] = os.pathsep.join([str(VENV_BIN), *[p for p in base.get("PATH", "").split(
        os.pathsep) if p and p != str(VENV_BIN)]])
    token = uuid.uuid4().hex
    env.update({
        "DUPLICITY_AWS_ACCESS_KEY_ID": f"AKIAUPLOAD{token[:10].upper()}",
        "DUPLICITY_AWS_SECRET_ACCESS_KEY": f"upload-secret-{token[:20]}",
        "ALERT_AWS_ACCESS_KEY_ID": f"AKIAALERT{token[10:21].upper()}",
        "ALERT_AWS_SECRET_ACCESS_KEY": f"alert-secret-{token[12:32]}",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    })
    return env
