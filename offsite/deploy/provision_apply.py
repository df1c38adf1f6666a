"""What exists against the provisioning plan: each difference with the call that removes it.

`offsite provision --apply` runs the fixes (so a second run finds nothing to do), `offsite check
--connect` lists the differences. Extra policies on offsite's users are reported, never removed.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import (BotoCoreError, ClientError, NoCredentialsError,
                                 PartialCredentialsError)

from offsite.config.model import Config
from offsite.deploy.iam_policy import PUBLIC_ACCESS_BLOCK
from offsite.deploy.provision import (POLICY_NAME, Identity, Plan, ProvisionError, admin_clients,
                               build_plan, error_code, subset_equal)

log = logging.getLogger(__name__)

UNSUPPORTED = "NotImplemented"   # what an S3 server that lacks a bucket setting answers
PAB_UNSUPPORTED = ("its provider does not implement public access blocks (NotImplemented): "
                   "make sure the bucket is not public by the provider's own means")
IAM_PROBE_USER = "offsite-iam-probe-no-such-user"
NO_IAM = ("", "NotImplemented", "Unknown", "InvalidAction", "UnknownOperation", "MethodNotAllowed")


@dataclass(frozen=True)
class Drift:
    what: str                              # the difference, in words
    fix: Callable[[], str] | None = None   # applies the plan's value; None: report only


def find_drift(plan: Plan, s3: Any, iam: Any | None) -> list[Drift]:
    """`iam` None: the provider has no IAM API (see has_iam): the identities are reported,
    never made."""
    if iam is None:
        users = ", ".join(identity.user for identity in plan.identities)
        return _bucket_drift(plan, s3) + [Drift(
            f"identities {users}: the provider answers no IAM API, so offsite cannot create "
            "them; make keys with these rights by the provider's own means (`offsite "
            "provision --format json` shows the policies) and give them the names the plan "
            "says")]
    return _bucket_drift(plan, s3) + [drift for identity in plan.identities
                                      for drift in _identity_drift(identity, iam)]


def has_iam(iam: Any, endpoint_url: str | None) -> bool:
    """Whether the target's provider answers the IAM calls apply makes: AWS always; another
    endpoint (SeaweedFS, MinIO, ...) only when GetUser of a user that does not exist gets an
    IAM answer (NoSuchEntity; an authorization refusal is one too: the operator's keys lack
    the right, which apply then reports). SeaweedFS answers `Unknown`."""
    if endpoint_url is None:
        return True
    try:
        iam.get_user(UserName=IAM_PROBE_USER)
    except ClientError as exc:
        return error_code(exc) not in NO_IAM
    except (NoCredentialsError, PartialCredentialsError):
        raise
    except BotoCoreError:   # no IAM service there: a connection or parsing failure
        return False
    return True


def _bucket_drift(plan: Plan, s3: Any) -> list[Drift]:
    bucket = plan.bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise

        def create() -> str:
            args: dict[str, Any] = {"Bucket": bucket}
            if plan.region and plan.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": plan.region}
            s3.create_bucket(**args)
            return f"created bucket {bucket}"
        # the settings below are applied right after it is created
        return [Drift(f"bucket {bucket} does not exist", create), *_settings_drift(plan, s3,
                                                                                  None)]
    return _settings_drift(plan, s3, _read_settings(s3, bucket))


def _read_settings(s3: Any, bucket: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"versioning": s3.get_bucket_versioning(Bucket=bucket).get(
        "Status", "never enabled")}
    try:
        settings["pab"] = s3.get_public_access_block(Bucket=bucket)[
            "PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) not in ("NoSuchPublicAccessBlockConfiguration", UNSUPPORTED):
            raise
        settings["pab"] = UNSUPPORTED if error_code(exc) == UNSUPPORTED else None
    try:
        settings["rules"] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        settings["rules"] = []
    return settings


def _settings_drift(plan: Plan, s3: Any, actual: dict[str, Any] | None) -> list[Drift]:
    bucket = plan.bucket
    actual = actual or {"versioning": "never enabled", "pab": None, "rules": []}
    drift: list[Drift] = []
    if actual["versioning"] != "Enabled":
        def version() -> str:
            s3.put_bucket_versioning(Bucket=bucket,
                                     VersioningConfiguration={"Status": "Enabled"})
            return f"enabled versioning on {bucket}"
        drift.append(Drift(f"bucket {bucket}: versioning is {actual['versioning']} "
                           "(plan: Enabled)", version))
    if actual["pab"] == UNSUPPORTED:
        drift.append(Drift(f"bucket {bucket}: {PAB_UNSUPPORTED}"))
    elif not subset_equal(PUBLIC_ACCESS_BLOCK, actual["pab"]):
        def block() -> str:
            try:
                s3.put_public_access_block(Bucket=bucket,
                                           PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
            except ClientError as exc:
                if error_code(exc) != UNSUPPORTED:
                    raise
                return (f"not set: public access block on {bucket}: {PAB_UNSUPPORTED}")
            return f"blocked public access to {bucket}"
        drift.append(Drift(f"bucket {bucket}: public access is not fully blocked "
                           f"({actual['pab']})", block))
    ours = {rule["ID"] for rule in plan.lifecycle}
    existing = {rule.get("ID"): rule for rule in actual["rules"]}
    wrong = [rule["ID"] for rule in plan.lifecycle
             if not subset_equal(rule, existing.get(rule["ID"]))]
    if wrong:
        foreign = [rule for rule in actual["rules"] if rule.get("ID") not in ours]

        def lifecycle() -> str:
            try:
                s3.put_bucket_lifecycle_configuration(
                    Bucket=bucket, LifecycleConfiguration={"Rules": foreign + plan.lifecycle})
            except ClientError as exc:
                if error_code(exc) != UNSUPPORTED:
                    raise
                return (f"not set: lifecycle rules {', '.join(sorted(ours))} on {bucket}: "
                        "its provider does not implement lifecycle rules (NotImplemented); "
                        "its objects stay in their storage class and old versions are kept "
                        "until deleted by hand")
            return f"set lifecycle rules {', '.join(sorted(ours))} on {bucket}"
        drift.append(Drift(f"bucket {bucket}: lifecycle rule(s) {', '.join(wrong)} missing or "
                           "different from the plan", lifecycle))
    return drift


def _identity_drift(identity: Identity, iam: Any) -> list[Drift]:
    user = identity.user
    try:
        iam.get_user(UserName=user)
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise

        def create() -> str:
            iam.create_user(UserName=user, Tags=[{"Key": "offsite-role",
                                                  "Value": identity.role}])
            _put_policy(iam, identity)
            return f"created IAM user {user} with policy {POLICY_NAME}"
        return [Drift(f"IAM user {user} does not exist", create)]
    drift: list[Drift] = []
    try:
        current = iam.get_user_policy(UserName=user, PolicyName=POLICY_NAME)["PolicyDocument"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        current = None
    if isinstance(current, str):
        current = json.loads(current)
    if current != identity.policy:
        def policy() -> str:
            _put_policy(iam, identity)
            return f"set policy {POLICY_NAME} of {user}"
        drift.append(Drift(f"IAM user {user}: policy {POLICY_NAME} "
                           f"{'missing' if current is None else 'differs from the plan'}",
                           policy))
    extra = [name for name in iam.list_user_policies(UserName=user)["PolicyNames"]
             if name != POLICY_NAME]
    attached = [policy["PolicyName"] for policy in
                iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    groups = [group["GroupName"] for group in iam.list_groups_for_user(UserName=user)["Groups"]]
    for kind, names in (("inline policies", extra), ("attached policies", attached),
                        ("groups", groups)):
        if names:
            drift.append(Drift(f"IAM user {user} has {kind} outside the plan: "
                               f"{', '.join(names)} (remove them: they widen its rights)"))
    return drift


def _put_policy(iam: Any, identity: Identity) -> None:
    iam.put_user_policy(UserName=identity.user, PolicyName=POLICY_NAME,
                        PolicyDocument=json.dumps(identity.policy))


def apply_plan(config: Config, credentials_out: Path | None) -> list[str]:
    """Make what exists match the plan; the changes made (empty: nothing to do) and notes."""
    plan = build_plan(config)
    if credentials_out is not None:
        _check_out_dir(credentials_out)
    s3, iam = admin_clients(config)
    try:
        usable = iam if has_iam(iam, config.target.endpoint_url) else None
        lines = [drift.fix() if drift.fix else f"left alone: {drift.what}"
                 for drift in find_drift(plan, s3, usable)]
        if credentials_out is not None and usable is not None:
            lines += _write_credentials(plan, usable, credentials_out)
    except ClientError as exc:
        raise ProvisionError(f"AWS refused: {exc}", step="provision") from None
    except BotoCoreError as exc:
        raise ProvisionError(f"cannot reach AWS: {exc}", step="provision") from None
    finally:
        s3.close()
        iam.close()
    return lines


def plan_differences(config: Config) -> list[str]:
    """For `offsite check --connect`: each difference between what exists and the plan."""
    plan = build_plan(config)
    s3, iam = admin_clients(config)
    try:
        usable = iam if has_iam(iam, config.target.endpoint_url) else None
        return [drift.what for drift in find_drift(plan, s3, usable)]
    except ClientError as exc:
        if error_code(exc) in ("AccessDenied", "403", "InvalidClientTokenId",
                               "AccessDeniedException"):
            # a host's own keys may not read IAM: not a fault of the host
            log.warning("not compared with the provisioning plan: these credentials may not "
                        "read the bucket settings and IAM (%s); run `offsite check --connect` "
                        "with the operator's credentials", error_code(exc))
            return []
        return [f"cannot compare with the provisioning plan: {exc}"]
    except BotoCoreError as exc:
        return [f"cannot compare with the provisioning plan: {exc}"]
    finally:
        s3.close()
        iam.close()


def _check_out_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ProvisionError(f"--credentials-out {folder} is a file, not a folder: give a "
                             "folder (it is created with mode 0700)", step="provision")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create {folder}: {exc.strerror}",
                             step="provision") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProvisionError(f"cannot write into {folder}", step="provision")


def _write_credentials(plan: Plan, iam: Any, folder: Path) -> list[str]:
    """A new access key for each identity that has none, into each of its env files (mode
    0600)."""
    lines: list[str] = []
    for identity in plan.identities:
        keys = iam.list_access_keys(UserName=identity.user)["AccessKeyMetadata"]
        paths = [folder / name for name in identity.env_files]
        if keys:
            for path in paths:
                if f"{identity.env_prefix}ACCESS_KEY_ID=" not in _read_env(path):
                    lines.append(f"left alone: {identity.user} already has an access key whose "
                                 f"secret cannot be read back; to write {path}, delete it (aws "
                                 "iam delete-access-key) and run again")
            continue
        key = iam.create_access_key(UserName=identity.user)["AccessKey"]
        for path in paths:
            _merge_env(path, {f"{identity.env_prefix}ACCESS_KEY_ID": key["AccessKeyId"],
                              f"{identity.env_prefix}SECRET_ACCESS_KEY": key["SecretAccessKey"]})
        lines.append(f"created an access key for {identity.user} in "
                     f"{' and '.join(str(path) for path in paths)}")
    return lines


def _read_env(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc.strerror}", step="provision") from None


def _merge_env(path: Path, values: dict[str, str]) -> None:
    """Add or replace lines NAME=value in path, written 0600 through a new file."""
    kept = [line for line in _read_env(path).splitlines()
            if line.split("=", 1)[0] not in values]
    text = "\n".join(kept + [f"{name}={value}" for name, value in values.items()]) + "\n"
    fresh = path.with_name(path.name + ".new")
    fresh.unlink(missing_ok=True)
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(fresh, 0o600)
    os.replace(fresh, path)
