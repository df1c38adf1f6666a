"""The IAM policy documents and the bucket settings of the security model, as plain data.

Pure functions: `offsite provision` prints them, applies them and compares them with what exists.

- A host may list, read, write and delete (a delete marker: the bucket is versioned) only under
  its own prefix, tag and thaw only its own data volumes, and has no versioning or lifecycle
  right: with leaked upload keys an attacker can hide objects but never destroy an old version.
- The alert identity may publish to the one topic and do nothing else.
- The prune identity may delete current objects (delete markers), never a version.
- The recover identity holds the versioning rights that undo deletes and overwrites.
- The read identity may list and get on the whole bucket, nothing else: drills on the control
  node and the operator's `list`, `restore` and `verify` read with it.
"""
from __future__ import annotations

from typing import Any

from offsite.config.security import DATA_PREFIX, VOLUME_TAG, LifecycleConfig

Policy = dict[str, Any]

# Exactly what duplicity's boto3 backend and offsite's catalog do with a host's objects:
# upload_file (multipart above the chunk size: parts, abort on failure), download_file, HEAD
# (authorised as GetObject), delete (duplicity's cleanup of a failed volume), list.
HOST_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
HOST_VOLUME_ACTIONS = ["s3:PutObjectTagging", "s3:RestoreObject"]
VERSIONING_ACTIONS = ["s3:DeleteObjectVersion", "s3:GetObjectVersion", "s3:ListBucketVersions",
                      "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration",
                      "s3:PutBucketPolicy", "s3:DeleteBucket"]


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _document(*statements: dict[str, Any]) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def host_policy(bucket: str, host_prefix: str) -> Policy:
    """The upload identity of one host, confined to `host_prefix` (like 'alpha/').

    Listing is confined by the s3:prefix condition. It is `StringLikeIfExists`, not
    `StringLike`: duplicity's boto3 backend calls HeadBucket before anything else, AWS authorises
    HeadBucket as s3:ListBucket and that request carries no s3:prefix, so a plain StringLike
    would deny every backup. A listing with another host's prefix is denied. What AWS does
    with a listing that sends no prefix at all (absent key: allowed by IfExists) is read from
    its documentation, not proven here: at worst it shows other hosts' object names, never
    their content (GetObject is confined by resource).
    """
    return _document(
        {"Sid": "ListOwnPrefixOnly", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(bucket)],
         "Condition": {"StringLikeIfExists": {"s3:prefix": [host_prefix, host_prefix + "*"]}}},
        {"Sid": "OwnObjects", "Effect": "Allow", "Action": list(HOST_OBJECT_ACTIONS),
         "Resource": [f"{bucket_arn(bucket)}/{host_prefix}*"]},
        {"Sid": "TagAndThawOwnDataVolumes", "Effect": "Allow",
         "Action": list(HOST_VOLUME_ACTIONS),
         "Resource": [f"{bucket_arn(bucket)}/{host_prefix}{DATA_PREFIX}*"]},
    )


def copy_policy(bucket: str, root_prefix: str) -> Policy:
    """A replica's copy identity on the control node (`<NAME>_AWS_*` in control.env): its
    catch-up writes every host's sets to the replica, as each host's worker does to its own
    prefix: list, read back, write, and tag data volumes; no delete, no versioning right."""
    return _document(
        {"Sid": "ListBackups", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(bucket)]},
        {"Sid": "CopyObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": [f"{bucket_arn(bucket)}/{root_prefix}*"]},
        {"Sid": "TagDataVolumes", "Effect": "Allow", "Action": ["s3:PutObjectTagging"],
         "Resource": [f"{bucket_arn(bucket)}/{root_prefix}*/{DATA_PREFIX}*"]},
    )


def alert_policy(topic_arn: str) -> Policy:
    return _document({"Sid": "PublishAlerts", "Effect": "Allow", "Action": ["sns:Publish"],
                      "Resource": [topic_arn]})


def prune_policy(bucket: str, root_prefix: str) -> Policy:
    """Retention: read the names, delete current objects. A delete on a versioned bucket only
    places a delete marker; the old version expires after the noncurrent window."""
    return _document(
        {"Sid": "ListBackups", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(bucket)]},
        {"Sid": "DeleteCurrentObjectsOnly", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Resource": [f"{bucket_arn(bucket)}/{root_prefix}*"]},
    )


def recover_policy(bucket: str, root_prefix: str) -> Policy:
    """`offsite recover`: list versions, copy an old version back, remove delete markers."""
    return _document(
        {"Sid": "ListVersions", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning"],
         "Resource": [bucket_arn(bucket)]},
        {"Sid": "RestoreVersions", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
                    "s3:DeleteObjectVersion"],
         "Resource": [f"{bucket_arn(bucket)}/{root_prefix}*"]},
    )


def read_policy(bucket: str) -> Policy:
    """Drills on the control node and the operator's reads: list and get on the whole bucket
    (HeadBucket, which duplicity calls first, is authorised as s3:ListBucket), nothing else."""
    return _document(
        {"Sid": "ListBucket", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(bucket)]},
        {"Sid": "GetObjects", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"{bucket_arn(bucket)}/*"]},
    )


def lifecycle_rules(lifecycle: LifecycleConfig) -> list[dict[str, Any]]:
    """Two rules whatever the number of hosts: data volumes (tagged by offsite after each
    upload, a tag only a host's own data volumes can carry) move to IA then the archive class;
    old versions expire after the noncurrent window; abandoned multipart uploads are dropped."""
    days = lambda seconds: int(seconds // 86400)  # noqa: E731
    transitions = []
    if lifecycle.infrequent_access_after is not None:
        transitions.append({"Days": days(lifecycle.infrequent_access_after),
                            "StorageClass": "STANDARD_IA"})
    if lifecycle.archive_after is not None:
        transitions.append({"Days": days(lifecycle.archive_after),
                            "StorageClass": lifecycle.archive_class})
    rules: list[dict[str, Any]] = []
    if transitions:
        rules.append({"ID": "offsite-archive-data-volumes", "Status": "Enabled",
                      "Filter": {"Tag": {"Key": VOLUME_TAG[0], "Value": VOLUME_TAG[1]}},
                      "Transitions": transitions})
    rules.append({"ID": "offsite-expire-old-versions", "Status": "Enabled",
                  "Filter": {"Prefix": ""},
                  "NoncurrentVersionExpiration": {
                      "NoncurrentDays": days(lifecycle.noncurrent_expire_after)},
                  "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}})
    return rules


PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                       "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def granted_actions(policy: Policy) -> set[str]:
    """Every action an Allow statement names (for tests and the docs' table)."""
    return {action for statement in policy["Statement"] if statement["Effect"] == "Allow"
            for action in statement["Action"]}
