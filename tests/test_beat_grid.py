"""Beat's slots on a controlled clock: `{every: D}` runs fall on anchor + k*D whatever the loop
interval, a slot is sent once, and a gap longer than D collapses into one late run that still
stands for a grid slot. The real SlotScheduler runs in its own process on a real Redis; only
its clock is driven by the test script."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis

from offsite.ledger.records import RedisRunStore
from tests.helpers import VENV_BIN, describe, run_command

PERIOD_S = 60
ANCHOR = datetime(2026, 1, 1, 0, 0, 17, tzinfo=timezone.utc)

_DRIVE_BEAT = """
import json, random, sys
from datetime import datetime, timedelta, timezone
from workers.app import app
from workers.beat import SlotScheduler

now = [datetime.now(timezone.utc)]
class ControlledClock(SlotScheduler):
    clock = staticmethod(lambda: now[0])

scheduler = ControlledClock(app=app)
rng = random.Random(7)
ticks = []
for step in range(400):
    # mostly short, irregular loop intervals; every 50th tick a pause of several periods
    gap = 3.5 * 60 if step % 50 == 49 else rng.uniform(0.5, 40)
    now[0] += timedelta(seconds=gap)
    ticks.append([now[0].isoformat(), scheduler.tick()])
print(json.dumps(ticks))
"""


def test_interval_slots_stay_on_the_anchor_grid_over_many_ticks(
        make_config: Any, tmp_path: Path, offsite_env: Any, redis_client: redis.Redis) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         target={"url": f"file://{tmp_path}/target"}, alerts=None,
                         schedule={"full": "0 0 1 1 *", "incr": {"every": f"{PERIOD_S}s"},
                                   "anchor": ANCHOR.isoformat()})
    driven = run_command([str(VENV_BIN / "python"), "-c", _DRIVE_BEAT],
                         env={**offsite_env, "OFFSITE_CONFIG": str(config)}, cwd=tmp_path,
                         timeout=120)
    assert driven.returncode == 0, describe(driven)
    ticks = [(datetime.fromisoformat(at), wait) for at, wait in json.loads(driven.stdout)]

    incr = sorted((r for r in RedisRunStore(redis_client).recent("carcosa", 1000)
                   if r.type.value == "incr"), key=lambda r: r.scheduled_for or ANCHOR)
    slots = [r.scheduled_for for r in incr]
    assert all(slot is not None for slot in slots)
    offsets = [((slot or ANCHOR) - ANCHOR).total_seconds() / PERIOD_S for slot in slots]
    assert all(k == int(k) for k in offsets), "a slot off the grid: drift"
    assert len(set(slots)) == len(slots), "a slot sent twice"
    # every grid slot from the first to the last was sent, except those a pause collapsed;
    # each collapse is one run, marked late, standing for the first slot it missed
    first, last = int(offsets[0]), int(offsets[-1])
    missing = set(range(first, last + 1)) - {int(k) for k in offsets}
    collapsed = [r for r in incr if r.notes and "collapsed" in r.notes[0]]
    assert len(collapsed) == 8, [r.notes for r in incr if r.notes]   # one per pause
    assert len(missing) <= 3 * len(collapsed)
    for record in incr:
        if record not in collapsed:
            assert record.notes == [] or record.notes[0].startswith("ran late"), record.notes
    # beat sleeps exactly until the next grid slot (when it is nearer than the loop interval)
    for at, wait in ticks:
        next_slot = ANCHOR + timedelta(seconds=PERIOD_S * (
            (at - ANCHOR).total_seconds() // PERIOD_S + 1))
        assert wait <= (next_slot - at).total_seconds() + 1e-3, (at, wait, next_slot)
