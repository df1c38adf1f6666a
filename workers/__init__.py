"""The Celery app of offsite and the start-up of its workers (one per host, one control)."""
