"""Connections: how many at once, how long each may take, and what a misbehaving client costs.

A thread per connection, as `http.server` does, but bounded: at most `Limits.connections` at once (a connection
past that is closed at once), a deadline for each request head, for an idle keep-alive connection and for
writing an answer, and a size cap on request heads. A client that resets, times out or sends garbage costs
one debug line, never a traceback on stderr.
"""

from __future__ import annotations

import http.client
import io
import logging
import math
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# Scrapers send a request head in one packet; 10 s is Go's usual ReadHeaderTimeout and bounds a slowloris client.
# A TLS handshake has as long again, before the head's deadline starts.
HEADER_TIMEOUT = 10.0
# A full server says so at most this often; per rejected connection there is only a debug line.
_FULL_WARNING_INTERVAL = 60.0
# Before closing, read what the client still sends for this long (as Go's net/http does): closing with unread
# input resets the connection, and the reset can destroy the last answer (a 431, a 400) before the client reads it.
_LINGER = 0.5
_PLAIN_HTTP_TO_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


@dataclass(frozen=True)
class Limits:
    """What one connection may take (tests shorten them)."""

    # Scrapers, HA pairs and probes hold a handful. At ~100 KiB each (a thread, a head, buffers), 256 cost ~25 MiB,
    # inside the manifest's 256Mi, and 256 file descriptors, well under the usual soft limit of 1024.
    connections: int = 256
    header_timeout: float = HEADER_TIMEOUT
    # Past Prometheus's default 1m scrape interval, so scrapes reuse their connection; short enough to free the slot.
    idle_timeout: float = 90.0
    # For writing one answer: a /metrics body of a few MiB takes seconds on a slow link.
    write_timeout: float = 60.0
    # Prometheus's heads are under 1 KiB; http.server alone would buffer 100 header lines of 64 KiB each.
    head_bytes: int = 64 * 1024


DEFAULT_LIMITS = Limits()


class RequestHeadTooLarge(http.client.HTTPException):
    """A request head past `Limits.head_bytes` (an HTTPException, so http.server answers 431)."""


class BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on connections; TLS handshakes run in the worker threads."""

    # Threads of connected clients must not hold up shutdown: SIGTERM exits within seconds, whoever is connected.
    daemon_threads = True
    request_queue_size = 128  # the default of 5 resets concurrent connects

    def __init__(
        self, host: str, port: int, handler: type[BoundedHandler], limits: Limits, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self._slots = threading.BoundedSemaphore(limits.connections)
        # Touched by the accepting thread only.
        self._rejected = 0
        self._warned_at = -math.inf
        self._dualstack = host in ("", "::") and socket.has_dualstack_ipv6()
        if self._dualstack or ":" in host:
            self.address_family = socket.AF_INET6
            host = "::" if self._dualstack else host
        super().__init__((host, port), handler)

    def server_bind(self) -> None:
        """Bind; an empty host listens on IPv4 and IPv6 like Go exporters do."""
        if self._dualstack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

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

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own if a slot is free, else close it at once."""
        if not self._slots.acquire(blocking=False):
            self._reject(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started, so none will give the slot back
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Run the TLS handshake (if any) in this worker thread, then serve the connection; free its slot after."""
        try:
            if self.ssl_context is not None:
                try:
                    # The handshake's timeout bounds the whole handshake, not each read of it.
                    request.settimeout(self.limits.header_timeout)
                    if request.recv(1, socket.MSG_PEEK) not in (b"\x16", b""):  # not a TLS handshake record
                        # A scraper with the wrong scheme: say so, in the words of Go's net/http.
                        request.sendall(_PLAIN_HTTP_TO_TLS)
                        self.shutdown_request(request)
                        return
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                except OSError as exc:  # ssl.SSLError and TimeoutError included
                    log.debug("tls handshake failed", extra={"client": client_address[0], "err": _describe(exc)})
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Close a served connection: stop writing, read what the client still sends (briefly), then close."""
        deadline = time.monotonic() + _LINGER
        try:
            request.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65536):
                    break
        except OSError:
            pass  # reset, timed out or gone: nothing left to protect
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection ended in an exception: a client's doing is one debug line, anything else a bug."""
        exc = sys.exception()
        if isinstance(exc, OSError | http.client.HTTPException):
            log.debug("connection dropped", extra={"client": client_address[0], "err": _describe(exc)})
        else:
            log.error("serving a connection failed", exc_info=exc, extra={"client": client_address[0]})

    def _reject(self, request: Any, client_address: Any) -> None:
        self.close_request(request)  # at once: this is the accepting thread
        self._rejected += 1
        now = time.monotonic()
        if now - self._warned_at >= _FULL_WARNING_INTERVAL:
            log.warning(
                "connection limit reached; closing new connections until one ends",
                extra={"limit": self.limits.connections, "rejected": self._rejected},
            )
            self._warned_at, self._rejected = now, 0
        else:
            log.debug("connection rejected: limit reached", extra={"client": client_address[0]})


