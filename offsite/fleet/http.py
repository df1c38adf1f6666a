"""The control node's HTTP server: `/metrics` (Prometheus), `/api/hosts` (the JSON of `offsite
hosts`), `/` (the fleet page) and `/host/NAME` (a configured host's run history; any other name
is 404), from a thread of `offsite control` when `http:` is set.

Standard library only (ThreadingHTTPServer), bounded in every direction a client controls:
the request line and headers must arrive within HEADER_TIMEOUT_S and MAX_HEADER_BYTES
(slowloris, huge headers), a request with a body is refused unread, one request per
connection, at most MAX_CONNECTIONS at once (others get 503 at once), writes time out. Only
GET and HEAD. Basic auth (offsite.fleet.http_auth) on every path when a basic_auth_file is set,
which the config requires beyond loopback.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import redis

from offsite.config.broker import broker_client
from offsite.config.model import Config
from offsite.errors import OffsiteError
from offsite.fleet.http_auth import Credentials, group_or_world_readable, load_credentials

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 16
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
}


class HeaderTooLarge(Exception):
    pass


class DeadlineReader:
    """The request's input as http.server reads it (readline), cut off at a total deadline
    and a total size, whatever pace the client sends at; bodies are never read."""

    def __init__(self, sock: socket.socket, deadline: float, limit: int) -> None:
        self.sock, self.deadline, self.limit = sock, deadline, limit
        self.buffer = b""
        self.received = 0

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self.buffer and not (0 < size <= len(self.buffer)):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.received += len(chunk)
            if self.received > self.limit:
                raise HeaderTooLarge()
            self.buffer += chunk
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        if size > 0:
            end = min(end, size)
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        return line

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        self.buffer = b""


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


Route = Callable[[], Response]
PrefixRoute = Callable[[str], Response]   # given the rest of the path after its prefix


class FleetHandler(BaseHTTPRequestHandler):
    server_version = "offsite"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    server: FleetHttpServer

    def setup(self) -> None:
        super().setup()
        self.rfile = DeadlineReader(self.connection, time.monotonic() + HEADER_TIMEOUT_S,
                                    MAX_HEADER_BYTES)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        self.command, self.requestline = None, ""  # type: ignore[assignment]
        self.request_version = "HTTP/1.0"   # so an early error still gets a status line
        try:
            super().handle_one_request()
        except HeaderTooLarge:
            self.send_error(431, "Request header fields too large")
            self.close_connection = True
        except ConnectionError:
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _refuse_method(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _serve(self, head: bool) -> None:
        self.connection.settimeout(WRITE_TIMEOUT_S)
        if self.headers.get("Transfer-Encoding") or \
                self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.send_error(413, "Request bodies are not accepted")
            return
        credentials = self.server.credentials
        if credentials is not None and \
                not credentials.check_header(self.headers.get("Authorization")):
            self._send(Response(401, "text/plain; charset=utf-8", b"authentication required\n"),
                       head, {"WWW-Authenticate": 'Basic realm="offsite", charset="UTF-8"'})
            return
        route = self.server.route(urlsplit(self.path).path)
        if route is None:
            self._send(Response(404, "text/plain; charset=utf-8", b"not found\n"), head)
            return
        try:
            response = route()
        except redis.RedisError as exc:
            log.warning("http: cannot read the ledger: %s", exc)
            response = Response(503, "text/plain; charset=utf-8",
                                b"the broker (Redis) is unreachable\n")
        self._send(response, head)

    def _send(self, response: Response, head: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(response.status)
        headers = {**_SECURITY_HEADERS, "Content-Type": response.content_type,
                   "Content-Length": str(len(response.body)), **(extra or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        text = format % args
        clean = "".join(ch if ch.isprintable() else "?" for ch in text)[:300]
        log.info("http %s: %s", self.client_address[0] if self.client_address else "?", clean)


class FleetHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address: tuple[str, int], routes: dict[str, Route],
                 credentials: Credentials | None,
                 prefixed: dict[str, PrefixRoute] | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.routes = routes
        self.prefixed = prefixed or {}
        self.credentials = credentials
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, FleetHandler)

    def route(self, path: str) -> Route | None:
        """The route of an exact path, else of the prefix it starts with (given the rest)."""
        if (found := self.routes.get(path)) is not None:
            return found
        for prefix, prefixed in self.prefixed.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                rest = path[len(prefix):]
                return lambda: prefixed(rest)
        return None

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 1\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


HOST_PREFIX = "/host/"


def fleet_routes(config: Config, client: redis.Redis) -> dict[str, Route]:
    from offsite.fleet.summary import read_summary
    from offsite.fleet.page import render_page
    from offsite.fleet.metrics import CONTENT_TYPE, render_metrics
    from offsite.fleet.next_runs import NextRuns
    next_runs = NextRuns(config)

    def api_hosts() -> Response:
        body = json.dumps(read_summary(client, config).as_json()).encode()
        return Response(200, "application/json", body)
    return {
        "/": lambda: Response(200, "text/html; charset=utf-8", render_page(client, config)),
        "/metrics": lambda: Response(200, CONTENT_TYPE,
                                     render_metrics(client, config, next_runs)),
        "/api/hosts": api_hosts,
    }


def host_routes(config: Config, client: redis.Redis) -> dict[str, PrefixRoute]:
    """`/host/NAME`: the host's run history (404 for a name the config does not hold)."""
    from offsite.fleet.host_page import render_host_page

    def host_page(rest: str) -> Response:
        host = unquote(rest)
        if host not in config.hosts:
            return Response(404, "text/plain; charset=utf-8", b"no such host\n")
        return Response(200, "text/html; charset=utf-8", render_host_page(client, host))
    return {HOST_PREFIX: host_page}


def open_server(config: Config) -> FleetHttpServer | None:
    """Bind the server `http:` asks for (None when it is not set). Raises ConfigError for an
    unusable basic_auth_file and OffsiteError when the address cannot be bound."""
    if config.http is None:
        return None
    credentials = None
    if config.http.basic_auth_file is not None:
        credentials = load_credentials(config.http.basic_auth_file)
        if group_or_world_readable(config.http.basic_auth_file):
            log.warning("http.basic_auth_file %s is readable by others: chmod 600 it",
                        config.http.basic_auth_file)
    client = broker_client(config.broker_url, config.broker_sentinel_master,
                           socket_connect_timeout=3, socket_timeout=10, decode_responses=True)
    try:
        return FleetHttpServer(config.http.address, fleet_routes(config, client), credentials,
                               host_routes(config, client))
    except OSError as exc:
        raise OffsiteError(f"cannot listen on {config.http.listen}: {exc.strerror or exc} "
                           "(another process on that port? change http.listen)",
                           step="http") from None


def serve_in_thread(server: FleetHttpServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info("http: serving /, /host/NAME, /metrics and /api/hosts on %s:%s%s", host, port,
             " with basic auth" if server.credentials else "")
    return thread
