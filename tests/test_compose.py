"""compose.yaml, checked without docker (none on these machines): every offsite command is
one the CLI accepts, Redis asks for a password and keeps its 16 MB bulk limit, Flower has
auth, the control node publishes the fleet page's port, the worker sees the data its host's
config backs up, and every file it names exists as a committed example. Plus the systemd
units in deploy/systemd/ are what `offsite install-units` writes for /opt/offsite."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from offsite.cli.main import build_parser
from offsite.config.model import parse_config
from offsite.deploy.units import REFERENCE_INSTALLATION, build_units

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _local_files(service: dict[str, Any]) -> list[str]:
    named = list(service.get("env_file", []))
    named += [volume.split(":")[0] for volume in service.get("volumes", [])
              if volume.startswith("./")]
    return named


def test_every_offsite_command_is_accepted_by_the_cli(compose: dict[str, Any]) -> None:
    commands = {name: service["command"] for name, service in compose["services"].items()
                if service.get("image") == "offsite:latest"}
    assert set(commands) == {"beat", "control", "flower", "worker-carcosa"}
    for name, argv in commands.items():
        assert argv[0] == "offsite", name
        args = build_parser().parse_args(argv[1:])   # SystemExit(2) if refused
        assert args.command == name.split("-")[0], name


def test_redis_needs_a_password_and_keeps_the_bulk_limit(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--proto-max-bulk-len") + 1] == "16mb"
    conf = command[1]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"] if v.startswith("./")}
    assert conf in mounted
    example = (ROOT / (mounted[conf] + ".example")).read_text()
    assert any(line.startswith("requirepass ") for line in example.splitlines())
    assert "ports" not in redis
    broker = (ROOT / "deploy/broker.env.example").read_text()
    assert "OFFSITE_BROKER_URL=redis://:" in broker     # the URL carries the password


def test_flower_has_auth_and_control_publishes_the_fleet_page(
        compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert "./deploy/flower.env" in flower["env_file"]
    assert "FLOWER_BASIC_AUTH=" in (ROOT / "deploy/flower.env.example").read_text()
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    control = compose["services"]["control"]
    assert "127.0.0.1:9808:9808" in control["ports"]
    assert "./deploy/control.env" in control["env_file"]


def test_the_worker_sees_the_data_its_config_backs_up(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-carcosa"]
    config = parse_config(yaml.safe_load((ROOT / "deploy/offsite.yaml.example").read_text()))
    host = config.host(worker["hostname"])
    mounts = {v.split(":")[1]: v for v in worker["volumes"]}
    for name, path in host.folders().items():
        assert str(path) in mounts, f"paths.{name} {path} is not mounted into the worker"
        assert mounts[str(path)].endswith(":ro")
    assert str(config.staging_root) in mounts and str(config.cache_dir) in mounts


def test_every_file_compose_names_has_a_committed_example(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for path in _local_files(service):
            assert (ROOT / (path + ".example")).is_file(), f"{name}: {path}.example missing"
            assert not (ROOT / path).exists() or path.endswith(".yaml") or \
                os.stat(ROOT / path).st_mode & 0o077 == 0, f"{path} is readable by others"


def test_the_repository_units_are_what_install_units_writes() -> None:
    for name, text in build_units(REFERENCE_INSTALLATION).items():
        assert (ROOT / "deploy/systemd" / name).read_text() == text, (
            f"deploy/systemd/{name} is stale: regenerate with `python -m offsite.deploy.units deploy/systemd`")


def test_the_example_replica_is_on_a_second_provider_with_its_keys_in_the_env_files(
        compose: dict[str, Any]) -> None:
    from offsite.config.targets import host_replicas
    config = parse_config(yaml.safe_load((ROOT / "deploy/offsite.yaml.example").read_text()))
    assert config.replicas, "the example shows a replica"
    worker = compose["services"]["worker-carcosa"]
    for name in host_replicas(config, worker["hostname"]):
        replica = config.replicas[name]
        assert (replica.endpoint_url, replica.region) != (config.target.endpoint_url,
                                                          config.target.region)
        host_env = (ROOT / "deploy/carcosa.env.example").read_text()
        assert f"{name.upper()}_AWS_ACCESS_KEY_ID=" in host_env
        assert f"{name.upper()}_PRUNE_AWS_ACCESS_KEY_ID=" in \
            (ROOT / "deploy/control.env.example").read_text()
        assert "./deploy/carcosa.env" in worker["env_file"]
