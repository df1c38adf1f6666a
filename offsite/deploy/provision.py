"""`offsite provision`: the bucket and identities of the security model, as a plan (text, JSON or
Terraform), applied through boto3 with the operator's own credentials (the default AWS chain),
idempotently; and the comparison of what exists with the plan (`offsite check --connect`).

Identities are IAM users with inline policy "offsite" (see offsite.deploy.iam_policy): one per host
(DUPLICITY_AWS_* in DIR/<host>.env), alert and prune (ALERT_AWS_*, PRUNE_AWS_* in
DIR/control.env), recover (RECOVER_AWS_* in DIR/recover.env: keep it off the fleet), and the
read-only identity of drills and of the operator's `list`/`restore`/`verify` (READ_AWS_* in
both DIR/control.env and DIR/recover.env).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from offsite.config.model import Config
from offsite.config.targets import host_replicas
from offsite.errors import OffsiteError
from offsite.deploy.iam_policy import (PUBLIC_ACCESS_BLOCK, Policy, alert_policy, copy_policy,
                                       host_policy, lifecycle_rules, prune_policy, read_policy,
                                       recover_policy)
from offsite.host.settings import resolve_host
from offsite.target.bucket import bucket_name

POLICY_NAME = "offsite"
MAX_USER_NAME = 64


class ProvisionError(OffsiteError):
    """The plan cannot be made or applied (no S3 target, a name too long, AWS refused)."""


@dataclass(frozen=True)
class Identity:
    user: str
    role: str                 # host, alert, prune, recover, read, copy (a replica's)
    host: str | None
    policy: Policy
    env_prefix: str           # DUPLICITY_AWS_, ALERT_AWS_, ...
    env_files: tuple[str, ...]  # <host>.env, control.env, recover.env: the nodes that use it

    @property
    def files_text(self) -> str:
        return " and ".join(self.env_files)


@dataclass(frozen=True)
class Plan:
    bucket: str
    region: str | None
    lifecycle: list[dict[str, Any]]
    identities: list[Identity]

    def as_json(self) -> dict[str, Any]:
        return {"bucket": {"name": self.bucket, "region": self.region,
                           "versioning": "Enabled", "public_access_block": PUBLIC_ACCESS_BLOCK,
                           "lifecycle_rules": self.lifecycle},
                "identities": [{"user": identity.user, "role": identity.role,
                                "host": identity.host, "policy_name": POLICY_NAME,
                                "policy": identity.policy,
                                "credentials": f"{identity.files_text} "
                                               f"({identity.env_prefix}ACCESS_KEY_ID)"}
                               for identity in self.identities]}


def _root_prefix(config: Config) -> str:
    """The key prefix every host lives under ('' or 'path/' of target.url)."""
    rest = config.target.url.split("://", 1)[1]
    return rest.split("/", 1)[1].strip("/") + "/" if "/" in rest else ""


def build_plan(config: Config) -> Plan:
    bucket = bucket_name(config)
    if bucket is None:
        raise ProvisionError("provision needs an S3 target (target.url boto3+s3://BUCKET)",
                             step="provision")
    replica = config.target.identity   # a replica seen through target_view: its own users
    prefix = config.provision.name_prefix + (f"-{replica.lower()}" if replica else "")
    keys = f"{replica}_" if replica else ""
    root = _root_prefix(config)
    hosts = [host for host in config.hosts
             if replica is None or replica.lower() in host_replicas(config, host)]
    identities = [Identity(f"{prefix}-host-{host}", "host", host,
                           host_policy(bucket, resolve_host(config, host).target.prefix),
                           f"{replica}_AWS_" if replica else "DUPLICITY_AWS_",
                           (f"{host}.env",)) for host in hosts]
    if config.alerts.sns_topic_arn and replica is None:
        identities.append(Identity(f"{prefix}-alert", "alert", None,
                                   alert_policy(config.alerts.sns_topic_arn), "ALERT_AWS_",
                                   ("control.env",)))
    identities.append(Identity(f"{prefix}-prune", "prune", None, prune_policy(bucket, root),
                               f"{keys}PRUNE_AWS_", ("control.env",)))
    identities.append(Identity(f"{prefix}-recover", "recover", None,
                               recover_policy(bucket, root), f"{keys}RECOVER_AWS_",
                               ("recover.env",)))
    if replica is not None:   # the control node's catch-up (offsite.watch.replica_catch_up)
        identities.append(Identity(f"{prefix}-copy", "copy", None, copy_policy(bucket, root),
                                   f"{replica}_AWS_", ("control.env",)))
    if replica is None:   # a replica is read with its own keys (TargetSettings.keys)
        identities.append(Identity(f"{prefix}-read", "read", None, read_policy(bucket),
                                   "READ_AWS_", ("control.env", "recover.env")))
    for identity in identities:
        if len(identity.user) > MAX_USER_NAME:
            raise ProvisionError(f"IAM user name {identity.user!r} is longer than "
                                 f"{MAX_USER_NAME} characters: shorten provision.name_prefix "
                                 "or the host name", step="provision")
    return Plan(bucket, config.target.region, lifecycle_rules(config.provision.lifecycle),
                identities)


def plan_as_text(plan: Plan) -> str:
    lines = [f"bucket {plan.bucket} ({plan.region or 'default region'}): versioning Enabled, "
             "public access blocked"]
    for rule in plan.lifecycle:
        lines.append(f"  lifecycle rule {rule['ID']}: {json.dumps(rule, sort_keys=True)}")
    for identity in plan.identities:
        actions = sorted({action for statement in identity.policy["Statement"]
                          for action in statement["Action"]})
        lines.append(f"IAM user {identity.user} ({identity.role}"
                     f"{' ' + identity.host if identity.host else ''}): {', '.join(actions)}; "
                     f"keys {identity.env_prefix}* in {identity.files_text}")
    lines.append("nothing was changed: run with --apply to create or update these")
    return "\n".join(lines)


def plan_as_terraform(plan: Plan) -> str:
    """The same plan as Terraform (AWS provider v4+ resources)."""
    out = [f'resource "aws_s3_bucket" "backups" {{\n  bucket = "{plan.bucket}"\n}}\n',
           'resource "aws_s3_bucket_versioning" "backups" {\n'
           '  bucket = aws_s3_bucket.backups.id\n'
           '  versioning_configuration {\n    status = "Enabled"\n  }\n}\n',
           'resource "aws_s3_bucket_public_access_block" "backups" {\n'
           '  bucket                  = aws_s3_bucket.backups.id\n'
           '  block_public_acls       = true\n  block_public_policy     = true\n'
           '  ignore_public_acls      = true\n  restrict_public_buckets = true\n}\n']
    rules = []
    for rule in plan.lifecycle:
        body = [f'    id     = "{rule["ID"]}"', '    status = "Enabled"']
        if "Tag" in rule["Filter"]:
            tag = rule["Filter"]["Tag"]
            body.append(f'    filter {{\n      tag {{\n        key   = "{tag["Key"]}"\n'
                        f'        value = "{tag["Value"]}"\n      }}\n    }}')
        else:
            body.append('    filter {}')
        for step in rule.get("Transitions", []):
            body.append(f'    transition {{\n      days          = {step["Days"]}\n'
                        f'      storage_class = "{step["StorageClass"]}"\n    }}')
        if "NoncurrentVersionExpiration" in rule:
            days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
            body.append(f'    noncurrent_version_expiration {{\n      noncurrent_days = {days}'
                        '\n    }')
        if "AbortIncompleteMultipartUpload" in rule:
            days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            body.append('    abort_incomplete_multipart_upload {\n'
                        f'      days_after_initiation = {days}\n    }}')
        rules.append("  rule {\n" + "\n".join(body) + "\n  }")
    out.append('resource "aws_s3_bucket_lifecycle_configuration" "backups" {\n'
               '  bucket = aws_s3_bucket.backups.id\n' + "\n".join(rules) + "\n}\n")
    for identity in plan.identities:
        name = identity.user.replace(".", "_").replace("@", "_")
        out.append(f'resource "aws_iam_user" "{name}" {{\n  name = "{identity.user}"\n}}\n')
        out.append(f'resource "aws_iam_user_policy" "{name}" {{\n'
                   f'  name   = "{POLICY_NAME}"\n  user   = aws_iam_user.{name}.name\n'
                   f'  policy = <<-EOT\n{json.dumps(identity.policy, indent=2)}\n  EOT\n}}\n')
    return "\n".join(out)


def admin_clients(config: Config) -> tuple[Any, Any]:
    """S3 and IAM clients with the operator's credentials (the default AWS chain)."""
    session = boto3.session.Session(region_name=config.target.region)
    s3 = session.client("s3", endpoint_url=config.target.endpoint_url)
    iam = session.client("iam", endpoint_url=config.target.endpoint_url)
    return s3, iam


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def subset_equal(desired: Any, actual: Any) -> bool:
    """Whether `actual` holds everything `desired` says (services add fields of their own)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            subset_equal(value, actual.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            subset_equal(one, other) for one, other in zip(desired, actual))
    return str(desired) == str(actual)
