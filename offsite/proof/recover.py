"""`offsite recover HOST --time T [--apply]`: every object under the host's prefix back to the
version that was current at T, in the versioned bucket. The undo of what leaked upload keys can
do (delete: a delete marker; overwrite: a new version), with the recover identity
(RECOVER_AWS_*, else the default AWS chain), which alone holds the versioning rights.

- deleted after T: the delete markers placed after T are removed (nothing is copied, so this
  works for archived volumes too);
- overwritten after T: the version of T is copied back over it (a new, identical version);
- created after T: kept and listed (a backup made since is not undone; `offsite prune` removes
  what is not wanted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from offsite.target.catalog import format_stamp
from offsite.host.settings import HostSettings, TargetSettings
from offsite.errors import OffsiteError
from offsite.proof.restore import RestoreRefused, parse_backup_time
from offsite.target.bucket import s3_client

MAX_VERSIONS = 500_000


class RecoverError(OffsiteError):
    """The recovery cannot be planned or applied."""


@dataclass
class KeyPlan:
    key: str
    action: str                    # "unchanged", "undelete", "restore", "created-after"
    version_id: str | None = None  # the version current at T
    markers: list[str] = field(default_factory=list)   # delete markers to remove


@dataclass
class RecoverPlan:
    host: str
    at: datetime
    keys: list[KeyPlan]

    def changes(self) -> list[KeyPlan]:
        return [plan for plan in self.keys if plan.action in ("undelete", "restore")]

    def describe(self) -> str:
        lines = [f"recover {self.host} to {format_stamp(self.at)}:"]
        for plan in self.keys:
            if plan.action == "undelete":
                lines.append(f"  undelete {plan.key} (remove {len(plan.markers)} delete "
                             "marker(s) placed after that time)")
            elif plan.action == "restore":
                lines.append(f"  restore {plan.key} from version {plan.version_id} "
                             "(overwritten after that time)")
            elif plan.action == "created-after":
                lines.append(f"  keep {plan.key} (created after that time)")
        changed = len(self.changes())
        unchanged = sum(1 for plan in self.keys if plan.action == "unchanged")
        lines.append(f"{changed} object(s) to put back, {unchanged} unchanged")
        return "\n".join(lines)


def recover_client(target: TargetSettings) -> Any:
    return s3_client(target, "RECOVER")


def parse_recover_time(text: str, host: str) -> datetime:
    try:
        return parse_backup_time(text, datetime.now(timezone.utc), host, "recover")
    except RestoreRefused as refused:
        raise RecoverError(refused.cause, host=host, step="recover") from None


def plan_recovery(settings: HostSettings, at: datetime, client: Any) -> RecoverPlan:
    host, bucket = settings.name, settings.target.bucket
    if bucket is None:
        raise RecoverError("recover needs an S3 target with versioning (a file:// target "
                           "keeps no versions)", host=host, step="recover")
    prefix = settings.target.prefix
    entries: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                       Prefix=prefix):
        for kind in ("Versions", "DeleteMarkers"):
            for entry in page.get(kind, []):
                entry = dict(entry, marker=kind == "DeleteMarkers")
                entries.setdefault(entry["Key"], []).append(entry)
                count += 1
        if count > MAX_VERSIONS:
            raise RecoverError(f"more than {MAX_VERSIONS} versions under {prefix}", host=host,
                               step="recover")
    return RecoverPlan(host, at, [_plan_key(key, versions, at)
                                  for key, versions in sorted(entries.items())])


def _plan_key(key: str, versions: list[dict[str, Any]], at: datetime) -> KeyPlan:
    newest_first = sorted(versions, key=lambda entry: (entry["LastModified"],
                                                       bool(entry.get("IsLatest"))),
                          reverse=True)
    current = next((entry for entry in newest_first if entry.get("IsLatest")), newest_first[0])
    then = next((entry for entry in newest_first if entry["LastModified"] <= at), None)
    if then is None or then["marker"]:
        if current["marker"]:
            return KeyPlan(key, "unchanged")
        return KeyPlan(key, "created-after")
    if current["VersionId"] == then["VersionId"] or (
            not current["marker"] and current.get("ETag") == then.get("ETag")
            and current.get("Size") == then.get("Size")):   # put back by an earlier recover
        return KeyPlan(key, "unchanged", then["VersionId"])
    after = [entry for entry in newest_first if entry["LastModified"] > at]
    if all(entry["marker"] for entry in after):
        return KeyPlan(key, "undelete", then["VersionId"],
                       [entry["VersionId"] for entry in after])
    return KeyPlan(key, "restore", then["VersionId"])


def apply_recovery(settings: HostSettings, plan: RecoverPlan, client: Any) -> str:
    bucket = settings.target.bucket
    done = 0
    for key_plan in plan.changes():
        try:
            if key_plan.action == "undelete":
                for marker in key_plan.markers:
                    client.delete_object(Bucket=bucket, Key=key_plan.key, VersionId=marker)
            else:
                client.copy({"Bucket": bucket, "Key": key_plan.key,
                             "VersionId": key_plan.version_id}, bucket, key_plan.key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            hint = (": the version is archived, thaw it first (S3 RestoreObject)"
                    if code == "InvalidObjectState" else "")
            raise RecoverError(f"put back {done} of {len(plan.changes())}; {key_plan.key} "
                               f"failed: {exc}{hint}", host=plan.host, step="recover") from None
        done += 1
    return f"put back {done} object(s) of {plan.host} as of {format_stamp(plan.at)}"


def recover_host(settings: HostSettings, time_text: str, apply: bool) -> str:
    """The plan (and with apply, its execution) as text for the user."""
    host = settings.name
    at = parse_recover_time(time_text, host)
    client = recover_client(settings.target)
    try:
        plan = plan_recovery(settings, at, client)
        if not apply:
            return plan.describe() + "\nnothing was changed: run with --apply to do this"
        return plan.describe() + "\n" + apply_recovery(settings, plan, client)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise RecoverError(f"{code or 'S3 error'}: {exc} (recover needs the recover identity: "
                           "RECOVER_AWS_ACCESS_KEY_ID / RECOVER_AWS_SECRET_ACCESS_KEY)",
                           host=host, step="recover") from None
    except BotoCoreError as exc:
        raise RecoverError(f"cannot reach the bucket: {exc}", host=host,
                           step="recover") from None
    finally:
        client.close()