class BoundedHandler(BaseHTTPRequestHandler):
    """Reads requests under the server's limits; subclasses answer them (`answer`) and override `send_error`."""

    server: BoundedServer
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its scrape connections
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK stalls the body ~40 ms.
    disable_nagle_algorithm = True

    def answer(self) -> None:
        """Answer the request just read (`command`, `path`, `headers`; the body is in `rfile`)."""
        raise NotImplementedError

    def setup(self) -> None:
        """Read through a `_LimitedReader`, so that every read has a deadline and a request head a size cap."""
        super().setup()
        self.rfile.close()  # the plain reader; the socket stays open
        self._reader = _LimitedReader(self.connection)
        self.rfile = self._buffered = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """Read and answer one request within the limits, then wait up to the idle timeout for the next one."""
        self._reader.deadline = time.monotonic() + self.server.limits.header_timeout
        self._reader.budget = self.server.limits.head_bytes
        # A request has no method, path or version until its first line is parsed; the last request's must not show.
        self.command = self.path = self.request_version = self.requestline = ""
        try:
            super().handle_one_request()
        except RequestHeadTooLarge:  # while reading the request line (parse_request answers the headers' case)
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if self.close_connection:
            return
        self._reader.deadline = time.monotonic() + self.server.limits.idle_timeout
        self._reader.budget = None
        try:
            self.close_connection = not self._buffered.peek(1)
        except TimeoutError:
            log.debug("idle connection closed", extra={"client": self.client_address[0]})
            self.close_connection = True

    def parse_request(self) -> bool:
        """Parse the head; once it is in, the body may be longer than a head (the deadline still holds)."""
        try:
            if not super().parse_request():
                return False
        finally:
            self._reader.budget = None
        if self.request_version == "HTTP/0.9":
            # `GET /path` without a version: http.server would answer with the body alone, which no client of
            # this century reads (and a 401 or 404 would pass for content). Refused with a status line, as Go does.
            self.request_version = self.protocol_version
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 request")
            return False
        return True

    def end_headers(self) -> None:
        """Send the head of an answer; writing the answer has a deadline of its own."""
        self.connection.settimeout(self.server.limits.write_timeout)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """What http.server would print to stderr (a timed-out request) is a debug line."""
        log.debug(format % args, extra={"client": self.client_address[0]})


# http.server calls do_<METHOD>: the methods of RFC 9110 (and PATCH) all go to `answer`, which can say 405 where a
# path does not take one; http.server answers any other method with 501, through `send_error`.
for _method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"):
    setattr(BoundedHandler, f"do_{_method}", lambda self: self.answer())


class _LimitedReader(io.RawIOBase):
    """A socket's reads, each bounded by what is left of `deadline` and of the byte `budget` (None: no bound)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None
        self.budget: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Receive into `buffer`; TimeoutError past the deadline, RequestHeadTooLarge past the budget."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            self._sock.settimeout(left)
        view = memoryview(buffer).cast("B")
        if self.budget is not None:
            if self.budget <= 0:
                raise RequestHeadTooLarge("request head too large")
            view = view[: self.budget]
        received = self._sock.recv_into(view)
        if self.budget is not None:
            self.budget -= received
        return received


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def serve_in_thread(server: BoundedServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), name="http-server", daemon=True)
    thread.start()
    return thread
