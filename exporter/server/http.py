"""What the exporter answers: /metrics, the landing page, /healthz, /readyz and POST /-/reload, behind basic auth.

Every answer, errors included, leaves through `_Handler._send`: plain text unless it is the page or the metrics,
the web config's headers, no body for HEAD, and one debug line. How connections are accepted, bounded and timed
out is `exporter.server.connections`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType

from exporter import __version__
from exporter.config.web import WebConfig, build_ssl_context
from exporter.exposition import Exposition
from exporter.server.basicauth import BasicAuthChecker
from exporter.server.connections import DEFAULT_LIMITS, BoundedHandler, BoundedServer, Limits
from exporter.server.landing import landing_page
from exporter.snapshot import Snapshot

log = logging.getLogger(__name__)

_GET = ("GET", "HEAD")
_RELOAD = ("POST", "PUT")  # Prometheus takes PUT on /-/reload as well
# The methods each path answers: another known method is 405, one http.server does not know is 501.
_METHODS = MappingProxyType({"/metrics": _GET, "/": _GET, "/healthz": _GET, "/readyz": _GET, "/-/reload": _RELOAD})
# Served without credentials, for probes; the web config's auth_excluded_paths add to them.
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# A body nobody reads is read and dropped up to this size, so that the connection can take the next request;
# after a larger one (or a chunked one) the connection closes.
_MAX_DISCARDED_BODY = 64 * 1024
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


class Routes:
    """What the exporter answers, independent of how bytes reach the client."""

    def __init__(
        self,
        exposition: Exposition,
        snapshot: Callable[[], Snapshot],
        reload: Callable[[], tuple[bool, str]],
        web_config: WebConfig | None = None,
    ) -> None:
        self.exposition = exposition
        self.snapshot = snapshot
        self.reload = reload
        self.web_config = web_config or WebConfig()
        self.auth = BasicAuthChecker(self.web_config.basic_auth_users)  # without users it lets every request pass
        self.open_paths = _OPEN_PATHS | frozenset(self.web_config.auth_excluded_paths)


class ExporterServer(BoundedServer):
    """The exporter's HTTP server: `routes` within the connection limits, TLS when the web config asks for it."""

    def __init__(self, host: str, port: int, routes: Routes, limits: Limits = DEFAULT_LIMITS) -> None:
        self.routes = routes
        tls = routes.web_config.tls
        super().__init__(host, port, _Handler, limits, build_ssl_context(tls) if tls else None)


@dataclass(frozen=True)
class _Answer:
    status: HTTPStatus
    body: bytes | tuple[bytes, ...]  # parts, sent one after the other
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status: HTTPStatus, headers: Mapping[str, str] | None = None) -> _Answer:
    """A short plain-text error, never http.server's HTML page."""
    return _Answer(status, f"{status.value} {status.phrase}\n".encode(), headers=headers or {})


class _Handler(BoundedHandler):
    server: ExporterServer
    server_version = f"partnercenter-exporter/{__version__}"

    def answer(self) -> None:
        """Answer a request: credentials first (except on open paths), then the path, then the method."""
        lengths = set(self.headers.get_all("Content-Length") or ())
        if len(lengths) > 1 or not all(n.isascii() and n.isdigit() for n in lengths):
            # A framing error (RFC 9112 6.3): where this request ends, and the next begins, is unknown.
            self.close_connection = True
            self._send(_error(HTTPStatus.BAD_REQUEST))
            return
        self._discard_body()
        routes = self.server.routes
        path = self.path.split("?", 1)[0]
        allowed = _METHODS.get(path)
        if path not in routes.open_paths and not routes.auth.check(self.headers.get("Authorization")):
            reply = _error(
                HTTPStatus.UNAUTHORIZED, {"WWW-Authenticate": 'Basic realm="partnercenter-exporter", charset="UTF-8"'}
            )
        elif allowed is None:
            reply = _error(HTTPStatus.NOT_FOUND)
        elif self.command not in allowed:
            reply = _error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(allowed)})
        else:
            try:
                reply = self._route(path)
            except Exception:  # a bug behind one route costs that request, not the connection or the log's shape
                log.exception("answering a request failed", extra={"path": path})
                reply = _error(HTTPStatus.INTERNAL_SERVER_ERROR)
        self._send(reply)

    def _route(self, path: str) -> _Answer:
        routes = self.server.routes
        if path == "/metrics":
            return self._metrics()
        if path == "/":
            return _Answer(HTTPStatus.OK, landing_page(routes.snapshot()).encode(), "text/html; charset=utf-8")
        if path == "/healthz":
            return _Answer(HTTPStatus.OK, b"OK\n")
        if path == "/readyz":
            snap = routes.snapshot()
            if snap.ready:
                return _Answer(HTTPStatus.OK, b"ready\n")
            polled = sum(1 for s in snap.tenants.values() if s.up is not None)
            message = f"not ready: {polled} of {len(snap.config.tenants)} tenants polled\n"
            return _Answer(HTTPStatus.SERVICE_UNAVAILABLE, message.encode())
        ok, message = routes.reload()
        return _Answer(HTTPStatus.OK if ok else HTTPStatus.BAD_REQUEST, (message + "\n").encode())

    def _metrics(self) -> _Answer:
        # By weight: Prometheus ranks the formats by q-value, as its scrape_protocols list them.
        accept = _weights(self.headers.get("Accept", ""))
        om, text = accept.get("application/openmetrics-text", 0.0), accept.get("text/plain", 0.0)
        openmetrics = om > 0 and om >= text
        gzip = _weights(self.headers.get("Accept-Encoding", "")).get("gzip", 0.0) > 0
        body, content_type = self.server.routes.exposition.body(openmetrics, gzip)
        # Both request headers choose what comes back, so a cache in between must key on both.
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return _Answer(HTTPStatus.OK, body, content_type, headers)

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") is not None or (
            length is not None and int(length) > _MAX_DISCARDED_BODY
        ):
            self.close_connection = True
        elif length:
            self.rfile.read(int(length))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer what http.server refuses (a bad request line, an unknown method, a huge head) in plain text."""
        status = HTTPStatus(code)
        self.close_connection = True
        # A request line too garbled to name its version leaves http.server at HTTP/0.9, which would send the body
        # alone; every client of this century reads a status line.
        self.request_version = self.protocol_version
        self._send(_error(status), err=message or status.phrase)

    def _send(self, reply: _Answer, err: str | None = None) -> None:
        parts = (reply.body,) if isinstance(reply.body, bytes) else reply.body
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        for name, value in {**self.server.routes.web_config.headers, **reply.headers}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            for part in parts:
                self.wfile.write(part)
        fields: dict[str, object] = {
            "client": self.client_address[0],
            "method": self.command or "-",
            "path": self.path or "-",
            "status": reply.status.value,
        }
        if err:
            fields["err"] = err
        log.debug("http request", extra=fields)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing: `_send` logs each answer once it is written, with fields rather than a formatted line."""

    def version_string(self) -> str:
        """The `Server` header: the exporter and its version (http.server would append Python's after a space)."""
        return self.server_version


def _weights(header: str) -> dict[str, float]:
    """The media types or codings an Accept or Accept-Encoding header names, with their weights (RFC 9110 12.4.2)."""
    weights: dict[str, float] = {}
    for part in header.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            # Only OWS (space, tab) around it: str.strip() also takes \x1c-\x1f, which float() refuses (a 500).
            value = value.strip(" \t")
            if key.strip().lower() == "q" and _QVALUE.fullmatch(value):
                q = float(value)
        if name:
            weights[name.lower()] = max(q, weights.get(name.lower(), 0.0))
    return weights
