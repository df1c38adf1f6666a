"""One backup run on a host: admission, steps, scripts, the digest manifest, the chain it extends."""
