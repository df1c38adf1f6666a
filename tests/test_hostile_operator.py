"""Hostile input to the operator's new surfaces: the drill-placement key `verify.where` (and the
old `"on"`, and YAML's unquoted `on:`), the read identity's variables (READ_AWS_*), and the
environment duplicity is given for a restore."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import ConfigError, load_config, parse_config
from offsite.duplicity.command import duplicity_env
from offsite.host.settings import resolve_host
from offsite.target.bucket import READ_IDENTITY, UPLOAD_IDENTITY, reading_identity

HOSTS = {"alpha": {"scripts": {"s": {"bash": "true"}}}, "beta": {"scripts": {"s": {"bash": "true"}}}}


def _config(verify: Any, host_verify: Any = None) -> Any:
    hosts: dict[str, Any] = {name: dict(value) for name, value in HOSTS.items()}
    if host_verify is not None:
        hosts["alpha"]["verify"] = host_verify
    return parse_config({"target": {"url": "file:///srv/backups"}, "verify": verify,
                         "hosts": hosts})


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "offsite.yaml"
    path.write_text("target: {url: 'file:///srv/backups'}\n" + text +
                    "hosts:\n  alpha: {scripts: {s: {bash: 'true'}}}\n"
                    "  beta: {scripts: {s: {bash: 'true'}}}\n")
    return load_config(path)


def test_where_and_the_quoted_old_on_both_place_drills(tmp_path: Path) -> None:
    assert _config({"where": "beta"}).verify_on("alpha") == "beta"
    assert _config({"on": "beta"}).verify_on("alpha") == "beta"
    assert _config({}, {"where": "beta"}).verify_on("alpha") == "beta"
    assert _config({}, {"on": "beta"}).verify_on("alpha") == "beta"
    assert _config({}).verify_on("alpha") == "control"
    loaded = _load(tmp_path, "verify: {schedule: {every: 7d}, where: control}\n")
    assert loaded.verify_on("alpha") == "control"
    quoted = _load(tmp_path, "verify: {schedule: {every: 7d}, \"on\": beta}\n")
    assert quoted.verify_on("alpha") == "beta"


@pytest.mark.parametrize("text, named", [
    ("verify: {schedule: {every: 7d}, on: control}\n", "write `where: control`"),
    ("verify:\n  on: control\n", "write `where: control`"),
    ("verify: {where: control, \"on\": control}\n", "not both"),
    ("verify: {where: nowhere}\n", "'nowhere' is neither 'control' nor a configured host"),
    ("verify: {where: ''}\n", "is neither 'control' nor a configured host"),
    ("verify: {where: [control]}\n", "verify.where"),
    ("verify: {where: {a: 1}}\n", "verify.where"),
    ("verify: {where: null}\n", "verify.where"),
    ("verify: {where: 12}\n", "verify.where"),
    ("verify: {off: control}\n", "verify.false"),
    ("verify: {wher: control}\n", "unknown key"),
    ("verify: {where: \"control\\u0000\"}\n", "NUL"),
    ("verify: {where: ../../etc}\n", "neither 'control' nor a configured host"),
])
def test_a_bad_drill_placement_is_refused_naming_it(tmp_path: Path, text: str,
                                                    named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, text)
    message = str(refused.value)
    assert named in message, message
    assert "\n" not in message.strip() or "At '" in message


def test_a_host_level_unquoted_on_is_refused_naming_where(tmp_path: Path) -> None:
    path = tmp_path / "offsite.yaml"
    path.write_text("target: {url: 'file:///srv/backups'}\nhosts:\n"
                    "  alpha: {scripts: {s: {bash: 'true'}}, verify: {on: control}}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "hosts.alpha.verify" in str(refused.value)
    assert "write `where: control`" in str(refused.value)


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_read_key_is_not_the_read_identity(value: str | None) -> None:
    env = {"DUPLICITY_AWS_ACCESS_KEY_ID": "AKIAUP"}
    if value is not None:
        env["READ_AWS_ACCESS_KEY_ID"] = value
    assert reading_identity(env) == UPLOAD_IDENTITY
    assert reading_identity({"READ_AWS_ACCESS_KEY_ID": "AKIAREAD"}) == READ_IDENTITY


def test_a_restore_child_holds_one_identitys_keys_and_no_other() -> None:
    settings = resolve_host(_config({}), "alpha")
    base = {"DUPLICITY_AWS_ACCESS_KEY_ID": "AKIAUP", "DUPLICITY_AWS_SECRET_ACCESS_KEY": "up",
            "READ_AWS_ACCESS_KEY_ID": "AKIAREAD", "READ_AWS_SECRET_ACCESS_KEY": "read",
            "RECOVER_AWS_SECRET_ACCESS_KEY": "recover", "PRUNE_AWS_SECRET_ACCESS_KEY": "prune",
            "ALERT_AWS_SECRET_ACCESS_KEY": "alert", "PATH": "/bin"}
    reading = duplicity_env(settings, "", base, READ_IDENTITY)
    assert (reading["AWS_ACCESS_KEY_ID"], reading["AWS_SECRET_ACCESS_KEY"]) == ("AKIAREAD", "read")
    uploading = duplicity_env(settings, "", base)
    assert (uploading["AWS_ACCESS_KEY_ID"], uploading["AWS_SECRET_ACCESS_KEY"]) == ("AKIAUP", "up")
    for env in (reading, uploading):
        assert not {"up", "read", "recover", "prune", "alert"} & {
            value for name, value in env.items() if not name.startswith("AWS_")}
        assert env["PATH"] == "/bin"


@pytest.mark.parametrize("path", ["", "/", "./", "..", "../etc/passwd", "db/../../x",
                                  "a\x00b", "a\nb", "x" * 5000, "//..//"])
def test_a_bad_restore_path_is_refused_before_anything_is_read(
        tmp_path: Path, run_offsite: Any, path: str) -> None:
    from tests.deploy_harness import write_minimal_config
    config = write_minimal_config(tmp_path)
    dest = tmp_path / "dest"
    try:
        result = run_offsite("restore", "carcosa", str(dest), "--path", path, config=config)
    except ValueError:   # a NUL cannot even be passed in argv
        assert "\x00" in path
        return
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "bad --path" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not dest.exists()


@pytest.mark.parametrize("path, inner", [("db/dump.sql", "db/dump.sql"), ("/db/", "db"),
                                         ("./files//a b.txt", "files/a b.txt")])
def test_a_restore_path_is_read_relative_to_the_backup(path: str, inner: str) -> None:
    from offsite.proof.restore import restore_subpath
    assert str(restore_subpath(path, "carcosa")) == inner


@pytest.mark.parametrize("recipient", ["0x43C1C2DEFA6B309A849D1A0CA66A9CE96F094D4D", "0x0", "12345"])
def test_a_fingerprint_yaml_reads_as_a_number_is_refused_saying_quote_it(
        tmp_path: Path, recipient: str) -> None:
    keys = tmp_path / "keys.asc"
    keys.write_text("")
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, f"encryption: {{mode: public-key, recipients: [{recipient}], "
                        f"public_keys_file: {keys}}}\n")
    assert "YAML read this fingerprint as a number" in str(refused.value)
    assert "quote it" in str(refused.value)


@pytest.mark.parametrize("url", ["ftp://hooks.example/x", "hooks.example/x", "http://",
                                 "javascript:alert(1)", "file:///etc/passwd", "",
                                 "http://exa mple/x", "http://example/\nInjected: 1",
                                 "http://" + "a" * 70000, 12, ["http://a/"], {"url": "x"}])
def test_a_bad_webhook_url_is_refused_naming_the_key(url: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"target": {"url": "file:///srv/backups"}, "alerts": {"webhook_url": url},
                      "hosts": HOSTS})
    assert "alerts.webhook_url" in str(refused.value)


def test_a_webhook_that_never_answers_fails_within_its_timeout() -> None:
    import socket
    import time
    from offsite.watch.alerts import Alert
    from offsite.watch.sinks import DeliveryFailed, WebhookSink
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)       # accepts, never answers
    try:
        config = parse_config({"target": {"url": "file:///srv/backups"}, "hosts": HOSTS,
                               "alerts": {"webhook_url": f"http://127.0.0.1:"
                                          f"{silent.getsockname()[1]}/secret-path"}})
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as failed:
            WebhookSink(config, timeout_s=1.0).send(Alert("s", "m", {"host": "alpha"}))
        assert time.monotonic() - started < 10
        assert "secret-path" not in str(failed.value)
    finally:
        silent.close()


@pytest.mark.parametrize("args, named", [
    (("ls", "carcosa", ".."), "bad --path"),
    (("ls", "carcosa", "files/../../etc"), "bad --path"),
    (("ls", "carcosa", ""), "bad --path"),
    (("ls", "carcosa", "--time", "yesterday-ish"), "bad --time"),
    (("ls", "carcosa", "--time", "x" * 500), "bad --time"),
    (("ls", "../etc"), "unknown host"),
    (("find", "carcosa", ""), "bad pattern"),
    (("find", "carcosa", "   "), "bad pattern"),
    (("find", "carcosa", "a\tb"), "bad pattern"),
    (("find", "carcosa", "*" * 2000), "bad pattern"),
    (("find", "no-such-host", "*.sql"), "unknown host"),
])
def test_bad_ls_and_find_input_is_refused_in_one_line(
        tmp_path: Path, offsite_main: Any, args: tuple[str, ...], named: str) -> None:
    from tests.deploy_harness import write_minimal_config
    config = write_minimal_config(tmp_path)
    result = offsite_main(*args, config=config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ls_and_find_of_a_host_with_no_backup_say_so(tmp_path: Path, run_offsite: Any) -> None:
    from tests.deploy_harness import write_minimal_config
    config = write_minimal_config(tmp_path)
    for args in (("ls", "carcosa"), ("find", "carcosa", "*")):
        result = run_offsite(*args, config=config)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "no backup yet" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["8d", "-1h", "0", "soon", [1], {"every": "1h"}, True])
def test_a_bad_spread_is_refused_naming_it(value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"target": {"url": "file:///srv/b"}, "schedule": {"spread": value},
                      "hosts": {"a": {"scripts": {"s": {"bash": "true"}}}}})
    assert "schedule.spread" in str(refused.value)


@pytest.mark.parametrize("priority, named", [
    ({"nice": -5}, "priority.nice"), ({"nice": 20}, "priority.nice"),
    ({"nice": "low"}, "priority.nice"), ({"nice": 1.5}, "priority.nice"),
    ({"io": "realtime"}, "priority.io"), ({"io": ""}, "priority.io"), ({"io": 3}, "priority.io"),
    ({"cpu": 1}, "priority.cpu"), ("idle", "priority"), ([5], "priority"),
])
def test_a_bad_priority_is_refused_naming_it(priority: Any, named: str) -> None:
    for data in ({"priority": priority, "hosts": HOSTS},
                 {"hosts": {**HOSTS, "alpha": {**HOSTS["alpha"], "priority": priority}}}):
        with pytest.raises(ConfigError) as refused:
            parse_config({"target": {"url": "file:///srv/backups"}, **data})
        where = named if "hosts" not in data or "priority" in data else f"hosts.alpha.{named}"
        assert where in str(refused.value), str(refused.value)
