"""`offsite check --connect --role`: each node checks what it needs with the keys it holds,
so a fleet with split keys passes on every node, and a node missing what its role needs fails
naming it. Real redis-server and moto_server."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ConfigFactory, free_port, wait_until
from tests.servers import RedisServer

HOST = "carcosa"
KEY_FAMILIES = ("DUPLICITY_AWS_", "ALERT_AWS_", "PRUNE_AWS_", "RECOVER_AWS_")


def _set_aof(server: RedisServer, on: bool) -> None:
    client = server.client(decode_responses=True)
    try:
        client.config_set("appendonly", "yes" if on else "no")
        wait_until(lambda: str(client.info("persistence")["aof_enabled"]) == ("1" if on else "0")
                   and str(client.info("persistence")["aof_rewrite_in_progress"]) == "0",
                   timeout=30, what="Redis to switch its append-only file")
    finally:
        client.close()


@pytest.fixture(autouse=True)
def persistent_broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A control node's check needs a broker that keeps an append-only file."""
    _set_aof(redis_server, True)
    try:
        yield redis_server
    finally:
        _set_aof(redis_server, False)


def _only(env: Any, prefix: str | None) -> dict[str, str | None]:
    """env_extra that removes every key family but `prefix` (which keeps its values)."""
    removed: dict[str, str | None] = {f"{family}{part}": None for family in KEY_FAMILIES
                                      for part in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
    if prefix:
        source = "ALERT_AWS_" if prefix != "DUPLICITY_AWS_" else "DUPLICITY_AWS_"
        for part in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
            removed[f"{prefix}{part}"] = env[f"{source}{part}"]
    return removed


def _config(tmp_path: Path, redis_url: str, aws: Any, sns_up: bool = True,
            passphrase: bool = True) -> Path:
    factory = ConfigFactory(tmp_path, redis_url, aws)
    alerts = {"sns_topic_arn": aws.topic_arn, "region": "eu-west-1",
              "endpoint_url": aws.endpoint_url if sns_up else f"http://127.0.0.1:{free_port()}"}
    encryption = ({"mode": "symmetric", "passphrase_file": factory.passphrase_file}
                  if passphrase else {"mode": "symmetric"})
    return factory({HOST: {"scripts": {"data": {"bash": "echo data > d"}}}}, alerts=alerts,
                   encryption=encryption)


@pytest.mark.slow
def test_a_host_node_checks_its_broker_bucket_passphrase_not_sns(
        tmp_path: Path, redis_url: str, aws: Any, run_offsite: Any, offsite_env: Any) -> None:
    config = _config(tmp_path, redis_url, aws, sns_up=False)
    env = _only(offsite_env, "DUPLICITY_AWS_")
    as_host = run_offsite("check", "--connect", "--host", HOST, "--json", config=config,
                          env_extra=env, timeout=60)
    assert as_host.returncode == 0, as_host.stderr
    report = json.loads(as_host.stdout)
    assert report["role"] == "host" and report["host"] == HOST   # detected: upload keys only
    assert report["problems"] == []
    everything = run_offsite("check", "--connect", "--role", "all", config=config,
                             env_extra=env, timeout=60)
    assert everything.returncode == 1
    assert "SNS topic not reachable" in everything.stderr


@pytest.mark.slow
def test_a_control_node_checks_sns_and_needs_no_passphrase_without_drills(
        tmp_path: Path, redis_url: str, aws: Any, run_offsite: Any, offsite_env: Any) -> None:
    config = _config(tmp_path, redis_url, aws, passphrase=False)
    env = {**_only(offsite_env, "ALERT_AWS_"), "PASSPHRASE": None}
    control = run_offsite("check", "--connect", "--json", config=config, env_extra=env,
                          timeout=60)
    assert control.returncode == 0, control.stderr
    assert json.loads(control.stdout)["role"] == "control"
    assert run_offsite("check", "--connect", "--role", "all", config=config, env_extra=env,
                       timeout=60).returncode == 1   # all: the passphrase is missing here

    (tmp_path / "down").mkdir()
    down = _config(tmp_path / "down", redis_url, aws, sns_up=False, passphrase=False)
    failed = run_offsite("check", "--connect", "--role", "control", config=down, env_extra=env,
                         timeout=60)
    assert failed.returncode == 1
    assert "SNS topic not reachable with the alert keys" in failed.stderr


def test_a_control_node_running_drills_needs_the_passphrase(
        tmp_path: Path, redis_url: str, aws: Any, run_offsite: Any, offsite_env: Any) -> None:
    factory = ConfigFactory(tmp_path, redis_url, aws)
    config = factory({HOST: {"scripts": {"data": {"bash": "echo d > d"}}}},
                     encryption={"mode": "symmetric"},
                     verify={"schedule": {"every": "7d"}, "where": "control"})
    env = {**_only(offsite_env, "ALERT_AWS_"), "PASSPHRASE": None}
    result = run_offsite("check", "--connect", "--role", "control", config=config,
                         env_extra=env, timeout=60)
    assert result.returncode == 1
    assert f"passphrase for drills of {HOST}" in result.stderr


def test_an_operator_lists_the_bucket_and_its_recover_identity(
        tmp_path: Path, redis_url: str, aws: Any, run_offsite: Any, offsite_env: Any) -> None:
    config = _config(tmp_path, redis_url, aws, sns_up=False, passphrase=False)
    env = {**_only(offsite_env, "RECOVER_AWS_"), "PASSPHRASE": None,
           "AWS_ACCESS_KEY_ID": offsite_env["ALERT_AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": offsite_env["ALERT_AWS_SECRET_ACCESS_KEY"]}
    result = run_offsite("check", "--connect", "--json", config=config, env_extra=env,
                         timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["role"] == "operator"


@pytest.mark.slow
def test_a_dead_broker_fails_every_role(tmp_path: Path, aws: Any, run_offsite: Any,
                                        offsite_env: Any) -> None:
    config = _config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", aws)
    for role in ("host", "control", "operator", "all"):
        result = run_offsite("check", "--connect", "--role", role, "--host", HOST,
                             config=config, timeout=60)
        assert result.returncode == 1, role
        assert "broker unreachable" in result.stderr, role


@pytest.mark.slow
def test_a_public_key_host_checks_its_public_keys_not_a_passphrase(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, redis_url: str, aws: Any,
        run_offsite: Any, offsite_env: Any) -> None:
    from tests.security_harness import make_key_pair
    # a short folder: gpg's sockets live in its home, and a socket path holds 107 bytes at most
    pair = make_key_pair(tmp_path_factory.mktemp("keys"), "escrow")
    factory = ConfigFactory(tmp_path, redis_url, aws)

    def config_with(keys_file: Path) -> Path:
        return factory({HOST: {"scripts": {"data": {"bash": "echo data > d"}}}},
                       encryption={"mode": "public-key", "recipients": [pair.fingerprint],
                                   "public_keys_file": keys_file})
    env = {**_only(offsite_env, "DUPLICITY_AWS_"), "PASSPHRASE": None}
    good = run_offsite("check", "--connect", "--host", HOST, config=config_with(pair.public_file),
                       env_extra=env, timeout=120)
    assert good.returncode == 0, good.stderr
    bad = run_offsite("check", "--connect", "--host", HOST, config=config_with(pair.secret_file),
                      env_extra=env, timeout=120)
    assert bad.returncode == 1
    assert "public keys:" in bad.stderr and "holds a secret key" in bad.stderr


def test_a_control_node_fails_on_a_broker_without_an_append_only_file(
        tmp_path: Path, redis_url: str, aws: Any, run_offsite: Any, offsite_env: Any,
        persistent_broker: RedisServer) -> None:
    config = _config(tmp_path, redis_url, aws, passphrase=False)
    env = {**_only(offsite_env, "ALERT_AWS_"), "PASSPHRASE": None}
    _set_aof(persistent_broker, False)
    failed = run_offsite("check", "--connect", "--role", "control", config=config,
                         env_extra=env, timeout=60)
    assert failed.returncode == 1, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if "append-only" in line]
    assert len(lines) == 1 and "`appendonly yes`" in lines[0] \
        and "`appendfsync everysec`" in lines[0], failed.stderr
    # a host node does not need it; a node of every role is told, not failed
    host = run_offsite("check", "--connect", "--role", "host", "--host", HOST, config=config,
                       timeout=60)
    assert "append-only" not in host.stderr, host.stderr
    everything = run_offsite("check", "--connect", "--role", "all", config=config, timeout=60)
    assert "warning: broker Redis keeps no append-only file" in everything.stderr

    _set_aof(persistent_broker, True)
    passed = run_offsite("check", "--connect", "--role", "control", config=config,
                         env_extra=env, timeout=60)
    assert passed.returncode == 0, passed.stderr
    assert "append-only" not in passed.stderr
