"""Harness for the security tests: a moto_server that enforces IAM, an administrator made in its
first unauthenticated calls, gpg key pairs, env files written by `offsite provision`."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.harness import boto_client
from tests.helpers import REGION, HarnessError, MotoServer

# create_user, put_user_policy, create_access_key: the administrator; all later calls are
# authenticated and authorised by moto's IAM.
UNAUTHENTICATED_CALLS = 3
# sun_path of a Unix socket: 108 bytes with the terminating NUL (gpg-agent's sockets are in its home)
SOCKET_PATH_MAX = 107
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class StrictAws:
    """A moto_server with IAM enforcement (INITIAL_NO_AUTH_ACTION_COUNT) and its admin keys."""

    def __init__(self, directory: Path) -> None:
        self.server = MotoServer(directory, env={
            "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_CALLS)})
        self.endpoint_url = self.server.endpoint_url
        self.admin: dict[str, str] = {}

    def start(self) -> None:
        self.server.start()
        iam = self.server.client("iam")
        try:
            iam.create_user(UserName="test-admin")
            iam.put_user_policy(UserName="test-admin", PolicyName="admin",
                                PolicyDocument=json.dumps(ADMIN_POLICY))
            key = iam.create_access_key(UserName="test-admin")["AccessKey"]
        finally:
            iam.close()
        self.admin = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                      "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def stop(self) -> None:
        self.server.stop()

    def client(self, service: str, keys: dict[str, str] | None = None) -> Any:
        """A client with `keys` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), default the admin's."""
        keys = keys or self.admin
        return boto_client(service, key_id=keys["AWS_ACCESS_KEY_ID"],
                           secret=keys["AWS_SECRET_ACCESS_KEY"], region=REGION, endpoint_url=self.endpoint_url, config=BotoConfig(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def keys_of(env: dict[str, str], prefix: str) -> dict[str, str]:
    """{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY} from PREFIX_ACCESS_KEY_ID, ..."""
    return {"AWS_ACCESS_KEY_ID": env[f"{prefix}ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env[f"{prefix}SECRET_ACCESS_KEY"]}


def denied(call: Any, *args: Any, **kwargs: Any) -> bool:
    """Whether the call is refused by IAM (AccessDenied or 403)."""
    try:
        call(*args, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("AccessDenied", "AccessDeniedException", "AuthorizationError") \
            or status == 403
    return False


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    public_file: Path      # armoured public key only
    secret_file: Path      # armoured secret key (unprotected)
    secret_home: Path      # a GNUPGHOME holding the secret key
    public_home: Path      # a GNUPGHOME holding only the public key


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
                          input=stdin, capture_output=True, timeout=120, check=True)


def make_key_pair(directory: Path, name: str) -> KeyPair:
    """A new RSA key pair without passphrase (as an operator's escrowed backup key)."""
    secret_home = directory / f"{name}-secret-home"
    public_home = directory / f"{name}-public-home"
    longest = secret_home / "S.gpg-agent.browser"   # the longest of gpg's socket names
    if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
        raise HarnessError(f"{longest} is longer than a socket path may be "
                           f"({SOCKET_PATH_MAX} bytes): give make_key_pair a shorter folder "
                           "(tmp_path_factory.mktemp) so gpg can start its agent")
    for home in (secret_home, public_home):
        home.mkdir(mode=0o700, parents=True)
    params = (f"%no-protection\nKey-Type: RSA\nKey-Length: 2048\nSubkey-Type: RSA\n"
              f"Subkey-Length: 2048\nName-Real: offsite {name}\n"
              f"Name-Email: {name}@backup.invalid\nExpire-Date: 0\n%commit\n")
    gpg(secret_home, "--gen-key", stdin=params.encode())
    listing = gpg(secret_home, "--with-colons", "--list-keys").stdout.decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                       if line.startswith("fpr:"))
    public_file = directory / f"{name}-public.asc"
    secret_file = directory / f"{name}-secret.asc"
    public_file.write_bytes(gpg(secret_home, "--armor", "--export", fingerprint).stdout)
    secret_file.write_bytes(gpg(secret_home, "--armor", "--export-secret-keys",
                                fingerprint).stdout)
    gpg(public_home, "--import", str(public_file))
    for home in (secret_home, public_home):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                       capture_output=True, timeout=30)
    return KeyPair(fingerprint, public_file, secret_file, secret_home, public_home)


def write_config(path: Path, *, broker_url: str, endpoint_url: str, bucket: str,
                 hosts: dict[str, Any], tmp: Path, **extra: Any) -> Path:
    """An offsite config on `bucket` at `endpoint_url`; staging and cache under `tmp`."""
    import yaml
    data: dict[str, Any] = {
        "broker_url": broker_url, "staging_root": str(tmp / "staging"),
        "cache_root": str(tmp / "cache"),
        "target": {"url": f"boto3+s3://{bucket}", "endpoint_url": endpoint_url,
                   "region": REGION},
        "hosts": hosts}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
    return path


def copy_host(data: Path) -> dict[str, Any]:
    """A host whose one script copies `data`."""
    return {"scripts": {"files": {"bash": f"cp -a {data}/. ."}}}


def grant_head_bucket(aws: StrictAws, user: str, bucket: str) -> None:
    """moto names HeadBucket's permission s3:HeadBucket; AWS authorises HeadBucket as
    s3:ListBucket, which the plan grants. So on moto only, the test adds that name."""
    iam = aws.client("iam")
    try:
        iam.put_user_policy(UserName=user, PolicyName="moto-head-bucket", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:HeadBucket",
                                                     "Resource": f"arn:aws:s3:::{bucket}"}]}))
    finally:
        iam.close()
