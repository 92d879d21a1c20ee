"""HTTP: /metrics, the landing page, health and readiness, and POST /-/reload; TLS and basic auth."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.config.web import WebConfig, build_ssl_context
from exporter.exposition import Exposition
from exporter.server.basicauth import BasicAuthChecker
from exporter.server.landing import landing_page
from exporter.snapshot import Snapshot

log = logging.getLogger(__name__)

ReloadFunc = Callable[[], tuple[bool, str]]
_OPEN_PATHS = frozenset({"/healthz"})  # reachable without credentials, for liveness probes


class Routes:
    """What the exporter answers, independent of how bytes reach the client."""

    def __init__(
        self,
        exposition: Exposition,
        snapshot: Callable[[], Snapshot],
        reload: ReloadFunc,
        web_config: WebConfig | None = None,
    ) -> None:
        self.exposition = exposition
        self.snapshot = snapshot
        self.reload = reload
        self.web_config = web_config
        users = web_config.basic_auth_users if web_config else {}
        self.auth = BasicAuthChecker(users) if users else None
        excluded = web_config.auth_excluded_paths if web_config else ()
        self.open_paths = _OPEN_PATHS | frozenset(excluded)


class ExporterServer(ThreadingHTTPServer):
    """A threading HTTP server whose TLS handshakes happen in the worker threads, not in accept()."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, routes: Routes) -> None:
        self.routes = routes
        tls = routes.web_config.tls if routes.web_config else None
        self.ssl_context: ssl.SSLContext | None = build_ssl_context(tls) if tls else None
        self._dualstack = host in ("", "::") and socket.has_dualstack_ipv6()
        if self._dualstack or ":" in host:
            self.address_family = socket.AF_INET6
            host = "::" if self._dualstack else host
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        """Bind; an empty host listens on IPv4 and IPv6 like Go exporters do."""
        if self._dualstack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Run the TLS handshake (if any) in this worker thread, then serve the connection."""
        if self.ssl_context is not None:
            try:
                request.settimeout(10)
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("tls handshake failed", extra={"client": client_address[0], "err": str(exc)})
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    @property
    def url(self) -> str:
        """Base URL of the listener (for logs and tests)."""
        host, port = str(self.server_address[0]), int(self.server_address[1])
        scheme = "https" if self.ssl_context else "http"
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - describing, not binding
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its scrape connections
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK stalls the body ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection must not hold a thread forever
    server_version = f"partnercenter-exporter/{__version__}"
    sys_version = ""

    def do_GET(self) -> None:
        """Route a GET."""
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        routes = self.server.routes
        if path == "/metrics":
            self._metrics(routes)
        elif path == "/":
            self._send(HTTPStatus.OK, landing_page(routes.snapshot()).encode(), "text/html; charset=utf-8")
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"OK\n")
        elif path == "/readyz":
            snap = routes.snapshot()
            if snap.ready:
                self._send(HTTPStatus.OK, b"ready\n")
            else:
                polled = sum(1 for s in snap.tenants.values() if s.up is not None)
                message = f"not ready: {polled} of {len(snap.config.tenants)} tenants polled\n"
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, message.encode())
        elif path == "/-/reload":
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", extra={"Allow": "POST, PUT"})
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_POST(self) -> None:
        """Route a POST: only /-/reload."""
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and 0 < int(length) <= 65536:
            self.rfile.read(int(length))  # drain, so the connection stays usable
        if not self._authorized():
            return
        if self.path.split("?", 1)[0] != "/-/reload":
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        ok, message = self.server.routes.reload()
        self._send(HTTPStatus.OK if ok else HTTPStatus.BAD_REQUEST, (message + "\n").encode())

    def do_PUT(self) -> None:
        """Prometheus accepts PUT on /-/reload as well."""
        self.do_POST()

    def _metrics(self, routes: Routes) -> None:
        accept = self.headers.get("Accept", "")
        openmetrics = "application/openmetrics-text" in accept
        gzip = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
        body, content_type = routes.exposition.body(openmetrics, gzip)
        extra = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if gzip else {"Vary": "Accept-Encoding"}
        self._send(HTTPStatus.OK, body, content_type, extra)

    def _authorized(self) -> bool:
        auth = self.server.routes.auth
        if auth is None or self.path.split("?", 1)[0] in self.server.routes.open_paths:
            return True
        if auth.check(self.headers.get("Authorization")):
            return True
        self._send(
            HTTPStatus.UNAUTHORIZED,
            b"Unauthorized\n",
            extra={"WWW-Authenticate": 'Basic realm="partnercenter-exporter", charset="UTF-8"'},
        )
        return False

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        web_config = self.server.routes.web_config
        for name, value in {**(web_config.headers if web_config else {}), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access log at debug level, through logging rather than stderr."""
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().removeprefix("q=").strip()
            return not (params and q.replace(".", "", 1).isdigit() and float(q) == 0)
    return False


def serve_in_thread(server: ExporterServer) -> threading.Thread:
    """Serve `server` from a daemon thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-server", daemon=True
    )
    thread.start()
    return thread
