"""HTTP: /metrics, the landing page, health and readiness, and POST /-/reload; TLS and basic auth."""

from __future__ import annotations

import html
import io
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.exposition import Exposition
from exporter.gate import ScrapeGate
from exporter.snapshot import Snapshot, TenantState
from exporter.webconfig import BasicAuthChecker, WebConfig, build_ssl_context

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

    def __init__(self, host: str, port: int, routes: Routes, gate: ScrapeGate) -> None:
        self.routes = routes
        self.gate = gate
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
    _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's, filled by send_response() and send_header()
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its scrape connections
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK stalls the body ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection must not hold a thread forever
    server_version = f"partnercenter-exporter/{__version__}"
    sys_version = ""

    def setup(self) -> None:
        """Read the connection through an `_ArrivalReader`, and show the gate when a request arrives on it."""
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_ArrivalReader(self.connection, self.server.gate))
        self.server.gate.watch(self.connection)

    def finish(self) -> None:
        """Forget the connection before it closes; this thread serves no more."""
        self.server.gate.unwatch(self.connection)
        self.server.gate.end()
        super().finish()

    def do_GET(self) -> None:
        """Route a GET."""
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        routes = self.server.routes
        if path == "/metrics":
            self._metrics(routes)
        elif path == "/":
            self._send(HTTPStatus.OK, _landing_page(routes.snapshot()).encode(), "text/html; charset=utf-8")
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
        self.server.gate.end()  # a reload waits for the poller's event loop, which must not wait for it
        ok, message = self.server.routes.reload()
        self._send(HTTPStatus.OK if ok else HTTPStatus.BAD_REQUEST, (message + "\n").encode())

    def do_PUT(self) -> None:
        """Prometheus accepts PUT on /-/reload as well."""
        self.do_POST()

    def _metrics(self, routes: Routes) -> None:
        accept = self.headers.get("Accept", "")
        openmetrics = "application/openmetrics-text" in accept
        gzip = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
        body, content_type = routes.exposition.parts(openmetrics, gzip)
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
        body: bytes | tuple[bytes, ...],
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        parts = (body,) if isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        web_config = self.server.routes.web_config
        for name, value in {**(web_config.headers if web_config else {}), **(extra or {})}.items():
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")  # end_headers() without its flush: the headers go with the body
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        _send_all(self.connection, (head, *parts))

    def log_message(self, format: str, *args: Any) -> None:
        """Access log at debug level, through logging rather than stderr."""
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})


class _ArrivalReader(socket.SocketIO):
    """A connection's reads: wait for bytes to arrive without counting as serving, then count and read them.

    While a request's bytes are still in the socket, the gate's epoll set shows them to the poller; once this
    thread reads them, `begin()` does, until the thread comes back for more: for the next request once the answer
    is written, or in the middle of a request that has not all arrived. Waiting on the network does not count.
    """

    def __init__(self, sock: socket.socket, gate: ScrapeGate) -> None:
        super().__init__(sock, "rb")
        self._connection = sock
        self._gate = gate
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def readinto(self, b: Any) -> int | None:
        """Wait up to the socket's timeout for bytes (TLS: unless some are decrypted already), then read them."""
        self._gate.end()
        sock = self._connection
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            timeout = sock.gettimeout()
            if not self._poll.poll(None if timeout is None else timeout * 1000):
                raise TimeoutError("timed out")
        self._gate.begin()
        return super().readinto(b)


def _send_all(sock: socket.socket, parts: tuple[bytes, ...]) -> None:
    """Send `parts` in as few system calls as the socket allows, without copying them together.

    Each system call gives up the GIL, and getting it back may wait a whole switch interval while the poller is
    busy; a scrape used to pay that for the headers and each part of the body separately.
    """
    if isinstance(sock, ssl.SSLSocket):  # no scatter-gather through TLS
        for part in parts:
            sock.sendall(part)
        return
    views = [memoryview(p) for p in parts if p]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if views:
            views[0] = views[0][sent:]


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().removeprefix("q=").strip()
            return not (params and q.replace(".", "", 1).isdigit() and float(q) == 0)
    return False


def _format_time(ts: float | None) -> str:
    if ts is None:
        return "never"
    when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when} ({_age(time.time() - ts)} ago)"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _tenant_row(name: str, state: TenantState | None) -> str:
    if state is None or state.up is None:
        status, css = "pending", "pending"
    elif state.up:
        status, css = "up", "up"
    else:
        status, css = "down", "down"
    currencies = ", ".join(sorted(s.currency for s in (state.summaries or ()))) if state else ""
    last_error = state.last_error if state and state.last_error else ""
    cells = (
        f'<td>{html.escape(name)}</td><td class="{css}">{status}</td>'
        f"<td>{html.escape(currencies) or '&ndash;'}</td>"
        f'<td class="when">{html.escape(_format_time(state.last_success if state else None))}</td>'
        f"<td>{html.escape(last_error) or '&ndash;'}</td>"
    )
    return f"<tr>{cells}</tr>"


def _landing_page(snap: Snapshot) -> str:
    rows = "\n".join(_tenant_row(t.name, snap.tenants.get(t.name)) for t in snap.config.tenants)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Partner Center Exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-top: 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .35rem .7rem; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
.up {{ color: #1a7f37; font-weight: 600; }} .down {{ color: #cf222e; font-weight: 600; }}
.pending {{ color: #9a6700; }}
td.when {{ white-space: nowrap; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style>
</head>
<body>
<h1>Partner Center Exporter</h1>
<p>Version <code>{html.escape(__version__)}</code>. Polls Microsoft Partner Center invoice summaries every
{html.escape(_age(snap.config.interval))}.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="healthz">Health</a> &middot; <a href="readyz">Readiness</a></li>
</ul>
<h2>Tenants</h2>
<table>
<thead><tr><th>Tenant</th><th>State</th><th>Currencies</th><th>Last success</th><th>Last error</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def serve_in_thread(server: ExporterServer) -> threading.Thread:
    """Serve `server` from a daemon thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-server", daemon=True
    )
    thread.start()
    return thread
