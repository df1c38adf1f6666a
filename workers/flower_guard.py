"""Flower's own `/metrics` and `/healthcheck` answer without authentication (and `/metrics`
names every worker and task type): `offsite flower` puts them behind the same basic auth or
OAuth as Flower's pages. Where no auth is configured (Flower on loopback only), they stay open
as the other pages are."""
from __future__ import annotations

from typing import Any

GUARDED = ("/metrics", "/healthcheck")


def guard_flower_monitoring() -> list[str]:
    """Replace Flower's handlers of GUARDED in its URL table (before the app is built) by
    subclasses whose GET requires the current user; returns the paths guarded."""
    import tornado.web
    from flower import urls

    guarded: list[str] = []
    for index, entry in enumerate(urls.handlers):
        if isinstance(entry, tuple) and entry[0] in GUARDED:
            path, handler = entry[0], entry[1]
            urls.handlers[index] = (path, _authenticated(handler, tornado.web.authenticated))
            guarded.append(path)
    return guarded


def _authenticated(handler: Any, authenticated: Any) -> Any:
    original = handler.get

    @authenticated
    async def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await original(self, *args, **kwargs)

    return type(f"Guarded{handler.__name__}", (handler,), {"get": get})
