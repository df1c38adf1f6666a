"""Sending a backup to a host's queue: the record first, then the message."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import redis

from offsite.config.model import Config
from offsite.errors import MessageUnsent
from offsite.constants import CONTROL_QUEUE, BackupType, RunState, RunType, host_queue
from offsite.wire.messages import PRUNE, START_BACKUP, VERIFY
from offsite.wire.outgoing import Outgoing, drop, park, route, send_many, wake_when_free
from offsite.wire.outgoing import send as send_message
from offsite.wire.publish import failure_callback
from offsite.ledger.records import RedisRunStore
from offsite.ledger.run_record import RunRecord
from offsite.run.context import RunContext, new_run_id, queue_manual_run, queue_run
from offsite.schedule.specs import describe_lateness, utcnow

# Tasks are sent by name: a client need not import the worker's code (runner, duplicity, boto3),
# nor Celery (offsite.wire.publish).


def enqueue_backup(config: Config, store: RedisRunStore, host: str, backup_type: BackupType,
                   run_id: str | None = None, scheduled_for: datetime | None = None,
                   late_by_s: float | None = None, note: str | None = None) -> RunRecord:
    """Queue a run for the host; raises UnknownHostError for a host not in the config, so a
    typo never creates a queue that nobody reads. A run that already left the queued state
    is not sent again; one whose publish fails is sent by the control node once the broker
    answers (offsite.wire.outgoing)."""
    config.host(host)
    record = (queue_run(store, host, backup_type, run_id, scheduled_for, late_by_s, note)
              if run_id else queue_manual_run(store, host, backup_type, utcnow(), note))
    run_id = record.run_id
    if record.state == RunState.QUEUED:
        _send(config, store, backup_message(host, backup_type, run_id, scheduled_for))
    return record


def _send(config: Config, store: RedisRunStore, message: Outgoing) -> None:
    """Publish a recorded run's message; raises MessageUnsent when the broker does not take it
    (the control node sends it when it does: offsite.wire.outgoing)."""
    from kombu.exceptions import OperationalError
    try:
        send_message(store.client, config.broker_url, config.broker_sentinel_master, message,
                     utcnow())
    except (redis.RedisError, OperationalError) as exc:
        raise MessageUnsent(
            f"run {message.run_id} is recorded but the broker did not take its message "
            f"({exc}); the control node sends it when the broker does (`offsite status`)",
            host=message.host, step="queue") from None


def backup_message(host: str, backup_type: BackupType | RunType, run_id: str,
                   scheduled_for: datetime | None) -> Outgoing:
    return Outgoing(run_id, host, START_BACKUP, [host, backup_type.value, run_id],
                    {"scheduled_for": scheduled_for.isoformat() if scheduled_for else None},
                    host_queue(host))


def verify_message(config: Config, host: str, run_id: str, at: datetime | None,
                   scheduled_for: datetime | None, target: str | None = None) -> Outgoing:
    """`target`: the name of the target the drill restores from (else the rotation's next);
    only sent when asked, so a drill node of before --target takes the message."""
    kwargs = {"at": at.isoformat() if at else None,
              "scheduled_for": scheduled_for.isoformat() if scheduled_for else None}
    if target is not None:
        kwargs["target"] = target
    return Outgoing(run_id, host, VERIFY, [host, run_id], kwargs, verify_queue(config, host))


def wait_for_host(ctx: RunContext, message: Outgoing, holder: str | None) -> None:
    """A run that must wait (MustWait) leaves its message to offsite.wire.outgoing, acked:
    this worker sends it again when `holder` no longer holds the host, else the control node."""
    client = cast(RedisRunStore, ctx.store).client
    config = ctx.config
    park(client, message, holder, utcnow())
    wake_when_free(client, ctx.store, ctx.lease, config, message.run_id)


def verify_queue(config: Config, host: str) -> str:
    return route(config, VERIFY, host)[1]


def enqueue_verify(config: Config, store: RedisRunStore, host: str, at: datetime | None = None,
                   run_id: str | None = None, scheduled_for: datetime | None = None,
                   note: str | None = None, target: str | None = None) -> RunRecord:
    """Queue a verify of the host where `verify.where` says it runs; the record first.
    `target`: the name of the target the drill restores from (else the rotation's next)."""
    config.host(host)
    record = (queue_run(store, host, RunType.VERIFY, run_id, scheduled_for, note=note)
              if run_id else queue_manual_run(store, host, RunType.VERIFY, utcnow(), note))
    run_id = record.run_id
    if record.state == RunState.QUEUED:
        _send(config, store, verify_message(config, host, run_id, at, scheduled_for, target))
    return record


def send_slot(config: Config, store: RedisRunStore, host: str, backup_type: BackupType,
              slot: datetime, sent_at: datetime) -> RunRecord:
    """Send a scheduled slot as the run `<host>-<type>-<slot>`, noting how late it is."""
    spec = config.host_schedule(host, backup_type)
    late_by_s, note = describe_lateness(spec, config.schedule.timezone, slot, sent_at)
    return enqueue_backup(config, store, host, backup_type, new_run_id(host, backup_type, slot),
                          slot, late_by_s, note)


@dataclass(frozen=True)
class SlotSend:
    host: str
    type: RunType
    slot: datetime


def enqueue_prune(config: Config, store: RedisRunStore, host: str, run_id: str,
                  slot: datetime) -> RunRecord:
    """A scheduled prune of the host, run by the control node with the prune identity."""
    record = queue_run(store, host, RunType.PRUNE, run_id, slot)
    if record.state == RunState.QUEUED:
        _send(config, store, Outgoing(run_id, host, PRUNE, [host, run_id], {}, CONTROL_QUEUE))
    return record


def send_slots(config: Config, store: RedisRunStore, sends: list[SlotSend],
               sent_at: datetime) -> list[RunRecord]:
    """Beat's batch: every slot's record written in one round trip, then the messages of the
    runs still queued published on one producer. A run id already recorded (a send repeated
    after a crash) is sent again only while its run is still queued, as in enqueue_backup.
    Drills and prunes, a few a day, go one by one."""
    records = []
    for send in [s for s in sends if s.type in (RunType.VERIFY, RunType.PRUNE)]:
        run_id = new_run_id(send.host, send.type, send.slot)
        if send.type == RunType.VERIFY:
            enqueue_verify(config, store, send.host, None, run_id, send.slot)
        else:
            enqueue_prune(config, store, send.host, run_id, send.slot)
    for send in [s for s in sends if s.type in (RunType.FULL, RunType.INCR)]:
        spec = config.host_schedule(send.host, BackupType(send.type.value))
        late_by_s, note = describe_lateness(spec, config.schedule.timezone, send.slot, sent_at)
        records.append(RunRecord(run_id=new_run_id(send.host, send.type, send.slot),
                                 host=send.host, type=send.type, scheduled_for=send.slot,
                                 late_by_s=late_by_s, notes=[note] if note else []))
    created = store.create_many(records)
    existing = store.get_many([r.run_id for r, new in zip(records, created) if not new])
    queued = [record if new else existing.get(record.run_id)
              for record, new in zip(records, created)]
    to_send = [record for record in queued if record and record.state == RunState.QUEUED]
    if to_send:
        entries = send_many(store.client, [backup_message(r.host, r.type, r.run_id,
                                                          r.scheduled_for) for r in to_send],
                            sent_at)
        publish_batch(to_send)
        drop(store.client, entries)
    return to_send


def publish_batch(records: list[RunRecord]) -> None:
    """The start_backup messages of many runs, buffered in one Redis pipeline per thousand
    (kombu's batch publish). Built and published by celery's own message code, skipping what
    beat does not need per message: result bookkeeping, queue declaration (a Redis queue is a
    list), and the task-sent event (Flower still sees each task when a worker receives it)."""
    from kombu.utils.uuid import uuid

    from workers.app import app   # beat's own process, where Celery is loaded anyway
    amqp = app.amqp
    with app.producer_or_acquire() as producer, producer.batch():
        for record in records:
            scheduled_for = record.scheduled_for.isoformat() if record.scheduled_for else None
            args = (record.host, record.type.value, record.run_id)
            kwargs = {"scheduled_for": scheduled_for}
            message = amqp.create_task_message(
                uuid(), START_BACKUP, args, kwargs,
                errbacks=[failure_callback(record.host, record.run_id)],
                ignore_result=True, create_sent_event=False,
                argsrepr=repr(args), kwargsrepr=repr(kwargs))
            amqp.send_task_message(producer, START_BACKUP, message,
                                   queue=host_queue(record.host), declare=[])
