"""TLS to Redis: a `rediss://` broker URL always verifies the server's certificate.

redis-py verifies by default, but Celery's result backend refuses a rediss:// URL without
`ssl_cert_reqs`, kombu's broker and RedBeat take their options from settings: so every client
gets the same options from here, CERT_REQUIRED, with the CA file named in the URL's
`ssl_ca_certs` query (else the system's trust store). A URL asking for less
(`ssl_cert_reqs=none` or `optional`) is refused by the config check."""
from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_WEAK = frozenset({"none", "cert_none", "optional", "cert_optional"})
_ALLOWED_QUERY = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def tls_problem(url: str) -> str | None:
    """Why a broker URL's TLS settings are refused (None when they are fine)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.scheme != "rediss":
        if any(key.startswith("ssl_") for key in query):
            return "ssl_* options need a rediss:// URL"
        return None
    unknown = sorted(set(query) - _ALLOWED_QUERY)
    if unknown:
        return (f"unknown option(s) {[key[:40] for key in unknown]}: a rediss:// URL takes "
                "ssl_ca_certs, ssl_certfile, ssl_keyfile")
    for value in query.get("ssl_cert_reqs", []):
        if value.strip().lower() in _WEAK:
            return ("ssl_cert_reqs must stay required: offsite never turns certificate "
                    "verification off (give ssl_ca_certs=/path/to/ca.pem for a private CA)")
    return None


def tls_options(url: str) -> dict[str, Any] | None:
    """Options for broker_use_ssl, redis_backend_use_ssl and redbeat_redis_use_ssl."""
    if not uses_tls(url):
        return None
    query = parse_qs(urlsplit(url).query)
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(key):
            options[key] = unquote(query[key][0])
    return options
