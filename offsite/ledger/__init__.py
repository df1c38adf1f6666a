"""What offsite remembers in Redis: run records, per-host facts, the host lease, heartbeats."""
