"""One host: its resolved settings (settings), its staging folder and `paths:` (staging, sources)."""
