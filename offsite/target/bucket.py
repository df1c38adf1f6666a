"""The S3 target as boto3 sees it with the upload keys: can we reach the bucket, and if not,
is it worth retrying?"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from offsite.config.model import Config
from offsite.host.settings import HostSettings, TargetSettings
from offsite.errors import OffsiteError

MAX_OBJECTS = 200_000
_CHUNK = 1024 * 1024  # a host prefix holding more is refused rather than listed without end


class TargetUnreadable(OffsiteError):
    """The target could not be listed or read (missing bucket, no access, unreachable)."""

    failure_class = "target_unreadable"


@dataclass(frozen=True)
class TargetObject:
    name: str
    size: int
    storage_class: str = "STANDARD"


_PERMANENT = {"403": "access denied to {who}: check {variables} and the identity's policy "
                     "(offsite provision)",
              "404": "the bucket does not exist: create it or fix target.url"}
_WHO = {"DUPLICITY": "the upload keys", "READ": "the read identity", "PRUNE": "the prune identity",
        "RECOVER": "the recover identity"}
UPLOAD_IDENTITY = "DUPLICITY"   # DUPLICITY_AWS_*: a host's upload keys (its own prefix)
READ_IDENTITY = "READ"          # READ_AWS_*: list and get on the whole bucket, nothing else


def credentials_problem(exc: Exception, identity: str) -> str | None:
    """What a missing or incomplete key means, naming the variables to set; None for other
    errors. botocore says only "Unable to locate credentials"."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return (f"no credentials for {_WHO.get(identity, identity)}: set "
                f"{identity_variables(identity)} on this node (offsite provision writes them)")
    return None


def reading_credentials_problem(exc: Exception) -> str | None:
    """credentials_problem for this node's reads: with neither READ_AWS_* nor DUPLICITY_AWS_*
    set, both are named (the read identity off the hosts, the upload keys on a host)."""
    identity = reading_identity()
    problem = credentials_problem(exc, identity)
    if problem is None or os.environ.get(f"{identity}_AWS_ACCESS_KEY_ID"):
        return problem
    return (f"no credentials to read the bucket: set {identity_variables(READ_IDENTITY)} (the "
            f"read identity: control node, operator) or {identity_variables(UPLOAD_IDENTITY)} "
            "(a host's upload keys); offsite provision writes them")


def access_problem(status: str, identity: str) -> str:
    return _PERMANENT[status].format(who=_WHO.get(identity, identity),
                                     variables=identity_variables(identity))


def reading_identity(env: Mapping[str, str] | None = None) -> str:
    """The identity this node reads the target with (catalog, restore, drills, `list`): the
    read-only identity READ_AWS_* that `offsite provision` writes for the control node and the
    operator when it is set, else the host's upload keys DUPLICITY_AWS_* (else, when neither is
    set, boto3's default chain)."""
    env = os.environ if env is None else env
    return READ_IDENTITY if env.get(f"{READ_IDENTITY}_AWS_ACCESS_KEY_ID") else UPLOAD_IDENTITY


def identity_variables(identity: str) -> str:
    return f"{identity}_AWS_ACCESS_KEY_ID / {identity}_AWS_SECRET_ACCESS_KEY"


def bucket_name(config: Config) -> str | None:
    """The fleet's bucket (every host's is the same); None for a file:// target."""
    url = config.target.url
    if not url.startswith(("boto3+s3://", "s3://")):
        return None
    return url.split("://", 1)[1].split("/", 1)[0]


