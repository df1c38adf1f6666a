"""The replicas' side of `offsite provision`: for each replica on S3, its bucket (versioning on,
public access blocked) and, on it, one identity per host that uses it with the same rights as on
the primary, plus its own prune and recover identities. Their keys go to the same env files as
the primary's, under the replica's prefix: `<NAME>_AWS_*` in DIR/<host>.env,
`<NAME>_PRUNE_AWS_*` in DIR/control.env, `<NAME>_RECOVER_AWS_*` in DIR/recover.env.

A replica is usually another provider with other administrator credentials: its plan is applied
on its own, `offsite provision --apply --target NAME`, with that provider's credentials in the
default AWS chain."""
from __future__ import annotations

from offsite.config.model import Config
from offsite.config.targets import target_view
from offsite.deploy.provision import Plan, build_plan
from offsite.target.bucket import bucket_name


def replica_plans(config: Config) -> dict[str, Plan]:
    """The plan of every replica on S3 (a file:// replica has nothing to provision)."""
    plans = {}
    for name in config.replicas:
        view = target_view(config, name)
        if bucket_name(view) is not None:
            plans[name] = build_plan(view)
    return plans
