"""Real services for the tests: redis-server, moto_server, offsite processes. No mocks.

The classes here hold no pytest state; tests/conftest.py wraps them in fixtures.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import redis
import yaml
from botocore.config import Config as BotoConfig

# Not resolved: the venv's bin is where the symlinked interpreter lives.
VENV_BIN = Path(sys.executable).parent
OFFSITE = VENV_BIN / "offsite"
REGION = "eu-west-1"
# Credentials of the test process itself (fixtures, assertions); the children get others.
TEST_AWS_KEY_ID = "testing"
TEST_AWS_SECRET = "testing"

_SCRUBBED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "PASSPHRASE",
                 "SIGN_PASSPHRASE", "OFFSITE_CONFIG", "OFFSITE_BROKER_URL",
                 "DUPLICITY_AWS_ACCESS_KEY_ID", "DUPLICITY_AWS_SECRET_ACCESS_KEY",
                 "ALERT_AWS_ACCESS_KEY_ID", "ALERT_AWS_SECRET_ACCESS_KEY")


class HarnessError(AssertionError):
    """A service or process of the test harness did not behave; the message holds its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    """Polls predicate until true; raises HarnessError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def read_tail(path: Path, lines: int = 40) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: `assert r.returncode == 0, describe(r)`."""
    return (f"exit {result.returncode} from {' '.join(map(str, result.args))}\n"
            f"--- stdout ---\n{tail(result.stdout or '')}\n"
            f"--- stderr ---\n{tail(result.stderr or '')}")


def find_leaks(text: str, secret_values: Iterable[str]) -> list[str]:
    """The secret values that occur in text (for `assert not find_leaks(log, env.secrets)`)."""
    return [value for value in secret_values if value and value in text]


def _exited_unreaped(proc: subprocess.Popen[Any]) -> bool:
    """Whether proc has exited, without reaping it.

    While the leader is an unreaped zombie its pid (= the process group id) cannot be reused,
    so signalling the group afterwards cannot hit an unrelated process.
    """
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


# --------------------------------------------------------------------------- redis


class RedisServer:
    """A real redis-server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"
        self.extra_args: list[str] = []  # more redis-server options (tests/secure_redis.py)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited_unreaped(self._proc)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client; the caller closes it."""
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self) -> bool:
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> None:
        """Starts the server (loading dump.rdb if a stop(save=True) left one); no-op if running."""
        if self.running:
            return
        self._reap()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.log_path), *self.extra_args]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if _exited_unreaped(self._proc):
                self._reap()
                raise HarnessError(f"redis-server exited on port {self.port}:\n"
                                   f"{read_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(f"redis-server did not answer PING within {timeout:g}s:\n"
                                   f"{read_tail(self.log_path)}")
            time.sleep(0.02)

    def stop(self, save: bool = False, timeout: float = 10.0) -> None:
        """Clean shutdown. save=True writes dump.rdb so start() gets the data back (a restart of
        a persistent Redis); save=False loses everything (a Redis without persistence)."""
        if self.running:
            if save:
                client = self.client(socket_timeout=timeout)
                try:
                    client.shutdown(save=True)
                finally:
                    client.close()
            else:
                assert self._proc is not None
                self._proc.send_signal(signal.SIGTERM)
            assert self._proc is not None
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()
        if not save:
            (self.directory / "dump.rdb").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: a crash; unsaved data is lost, a dump.rdb from an earlier stop(save=True)
        stays."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
        self._reap()

    def restart(self, save: bool = False, down_for: float = 0.0) -> None:
        self.stop(save=save)
        if down_for:
            time.sleep(down_for)
        self.start()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait(10)


# --------------------------------------------------------------------------- moto


