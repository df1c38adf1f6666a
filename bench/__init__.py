"""Benchmarks that print figures against plain duplicity; run as `python -m bench.<name>`."""
