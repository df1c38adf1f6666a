"""One host: its settings resolved once (settings), and what its backup reads: the staging
folder, `paths:` and the duplicity cache beside them (sources)."""
