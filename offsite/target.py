"""The S3 target as boto3 sees it with the upload keys: can we reach the bucket, and if not,
is it worth retrying?"""
from __future__ import annotations

import os
from typing import Any

from offsite.config import Config

_PERMANENT = {"403": "access denied: check DUPLICITY_AWS_ACCESS_KEY_ID / "
                     "DUPLICITY_AWS_SECRET_ACCESS_KEY and the bucket policy",
              "404": "the bucket does not exist: create it or fix target.url"}


def bucket_name(config: Config) -> str | None:
    url = config.target.url
    if not url.startswith(("boto3+s3://", "s3://")):
        return None
    return url.split("://", 1)[1].split("/", 1)[0]


def upload_s3_client(config: Config) -> Any:
    import boto3   # only where an S3 target is used: a file:// host never loads it
    from botocore.config import Config as BotoConfig
    return boto3.client(
        "s3", endpoint_url=config.target.endpoint_url, region_name=config.target.region,
        aws_access_key_id=os.environ.get("DUPLICITY_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("DUPLICITY_AWS_SECRET_ACCESS_KEY"),
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=15))


def probe_bucket(config: Config) -> tuple[str, bool] | None:
    """None when the bucket answers; else (problem, permanent). Permanent problems (bad
    credentials, no such bucket) are not worth retrying; an unreachable endpoint or a 5xx is."""
    bucket = bucket_name(config)
    if bucket is None:
        return None
    from botocore.exceptions import BotoCoreError, ClientError
    client = upload_s3_client(config)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code))
        if status in _PERMANENT:
            return f"bucket {bucket}: {_PERMANENT[status]}", True
        return f"bucket {bucket}: {code or status}", False
    except BotoCoreError as exc:
        return f"bucket {bucket} unreachable: {exc}", False
    finally:
        client.close()
    return None
