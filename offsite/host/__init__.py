"""One host's resolved settings and what its backup reads: the staging folder and `paths:`."""
