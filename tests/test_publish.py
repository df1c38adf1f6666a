"""The message a client publishes without Celery (offsite.wire.publish) is the one Celery's own
send_task publishes for the same task: both are sent to a real Redis and read back raw."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from offsite.wire.messages import PRUNE, START_BACKUP, VERIFY
from tests.helpers import VENV_BIN, describe, run_command

pytestmark = pytest.mark.slow   # every test here takes more than ~3 s

_BOTH_WAYS = """
import json, sys
import redis
from offsite.wire import publish
from tasks.callbacks import failure_callback
from workers.app import app
from workers.context import current_config

name, queue, host, run_id, args, kwargs = json.loads(sys.argv[1])
app.send_task(name, args=args, kwargs=kwargs, queue=queue,
              link_error=failure_callback(host, run_id), ignore_result=True)
publish.publish_task(current_config().broker_url, name, tuple(args), kwargs, queue,
                     [publish.failure_callback(host, run_id)])
client = redis.Redis.from_url(current_config().broker_url)
print(json.dumps([json.loads(raw) for raw in client.lrange(queue, 0, -1)]))
"""

RUN = "carcosa-full-20261129T040000Z"
CASES = [
    (START_BACKUP, "backup.carcosa", "carcosa", RUN,
     ["carcosa", "full", RUN], {"scheduled_for": "2026-11-29T04:00:00+00:00"}),
    (VERIFY, "offsite.control", "carcosa", "carcosa-verify-20261129T050000Z",
     ["carcosa", "carcosa-verify-20261129T050000Z"], {"at": None, "scheduled_for": None}),
    (PRUNE, "offsite.control", "carcosa", "carcosa-prune-20261129T060000Z",
     ["carcosa", "carcosa-prune-20261129T060000Z"], {}),
]
_OWN = {"id", "root_id", "origin"}   # each message's own task id and sender


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_client_publishes_the_message_celery_would(
        case: tuple[Any, ...], make_config: Any, offsite_env: Any, tmp_path: Path) -> None:
    config = make_config({"carcosa": {"scripts": {"s": {"bash": "true"}}}},
                         target={"url": f"file://{tmp_path}/target"})
    sent = run_command([str(VENV_BIN / "python"), "-c", _BOTH_WAYS, json.dumps(case)],
                       env={**offsite_env, "OFFSITE_CONFIG": str(config)}, cwd=tmp_path,
                       timeout=60)
    assert sent.returncode == 0, describe(sent)
    ours, celerys = json.loads(sent.stdout)   # LPUSH: the newest first

    assert set(ours) == set(celerys)
    assert {k: v for k, v in ours.items() if k not in ("headers", "properties", "body")} == \
        {k: v for k, v in celerys.items() if k not in ("headers", "properties", "body")}
    assert json.loads(base64.b64decode(ours["body"])) == \
        json.loads(base64.b64decode(celerys["body"]))
    assert ours["headers"]["argsrepr"].startswith("carcosa ")   # the label Flower shows
    assert {k: v for k, v in ours["headers"].items() if k not in _OWN} == \
        {k: v for k, v in celerys["headers"].items() if k not in _OWN}
    assert set(ours["headers"]) == set(celerys["headers"])
    mine, theirs = ours["properties"], celerys["properties"]
    assert set(mine) == set(theirs)
    assert mine["correlation_id"] == ours["headers"]["id"] == ours["headers"]["root_id"]
    assert mine["reply_to"] == "" and theirs["reply_to"]   # no result: nobody to reply to
    same = set(mine) - {"correlation_id", "reply_to", "delivery_tag"}
    assert {k: mine[k] for k in same} == {k: theirs[k] for k in same}
