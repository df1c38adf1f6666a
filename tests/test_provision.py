"""`offsite provision` on a moto_server that enforces IAM: the plan, apply, idempotence, and each
identity holding exactly its rights, proven with the keys that provision wrote. Where moto cannot
evaluate a rule (condition keys such as s3:prefix; SNS resources), the policy document itself is
asserted."""
from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offsite.config.model import parse_config
from offsite.deploy.iam_policy import (VERSIONING_ACTIONS, granted_actions, host_policy,
                                lifecycle_rules)
from offsite.deploy.provision import build_plan
from tests.helpers import describe
from tests.security_harness import (StrictAws, copy_host, denied, grant_head_bucket, keys_of,
                                    read_env_file, unique_prefix, write_config)
from tests.test_backup_flow import same_tree
from tests.test_hostile_outcomes import data_tree


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrictAws]:
    aws = StrictAws(tmp_path_factory.mktemp("strict-moto"))
    aws.start()
    try:
        yield aws
    finally:
        aws.stop()


def _fleet(strict: StrictAws, tmp_path: Path, redis_url: str,
           hosts: tuple[str, ...] = ("alpha", "beta")) -> dict[str, Any]:
    bucket = f"offsite-{uuid.uuid4().hex[:12]}"
    prefix = unique_prefix()
    sns = strict.client("sns")
    try:
        topic = sns.create_topic(Name=prefix)["TopicArn"]
    finally:
        sns.close()
    data = {host: data_tree(tmp_path / "data" / host, files=2, size=50_000) for host in hosts}
    config = write_config(tmp_path / "offsite.yaml", broker_url=redis_url,
                          endpoint_url=strict.endpoint_url, bucket=bucket,
                          hosts={host: copy_host(data[host]) for host in hosts}, tmp=tmp_path,
                          encryption={"passphrase_file": str(_passphrase(tmp_path))},
                          alerts={"sns_topic_arn": topic, "endpoint_url": strict.endpoint_url,
                                  "region": "eu-west-1"},
                          provision={"name_prefix": prefix, "managed": True})
    return {"bucket": bucket, "prefix": prefix, "topic": topic, "data": data, "config": config,
            "creds": tmp_path / "creds"}


