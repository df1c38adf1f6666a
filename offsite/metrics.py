"""`/metrics` on the control node, in the Prometheus text format (prometheus_client), built per
scrape from the fleet summary (offsite.fleet): two Redis round trips whatever the fleet size.

Names (DESIGN.md): offsite_last_success_timestamp_seconds, offsite_last_run_duration_seconds,
offsite_last_run_bytes_uploaded, offsite_runs_total, offsite_last_verify_success_timestamp_seconds,
offsite_condition_active, offsite_alert_outbox_pending; label `host` on each per-host metric,
`type` where a run type applies.
"""
from __future__ import annotations

from typing import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from offsite.config import Config
from offsite.fleet import FleetSummary, read_summary

# the classic text format every Prometheus version reads (generate_latest writes it)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def fleet_families(summary: FleetSummary) -> list[Metric]:
    success = GaugeMetricFamily(
        "offsite_last_success_timestamp_seconds",
        "When the host's latest successful backup of this type finished (Unix time)",
        labels=["host", "type"])
    duration = GaugeMetricFamily(
        "offsite_last_run_duration_seconds",
        "Duration of the host's latest finished run of this type, whatever its outcome",
        labels=["host", "type"])
    uploaded = GaugeMetricFamily(
        "offsite_last_run_bytes_uploaded",
        "Bytes uploaded by the host's latest finished backup of this type",
        labels=["host", "type"])
    runs = CounterMetricFamily(
        "offsite_runs",
        "Runs of the host that ended in this state, counted in the ledger when each ended "
        "(kept with the host's facts: not reset by a restart of the control node)",
        labels=["host", "type", "state"])
    verified = GaugeMetricFamily(
        "offsite_last_verify_success_timestamp_seconds",
        "When the host's latest successful restore drill (verify) finished (Unix time)",
        labels=["host"])
    active = GaugeMetricFamily(
        "offsite_condition_active",
        "1 for each condition the watchdog holds open (backup_stale, backup_missed, "
        "worker_down, run_overdue, restore_unproven; config_drift with host=\"\")",
        labels=["host", "condition"])
    for row in summary.rows:
        host = row.host
        for kind, moment in sorted(row.success_by_type.items()):
            success.add_metric([host, kind], moment.timestamp())
        for kind, run in sorted(row.finished.items()):
            if run.duration_s is not None:
                duration.add_metric([host, kind], run.duration_s)
            if kind in ("full", "incr") and run.bytes_uploaded is not None:
                uploaded.add_metric([host, kind], float(run.bytes_uploaded))
        for (kind, state), count in sorted(row.counts.items()):
            runs.add_metric([host, kind, state], float(count))
        if row.verified_at is not None:
            verified.add_metric([host], row.verified_at.timestamp())
        for condition in sorted({c.condition for c in row.conditions}):
            active.add_metric([host, condition], 1.0)
    if summary.drift is not None:
        active.add_metric(["", "config_drift"], 1.0)
    pending = GaugeMetricFamily("offsite_alert_outbox_pending",
                                "Alerts stored and not yet delivered (SNS unreachable?)",
                                value=float(summary.outbox_pending))
    return [success, duration, uploaded, runs, verified, active, pending]


class _Snapshot:
    """A collector over one summary: the registry asks it once per render."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render_metrics(client: redis.Redis, config: Config) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(fleet_families(read_summary(client, config))))
    return generate_latest(registry)
