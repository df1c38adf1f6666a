"""The `http:` section: what `offsite control` serves over HTTP (/metrics, /api/hosts, the
fleet page), and the rule that anything beyond loopback needs a password."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DEFAULT_LISTEN = "127.0.0.1:9808"


def split_listen(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9808) from "127.0.0.1:9808", ("::1", 9808) from "[::1]:9808"; raises
    ValueError for anything else."""
    if not isinstance(value, str) or len(value) > 300:
        raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:9808")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value[:80]!r}: write an IPv6 address in brackets, e.g. [::1]:9808")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value[:80]!r} is not HOST:PORT with a port from 1 to 65535 "
                         "(e.g. 127.0.0.1:9808)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host[:80]!r} is not an IP address (or localhost): listen on "
                             "the address of one interface, or 0.0.0.0 for all") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _check_listen(value: str) -> str:
    split_listen(value)
    return value


def _check_absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"{str(value)[:200]!r} must be an absolute path")
    return value


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: Annotated[str, AfterValidator(_check_listen)] = Field(
        DEFAULT_LISTEN, description="HOST:PORT the control node serves /metrics, /api/hosts "
                                    "and the fleet page on")
    basic_auth_file: Annotated[Path, AfterValidator(_check_absolute)] | None = Field(
        None, description="file with one line USER:HASH (make it with `offsite http-password "
                          "USER`); required when listen is beyond loopback")

    @model_validator(mode="after")
    def _auth_beyond_loopback(self) -> HttpConfig:
        host, _ = split_listen(self.listen)
        if not is_loopback(host) and self.basic_auth_file is None:
            raise ValueError(f"listen {self.listen} is beyond loopback: set "
                             "http.basic_auth_file (a USER:HASH line from `offsite "
                             "http-password USER`), or listen on 127.0.0.1")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return split_listen(self.listen)