def _passphrase(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    if not path.exists():
        path.write_text(uuid.uuid4().hex + "\n")
    return path


def _operator(strict: StrictAws) -> dict[str, str | None]:
    """The operator's machine: admin keys in the default chain, no host or alert keys."""
    return {**strict.admin, "DUPLICITY_AWS_ACCESS_KEY_ID": None,
            "DUPLICITY_AWS_SECRET_ACCESS_KEY": None, "ALERT_AWS_ACCESS_KEY_ID": None,
            "ALERT_AWS_SECRET_ACCESS_KEY": None}


def _as(keys: dict[str, str], prefix: str = "DUPLICITY_AWS_") -> dict[str, str | None]:
    """The child env of a node holding only these keys."""
    return {f"{prefix}ACCESS_KEY_ID": keys[f"{prefix}ACCESS_KEY_ID"],
            f"{prefix}SECRET_ACCESS_KEY": keys[f"{prefix}SECRET_ACCESS_KEY"],
            "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}


@pytest.mark.slow
def test_the_plan_is_printed_and_nothing_is_made(strict: StrictAws, tmp_path: Path,
                                                run_offsite: Any, redis_url: str) -> None:
    fleet = _fleet(strict, tmp_path, redis_url)
    for fmt, marker in (("text", "nothing was changed"), ("json", '"identities"'),
                        ("terraform", 'resource "aws_iam_user_policy"')):
        result = run_offsite("provision", "--format", fmt, config=fleet["config"],
                             env_extra=strict.admin)
        assert result.returncode == 0, describe(result)
        assert marker in result.stdout
    plan = json.loads(run_offsite("provision", "--format", "json", config=fleet["config"],
                                  env_extra=strict.admin).stdout)
    users = {identity["user"]: identity["role"] for identity in plan["identities"]}
    assert users == {f"{fleet['prefix']}-host-alpha": "host", f"{fleet['prefix']}-host-beta":
                     "host", f"{fleet['prefix']}-alert": "alert",
                     f"{fleet['prefix']}-prune": "prune", f"{fleet['prefix']}-recover": "recover",
                     f"{fleet['prefix']}-read": "read"}
    s3 = strict.client("s3")
    try:
        assert denied(s3.head_bucket, Bucket=fleet["bucket"]) is False  # 404, not 403
        assert fleet["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        s3.close()


def test_policy_documents_say_what_moto_cannot_check() -> None:
    """Rules moto does not evaluate (s3:prefix conditions), asserted on the document."""
    policy = host_policy("b", "alpha/")
    listing = next(s for s in policy["Statement"] if "s3:ListBucket" in s["Action"])
    assert listing["Resource"] == ["arn:aws:s3:::b"]
    assert listing["Condition"] == {"StringLikeIfExists": {"s3:prefix": ["alpha/", "alpha/*"]}}
    objects = [s for s in policy["Statement"] if s["Sid"] != listing["Sid"]]
    assert all(resource.startswith("arn:aws:s3:::b/alpha/") for s in objects
               for resource in s["Resource"])
    assert granted_actions(policy) == {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:PutObjectTagging",
        "s3:RestoreObject"}
    assert not granted_actions(policy) & set(VERSIONING_ACTIONS)
    config = parse_config({"target": {"url": "boto3+s3://backups"},
                           "alerts": {"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"},
                           "hosts": {f"h{i}": {"scripts": {"s": {"bash": "true"}}}
                                     for i in range(300)}})
    plan = build_plan(config)
    assert len(plan.lifecycle) == 2, "the rule count must not grow with the hosts"
    alert = next(i for i in plan.identities if i.role == "alert")
    assert alert.policy["Statement"] == [{"Sid": "PublishAlerts", "Effect": "Allow",
                                          "Action": ["sns:Publish"],
                                          "Resource": ["arn:aws:sns:eu-west-1:123456789012:t"]}]
    prune = next(i for i in plan.identities if i.role == "prune")
    assert "s3:DeleteObject" in granted_actions(prune.policy)
    assert not granted_actions(prune.policy) & set(VERSIONING_ACTIONS)
    recover = next(i for i in plan.identities if i.role == "recover")
    assert {"s3:DeleteObjectVersion", "s3:GetObjectVersion", "s3:ListBucketVersions"} <= \
        granted_actions(recover.policy)
    read = next(i for i in plan.identities if i.role == "read")
    assert granted_actions(read.policy) == {"s3:ListBucket", "s3:GetObject"}
    assert read.env_prefix == "READ_AWS_" and read.env_files == ("control.env", "recover.env")
    archive = lifecycle_rules(config.provision.lifecycle)[0]
    assert archive["Filter"] == {"Tag": {"Key": "offsite-class", "Value": "volume"}}
    assert [t["StorageClass"] for t in archive["Transitions"]] == ["STANDARD_IA", "GLACIER"]


@pytest.mark.slow
def test_apply_makes_each_identity_hold_exactly_its_rights(
        strict: StrictAws, tmp_path: Path, run_offsite: Any, redis_url: str) -> None:
    fleet = _fleet(strict, tmp_path, redis_url)
    config, creds, bucket, prefix = (fleet["config"], fleet["creds"], fleet["bucket"],
                                     fleet["prefix"])
    applied = run_offsite("provision", "--apply", "--credentials-out", str(creds),
                          config=config, env_extra=strict.admin)
    assert applied.returncode == 0, describe(applied)
    assert f"created bucket {bucket}" in applied.stdout
    assert f"created IAM user {prefix}-host-alpha" in applied.stdout
    assert sorted(p.name for p in creds.iterdir()) == ["alpha.env", "beta.env", "control.env",
                                                        "recover.env"]
    for path in creds.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    s3 = strict.client("s3")
    try:
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert sorted(rule["ID"] for rule in rules) == ["offsite-archive-data-volumes",
                                                        "offsite-expire-old-versions"]
        noncurrent = next(r for r in rules if r["ID"] == "offsite-expire-old-versions")
        assert noncurrent["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    finally:
        s3.close()

    again = run_offsite("provision", "--apply", "--credentials-out", str(creds), config=config,
                        env_extra=strict.admin)
    assert again.returncode == 0, describe(again)
    assert again.stdout.strip() == "no changes: everything matches the plan"
    check = run_offsite("check", "--connect", config=config, env_extra=_operator(strict))
    assert check.returncode == 0, describe(check)

    env = {name: read_env_file(creds / f"{name}.env") for name in ("alpha", "beta", "control")}
    for host in ("alpha", "beta"):
        grant_head_bucket(strict, f"{prefix}-host-{host}", bucket)
    for host, kind in (("alpha", "full"), ("beta", "full"), ("alpha", "incr")):
        result = run_offsite("backup", host, "--type", kind, "--local", config=config,
                             env_extra=_as(env[host]), timeout=180)
        assert result.returncode == 0, describe(result)
        assert f": succeeded" in result.stdout, result.stdout
    restored = tmp_path / "restored"
    result = run_offsite("restore", "alpha", str(restored), config=config,
                         env_extra=_as(env["alpha"]), timeout=180)
    assert result.returncode == 0, describe(result)
    assert same_tree(fleet["data"]["alpha"], restored / "files")

    alpha = strict.client("s3", keys_of(env["alpha"], "DUPLICITY_AWS_"))
    admin = strict.client("s3")
    try:
        beta_key = next(k["Key"] for k in admin.list_objects_v2(
            Bucket=bucket, Prefix="beta/")["Contents"])
        alpha_key = next(k["Key"] for k in admin.list_objects_v2(
            Bucket=bucket, Prefix="alpha/")["Contents"])
        version = admin.head_object(Bucket=bucket, Key=alpha_key)["VersionId"]
        assert denied(alpha.get_object, Bucket=bucket, Key=beta_key)
        assert denied(alpha.put_object, Bucket=bucket, Key="beta/planted", Body=b"x")
        assert denied(alpha.delete_object, Bucket=bucket, Key=beta_key)
        assert denied(alpha.delete_object, Bucket=bucket, Key=alpha_key, VersionId=version)
        assert denied(alpha.put_bucket_versioning, Bucket=bucket,
                      VersioningConfiguration={"Status": "Suspended"})
        assert denied(alpha.put_bucket_lifecycle_configuration, Bucket=bucket,
                      LifecycleConfiguration={"Rules": []})
        assert denied(alpha.list_object_versions, Bucket=bucket, Prefix="alpha/")
        assert denied(alpha.put_object_tagging, Bucket=bucket, Key=beta_key,
                      Tagging={"TagSet": [{"Key": "offsite-class", "Value": "volume"}]})
        assert not denied(alpha.get_object, Bucket=bucket, Key=alpha_key)
    finally:
        alpha.close()
        admin.close()
    _alert_identity_only_publishes(strict, env["control"], fleet["topic"], bucket, prefix)


def _alert_identity_only_publishes(strict: StrictAws, control: dict[str, str], topic: str,
                                   bucket: str, prefix: str) -> None:
    keys = keys_of(control, "ALERT_AWS_")
    sns, s3, iam = (strict.client(name, keys) for name in ("sns", "s3", "iam"))
    try:
        assert denied(sns.list_topics)
        assert denied(sns.create_topic, Name="attacker")
        assert denied(sns.subscribe, TopicArn=topic, Protocol="email", Endpoint="x@y.invalid")
        assert denied(s3.list_objects_v2, Bucket=bucket)
        assert denied(s3.get_object, Bucket=bucket, Key="alpha/anything")
        assert denied(iam.list_users)
        # moto authorises SNS calls against resource "*", so a statement confined to the topic
        # ARN (as the plan's) never matches there: widen the resource on moto to show that
        # sns:Publish is the one action alerts need.
        admin = strict.client("iam")
        try:
            document = admin.get_user_policy(UserName=f"{prefix}-alert",
                                             PolicyName="offsite")["PolicyDocument"]
            assert document["Statement"][0]["Resource"] == [topic]
            document["Statement"][0]["Resource"] = ["*"]
            admin.put_user_policy(UserName=f"{prefix}-alert", PolicyName="moto-sns-resource",
                                  PolicyDocument=json.dumps(document))
        finally:
            admin.close()
        sns.publish(TopicArn=topic, Message="drill", Subject="drill")
        assert denied(sns.list_topics)
    finally:
        for client in (sns, s3, iam):
            client.close()


@pytest.mark.slow
def test_check_connect_lists_the_differences_from_the_plan(
        strict: StrictAws, tmp_path: Path, run_offsite: Any, redis_url: str) -> None:
    fleet = _fleet(strict, tmp_path, redis_url, hosts=("alpha",))
    applied = run_offsite("provision", "--apply", config=fleet["config"],
                          env_extra=strict.admin)
    assert applied.returncode == 0, describe(applied)
    assert "created IAM user" in applied.stdout
    s3 = strict.client("s3")
    try:
        s3.put_bucket_versioning(Bucket=fleet["bucket"],
                                 VersioningConfiguration={"Status": "Suspended"})
    finally:
        s3.close()
    grant_head_bucket(strict, f"{fleet['prefix']}-host-alpha", fleet["bucket"])
    check = run_offsite("check", "--connect", config=fleet["config"],
                        env_extra=_operator(strict))
    assert check.returncode == 1, describe(check)
    assert "versioning is Suspended (plan: Enabled)" in check.stderr
    assert "inline policies outside the plan: moto-head-bucket" in check.stderr
    fixed = run_offsite("provision", "--apply", config=fleet["config"], env_extra=strict.admin)
    assert "enabled versioning" in fixed.stdout
    assert "left alone: IAM user" in fixed.stdout   # extra rights are reported, not removed
