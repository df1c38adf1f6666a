"""Fixtures on real services: one redis-server and one moto_server per session, a flushed Redis,
a fresh bucket/topic/queue and a config per test, and offsite processes that are always stopped.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis

from tests.harness import _SCRUBBED_ENV
from tests.seaweed import S3Store, SeaweedServer
from tests.helpers import (REGION, TEST_AWS_KEY_ID, TEST_AWS_SECRET, AwsResources,
                           ConfigFactory, ManagedProcess, MotoServer, OffsiteEnv,
                           ProcessFactory, RedisServer, build_offsite_env, merged_env,
                           offsite_argv, run_command)

WORKER_READY = " ready."


@pytest.fixture(scope="session", autouse=True)
def own_gnupg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """gpg run by the test process itself gets a keyring of this session's (of this xdist
    worker's) own, never the user's ~/.gnupg shared with the other workers. Children get none:
    their HOME is the test's (tests.helpers.build_offsite_env) and GNUPGHOME is scrubbed."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    before = os.environ.get("GNUPGHOME")
    os.environ["GNUPGHOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GNUPGHOME", None)
        else:
            os.environ["GNUPGHOME"] = before
        _stop_gpg_agent(home)


def _stop_gpg_agent(home: Path) -> None:
    """A gpg-agent that gpg started for `home` (its socket is there) must not outlive the
    test: it is a daemon, so nothing else ends it."""
    if (home / "S.gpg-agent").exists():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                       capture_output=True, timeout=30)


@pytest.fixture(autouse=True)
def no_gpg_agent_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """The children of a test run with HOME in its tmp_path (tests.helpers.build_offsite_env);
    a gpg that a test runs by hand there (plain duplicity, as the docs' recovery does) may
    start an agent: it is ended with the test."""
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames \
        else None
    yield
    if tmp_path is not None:
        _stop_gpg_agent(tmp_path / "home" / ".gnupg")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The broker URL, with the server running (an earlier test may have stopped it) and empty."""
    redis_server.start()
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    """A client with decode_responses=True on a flushed server."""
    client = redis_server.client(decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for boto3 calls made inside the test process, undone after the test."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(moto: MotoServer, aws_credentials: None) -> Iterator[AwsResources]:
    resources = AwsResources(moto)
    try:
        yield resources
    finally:
        resources.close()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3 server (SeaweedFS), started on first use in a session, stopped after it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def target_store(request: pytest.FixtureRequest, aws: AwsResources) -> Iterator[S3Store]:
    """The S3 server the test's target is on: moto (the default, the `aws` fixture's bucket),
    or SeaweedFS when a test is parametrised with
    `@pytest.mark.parametrize("target_store", S3_SERVERS, indirect=True)`."""
    kind = getattr(request, "param", "moto")
    if kind == "moto":
        store = S3Store("moto", aws.endpoint_url, bucket=aws.bucket)
    else:
        server: SeaweedServer = request.getfixturevalue("seaweed")
        server.start()   # an earlier test may have stopped it
        store = S3Store("seaweedfs", server.endpoint_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def make_config(tmp_path: Path, redis_url: str, aws: AwsResources,
                target_store: S3Store) -> ConfigFactory:
    return ConfigFactory(tmp_path, redis_url, aws, target_store)


@pytest.fixture
def offsite_env(tmp_path: Path) -> OffsiteEnv:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return build_offsite_env(os.environ, home)


RunOffsite = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_offsite(tmp_path: Path, offsite_env: OffsiteEnv) -> RunOffsite:
    """run_offsite(*args, config=PATH, timeout=120, env_extra=None) -> CompletedProcess[str].

    env_extra values of None remove a variable. Runs in tmp_path with stdin closed.
    """

    def run(*args: str, config: Path, timeout: float = 120,
            env_extra: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
        return run_command(offsite_argv(config, *args),
                           env=merged_env(offsite_env, env_extra), cwd=tmp_path, timeout=timeout)

    return run


@pytest.fixture
def processes(tmp_path: Path, offsite_env: OffsiteEnv) -> Iterator[ProcessFactory]:
    factory = ProcessFactory(tmp_path, offsite_env)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def start_process(processes: ProcessFactory) -> Callable[..., ManagedProcess]:
    """start_process(name, argv, ready_marker=None, *, ready_timeout=30, env_extra=None).

    argv is the full command line; for offsite use helpers.offsite_argv(config, "beat").
    """
    return processes.start


@pytest.fixture
def start_worker(processes: ProcessFactory) -> Callable[..., ManagedProcess]:
    """start_worker(config, host, *extra_args, ready_timeout=30, env_extra=None): log
    worker-HOST.log; waits for Celery's "<nodename> ready." (the worker must log at INFO)."""

    def start(config: Path, host: str, *extra_args: str, ready_timeout: float = 30.0,
              env_extra: Mapping[str, str | None] | None = None) -> ManagedProcess:
        return processes.start(f"worker-{host}", offsite_argv(config, "worker", host, *extra_args),
                               WORKER_READY, ready_timeout=ready_timeout, env_extra=env_extra)

    return start


@pytest.fixture
def start_control(processes: ProcessFactory) -> Callable[..., ManagedProcess]:
    """start_control(config, *extra_args, ready_timeout=30, env_extra=None): log control.log."""

    def start(config: Path, *extra_args: str, ready_timeout: float = 30.0,
              env_extra: Mapping[str, str | None] | None = None) -> ManagedProcess:
        return processes.start("control", offsite_argv(config, "control", *extra_args),
                               WORKER_READY, ready_timeout=ready_timeout, env_extra=env_extra)

    return start


@pytest.fixture
def offsite_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 tmp_path: Path) -> RunOffsite:
    """offsite_main(*args, config=PATH) -> CompletedProcess[str]: offsite's own main() run in
    this process, in tmp_path, with the variables run_offsite's children never get removed.
    Only for input refused before anything runs (a bad argument, a config error) and for a
    local `check`: what run_offsite would show, without a process start (~0.3 CPU-s) per case. The environment
    (main() points $OFFSITE_CONFIG at the file) is restored after the test."""
    for name in _SCRUBBED_ENV:
        monkeypatch.setenv(name, "")      # recorded, so the undo restores it (or its absence)
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
        from offsite.cli.main import main
        argv = ["--config", str(config), *args]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:   # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    return run
