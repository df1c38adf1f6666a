"""Which object of the target makes a restore fail: after duplicity fails, the sealed objects of
the sets the restore reads are read back and compared with their seals (size, SHA-256), so the
error names the volume that is missing, short, swapped or from another key instead of
`Error: 2` or a bare manifest hash."""
from __future__ import annotations

from offsite.host.settings import HostSettings
from offsite.target.bucket import TargetUnreadable, object_digest
from offsite.target.catalog import BackupSet


def find_bad_object(settings: HostSettings, sets: list[BackupSet]) -> str | None:
    """A sentence naming the first sealed object (manifests first, then volumes) of `sets`
    that is not as sealed; None when every one matches (or no set is sealed)."""
    for role in ("manifest", "volume"):
        for backup_set in sets:
            if backup_set.seal is None:
                continue
            for sealed in backup_set.seal.named(role):   # type: ignore[arg-type]
                try:
                    size, digest = object_digest(settings, sealed.name)
                except TargetUnreadable as unreadable:
                    return f"{role} {sealed.name} cannot be read ({unreadable.cause})"
                if size != sealed.size:
                    return (f"{role} {sealed.name} has {size} bytes, its seal records "
                            f"{sealed.size}")
                if digest != sealed.sha256:
                    return (f"{role} {sealed.name} is not the object that was uploaded (its "
                            "SHA-256 differs from its seal: changed, swapped with another or "
                            "written with another key)")
    return None


def explain_failure(settings: HostSettings, sets: list[BackupSet], cause: str) -> str:
    """The cause of a failed restore, headed by the object to blame when one is found."""
    try:
        bad = find_bad_object(settings, sets)
    except Exception:   # a diagnosis must never hide the failure it explains
        bad = None
    return f"{bad}; duplicity said: {cause}" if bad else cause


def volume_order(sets: list[BackupSet]) -> list[str]:
    """The volumes of `sets` in the order a restore reads them (the chain's order, then each
    set's volume number): what duplicity's `Processed volume N of M` counts."""
    def number(name: str) -> int:
        digits = name.rsplit(".vol", 1)[-1].split(".", 1)[0]
        return int(digits) if digits.isdigit() else 0
    return [name for backup_set in sets for name in sorted(backup_set.volume_names, key=number)]
