"""Retention: which chains a prune keeps and which objects it deletes, and the deletion itself.

A prune keeps the newest `keep_full_chains` restorable chains (judged by offsite.target.catalog,
against the sets' seals), and never deletes the newest one nor the chain holding the newest
successfully verified set (the one proven to restore). Once drills exist for the host, a chain
goes only when a newer chain holds the verified set. A target whose newest sets do not restore
(a missing or short volume after the newest whole chain) is refused: nothing is deleted, the
missing objects are named (`prune_refused`). Sets older than the oldest kept chain that belong to no kept chain (dropped chains,
orphaned or unfinished sets) go with them. Deletion uses the prune identity (PRUNE_AWS_*, else
the default AWS chain), never the hosts' upload keys; in a versioned bucket it only adds
delete markers, undone within the noncurrent-version window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from offsite.target.catalog import BackupSet, Catalog, Chain, format_stamp
from offsite.host.settings import HostSettings, TargetSettings
from offsite.errors import OffsiteError
from offsite.target.bucket import s3_client

DELETE_BATCH = 1000   # S3 DeleteObjects takes at most 1000 keys


class PruneFailed(OffsiteError):
    failure_class = "prune_failed"


class PruneRefused(OffsiteError):
    """The newest sets of the host do not restore: a prune now could delete the last chain that
    does, so it deletes nothing."""

    failure_class = "prune_refused"


@dataclass
class PrunePlan:
    host: str
    kept: list[Chain] = field(default_factory=list)
    dropped: list[Chain] = field(default_factory=list)
    stray: list[BackupSet] = field(default_factory=list)   # orphaned/unfinished, older
    reasons: dict[str, str] = field(default_factory=dict)   # chain start -> why it is kept
    refused: list[str] = field(default_factory=list)   # why nothing may be deleted

    @property
    def objects(self) -> list[str]:
        sets = [s for chain in self.dropped for s in chain.sets] + self.stray
        return sorted(name for backup_set in sets for name in backup_set.objects)

    @property
    def bytes_freed(self) -> int:
        sets = [s for chain in self.dropped for s in chain.sets] + self.stray
        return sum(backup_set.bytes for backup_set in sets)

    def as_json(self) -> dict[str, object]:
        return {"host": self.host,
                "keep": [{**c.as_json(), "why": self.reasons[format_stamp(c.start)]}
                         for c in self.kept],
                "delete": [c.as_json() for c in self.dropped],
                "delete_sets": [s.as_json() for s in self.stray],
                "objects": len(self.objects), "bytes_freed": self.bytes_freed,
                "refused": list(self.refused)}

    def describe(self) -> list[str]:
        if self.refused:
            return [f"refused, nothing deleted: {why}" for why in self.refused]
        lines = [f"keep chain {format_stamp(c.start)} .. {format_stamp(c.end)} "
                 f"({self.reasons[format_stamp(c.start)]})" for c in self.kept]
        lines += [f"delete chain {format_stamp(c.start)} .. {format_stamp(c.end)} "
                  f"({len(c.sets)} set(s))" for c in self.dropped]
        lines += [f"delete {s.kind} set {format_stamp(s.time)} (not part of a kept chain)"
                  for s in self.stray]
        lines.append(f"{len(self.objects)} object(s), {self.bytes_freed} byte(s) of volumes")
        return lines


def plan_prune(catalog: Catalog, keep_full_chains: int, verified: datetime | None,
               host: str) -> PrunePlan:
    """What to keep and delete; pure."""
    plan = PrunePlan(host=host)
    chains = catalog.chains
    newest_end = chains[-1].end if chains else None
    broken = [s for s in catalog.unfinished if (newest_end is None or s.time > newest_end)
              and (s.seal is not None or s.manifest is not None)]
    broken += [s for s in catalog.orphans if newest_end is None or s.time > newest_end]
    if broken:
        plan.refused = [f"the {s.kind} set of {format_stamp(s.time)}, newer than the newest "
                        f"chain that restores, does not restore ("
                        f"{s.reason or 'a set before it is missing'})" for s in broken]
        plan.kept = list(chains)
        plan.reasons = {format_stamp(c.start): "prune refused" for c in chains}
        return plan
    proven = next((i for i, c in enumerate(chains) if verified is not None
                   and any(s.time == verified for s in c.sets)), None)
    newest = chains[-keep_full_chains:] if keep_full_chains > 0 else chains[-1:]
    for chain in chains:
        label = format_stamp(chain.start)
        if chain in newest:
            plan.reasons[label] = ("the newest complete chain" if chain is chains[-1]
                                   else f"one of the newest {keep_full_chains}")
        elif verified is not None and any(s.time == verified for s in chain.sets):
            plan.reasons[label] = "holds the newest verified set"
        elif verified is not None and (proven is None or chains.index(chain) > proven):
            plan.reasons[label] = "no newer chain holds a verified set"
        else:
            plan.dropped.append(chain)
            continue
        plan.kept.append(chain)
    if plan.kept:
        oldest_kept = plan.kept[0].start
        plan.stray = [s for s in [*catalog.orphans, *catalog.unfinished] if s.time < oldest_kept]
    return plan


def prune_s3_client(target: TargetSettings) -> Any:
    return s3_client(target, "PRUNE")


def delete_objects(settings: HostSettings, names: list[str],
                   on_batch: Callable[[], object] | None = None) -> None:
    """Delete the host's objects by name (`on_batch` called between batches: the host lease is
    renewed there); raises PruneFailed naming the first that resisted."""
    host, target = settings.name, settings.target
    folder = target.file_dir
    if folder is not None:
        for name in names:
            try:
                (folder / name).unlink(missing_ok=True)
            except OSError as exc:
                raise PruneFailed(f"cannot delete {folder / name}: {exc.strerror}", host=host,
                                  step="prune") from None
        return
    client = prune_s3_client(target)
    prefix, bucket = target.prefix, target.bucket
    try:
        for start in range(0, len(names), DELETE_BATCH):
            if on_batch is not None:
                on_batch()
            batch = [{"Key": prefix + name} for name in names[start:start + DELETE_BATCH]]
            answer = client.delete_objects(
                Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if errors := answer.get("Errors"):
                first = errors[0]
                raise PruneFailed(f"cannot delete {first.get('Key')}: {first.get('Code')} "
                                  f"{first.get('Message', '')} ({len(errors)} refused; check "
                                  "the prune identity PRUNE_AWS_*)", host=host, step="prune")
    except (ClientError, BotoCoreError) as exc:
        raise PruneFailed(f"cannot delete from s3://{bucket}/{prefix}: {exc}", host=host,
                          step="prune") from None
    finally:
        client.close()
