"""Names shared by every process: queues, Redis keys, defaults, run states."""
from __future__ import annotations

from enum import StrEnum

CONTROL_QUEUE = "offsite.control"
HOST_QUEUE_PREFIX = "backup."

KEY_PREFIX = "offsite:"
RUN_KEY = KEY_PREFIX + "run:"             # run:<run_id> -> JSON record
HOST_RUNS_KEY = KEY_PREFIX + "runs:"      # runs:<host> -> sorted set of run ids by creation time
ALL_RUNS_KEY = KEY_PREFIX + "runs"        # sorted set of every run id
LEASE_KEY = KEY_PREFIX + "lease:"         # lease:<host> -> run id holding the host
REDBEAT_PREFIX = KEY_PREFIX + "redbeat:"    # RedBeat's keys (workers.settings)
BEAT_SCHEDULE_KEY = REDBEAT_PREFIX + ":schedule"   # RedBeat's sorted set of entries by due time
REJECTED_KEY = KEY_PREFIX + "rejected"    # list of messages refused by a worker (wrong host)

DEFAULT_CONFIG_PATH = "offsite.yaml"
DEFAULT_SCRIPT_TIMEOUT_S = 3600
DEFAULT_UPLOAD_TIMEOUT_S = 12 * 3600
STDERR_TAIL_LINES = 20
RUN_RECORD_TTL_S = 400 * 24 * 3600
KEEP_RUNS_PER_HOST = 500                 # the ledger keeps each host's newest runs...
KEEP_RUNS_DAYS = 400                     # ...and none older than this
SNS_SUBJECT_MAX = 100
LEASE_RENEWALS_PER_TTL = 4               # a run's lease is renewed every quarter of it
MIN_LEASE_TTL_S = 2                      # shorter leases are refused by the config


def host_queue(host: str) -> str:
    return HOST_QUEUE_PREFIX + host


class BackupType(StrEnum):
    FULL = "full"
    INCR = "incr"


class RunType(StrEnum):
    """What a run in the ledger does: a backup of either type, a restore drill, a prune, an
    operator's restore (recorded when it ends: offsite.proof.restore_record)."""
    FULL = "full"
    INCR = "incr"
    VERIFY = "verify"
    PRUNE = "prune"
    RESTORE = "restore"


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    LOST = "lost"


FINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.WARNING, RunState.FAILED,
                          RunState.SKIPPED, RunState.EXPIRED, RunState.LOST})
