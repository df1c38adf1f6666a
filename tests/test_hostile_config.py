"""Hostile and careless configs: each one exits 2, names where the problem is, and never prints a
Python traceback. The bulk runs in-process through `offsite.cli.main.main` (the real code path of the
`offsite` command), a sample through the real executable."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from offsite.cli.main import main
from tests.conftest import RunOffsite
from tests.helpers import OffsiteEnv, offsite_argv, run_command

Data = dict[str, Any]
DROP = object()


@dataclass(frozen=True)
class Case:
    """A config to refuse: `change` edits a valid config (data) or `text` replaces the file."""
    id: str
    expected: str
    change: Callable[[Data, Path], None] | None = None
    text: bytes | Callable[[Path], bytes] | None = None


def base_config(tmp_path: Path) -> Data:
    passphrase = tmp_path / "passphrase"
    if not passphrase.exists():
        fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("correct horse battery staple\n")
    return {
        "broker_url": "redis://127.0.0.1:1/0",
        "staging_root": str(tmp_path / "offsite" / "staging"),
        "cache_root": str(tmp_path / "offsite" / "cache"),
        "target": {"url": f"file://{tmp_path}/target"},
        "encryption": {"passphrase_file": str(passphrase)},
        "hosts": {"carcosa": {"scripts": {"pg": {"bash": "echo dump > pg.sql"}}}},
    }


def at(dotted: str, value: Any) -> Callable[[Data, Path], None]:
    """Set (or with DROP remove) the key at a dotted path, creating mappings on the way."""
    def change(data: Data, tmp_path: Path) -> None:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = value(tmp_path) if callable(value) else value
    return change


def both(*changes: Callable[[Data, Path], None]) -> Callable[[Data, Path], None]:
    def change(data: Data, tmp_path: Path) -> None:
        for one in changes:
            one(data, tmp_path)
    return change


def host(**config: Any) -> Callable[[Data, Path], None]:
    return at("hosts", {"carcosa": {"scripts": {"pg": {"bash": "true"}}, **config}})


def script(**config: Any) -> Callable[[Data, Path], None]:
    return at("hosts", {"carcosa": {"scripts": {"pg": config}}})


def scripts(value: Any) -> Callable[[Data, Path], None]:
    return at("hosts", {"carcosa": {"scripts": value}})


def hosts_named(name: Any) -> Callable[[Data, Path], None]:
    return at("hosts", {name: {"scripts": {"pg": {"bash": "true"}}}})


def symlink_into_staging(tmp_path: Path) -> str:
    staging = tmp_path / "offsite" / "staging"
    (staging / "inner").mkdir(parents=True, exist_ok=True)
    link = tmp_path / "cache-link"
    if not link.exists():
        link.symlink_to(staging / "inner")
    return str(link)


VALID_HEAD = ("target: {url: 'file:///srv/backups'}\nstaging_root: /srv/offsite/staging\n")
BILLION_LAUGHS = ("a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
                  + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(
                      [f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)))

TIMEOUT = "At 'hosts.carcosa.scripts.pg.timeout'"
INCR = "At 'schedule.incr'"
URL = "At 'target.url'"
BROKER = "At 'broker_url'"
STAGING = "At 'staging_root'"

CASES = [
    # ---------------------------------------------------------------- durations
    Case("timeout-list", TIMEOUT, script(bash="true", timeout=[1])),
    Case("timeout-mapping", TIMEOUT, script(bash="true", timeout={})),
    Case("timeout-true", TIMEOUT, script(bash="true", timeout=True)),
    Case("timeout-false", TIMEOUT, script(bash="true", timeout=False)),
    Case("timeout-negative", TIMEOUT, script(bash="true", timeout=-5)),
    Case("timeout-zero", TIMEOUT, script(bash="true", timeout=0)),
    Case("timeout-fraction", TIMEOUT, script(bash="true", timeout=1.5)),
    Case("timeout-fraction-string", TIMEOUT, script(bash="true", timeout="1.5h")),
    Case("timeout-negative-string", TIMEOUT, script(bash="true", timeout="-5m")),
    Case("timeout-absurd-days", TIMEOUT + ": '99999999999999d' is longer than the maximum",
         script(bash="true", timeout="99999999999999d")),
    Case("timeout-huge-int", TIMEOUT, script(bash="true", timeout=10 ** 30)),
    Case("timeout-eleven-years", TIMEOUT, script(bash="true", timeout="4000d")),
    Case("timeout-null", TIMEOUT, script(bash="true", timeout=None)),
    Case("timeout-inf", TIMEOUT, script(bash="true", timeout=float("inf"))),
    Case("timeout-nan", TIMEOUT, script(bash="true", timeout=float("nan"))),
    Case("timeout-empty-string", TIMEOUT, script(bash="true", timeout="")),
    Case("timeout-trailing-junk", TIMEOUT, script(bash="true", timeout="5m x")),
    Case("timeout-split-digits", TIMEOUT, script(bash="true", timeout="1 5m")),
    Case("timeout-arabic-digits", TIMEOUT, script(bash="true", timeout="١٢s")),
    Case("timeout-5000-digits", TIMEOUT, script(bash="true", timeout="9" * 5000 + "s")),
    Case("timeout-unit-only", TIMEOUT, script(bash="true", timeout="m")),
    Case("upload-timeout-zero", "At 'target.upload_timeout'", at("target.upload_timeout", "0s")),
    Case("retry-delay-too-long", "At 'target.retry_delay'", at("target.retry_delay", "3651d")),
    Case("watchdog-every-list", "At 'watchdog.every'", at("watchdog.every", [])),
    Case("stale-after-word", "At 'watchdog.stale_after'", at("watchdog.stale_after", "forever")),
    Case("lease-ttl-float-string", "At 'watchdog.lease_ttl'", at("watchdog.lease_ttl", "0.5s")),
    Case("host-max-full-negative", "At 'hosts.carcosa.schedule.max_full_interval'",
         host(schedule={"max_full_interval": -1})),
    Case("fleet-max-full-1e20", "At 'schedule.max_full_interval'",
         at("schedule.max_full_interval", 1e20)),
    # ---------------------------------------------------------------- schedules
    Case("every-half-second", INCR, at("schedule.incr", {"every": 0.5})),
    Case("every-absurd", INCR + ": '99999999999999d' is longer",
         at("schedule.incr", {"every": "99999999999999d"})),
    Case("every-below-min-interval", INCR + ": every 1s is shorter than schedule.min_interval",
         at("schedule.incr", {"every": "1s"})),
    Case("host-every-below-min-interval", "At 'hosts.carcosa.schedule.full': every 30s",
         host(schedule={"full": {"every": "30s"}})),
    Case("every-list", INCR, at("schedule.incr", {"every": [1]})),
    Case("every-null", INCR, at("schedule.incr", {"every": None})),
    Case("every-extra-key", INCR + ": an interval schedule is written",
         at("schedule.incr", {"every": "1h", "at": 4})),
    Case("every-empty-mapping", INCR, at("schedule.incr", {})),
    Case("cron-minute-61", INCR + ": cron '61 * * * *' is invalid",
         at("schedule.incr", "61 * * * *")),
    Case("cron-four-fields", INCR, at("schedule.incr", "* * * *")),
    Case("cron-feb-31", INCR, at("schedule.incr", "0 0 31 2 *")),
    Case("cron-step-zero", INCR, at("schedule.incr", "*/0 * * * *")),
    Case("cron-huge-range", INCR, at("schedule.incr", "0-99999999 * * * *")),
    Case("cron-10k-chars", INCR + ": cron", at("schedule.incr", "1," * 5000 + "1 * * * *")),
    Case("cron-control-char", INCR, at("schedule.incr", "0 4 * * 1\x07")),
    Case("cron-fullwidth-digit", INCR, at("schedule.incr", "０ 4 * * 1")),
    Case("cron-weekday-7", INCR + ": cron '0 4 * * 7' is invalid: day of week: 7 is outside",
         at("schedule.incr", "0 4 * * 7")),
    Case("cron-name-in-minute", INCR + ": cron 'jan 4 * * *' is invalid: minute",
         at("schedule.incr", "jan 4 * * *")),
    Case("cron-step-without-range", INCR + ": cron '5/15 * * * *' is invalid: minute: a step",
         at("schedule.incr", "5/15 * * * *")),
    Case("cron-double-range", INCR, at("schedule.incr", "1-5-7 * * * *")),
    Case("cron-misspelt-weekday", INCR + ": cron '0 4 * * mondya' is invalid",
         at("schedule.incr", "0 4 * * mondya")),
    Case("cron-empty-list-item", INCR, at("schedule.incr", "1,,2 * * * *")),
    Case("cron-int", INCR, at("schedule.incr", 42)),
    Case("cron-list", INCR, at("schedule.incr", ["0", "4", "*", "*", "1"])),
    Case("cron-shell-injection", INCR, at("schedule.incr", "0 4 * * 1; rm -rf /")),
    Case("min-interval-zero", "At 'schedule.min_interval'", at("schedule.min_interval", "0s")),
    Case("min-interval-fraction", "At 'schedule.min_interval'", at("schedule.min_interval", 0.5)),
    Case("timezone-traversal", "At 'schedule.timezone'",
         at("schedule.timezone", "../../etc/passwd")),
    Case("timezone-empty", "At 'schedule.timezone'", at("schedule.timezone", "")),
    Case("timezone-int", "At 'schedule.timezone'", at("schedule.timezone", 5)),
    Case("schedule-is-a-string", "At 'schedule'", at("schedule", "daily")),
    Case("schedule-unknown-key", "At 'schedule.weekly': unknown key", at("schedule.weekly", "x")),
    # ---------------------------------------------------------------- folders
    *[Case(f"staging-system-dir-{name}", STAGING + ": ", at("staging_root", name))
      for name in ("/", "/etc", "/usr", "/bin", "/boot", "/var", "/home", "/tmp", "/root",
                   "/var/lib")],
    Case("staging-dev", STAGING, at("staging_root", "/dev")),
    Case("staging-inside-proc", STAGING + ": '/proc/self' is inside a kernel",
         at("staging_root", "/proc/self")),
    Case("staging-inside-sys", STAGING, at("staging_root", "/sys/kernel/x")),
    Case("staging-dotdot-to-root", STAGING, at("staging_root", "/etc/../")),
    Case("staging-home", STAGING + ": ", at("staging_root", lambda tmp: str(tmp / "home"))),
    Case("staging-relative", STAGING + ": 'relative/staging' is relative",
         at("staging_root", "relative/staging")),
    Case("staging-dot-relative", STAGING, at("staging_root", "./staging")),
    Case("staging-empty", STAGING, at("staging_root", "")),
    Case("staging-int", STAGING, at("staging_root", 5)),
    Case("staging-list", STAGING, at("staging_root", [])),
    Case("staging-nul", STAGING + ": contains a NUL", at("staging_root", "/srv/a\x00b")),
    Case("staging-5000-chars", STAGING, at("staging_root", "/" + "a" * 5000)),
    Case("scratch-inside-staging", "At 'verify.scratch': ",
         at("verify.scratch", lambda tmp: str(tmp / "offsite" / "staging" / "scratch"))),
    Case("scratch-relative", "At 'verify.scratch': 'scratch' is relative",
         at("verify.scratch", "scratch")),
    Case("scratch-etc", "At 'verify.scratch': ", at("verify.scratch", "/etc")),
    Case("scratch-int", "At 'verify.scratch': ", at("verify.scratch", 5)),
    Case("cache-equals-staging", "At 'cache_root': ",
         at("cache_root", lambda tmp: str(tmp / "offsite" / "staging"))),
    Case("cache-inside-staging", "At 'cache_root': ",
         at("cache_root", lambda tmp: str(tmp / "offsite" / "staging" / "cache"))),
    Case("staging-inside-cache", "At 'cache_root': ",
         at("cache_root", lambda tmp: str(tmp / "offsite"))),
    Case("default-cache-is-staging", "At 'cache_root (default <staging_root>/../cache)'",
         both(at("cache_root", DROP), at("staging_root", lambda tmp: str(tmp / "o" / "cache")))),
    Case("cache-symlink-into-staging", "At 'cache_root': ",
         at("cache_root", symlink_into_staging)),
    Case("cache-root", "At 'cache_root': ", at("cache_root", "/")),
    Case("cache-relative", "At 'cache_root': 'cache' is relative", at("cache_root", "cache")),
    Case("passphrase-relative", "At 'encryption.passphrase_file': 'secret/pp' is relative",
         at("encryption.passphrase_file", "secret/pp")),
    Case("passphrase-in-staging", "At 'encryption.passphrase_file': ",
         at("encryption.passphrase_file", lambda tmp: str(tmp / "offsite" / "staging" / "pp"))),
    Case("passphrase-list", "At 'encryption.passphrase_file'",
         at("encryption.passphrase_file", ["/a"])),
    Case("encryption-mode-rot13", "At 'encryption.mode'", at("encryption.mode", "rot13")),
    # ---------------------------------------------------------------- target
    Case("target-s3-no-bucket", URL + ": target url 's3:///' names no bucket",
         at("target.url", "s3:///")),
    Case("target-boto3-space", URL + ": target url 'boto3+s3:// ' contains whitespace",
         at("target.url", "boto3+s3:// ")),
    Case("target-boto3-empty", URL + ": target url 'boto3+s3://' names no bucket",
         at("target.url", "boto3+s3://")),
    Case("target-file-empty", URL, at("target.url", "file://")),
    Case("target-file-root", URL, at("target.url", "file:///")),
    Case("target-file-relative", URL, at("target.url", "file://relative/x")),
    Case("target-space-in-bucket", URL, at("target.url", "s3://bucket name")),
    Case("target-tab", URL, at("target.url", "s3://bu\tcket")),
    Case("target-newline", URL, at("target.url", "s3://bucket\n/x")),
    Case("target-ftp", URL, at("target.url", "ftp://x")),
    Case("target-no-scheme", URL, at("target.url", "bucket")),
    Case("target-dotdot-prefix", URL, at("target.url", "s3://bucket/../other")),
    Case("target-file-dotdot", URL, at("target.url", "file:///srv/../etc")),
    Case("target-query", URL, at("target.url", "s3://bucket?x=1")),
    Case("target-bad-bucket", URL, at("target.url", "s3://-bucket")),
    Case("target-2000-chars", URL, at("target.url", "s3://" + "a" * 2000)),
    Case("target-int", URL, at("target.url", 5)),
    Case("target-missing", "At 'target.url': required but missing", at("target.url", DROP)),
    Case("target-is-a-string", "At 'target'", at("target", "s3://bucket")),
    Case("endpoint-garbage", "At 'target.endpoint_url'", at("target.endpoint_url", "garbage")),
    Case("endpoint-ftp", "At 'target.endpoint_url'", at("target.endpoint_url", "ftp://x")),
    Case("endpoint-bad-port", "At 'target.endpoint_url'",
         at("target.endpoint_url", "http://h:99999")),
    Case("region-space", "At 'target.region'", at("target.region", "eu west")),
    Case("volsize-zero", "At 'target.volsize'", at("target.volsize", 0)),
    Case("volsize-true", "At 'target.volsize'", at("target.volsize", True)),
    Case("volsize-string", "At 'target.volsize'", at("target.volsize", "200")),
    Case("volsize-huge", "At 'target.volsize'", at("target.volsize", 10 ** 12)),
    Case("retries-zero", "At 'target.retries'", at("target.retries", 0)),
    Case("retries-fraction", "At 'target.retries'", at("target.retries", 1.5)),
    # ---------------------------------------------------------------- broker
    Case("broker-garbage", BROKER + ": broker url 'garbage' must be",
         at("broker_url", "garbage")),
    Case("broker-no-host", BROKER, at("broker_url", "redis://")),
    Case("broker-http", BROKER, at("broker_url", "http://localhost")),
    Case("broker-bad-port", BROKER, at("broker_url", "redis://h:99999/0")),
    Case("broker-port-word", BROKER, at("broker_url", "redis://h:port/0")),
    Case("broker-db-word", BROKER, at("broker_url", "redis://h/abc")),
    Case("broker-unix", BROKER, at("broker_url", "unix:///run/redis.sock")),
    Case("broker-bad-option", BROKER, at("broker_url", "redis://h/0?socket_timeout=x")),
    Case("broker-int", BROKER, at("broker_url", 5)),
    Case("broker-space", BROKER, at("broker_url", "redis://h /0")),
    Case("broker-password-masked", "broker url 'http://user:***@h'",
         at("broker_url", "http://user:hunter2@h")),
    Case("sentinel-tls-unverified", BROKER + ": broker url 'sentinel://:***@h:1/0?ssl_cert_"
         "reqs=none;sentinel://g:2': ssl_cert_reqs must stay required",
         at("broker_url", "sentinel://:hunter2@h:1/0?ssl_cert_reqs=none;sentinel://g:2")),
    Case("sentinel-tls-optional", "ssl_cert_reqs must stay required",
         at("broker_url", "sentinel://h:1/0?ssl_cert_reqs=optional;sentinel://g:2")),
    Case("sentinel-tls-unknown", "unknown option(s) ['ssl_verify']: a sentinel:// URL takes",
         at("broker_url", "sentinel://h:1/0?ssl_verify=no;sentinel://g:2")),
    Case("sentinel-not-ssl-option", "unknown option(s) ['socket_timeout']",
         at("broker_url", "sentinel://h:1/0?socket_timeout=x;sentinel://g:2")),
    Case("sentinel-tls-later-part", "ssl_* options go on the first sentinel:// part only",
         at("broker_url", "sentinel://h:1/0;sentinel://g:2?ssl_ca_certs=/x")),
    Case("redis-ssl-options", "ssl_* options need a rediss:// URL (or a sentinel:// one)",
         at("broker_url", "redis://h:1/0?ssl_ca_certs=/x")),
    # ---------------------------------------------------------------- hosts and scripts
    Case("host-with-slash", "At 'hosts.a/b'", hosts_named("a/b")),
    Case("host-dotdot", "At 'hosts...'", hosts_named("..")),
    Case("host-traversal", "At 'hosts.../etc'", hosts_named("../etc")),
    Case("host-64-chars", "At 'hosts." + "a" * 64 + "'", hosts_named("a" * 64)),
    Case("host-empty-name", "At 'hosts.'", hosts_named("")),
    Case("host-unicode", "At 'hosts.cárcosa'", hosts_named("cárcosa")),
    Case("host-nul", "At 'hosts': a key contains a NUL", hosts_named("car\x00cosa")),
    Case("host-int-name", "At 'hosts.123'", hosts_named(123)),
    Case("host-leading-dash", "At 'hosts.-rf'", hosts_named("-rf")),
    Case("script-traversal", "At 'hosts.carcosa.scripts.../../etc/passwd'",
         scripts({"../../etc/passwd": {"bash": "true"}})),
    Case("script-dash", "At 'hosts.carcosa.scripts.-rf'", scripts({"-rf": {"bash": "true"}})),
    Case("scripts-empty", "At 'hosts.carcosa.scripts'", scripts({})),
    Case("scripts-list", "At 'hosts.carcosa.scripts'", scripts([{"bash": "true"}])),
    Case("scripts-null", "At 'hosts.carcosa.scripts'", scripts(None)),
    Case("script-both-kinds", "At 'hosts.carcosa.scripts.pg': give exactly one",
         script(bash="a", python="b")),
    Case("script-no-kind", "At 'hosts.carcosa.scripts.pg': give exactly one", script()),
    Case("script-bash-int", "At 'hosts.carcosa.scripts.pg.bash'", script(bash=5)),
    Case("script-bash-empty", "At 'hosts.carcosa.scripts.pg.bash': script code is empty",
         script(bash="  ")),
    Case("script-bash-70k", "At 'hosts.carcosa.scripts.pg.bash'", script(bash="#" * 70_000)),
    Case("script-bash-multibyte-over-64k", "At 'hosts.carcosa.scripts.pg.bash': script code is "
         "longer than 64 KiB", script(bash="é" * 40_000)),
    Case("script-bash-nul", "At 'hosts.carcosa.scripts.pg.bash': contains a NUL",
         script(bash="echo a\x00b")),
    Case("script-bash-lone-surrogate", "YAML syntax error at line 3, column 42: found invalid "
         "Unicode character escape code",
         text=(VALID_HEAD + 'hosts: {h: {scripts: {pg: {bash: "echo \\ud800"}}}}\n').encode()),
    Case("script-group-key", "At 'hosts.carcosa.scripts.pg.group': unknown key",
         script(bash="true", group="root")),
    Case("script-user-path", "At 'hosts.carcosa.scripts.pg.user'",
         script(bash="true", user="../root")),
    Case("script-typo", "At 'hosts.carcosa.scripts.pg.timout': unknown key",
         script(bash="true", timout="5m")),
    Case("scripts-101", "At 'hosts.carcosa.scripts'",
         scripts({f"s{i}": {"bash": "true"} for i in range(101)})),
    Case("hosts-10001", "At 'hosts'",
         at("hosts", {f"h{i}": {"scripts": {"s": {"bash": "true"}}} for i in range(10_001)})),
    Case("hosts-list", "At 'hosts'", at("hosts", ["carcosa"])),
    Case("hosts-empty", "At 'hosts'", at("hosts", {})),
    Case("host-null", "At 'hosts.carcosa'", at("hosts", {"carcosa": None})),
    Case("host-schedule-unknown", "At 'hosts.carcosa.schedule.hourly': unknown key",
         host(schedule={"hourly": "x"})),
    Case("sns-arn-garbage", "At 'alerts.sns_topic_arn'", at("alerts.sns_topic_arn", "nope")),
    Case("sns-endpoint-garbage", "At 'alerts.endpoint_url'", at("alerts.endpoint_url", "x")),
    Case("top-level-unknown", "At 'bogus': unknown key", at("bogus", 1)),
    Case("watchdog-unknown", "At 'watchdog.evry': unknown key", at("watchdog.evry", "1m")),
    # ---------------------------------------------------------------- the file itself
    Case("duplicate-host", "At 'hosts.carcosa': duplicate key 'carcosa' at line 5 (first at "
         "line 4)", text=(VALID_HEAD + "hosts:\n  carcosa: {scripts: {pg: {bash: a}}}\n"
                          "  carcosa: {scripts: {files: {bash: b}}}\n").encode()),
    Case("duplicate-script", "At 'hosts.carcosa.scripts.pg': duplicate key",
         text=(VALID_HEAD + "hosts:\n  carcosa:\n    scripts:\n      pg: {bash: a}\n"
               "      pg: {bash: b}\n").encode()),
    Case("duplicate-top-level", "At 'target': duplicate key",
         text=(VALID_HEAD + "target: {url: 'file:///elsewhere'}\n"
               "hosts: {h: {scripts: {s: {bash: a}}}}\n").encode()),
    Case("duplicate-in-flow", "At 'hosts.h.scripts.s.bash': duplicate key",
         text=(VALID_HEAD + "hosts: {h: {scripts: {s: {bash: a, bash: b}}}}\n").encode()),
    Case("duplicate-quoted-and-plain", "At 'hosts.carcosa': duplicate key 'carcosa' at line 5",
         text=(VALID_HEAD + "hosts:\n  carcosa: {scripts: {pg: {bash: a}}}\n"
               "  \"carcosa\": {scripts: {files: {bash: b}}}\n").encode()),
    Case("duplicate-yes-and-true", "At 'hosts.true': duplicate key 'true' at line 5",
         text=(VALID_HEAD + "hosts:\n  yes: {scripts: {pg: {bash: a}}}\n"
               "  true: {scripts: {files: {bash: b}}}\n").encode()),
    Case("host-named-no", "At 'hosts.false': this key is a boolean: YAML reads an unquoted "
         "yes/no", text=(VALID_HEAD + "hosts:\n  no: {scripts: {pg: {bash: a}}}\n"
                                  ).encode()),
    # exclude patterns of a `paths:` entry (offsite.config.excludes)
    Case("exclude-empty", "At 'hosts.carcosa.paths.app.exclude.0': an exclude pattern is empty",
         host(paths={"app": {"path": "/srv/app", "exclude": [""]}})),
    Case("exclude-blank", "an exclude pattern is empty",
         host(paths={"app": {"path": "/srv/app", "exclude": ["   "]}})),
    Case("exclude-outside", "exclude pattern '/etc/shadow' is outside /srv/app",
         host(paths={"app": {"path": "/srv/app", "exclude": ["/etc/shadow"]}})),
    Case("exclude-sibling-prefix", "is outside /srv/app",
         host(paths={"app": {"path": "/srv/app", "exclude": ["/srv/apple/x"]}})),
    Case("exclude-dotdot", "no '.' or '..' parts",
         host(paths={"app": {"path": "/srv/app", "exclude": ["../etc"]}})),
    Case("exclude-bare-double-star", "a leading '**' must be followed by '/'",
         host(paths={"app": {"path": "/srv/app", "exclude": ["**.qcow2"]}})),
    Case("exclude-newline", "holds a control character",
         host(paths={"app": {"path": "/srv/app", "exclude": ["a\n/etc"]}})),
    Case("exclude-trailing-slash", "no trailing or doubled '/'",
         host(paths={"app": {"path": "/srv/app", "exclude": ["cache/"]}})),
    Case("exclude-not-a-list", "At 'hosts.carcosa.paths.app.exclude'",
         host(paths={"app": {"path": "/srv/app", "exclude": {"a": 1}}})),
    Case("exclude-number", "At 'hosts.carcosa.paths.app.exclude.0'",
         host(paths={"app": {"path": "/srv/app", "exclude": [7]}})),
    Case("exclude-too-many", "at most 100 items",
         host(paths={"app": {"path": "/srv/app", "exclude": [f"f{i}" for i in range(101)]}})),
    Case("exclude-unknown-key", "At 'hosts.carcosa.paths.app.excludes': unknown key",
         host(paths={"app": {"path": "/srv/app", "excludes": ["a"]}})),
    Case("path-entry-number", "At 'hosts.carcosa.paths.app': give a folder, or {path",
         host(paths={"app": 42})),
    Case("path-entry-no-path", "At 'hosts.carcosa.paths.app.path': required but missing",
         host(paths={"app": {"exclude": ["a"]}})),
    # Apprise alert URLs (offsite.watch.apprise_sink)
    Case("apprise-no-scheme", "At 'alerts.apprise_urls.0': not an Apprise URL",
         at("alerts", {"apprise_urls": ["hooks.example.net/T0KEN"]})),
    Case("apprise-space", "not an Apprise URL",
         at("alerts", {"apprise_urls": ["json://a b"]})),
    Case("apprise-not-a-list", "At 'alerts.apprise_urls'",
         at("alerts", {"apprise_urls": {"a": "json://x"}})),
    Case("apprise-too-many", "at most 20 items",
         at("alerts", {"apprise_urls": [f"json://h/{i}" for i in range(21)]})),
    Case("apprise-file-relative", "At 'alerts.apprise_urls_file'",
         at("alerts", {"apprise_urls_file": "urls.txt"})),
    # the upload bandwidth cap (offsite.duplicity.bandwidth)
    Case("upload-limit-zero", "At 'target.upload_limit': 0 is outside 1KB/s to 100GB/s",
         at("target.upload_limit", 0)),
    Case("upload-limit-negative", "At 'target.upload_limit'", at("target.upload_limit", -5)),
    Case("upload-limit-no-unit", "'10MB' is not a rate like 10MB/s",
         at("target.upload_limit", "10MB")),
    Case("upload-limit-bits", "is not a rate like", at("target.upload_limit", "10Mbit/s")),
    Case("upload-limit-float", "give bytes per second", at("target.upload_limit", 1.5e6)),
    Case("upload-limit-bool", "give bytes per second", at("target.upload_limit", True)),
    Case("upload-limit-huge", "outside 1KB/s to 100GB/s", at("target.upload_limit", 10**30)),
    Case("upload-limit-exponent", "is not a rate like", at("target.upload_limit", "9e99B/s")),
    Case("upload-limit-too-fast", "outside 1KB/s to 100GB/s",
         at("target.upload_limit", "101GB/s")),
    Case("upload-limit-host-list", "At 'hosts.carcosa.upload_limit'",
         host(upload_limit=["1MB/s"])),
    Case("upload-limit-on-a-replica", "At 'replicas.spare.upload_limit': caps the primary",
         at("replicas", {"spare": {"url": "file:///srv/spare", "upload_limit": "1MB/s"}})),
    Case("empty-file", "the top level must be a mapping of settings (this file is empty)",
         text=b""),
    Case("only-comments", "(this file is empty)", text=b"# nothing here\n"),
    Case("top-level-list", "the top level must be a mapping", text=b"- a\n- b\n"),
    Case("top-level-string", "the top level must be a mapping", text=b"just words\n"),
    Case("binary-garbage", "not UTF-8 text",
         text=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" + bytes(range(256))),
    Case("latin1-text", "not UTF-8 text", text=b"hosts: {caf\xe9: {}}\n"),
    Case("nul-byte", "YAML syntax error", text=b"hosts: \x00\n"),
    Case("tab-indent", "YAML syntax error", text=b"hosts:\n\tcarcosa: {}\n"),
    Case("unclosed-bracket", "YAML syntax error at line", text=b"hosts: [unclosed\n"),
    Case("billion-laughs", "expands to more than", text=BILLION_LAUGHS.encode()),
    Case("deep-lists", "nested deeper than 32 levels", text=b"a: " + b"[" * 500),
    Case("deep-lists-50k", "exceeded maximum nesting depth", text=b"a: " + b"[" * 50_000),
    Case("deep-mappings", "nested deeper than 32 levels",
         text=b"a: " + b"{a: " * 5_000 + b"1" + b"}" * 5_000 + b"\n"),
    Case("recursive-alias", "expands to more than", text=b"a: &a [*a, *a]\n"),
    Case("two-documents", "YAML syntax error", text=b"a: 1\n---\nb: 2\n"),
    Case("python-tag", "YAML syntax error",
         text=b"hosts: !!python/object/apply:os.system ['touch /tmp/pwned']\n"),
    Case("undefined-alias", "YAML syntax error", text=b"hosts: *nope\n"),
    Case("unhashable-key", "YAML syntax error", text=b"? [a, b]\n: c\n"),
    Case("five-mib", "larger than 4 MiB",
         text=b"# " + b"x" * (5 * 1024 * 1024) + b"\n"),
]


def write_case(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / "offsite.yaml"
    if case.text is not None:
        path.write_bytes(case.text(tmp_path) if callable(case.text) else case.text)
        return path
    data = copy.deepcopy(base_config(tmp_path))
    assert case.change is not None
    case.change(data, tmp_path)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited broker or passphrase; HOME in the test's folder; OFFSITE_CONFIG restored."""
    for name in ("OFFSITE_BROKER_URL", "PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OFFSITE_CONFIG", str(tmp_path / "unused.yaml"))


