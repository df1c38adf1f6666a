"""The Celery app; its settings are read lazily from the config named by $OFFSITE_CONFIG."""
from __future__ import annotations

from celery import Celery
from celery.signals import before_task_publish

from offsite.wire.labels import label_published_task
from workers.context import current_config
from workers.settings import celery_settings

app = Celery("offsite", include=["tasks.backup", "tasks.control", "tasks.verify"])
app.add_defaults(lambda: celery_settings(current_config()))
# Flower's task list shows `carcosa full carcosa-full-…` for each task (offsite.wire.labels)
before_task_publish.connect(label_published_task, weak=False)
