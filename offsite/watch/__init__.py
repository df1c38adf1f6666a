"""The control node's watch: watchdog, standing conditions, alerts and their outbox, dead man's switch, drift, escrow."""