def s3_client(target: TargetSettings, identity: str, max_attempts: int = 3,
              read_timeout: int = 30) -> Any:
    """boto3's S3 client for the target with one identity's keys from this node's environment:
    `<identity>_AWS_ACCESS_KEY_ID` / `_SECRET_ACCESS_KEY` / `_SESSION_TOKEN` (DUPLICITY for the
    upload keys, PRUNE, RECOVER), else boto3's default chain."""
    import boto3   # only where an S3 target is used: a file:// host never loads it
    from botocore.config import Config as BotoConfig
    identity = target.keys(identity)   # a replica's own keys
    return boto3.client(
        "s3", endpoint_url=target.endpoint_url, region_name=target.region,
        aws_access_key_id=os.environ.get(f"{identity}_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get(f"{identity}_AWS_SECRET_ACCESS_KEY"),
        aws_session_token=os.environ.get(f"{identity}_AWS_SESSION_TOKEN"),
        config=BotoConfig(retries={"max_attempts": max_attempts}, connect_timeout=5,
                          read_timeout=read_timeout))


def upload_s3_client(target: TargetSettings) -> Any:
    """With the host's upload keys; one attempt, the callers decide what to retry."""
    return s3_client(target, UPLOAD_IDENTITY, max_attempts=1, read_timeout=15)


def read_s3_client(target: TargetSettings) -> Any:
    """With this node's reading identity (see reading_identity); one attempt."""
    return s3_client(target, reading_identity(), max_attempts=1, read_timeout=15)


def probe_bucket(target: TargetSettings) -> tuple[str, bool] | None:
    """None when the bucket answers; else (problem, permanent). Permanent problems (bad
    credentials, no such bucket) are not worth retrying; an unreachable endpoint or a 5xx is."""
    bucket = target.bucket
    if bucket is None:
        return None
    from botocore.exceptions import BotoCoreError, ClientError
    client = upload_s3_client(target)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code))
        if status in _PERMANENT:
            return f"bucket {bucket}: {access_problem(status, UPLOAD_IDENTITY)}", True
        return f"bucket {bucket}: {code or status}", False
    except BotoCoreError as exc:
        if (missing := credentials_problem(exc, UPLOAD_IDENTITY)) is not None:
            return f"bucket {bucket}: {missing}", True
        return f"bucket {bucket} unreachable: {exc}", False
    finally:
        client.close()
    return None


