"""`target_tampered`: objects in a host's target that belong to no sealed set (junk, a forged
manifest, a set without its seal; see offsite.target.catalog). The run that meets them ignores
them and says so in a note headed TAMPERED_NOTE; the watchdog turns the note of the host's
newest successful run into one standing condition: one alert naming them, one recovery when a
later run finds the target clean."""
from __future__ import annotations

from typing import Callable

from offsite.ledger.facts import HostFacts
from offsite.ledger.records import RunStore
from offsite.run.chain import TAMPERED_NOTE
from offsite.watch.alerts import Alert, condition_alert, recovery_alert

AlertText = Callable[[], Alert]


def tampered_note(store: RunStore, facts: HostFacts) -> str | None:
    """The TAMPERED_NOTE of the host's newest successful run, if it has one."""
    if facts.success is None:
        return None
    record = store.get(facts.success[1])
    if record is None:
        return None
    return next((note for note in record.notes if note.startswith(TAMPERED_NOTE)), None)


def check_tampered(store: RunStore, host: str, facts: HostFacts,
                   observed: dict[str, tuple[bool, AlertText, AlertText]]) -> None:
    note = tampered_note(store, facts)
    text = note.removeprefix(TAMPERED_NOTE).strip() if note else ""
    observed[f"tampered:{host}"] = (
        note is not None,
        lambda: condition_alert(host, "any", "target_tampered",
                                f"The target of host {host} holds objects that belong to no "
                                f"sealed backup set; they are ignored: {text}. Someone or "
                                "something wrote to the host's prefix: check who holds its "
                                "upload keys, then remove them."),
        lambda: recovery_alert(host, "any", "target_tampered",
                               f"The target of host {host} holds no unsealed objects any more."))
