"""The Celery app; its settings are read lazily from the config named by $OFFSITE_CONFIG."""
from __future__ import annotations

from celery import Celery

from workers.context import current_config
from workers.settings import celery_settings

app = Celery("offsite", include=["tasks.backup", "tasks.control", "tasks.verify"])
app.add_defaults(lambda: celery_settings(current_config()))
