"""TLS to Redis: a `rediss://` broker URL always verifies the server's certificate, and so does
a `sentinel://` URL whose first part carries `ssl_*` options (TLS to the sentinels and to the
master they name, with the same options).

redis-py verifies by default, but Celery's result backend refuses a rediss:// URL without
`ssl_cert_reqs`, kombu's broker and RedBeat take their options from settings: so every client
gets the same options from here, CERT_REQUIRED, with the CA file named in the URL's
`ssl_ca_certs` query (else the system's trust store). A URL asking for less
(`ssl_cert_reqs=none` or `optional`) is refused by the config check.

A sentinel URL is `sentinel://H1:P1[/DB][?ssl_…];sentinel://H2:P2;…`: its options are its first
part's (kombu reads them there), given to kombu, Celery and RedBeat as settings, never in the
URL (`client_url`)."""
from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_WEAK = frozenset({"none", "cert_none", "optional", "cert_optional"})
_ALLOWED_QUERY = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})
_SENTINEL = "sentinel://"


def _query(url: str) -> dict[str, list[str]]:
    """The URL's options: a sentinel URL's are its first part's."""
    first = url.split(";", 1)[0] if url.startswith(_SENTINEL) else url
    return parse_qs(urlsplit(first).query, keep_blank_values=True)


def uses_tls(url: str) -> bool:
    if url.startswith(_SENTINEL):
        return any(key.startswith("ssl_") for key in _query(url))
    return urlsplit(url).scheme == "rediss"


def client_url(url: str) -> str:
    """The URL for kombu, Celery's result backend and RedBeat: a sentinel URL without its
    options (they reach every client as settings: tls_options), any other as it is."""
    if not url.startswith(_SENTINEL):
        return url
    return ";".join(urlsplit(part)._replace(query="").geturl() for part in url.split(";"))


def tls_problem(url: str) -> str | None:
    """Why a broker URL's TLS settings are refused (None when they are fine)."""
    query = _query(url)
    if url.startswith(_SENTINEL):
        if any(urlsplit(part).query for part in url.split(";")[1:]):
            return ("ssl_* options go on the first sentinel:// part only (they are the "
                    "sentinels' and the master's)")
        if not query:
            return None
        wanted = "a sentinel:// URL takes"
    elif urlsplit(url).scheme != "rediss":
        if any(key.startswith("ssl_") for key in query):
            return "ssl_* options need a rediss:// URL (or a sentinel:// one)"
        return None
    else:
        wanted = "a rediss:// URL takes"
    unknown = sorted(set(query) - _ALLOWED_QUERY)
    if unknown:
        return (f"unknown option(s) {[key[:40] for key in unknown]}: {wanted} "
                "ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs=required")
    for value in query.get("ssl_cert_reqs", []):
        if value.strip().lower() in _WEAK:
            return ("ssl_cert_reqs must stay required: offsite never turns certificate "
                    "verification off (give ssl_ca_certs=/path/to/ca.pem for a private CA)")
    return None


def tls_options(url: str) -> dict[str, Any] | None:
    """Options for broker_use_ssl, redis_backend_use_ssl and redbeat_redis_use_ssl (and, behind
    Sentinel, the sentinels' connections: offsite.config.broker)."""
    if not uses_tls(url):
        return None
    query = _query(url)
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(key):
            options[key] = unquote(query[key][0])
    return options