class MotoServer:
    """moto_server (S3, SNS, SQS, ... in one process) on a loopback port."""

    def __init__(self, directory: Path, port: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "moto.log"
        self.extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if _exited_unreaped(self._proc):
                self._proc.wait()
                raise HarnessError(f"moto_server exited:\n{read_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"moto_server not up within {timeout:g}s:\n"
                                   f"{read_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/moto-api/")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client on moto with the test process's fake credentials; the caller closes it."""
        session = boto3.session.Session(aws_access_key_id=TEST_AWS_KEY_ID,
                                        aws_secret_access_key=TEST_AWS_SECRET,
                                        region_name=REGION)
        config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        return session.client(service, endpoint_url=self.endpoint_url, config=config, **kwargs)


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

    def __init__(self, tmp_path: Path, broker_url: str, aws: AwsResources) -> None:
        self.tmp_path = tmp_path
        self.broker_url = broker_url
        self.aws = aws
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
            "target": {"url": f"boto3+s3://{self.aws.bucket}",
                       "endpoint_url": self.aws.endpoint_url, "region": REGION},
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


# --------------------------------------------------------------------------- processes


def offsite_argv(config: Path, *args: str) -> list[str]:
    return [str(OFFSITE), "--config", str(config), *args]


def merged_env(env: Mapping[str, str],
               extra: Mapping[str, str | None] | None) -> dict[str, str]:
    """env plus extra; an extra value of None removes that variable."""
    merged = dict(env)
    for key, value in (extra or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def run_command(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs argv in its own process group, text output captured; on timeout kills the whole
    group (duplicity, gpg, scripts included) and raises HarnessError with the output tails."""
    with subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise HarnessError(f"{' '.join(argv)} still running after {timeout:g}s\n"
                               f"--- stdout ---\n{tail(stdout)}\n"
                               f"--- stderr ---\n{tail(stderr)}") from None
        # Children left behind in the group (a stray background job) must not outlive the test.
        _signal_group(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ManagedProcess:
    """A long-running child (worker, control, beat) in its own process group, logging to a file.

    start() waits for ready_marker to appear in the log after this start; restart() appends to
    the same log.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                 log_path: Path, ready_marker: str | None, ready_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.ready_marker = ready_marker
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and not _exited_unreaped(self._proc)

    @property
    def returncode(self) -> int | None:
        """None while running (or exited but not yet waited for)."""
        return None if self._proc is None else self._proc.returncode

    def log_text(self, since_start: bool = False) -> str:
        """The whole log, or with since_start only what the current start wrote."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._offset if since_start else 0:].decode(errors="replace")

    def start(self) -> None:
        if self.alive:
            raise HarnessError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts} of {self.name} ===\n".encode())
            log.flush()
            self._offset = log.tell()
            self._proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        if self.ready_marker is not None:
            self.wait_for(self.ready_marker, self.ready_timeout)

    def wait_for(self, text: str, timeout: float = 30.0, since_start: bool = True) -> str:
        """Waits until text appears in the log (by default: since the current start) and returns
        the log; raises HarnessError with the log tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text(since_start)
            if text in log:
                return log
            exited = not self.alive
            if exited or time.monotonic() > deadline:
                # One last read: the line may have been written just before the exit.
                log = self.log_text(since_start)
                if text in log:
                    return log
                why = "exited" if exited else f"still running after {timeout:g}s"
                self.stop(timeout=5)
                raise HarnessError(
                    f"{self.name} {why} (exit {self.returncode}) before {text!r} appeared in "
                    f"{self.log_path}:\n{tail(self.log_text())}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends sig to the whole process group (the pool children, duplicity, scripts too)."""
        _signal_group(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for the leader to exit; returns its exit code."""
        assert self._proc is not None
        if not self._wait_exited(timeout):
            raise HarnessError(f"{self.name} still running after {timeout:g}s:\n"
                               f"{tail(self.log_text())}")
        _signal_group(self._proc.pid, signal.SIGKILL)
        return self._proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the group, SIGKILL after timeout; leftovers of the group are killed too."""
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            if not _exited_unreaped(self._proc):
                _signal_group(self._proc.pid, signal.SIGTERM)
                self._wait_exited(timeout)
            # The leader is now exited but unreaped (or still running): its pgid is still ours.
            _signal_group(self._proc.pid, signal.SIGKILL)
        return self._reap()

    def restart(self, timeout: float = 15.0) -> None:
        self.stop(timeout)
        self.start()

    def _wait_exited(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not _exited_unreaped(self._proc):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self) -> int | None:
        return None if self._proc is None else self._proc.wait(10)


class ProcessFactory:
    """Starts ManagedProcesses for one test and stops every one of them at teardown."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], ready_marker: str | None = None, *,
              ready_timeout: float = 30.0,
              env_extra: Mapping[str, str | None] | None = None) -> ManagedProcess:
        """Launches argv (the full command line) logging to <tmp>/<name>.log (<name>-2.log ... if
        taken) and waits for ready_marker in its log."""
        log_path = self.workdir / f"{name}.log"
        taken = {p.log_path for p in self.processes}
        n = 1
        while log_path in taken:
            n += 1
            log_path = self.workdir / f"{name}-{n}.log"
        process = ManagedProcess(name, argv, env=merged_env(self.env, env_extra),
                                 cwd=self.workdir, log_path=log_path, ready_marker=ready_marker,
                                 ready_timeout=ready_timeout)
        self.processes.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        errors: list[str] = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{process.name}: {exc!r}")
        if errors:
            raise HarnessError("could not stop: " + "; ".join(errors))
