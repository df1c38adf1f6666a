"""The harness itself: real Redis, moto S3/SNS/SQS, config and environment, process groups."""
from __future__ import annotations

import json
import re
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from offsite.config.model import load_config
from tests.helpers import (VENV_BIN, AwsResources, ConfigFactory, HarnessError, ManagedProcess,
                           OffsiteEnv, RedisServer, build_offsite_env, describe, find_leaks,
                           run_command, wait_until)


def _pid_alive(pid: int) -> bool:
    """True for a live process; a zombie waiting for an absent reaper counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("attempt", [1, 2])
def test_redis_answers_and_each_test_starts_empty(redis_client: redis.Redis,
                                                  attempt: int) -> None:
    assert redis_client.ping()
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", str(attempt))


def test_redis_restart_keeps_the_same_url(redis_server: RedisServer,
                                          redis_client: redis.Redis) -> None:
    url = redis_server.url
    redis_client.set("k", "v")

    redis_server.restart()
    assert redis_server.url == url
    assert redis_client.ping()  # the existing client reconnects on its own
    assert redis_client.get("k") is None  # no persistence: a restart loses everything

    redis_client.set("k", "v")
    redis_server.restart(save=True)
    assert redis_client.get("k") == "v"

    redis_server.stop()
    with redis_server.client(socket_connect_timeout=0.5) as down:
        with pytest.raises(redis.exceptions.ConnectionError):
            down.ping()
    redis_server.start()
    with redis_server.client() as fresh:
        assert fresh.ping()


def test_redis_left_stopped_by_a_test_is_running_again(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running


def test_redis_is_back_for_the_next_test(redis_client: redis.Redis) -> None:
    assert redis_client.ping()


@pytest.mark.slow
def test_published_alert_arrives_in_the_queue(aws: AwsResources) -> None:
    aws.sns.publish(TopicArn=aws.topic_arn, Subject="backup failed: carcosa",
                    Message="step postgres exited 1",
                    MessageAttributes={"host": {"DataType": "String", "StringValue": "carcosa"}})

    alerts = aws.alerts(1, timeout=10)

    assert len(alerts) == 1
    assert alerts[0]["Subject"] == "backup failed: carcosa"
    assert alerts[0]["Message"] == "step postgres exited 1"
    assert alerts[0]["MessageAttributes"]["host"]["Value"] == "carcosa"
    started = time.monotonic()
    assert len(aws.alerts(2, timeout=1.5)) == 1  # cumulative; no second alert came
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_child_process_publishes_with_the_alert_credentials(
        aws: AwsResources, offsite_env: OffsiteEnv, tmp_path: Path) -> None:
    code = (
        "import boto3, os\n"
        "sns = boto3.client('sns', endpoint_url=os.environ['EP'],\n"
        "    aws_access_key_id=os.environ['ALERT_AWS_ACCESS_KEY_ID'],\n"
        "    aws_secret_access_key=os.environ['ALERT_AWS_SECRET_ACCESS_KEY'])\n"
        "sns.publish(TopicArn=os.environ['TOPIC'], Subject='from child', Message='hi')\n"
    )
    env = {**offsite_env, "EP": aws.endpoint_url, "TOPIC": aws.topic_arn}
    result = run_command([str(VENV_BIN / "python"), "-c", code], env=env, cwd=tmp_path,
                         timeout=60)
    assert result.returncode == 0, describe(result)
    assert [a["Subject"] for a in aws.alerts(1, timeout=10)] == ["from child"]


@pytest.mark.slow
def test_bucket_is_versioned_and_lists_keys(aws: AwsResources) -> None:
    aws.s3.put_object(Bucket=aws.bucket, Key="carcosa/a", Body=b"1")
    aws.s3.put_object(Bucket=aws.bucket, Key="carcosa/a", Body=b"2")
    aws.s3.put_object(Bucket=aws.bucket, Key="other/b", Body=b"3")

    assert aws.object_keys() == ["carcosa/a", "other/b"]
    assert aws.object_keys("carcosa/") == ["carcosa/a"]
    assert len(aws.object_versions("carcosa/")) == 2


@pytest.mark.slow
def test_make_config_writes_a_valid_offsite_config(make_config: ConfigFactory,
                                                   aws: AwsResources, redis_url: str,
                                                   tmp_path: Path) -> None:
    path = make_config({"carcosa": {"scripts": {"data": {"bash": "echo hi > a.txt"}}}},
                       watchdog={"lease_ttl": "5s"}, alerts=None)

    config = load_config(path)

    assert config.broker_url == redis_url
    assert config.target.url == f"boto3+s3://{aws.bucket}"
    assert config.target.endpoint_url == aws.endpoint_url
    assert config.staging_root == tmp_path / "staging"
    assert config.watchdog.lease_ttl == 5
    assert config.alerts.sns_topic_arn is None
    assert config.encryption.passphrase_file == make_config.passphrase_file
    assert make_config.passphrase_file.read_text().strip() == make_config.passphrase
    assert stat.S_IMODE(make_config.passphrase_file.stat().st_mode) == 0o600
    assert make_config.passphrase not in path.read_text()


def test_offsite_env_drops_inherited_secrets(tmp_path: Path) -> None:
    inherited = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "real", "PASSPHRASE": "real",
                 "AWS_SECRET_ACCESS_KEY": "real", "OFFSITE_CONFIG": "/etc/x.yaml",
                 "OFFSITE_BROKER_URL": "redis://prod", "LANG": "C.UTF-8"}

    env = build_offsite_env(inherited, tmp_path)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PASSPHRASE", "OFFSITE_CONFIG",
                 "OFFSITE_BROKER_URL"):
        assert name not in env
    assert env["PATH"].split(":")[0] == str(VENV_BIN)
    assert env["LANG"] == "C.UTF-8"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert len(set(env.secrets)) == 4
    assert find_leaks(f"log {env['ALERT_AWS_SECRET_ACCESS_KEY']}", env.secrets) == [
        env["ALERT_AWS_SECRET_ACCESS_KEY"]]


_GROUP_SCRIPT = """
trap '' TERM  # like a worker busy in a long task: SIGTERM alone does not end it
sleep 300 &
echo "child $!"
echo "node ready."
wait
"""


def test_started_process_is_ready_and_its_whole_group_is_stopped(
        start_process: Callable[..., ManagedProcess]) -> None:
    proc = start_process("group", ["bash", "-c", _GROUP_SCRIPT], " ready.")
    child = int(re.search(r"^child (\d+)$", proc.log_text(), re.M).group(1))  # type: ignore[union-attr]
    assert proc.alive and _pid_alive(child)

    started = time.monotonic()
    proc.stop(timeout=1)

    assert time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL
    # the child is SIGKILLed with the group, but on a loaded machine it may take a moment to go
    wait_until(lambda: not _pid_alive(child), 10, f"the group's child {child} to be gone")

    proc.restart(timeout=1)
    assert proc.log_text().count("node ready.") == 2
    proc.stop(timeout=1)


def test_process_exiting_before_ready_fails_with_its_log(
        start_process: Callable[..., ManagedProcess]) -> None:
    with pytest.raises(HarnessError, match="(?s)exited.*no broker here"):
        start_process("early", [sys.executable, "-c", "print('no broker here'); exit(3)"],
                      " ready.")


def test_run_command_kills_a_hung_command(tmp_path: Path, offsite_env: OffsiteEnv) -> None:
    started = time.monotonic()
    with pytest.raises(HarnessError, match="still running"):
        run_command(["bash", "-c", "echo before; sleep 60"], env=offsite_env, cwd=tmp_path,
                    timeout=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_alert_payload_is_plain_json(aws: AwsResources) -> None:
    aws.sns.publish(TopicArn=aws.topic_arn, Message=json.dumps({"run_id": "r1"}))
    (alert,) = aws.alerts(1, timeout=10)
    assert json.loads(alert["Message"]) == {"run_id": "r1"}
    assert alert["Subject"] is None
