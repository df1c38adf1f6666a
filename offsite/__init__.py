"""offsite: scheduled, encrypted, off-site backups of many hosts through Celery and duplicity."""
