"""Celery tasks: thin wrappers that call offsite's library functions."""
