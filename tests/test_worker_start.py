"""A host's worker started as root (the documented default) prints no Celery superuser
SecurityWarning; it says once, in its log, that root is the documented choice."""
from __future__ import annotations

import os
from typing import Any

import pytest


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is printed only to root")
def test_a_host_worker_as_root_prints_no_superuser_warning(
        make_config: Any, start_worker: Any) -> None:
    config = make_config({"carcosa": {"scripts": {"d": {"bash": "true"}}}})
    worker = start_worker(config, "carcosa")
    text = worker.log_text()
    assert "superuser" not in text and "SecurityWarning" not in text, text[-2000:]
    assert "the documented default for a host's worker" in text
