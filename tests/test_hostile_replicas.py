"""Hostile and careless `replicas:` configs and `--target` names: each is refused with exit 2 and
one line naming where the problem is, never a traceback; a replica's keys are read from the
node's environment only and appear in no message."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from offsite.cli.main import main
from tests.test_hostile_config import DROP, Case, at, base_config, both, clean_env, write_case

__all__ = ["clean_env"]   # the fixture, imported for the tests here


def _replica(tmp_path: Path) -> dict[str, Any]:
    return {"url": f"file://{tmp_path}/replica"}


SECOND = at("replicas.second", _replica)

CASES = [
    Case("replicas-a-list", "At 'replicas': Input should be a valid dictionary",
         at("replicas", ["second"])),
    Case("replica-no-url", "At 'replicas.second.url': required but missing",
         at("replicas.second", {"region": "eu-west-1"})),
    Case("replica-bad-scheme", "must start with file://, boto3+s3:// or s3://",
         at("replicas.second", {"url": "ftp://example.org/x"})),
    Case("replica-relative-folder", "must name an absolute folder",
         at("replicas.second", {"url": "file://relative/x"})),
    Case("replica-no-bucket", "names no bucket", at("replicas.second", {"url": "s3://"})),
    Case("replica-bad-endpoint", "At 'replicas.second.endpoint_url'",
         at("replicas.second", {"url": "s3://bucket2", "endpoint_url": "ftp://x"})),
    Case("replica-bad-region", "is not a region name",
         at("replicas.second", {"url": "s3://bucket2", "region": "EU WEST"})),
    Case("replica-unknown-key", "At 'replicas.second.aws_secret_access_key': unknown key",
         at("replicas.second", {"url": "s3://bucket2", "aws_secret_access_key": "hunter2"})),
    Case("replica-volsize-zero", "At 'replicas.second.volsize'",
         at("replicas.second", {"url": "s3://bucket2", "volsize": 0})),
    Case("replica-name-upper", "is not a replica name", at("replicas.Second", _replica)),
    Case("replica-name-dash", "is not a replica name", at("replicas.second-site", _replica)),
    Case("replica-name-digit-first", "is not a replica name", at("replicas.2nd", _replica)),
    Case("replica-name-long", "is not a replica name", at("replicas." + "r" * 40, _replica)),
    Case("replica-name-primary", "'primary' is reserved", at("replicas.primary", _replica)),
    Case("replica-name-duplicity", "'duplicity' is reserved",
         at("replicas.duplicity", _replica)),
    Case("replica-name-prune", "'prune' is reserved", at("replicas.prune", _replica)),
    Case("replica-name-bool", "this key is a boolean",
         text=lambda tmp: yaml.safe_dump(base_config(tmp)).encode()
         + b"replicas:\n  yes: {url: 's3://bucket2'}\n"),
    Case("replica-same-as-target", "is the same place as target",
         at("replicas.second", lambda tmp: {"url": f"file://{tmp}/target/"})),
    Case("replica-same-as-replica", "is the same place as replicas.second",
         both(SECOND, at("replicas.third", _replica))),
    Case("replicas-too-many", "At 'replicas'",
         at("replicas", lambda tmp: {f"r{n}": {"url": f"file://{tmp}/r{n}"} for n in range(17)})),
    Case("host-replica-unknown", "'nowhere' is not a configured replica (configured: second)",
         both(SECOND, at("hosts.carcosa.replicas", ["nowhere"]))),
    Case("host-replica-none-configured", "(configured: none)",
         at("hosts.carcosa.replicas", ["second"])),
    Case("host-replica-twice", "names a replica twice",
         both(SECOND, at("hosts.carcosa.replicas", ["second", "second"]))),
    Case("host-replicas-a-string", "At 'hosts.carcosa.replicas'",
         both(SECOND, at("hosts.carcosa.replicas", "second"))),
    Case("host-replica-bad-name", "is not a replica name",
         both(SECOND, at("hosts.carcosa.replicas", ["../etc"]))),
    Case("behind-after-garbage", "At 'watchdog.replica_behind_after'",
         at("watchdog.replica_behind_after", "soon")),
    Case("behind-after-zero", "At 'watchdog.replica_behind_after'",
         at("watchdog.replica_behind_after", 0)),
    Case("catch-up-garbage", "At 'watchdog.replica_catch_up'",
         at("watchdog.replica_catch_up", "soon")),
    Case("catch-up-zero", "At 'watchdog.replica_catch_up'", at("watchdog.replica_catch_up", 0)),
    Case("target-dropped-replicas-left", "At 'target': required but missing",
         both(SECOND, at("target", DROP))),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_replica_config_exits_2_naming_the_problem(
        case: Case, tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(case, tmp_path)
    code = main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert err.startswith(f"offsite: invalid config {path}:"), err
    assert case.expected in err, err[:3000]
    assert "hunter2" not in out + err or case.id == "replica-unknown-key"


def test_a_valid_replica_and_an_opted_out_host_pass_check(
        tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = base_config(tmp_path)
    data["replicas"] = {"second": _replica(tmp_path),
                        "third": {"url": "boto3+s3://other-bucket",
                                  "endpoint_url": "http://127.0.0.1:9"}}
    data["hosts"]["quiet"] = {"scripts": {"s": {"bash": "true"}}, "replicas": []}
    data["hosts"]["picky"] = {"scripts": {"s": {"bash": "true"}}, "replicas": ["third"]}
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err
    from offsite.config.model import load_config
    from offsite.config.targets import host_replicas, target_names
    config = load_config(path)
    assert host_replicas(config, "carcosa") == ["second", "third"]
    assert host_replicas(config, "quiet") == []
    assert target_names(config, "picky") == ["primary", "third"]


@pytest.mark.parametrize("name", ["nowhere", "PRIMARY", "../second", "", "x" * 300])
def test_list_with_an_unknown_target_is_a_usage_error(
        name: str, tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = base_config(tmp_path)
    data["replicas"] = {"second": _replica(tmp_path)}
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["list", "carcosa", "--target", name, "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"{out}\n{err}"
    assert "no target named" in err and "the targets are primary, second" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("target", [
    "s3://attacker-bucket", "file:///etc", "../second", "SECOND", "nowhere", "third", "",
    "x" * 300, 7, ["second"], {"url": "s3://x"}])
def test_a_drill_message_naming_no_target_of_the_host_is_refused(
        target: Any, tmp_path: Path) -> None:
    """A queued drill's target is a name the drill node looks up in its own config, never a
    place: a URL, a path, another host's replica or a non-string is refused in one line."""
    from offsite.config.model import parse_config
    from offsite.wire.messages import VERIFY, MalformedMessage, validate_message
    data = base_config(tmp_path)
    data["replicas"] = {"second": _replica(tmp_path),
                        "third": {"url": f"file://{tmp_path}/third"}}
    data["hosts"]["carcosa"]["replicas"] = ["second"]
    config = parse_config(data)
    run_id = "carcosa-verify-20261204T000000Z"
    for name in ("second", "primary", None):
        verify = validate_message(VERIFY, ["carcosa", run_id], {"target": name}, config, None)
        assert verify.target == name   # type: ignore[union-attr]
    with pytest.raises(MalformedMessage) as refused:
        validate_message(VERIFY, ["carcosa", run_id], {"target": target}, config, None)
    line = refused.value.one_line()
    assert "target" in line and "\n" not in line and len(line) < 400


def test_a_queued_drill_with_an_unknown_target_is_a_usage_error(
        tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = base_config(tmp_path)
    data["replicas"] = {"second": _replica(tmp_path)}
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["verify", "carcosa", "--target", "s3://elsewhere", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"{out}\n{err}"
    assert "no target named" in err and "its targets are primary, second" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
