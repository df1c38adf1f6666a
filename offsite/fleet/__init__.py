"""The fleet at a glance: per-host summary, the `offsite hosts` table, the fleet page, metrics, the HTTP server."""