def list_host_objects(settings: HostSettings) -> list[TargetObject]:
    """Every object directly under the host's prefix (name, size, storage class); raises
    TargetUnreadable with the cause and what to do."""
    host, target = settings.name, settings.target
    folder = target.file_dir
    if folder is not None:
        try:
            entries = [TargetObject(entry.name, entry.stat().st_size)
                       for entry in os.scandir(folder) if entry.is_file()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TargetUnreadable(f"cannot list {folder}: {exc.strerror}", host=host,
                                   step="catalog") from None
        if len(entries) > MAX_OBJECTS:
            raise TargetUnreadable(f"{folder} holds more than {MAX_OBJECTS} objects",
                                   host=host, step="catalog")
        return entries
    from botocore.exceptions import BotoCoreError, ClientError
    bucket, prefix = target.bucket, target.prefix
    client = read_s3_client(target)
    objects: list[TargetObject] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            for item in page.get("Contents", []):
                objects.append(TargetObject(item["Key"][len(prefix):], int(item["Size"]),
                                            item.get("StorageClass") or "STANDARD"))
            if len(objects) > MAX_OBJECTS:
                raise TargetUnreadable(f"s3://{bucket}/{prefix} holds more than {MAX_OBJECTS} "
                                       "objects", host=host, step="catalog")
    except ClientError as exc:
        raise TargetUnreadable(f"cannot list s3://{bucket}/{prefix}: {_client_problem(exc)}",
                               host=host, step="catalog") from None
    except BotoCoreError as exc:
        problem = (credentials_problem(exc, target.keys(reading_identity()))   # a replica's
                   if target.identity else reading_credentials_problem(exc))
        problem = problem or f"unreachable ({exc})"
        raise TargetUnreadable(f"cannot list s3://{bucket}/{prefix}: {problem}",
                               host=host, step="catalog") from None
    finally:
        client.close()
    return objects


def fetch_host_object(settings: HostSettings, name: str, max_bytes: int) -> bytes:
    """One object of the host (a manifest), at most max_bytes; raises TargetUnreadable."""
    host, target = settings.name, settings.target
    folder = target.file_dir
    with _named_failures(f"cannot read {name}", host, "catalog", _reading_problem):
        if folder is not None:
            with open(folder / name, "rb") as handle:
                data = handle.read(max_bytes + 1)
        else:
            client = read_s3_client(target)
            try:
                body = client.get_object(Bucket=target.bucket, Key=target.prefix + name)["Body"]
                data = body.read(max_bytes + 1)
            finally:
                client.close()
    if len(data) > max_bytes:
        raise TargetUnreadable(f"{name} is larger than {max_bytes} bytes", host=host,
                               step="catalog")
    return data


def object_digest(settings: HostSettings, name: str) -> tuple[int, str]:
    """(size, SHA-256) of one of the host's objects as stored, read in chunks (a seal's
    record, offsite.target.seal); raises TargetUnreadable."""
    digest, size = hashlib.sha256(), 0
    host, target = settings.name, settings.target
    with _named_failures(f"cannot read {name}", host, "seal"):
        if target.file_dir is not None:
            with open(target.file_dir / name, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            return size, digest.hexdigest()
        client = upload_s3_client(target)
        try:
            body = client.get_object(Bucket=target.bucket, Key=target.prefix + name)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        finally:
            client.close()
    return size, digest.hexdigest()


def put_host_object(settings: HostSettings, name: str, data: bytes) -> None:
    """Write one small object of the host (a seal), replacing it whole; raises
    TargetUnreadable naming it."""
    host, target = settings.name, settings.target
    with _named_failures(f"cannot write {name}", host, "upload"):
        if target.file_dir is not None:
            partial = target.file_dir / f".{name}.part"
            partial.write_bytes(data)
            partial.replace(target.file_dir / name)
            return
        client = upload_s3_client(target)
        try:
            client.put_object(Bucket=target.bucket, Key=target.prefix + name, Body=data)
        finally:
            client.close()


def check_readable(settings: HostSettings, name: str) -> None:
    """One object of the host can be read with this node's reading identity (HeadObject is
    authorised as GetObject): a denied or missing key is named at once, before duplicity
    spends its retries on it. Raises TargetUnreadable."""
    host, target = settings.name, settings.target
    if target.file_dir is not None:
        return
    client = read_s3_client(target)
    try:
        with _named_failures(f"cannot read {name}", host, "catalog", _reading_problem):
            client.head_object(Bucket=target.bucket, Key=target.prefix + name)
    finally:
        client.close()


@contextmanager
def _named_failures(doing: str, host: str, step: str,
                    problem: Callable[[Exception], str] = str) -> Iterator[None]:
    """The target's failures (botocore's, the file system's) as one TargetUnreadable line:
    `doing` ("cannot read NAME") and why, with `problem(exc)` for all but S3's answers."""
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        yield
    except ClientError as exc:
        raise TargetUnreadable(f"{doing}: {_client_problem(exc)}", host=host,
                               step=step) from None
    except (BotoCoreError, OSError) as exc:
        raise TargetUnreadable(f"{doing}: {problem(exc)}", host=host, step=step) from None


def _reading_problem(exc: Exception) -> str:
    return reading_credentials_problem(exc) or str(exc)


def _client_problem(exc: Any, identity: str | None = None) -> str:
    """What a botocore ClientError means, for a person (naming the reading identity's
    variables on an access denied)."""
    identity = identity or reading_identity()
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    if code == "InvalidObjectState":
        return ("the object is archived (Glacier): request its restoration (S3 RestoreObject) "
                "and try again when it is thawed")
    if status in _PERMANENT:
        return access_problem(status, identity)
    if code == "NoSuchBucket":
        return _PERMANENT["404"]
    return f"{code or status}: {error.get('Message', '')}".strip()