def test_the_base_config_itself_is_valid(tmp_path: Path, clean_env: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path)))
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err
    assert "config OK: 1 host(s)" in capsys.readouterr().out




SLOW_CASES = {"hosts-10001"}   # more than ~3 s: in the slow tier


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow)
                                  if case.id in SLOW_CASES else case for case in CASES],
                         ids=[case.id for case in CASES])
def test_hostile_config_exits_2_naming_the_problem(case: Case, tmp_path: Path, clean_env: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(case, tmp_path)

    code = main(["check", "--config", str(path)])

    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert err.startswith(f"offsite: invalid config {path}:"), err
    assert case.expected in err, err[:3000]


def test_broker_url_from_the_environment_is_checked_and_named(
        tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "offsite.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path)))
    monkeypatch.setenv("OFFSITE_BROKER_URL", "garbage")

    for argv in (["check"], ["check", "--connect"], ["status"]):
        assert main([*argv, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "At 'broker_url' (from $OFFSITE_BROKER_URL): broker url 'garbage'" in err
        assert "Traceback" not in err


def test_every_problem_of_the_folders_is_reported_at_once(tmp_path: Path) -> None:
    from offsite.config.model import parse_config
    from offsite.errors import ConfigError
    data = base_config(tmp_path)
    data.update(staging_root="/srv/o/staging", cache_root="/srv/o/staging/cache",
                schedule={"incr": {"every": "5s"}, "full": {"every": "10s"}})
    data["encryption"]["passphrase_file"] = "/srv/o/staging/pp"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "At 'cache_root'", "At 'encryption.passphrase_file'", "At 'schedule.full'",
        "At 'schedule.incr'"]


def test_strings_that_are_not_unicode_are_refused_from_any_source(tmp_path: Path) -> None:
    """libyaml refuses a \\ud800 escape in the file; the same data given as Python objects (the
    way tests and tools call parse_config) is refused too, before it reaches an argv."""
    from offsite.config.model import parse_config
    from offsite.errors import ConfigError
    data = base_config(tmp_path)
    data["hosts"] = {"carcosa": {"scripts": {"pg": {"bash": "echo \ud800"}}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.problems == [
        "At 'hosts.carcosa.scripts.pg.bash': contains a lone surrogate (an escape like \\ud800 "
        "that is not a character)"]


def test_min_interval_override_allows_second_scale_schedules(tmp_path: Path,
                                                             clean_env: None) -> None:
    from offsite.config.model import parse_config
    from offsite.schedule.specs import EverySpec
    data = base_config(tmp_path)
    data["schedule"] = {"min_interval": "1s", "incr": {"every": "2s"}}
    assert parse_config(data).schedule.incr == EverySpec(2)
    data["schedule"] = {"incr": {"every": "1m"}}
    assert parse_config(data).schedule.incr == EverySpec(60)


def test_yaml_merge_keys_still_work(tmp_path: Path, clean_env: None,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Anchors and merge keys are legitimate (shared script settings); only bombs are refused."""
    text = yaml.safe_dump({key: value for key, value in base_config(tmp_path).items()
                           if key != "hosts"})
    text += ("hosts:\n"
        "  carcosa: {scripts: {pg: &pg {bash: 'echo a > a', timeout: 10m}}}\n"
        "  yuggoth: {scripts: {pg: {<<: *pg, timeout: 20m}}}\n")
    path = tmp_path / "offsite.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- through the real executable

EXECUTABLE_CASES = ["duplicate-host", "every-half-second", "timeout-list", "staging-system-dir-/",
                    "target-s3-no-bucket", "target-boto3-space", "broker-garbage",
                    "billion-laughs", "deep-lists", "deep-lists-50k", "binary-garbage",
                    "empty-file", "five-mib", "cache-inside-staging", "nul-byte",
                    "script-bash-70k"]


@pytest.mark.parametrize("case", [case for case in CASES if case.id in EXECUTABLE_CASES],
                         ids=lambda case: case.id)
def test_hostile_config_through_the_offsite_command(case: Case, tmp_path: Path,
                                                    run_offsite: RunOffsite) -> None:
    path = write_case(case, tmp_path)

    result = run_offsite("check", config=path, timeout=60)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert case.expected in result.stderr


BIG_INPUTS = {
    "billion-laughs": BILLION_LAUGHS,
    "flat-list-under-4mib": "x: [" + ",".join(["a"] * 1_400_000) + "]\n",
    "85k-hosts-4mib": "hosts:\n" + "".join(f"  h{i}: {{scripts: {{s: {{bash: 'echo {i}'}}}}}}\n"
                                           for i in range(85_000)),
}


@pytest.mark.parametrize("name", BIG_INPUTS)
@pytest.mark.slow
def test_big_or_explosive_yaml_is_refused(
        name: str, tmp_path: Path, offsite_env: OffsiteEnv) -> None:
    """The real `offsite check` refuses each one, without a traceback. Its wall time and peak
    RSS are figures, not assertions: `python -m bench.gates --only yaml` measures them."""
    path = tmp_path / "offsite.yaml"
    path.write_text(BIG_INPUTS[name])
    assert path.stat().st_size <= 4 * 1024 * 1024

    result = run_command(offsite_argv(path, "check"), env=offsite_env, cwd=tmp_path,
                         timeout=180)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "values" in result.stderr, result.stderr
