"""A run's record: what happened to one run (steps, outcome, error, notes), bounded in size so
that whatever a child or a message held, a record stays small. Stored by offsite.ledger.records."""
from __future__ import annotations

import json
import re
from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from offsite.bounded import (NOTE_MAX_BYTES, NOTES_MAX, RECORD_MAX_BYTES, RECORD_TEXT_MAX_BYTES,
                             head_bytes, tail_bytes)
from offsite.constants import FINAL_STATES, RunState, RunType
from offsite.schedule.specs import utcnow

MAX_LISTED_MISMATCHES = 20


class StepRecord(BaseModel):
    name: str
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    duration_s: float | None = None


class ErrorRecord(BaseModel):
    step: str | None
    exit_code: int | None = None
    message: str
    stderr_tail: str = ""
    failure_class: str = "failed"

    @field_validator("message")
    @classmethod
    def _bounded_message(cls, value: str) -> str:
        return head_bytes(value, RECORD_TEXT_MAX_BYTES)

    @field_validator("stderr_tail")
    @classmethod
    def _bounded_tail(cls, value: str) -> str:
        return tail_bytes(value, RECORD_TEXT_MAX_BYTES)


class ManifestRecord(BaseModel):
    """The digest manifest staged into the backup (offsite.run.manifest)."""
    files: int
    bytes: int
    sha256: str


class VerifyRecord(BaseModel):
    """What a drill compared (offsite.proof.verify): filled while it compares, then stored in
    its run record as is. Every mismatch is counted; the first MAX_LISTED_MISMATCHES listed."""
    backup_set: str
    files_checked: int = 0
    bytes_read: int = 0
    mismatch_count: int = 0
    mismatches: list[str] = Field(default_factory=list)

    def add(self, problem: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_LISTED_MISMATCHES:
            self.mismatches.append(problem[:300])


class ReplicaRecord(BaseModel):
    """One replica's state after a run's replicate step (offsite.run.replicas)."""
    state: str                          # current | behind | failed
    newest_set: str | None = None       # the newest set the replica holds whole
    behind_since: datetime | None = None
    copied_sets: int = 0
    copied_objects: int = 0
    recopied: int = 0                   # objects found damaged on the replica and copied again
    lacking: int = 0                    # sets of the primary it still lacks
    problem: str = ""
    checked_at: datetime | None = None

    @field_validator("problem")
    @classmethod
    def _bounded_problem(cls, value: str) -> str:
        return head_bytes(value, 1024)


class RunRecord(BaseModel):
    run_id: str
    host: str
    type: RunType
    state: RunState = RunState.QUEUED
    scheduled_for: datetime | None = None
    late_by_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    bytes_uploaded: int | None = None
    stored_bytes: int | None = None   # the host's objects in the target as it ended
    backup_set: str | None = None   # time of the set confirmed in the target (UTC)
    seal: str | None = None         # the set's seal: "<object name> sha256:<digest>"
    stats: dict[str, float] | None = None
    manifest: ManifestRecord | None = None
    verify: VerifyRecord | None = None
    replicas: dict[str, ReplicaRecord] | None = None   # per replica, after the upload
    target: str | None = None           # the target a verify run read (None: the primary)
    error: ErrorRecord | None = None
    notes: list[str] = Field(default_factory=list)
    alert: bool = True   # False: a failure the control node records but does not alert (a
    #                      manual drill from an operator's shell without --alert)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def step(self, name: str) -> StepRecord | None:
        return next((step for step in self.steps if step.name == name), None)

    def to_json(self) -> str:
        """The record as stored: notes bounded in number and length, the whole within
        RECORD_MAX_BYTES (notes are dropped, then the error's texts shortened, to fit)."""
        bounded = self.model_copy(update={"notes": bounded_notes(self.notes)})
        text = bounded.model_dump_json()
        if len(text.encode()) <= RECORD_MAX_BYTES:
            return text
        bounded = bounded.model_copy(deep=True)
        bounded.notes = bounded.notes[:1] + [f"[{len(bounded.notes) - 1} notes dropped]"]
        if bounded.error is not None:
            bounded.error.message = head_bytes(bounded.error.message, 1024)
            bounded.error.stderr_tail = tail_bytes(bounded.error.stderr_tail, 1024)
        return bounded.model_dump_json()


def bounded_notes(notes: list[str]) -> list[str]:
    """At most NOTES_MAX notes of at most NOTE_MAX_BYTES each: the first ones (why the run is
    what it is) and the latest, with one note saying how many were dropped between."""
    short = [head_bytes(note, NOTE_MAX_BYTES) for note in notes]
    if len(short) <= NOTES_MAX:
        return short
    first, last = NOTES_MAX // 2, NOTES_MAX // 2 - 1
    middle = short[first:-last]
    dropped = sum(int(match.group(1)) if (match := _DROPPED_NOTES.fullmatch(note)) else 1
                  for note in middle)
    return short[:first] + [f"[{dropped} notes dropped]"] + short[-last:]


_DROPPED_NOTES = re.compile(r"\[(\d+) notes dropped\]")


def record_as_json(record: RunRecord) -> dict[str, object]:
    return json.loads(record.to_json())
