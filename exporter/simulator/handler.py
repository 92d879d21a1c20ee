"""One HTTP connection of the simulator: routing, the control API, and faults delivered on the wire."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from exporter.simulator.discovery import discovery_answer
from exporter.simulator.entra import TokenRequest, token_answer
from exporter.simulator.faults import DEFAULT_HUGE_MB, DEFAULT_SLOW_BODY, DEFAULT_TIMEOUT, canned
from exporter.simulator.ledger import BOM
from exporter.simulator.loader import parse_faults
from exporter.simulator.partner import (
    INVALID_INPUT,
    INVOICE_PATHS,
    NOT_FOUND,
    TRACE_HEADERS,
    identify,
    invoice_answer,
    trace_headers,
)
from exporter.simulator.responses import JSON, Response, json_response, partner_error
from exporter.simulator.scenario import Fault, ScenarioError
from exporter.simulator.state import TenantState

if TYPE_CHECKING:
    from exporter.simulator.server import SimulatorServer

log = logging.getLogger(__name__)

_TOKEN_PATH: Final = re.compile(r"^/([^/]+)/oauth2/v2\.0/token/?$")
_DISCOVERY_PATH: Final = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
_CONTROL_TENANT: Final = re.compile(r"^/_sim/tenants/([^/]+)/(faults|revoke)$")
_MAX_BODY: Final = 1 << 20
_CHUNK: Final = 1 << 18
SERVER_NAME: Final = "partnercenter-simulator"


def _has_content(status: int) -> bool:
    """Whether an answer with this status has content: 1xx, 204 and 304 have none, not even a Content-Length.

    RFC 9110 8.6 forbids Content-Length in 1xx and 204 answers; in a 304 it would have to be that of the 200
    answer, which the simulator does not compute, and leaving it out is allowed.
    """
    return status >= 200 and status not in (204, 304)


class Handler(BaseHTTPRequestHandler):
    """One connection; requests on it are answered in turn (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    # Headers and body are written in one send, but a stalled ACK still costs ~40 ms without TCP_NODELAY.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this long, as Azure's front doors do.
    timeout = 240
    server_version = SERVER_NAME
    sys_version = ""
    server: SimulatorServer

    def setup(self) -> None:
        """Register the connection."""
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        """Forget the connection."""
        self.server.track(self.connection, False)
        # The peer may have gone away, or a reset fault closed the socket.
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silence http.server's stderr logging; requests are logged in `_dispatch`."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Refuse what http.server cannot parse (a garbled request line, a huge head) with a status line.

        A request line too garbled to name its version leaves http.server at HTTP/0.9, whose own answer is its
        HTML page without status line or headers; no HTTP/1.1 client can read that.
        """
        self.close_connection = True
        self._send(Response(code, b"", None))

    def __getattr__(self, name: str) -> Callable[[], None]:
        """`do_<METHOD>` for every method, PATCH and OPTIONS as much as GET: all go through `_dispatch`.

        http.server looks the handler up by the method's name and answers a missing one with its own 501 HTML
        page; here each route answers as its service does, the token endpoint with AADSTS900561 for anything but
        POST (as the docs' rejection table says), the API with Partner Center's 405.
        """
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        """Route one request and log it."""
        started = time.monotonic()
        self._status: int | None = None  # the HTTP status sent, as the exporter logs it
        self._failure: str | None = None  # no status sent: client-gone, timeout, reset
        self._tenant = "-"
        self._fault = "-"
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        try:
            if path.startswith("/_sim/"):
                self._control(path, body)
            elif path.rstrip("/") in INVOICE_PATHS:
                self._invoice(INVOICE_PATHS[path.rstrip("/")])
            elif match := _TOKEN_PATH.match(path):
                self._token(unquote(match.group(1)), path, body)
            elif match := _DISCOVERY_PATH.match(path):
                self._discovery(unquote(match.group(1)))
            else:
                self._send(partner_error(404, NOT_FOUND, "Not found: the requested resource does not exist."))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self._failure = "client-gone"
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request",
                extra={
                    "method": self.command,
                    "path": path,
                    **({"status": self._status} if self._failure is None else {"failure": self._failure}),
                    "tenant": self._tenant,
                    "fault": self._fault,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )

    def _read_body(self) -> bytes | None:
        """The request body by Content-Length; None after answering a request we cannot read."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(Response(411, b"", None))
            return None
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            self._send(Response(413 if length > _MAX_BODY else 400, b"", None))
            return None
        return self.rfile.read(length) if length else b""

    # --- the three kinds of route ---

    def _base(self) -> str:
        """`scheme://host[:port]` as the client addressed this server (the Host header), for URLs it must match."""
        name = self.server.server_name
        host = self.headers.get("Host") or (f"[{name}]" if ":" in name else name) + f":{self.server.server_port}"
        return f"{self.server.scheme}://{host}"

    def _token(self, tenant_id: str, path: str, body: bytes) -> None:
        """`/{tenant}/oauth2/v2.0/token`: counted by the tenant in the URL."""
        world = self.server.world
        tenant = world.tenant(tenant_id)
        world.count(tenant, "token")
        self._tenant = tenant.scenario.tenant_id if tenant else "unknown"
        request = TokenRequest(
            method=self.command,
            content_type=self.headers.get("Content-Type") or "",
            body=body,
            endpoint=self._base() + path,
        )
        self._serve(tenant, "token", lambda: token_answer(world, tenant, tenant_id, request), ())

    def _discovery(self, tenant_id: str) -> None:
        """`/{tenant}/v2.0/.well-known/openid-configuration`: not counted, no faults."""
        world = self.server.world
        tenant = world.tenant(tenant_id)
        self._tenant = tenant.scenario.tenant_id if tenant else "unknown"
        if self.command not in ("GET", "HEAD"):
            self._send(Response(405, b"", None, (("Allow", "GET, HEAD"),)))
            return
        self._send(discovery_answer(world, tenant, tenant_id, self._base()))

    def _invoice(self, endpoint: str) -> None:
        """`/v1/invoices/summary(ies)`: the tenant is the one the bearer token was issued for."""
        world = self.server.world
        tenant, claims = identify(world, self.headers.get("Authorization"))
        world.count(tenant, endpoint)
        self._tenant = tenant.scenario.tenant_id if tenant else "unknown"
        headers = {
            name: value
            for name in ("Authorization", "Accept", *TRACE_HEADERS)
            if (value := self.headers.get(name)) is not None
        }
        echo = trace_headers(headers)
        latency = world.scenario.latency
        if tenant is not None and tenant.scenario.latency is not None:
            latency = tenant.scenario.latency
        if latency > 0 and self.server.stopping.wait(latency):
            self.close_connection = True
            return

        def normal() -> Response:
            """The answer without faults."""
            if self.command not in ("GET", "HEAD"):
                return partner_error(
                    405, INVALID_INPUT, f"Invalid request input: the method {self.command} is not allowed."
                )
            return invoice_answer(world, endpoint, tenant, claims, headers)

        self._serve(tenant, endpoint, normal, echo)

    def _control(self, path: str, body: bytes) -> None:
        """The control API under `/_sim/`."""
        if path == "/_sim/healthz" and self.command in ("GET", "HEAD"):  # probes may ask with HEAD
            self._send(json_response(200, {"status": "ok"}))
        elif path == "/_sim/stats" and self.command == "GET":
            self._send(json_response(200, self.server.world.stats()))
        elif match := _CONTROL_TENANT.match(path):
            self._control_tenant(unquote(match.group(1)), match.group(2), body)
        else:
            self._send(json_response(404, {"error": f"no control route {self.command} {path}"}))

    def _control_tenant(self, tenant_id: str, action: str, body: bytes) -> None:
        """PUT faults or POST revoke for one tenant."""
        tenant = self.server.world.tenant(tenant_id)
        if tenant is None:
            self._send(json_response(404, {"error": f"unknown tenant {tenant_id!r}"}))
            return
        if action == "revoke" and self.command == "POST":
            tenant.revoke()
            self._send(json_response(200, {"revoked": tenant.scenario.tenant_id}))
            return
        if action == "faults" and self.command == "PUT":
            try:
                faults = parse_faults(json.loads(body or b"null"))
            # json.loads recurses per nesting level: a deep enough list raises RecursionError, not ValueError.
            except (ValueError, RecursionError) as exc:
                self._send(json_response(400, {"error": f"invalid JSON: {exc}"}))
                return
            except ScenarioError as exc:
                self._send(json_response(400, {"error": str(exc)}))
                return
            tenant.set_faults(faults)
            self._send(json_response(200, {"tenant_id": tenant.scenario.tenant_id, "faults": len(faults)}))
            return
        self._send(json_response(405, {"error": f"method {self.command} not allowed here"}))

    # --- faults and the wire ---

    def _serve(
        self,
        tenant: TenantState | None,
        endpoint: str,
        normal: Callable[[], Response],
        echo: tuple[tuple[str, str], ...],
    ) -> None:
        """Answer normally, or as the first matching fault of the tenant says."""
        fault = tenant.next_fault(endpoint) if tenant is not None else None
        if fault is None:
            self._send(normal().with_headers(*echo))
            return
        self._fault = fault.kind
        replacement = canned(fault, endpoint)
        if replacement is not None:
            self._send(replacement.with_headers(*echo))
        elif fault.kind == "latency":
            if self.server.stopping.wait(fault.seconds or 0.0):
                self.close_connection = True
                return
            self._send(normal().with_headers(*echo))
        elif fault.kind == "timeout":
            # Hang without answering; a stopping simulator does not wait for the hang to end.
            self.server.stopping.wait(DEFAULT_TIMEOUT if fault.seconds is None else fault.seconds)
            self.close_connection = True
            self._failure = "timeout"
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "truncated":
            answer = normal()
            self._send(Response(200, answer.body[: len(answer.body) // 2], answer.content_type, echo))
        elif fault.kind == "huge":
            self._send_huge(fault, normal(), echo)
        else:
            self._send_slowly(fault, normal().with_headers(*echo))

    def _head(self, answer: Response, length: int) -> bytes:
        """Status line and headers of an answer whose body has `length` bytes."""
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {answer.status} {reason}", f"Server: {SERVER_NAME}", f"Date: {self.date_time_string()}"]
        if _has_content(answer.status):
            lines.append(f"Content-Length: {length}")
            if answer.content_type:
                lines.append(f"Content-Type: {answer.content_type}")
        lines.extend(f"{name}: {value}" for name, value in answer.headers)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _send(self, answer: Response) -> None:
        """Write a complete answer in one send."""
        self._status = answer.status
        body = answer.body if self._with_body(answer.status) else b""
        self.wfile.write(self._head(answer, len(answer.body)) + body)

    def _with_body(self, status: int) -> bool:
        """Whether an answer with this status to this request carries its body: not for HEAD, 1xx, 204 or 304.

        A client reads no body after those (RFC 9110 9.3.2, 15.3.5, 15.4.5), so bytes sent anyway would be read
        as the start of the next answer on the keep-alive connection.
        """
        return self.command != "HEAD" and _has_content(status)

    def _send_slowly(self, fault: Fault, answer: Response) -> None:
        """Write the headers, then dribble the body over the fault's seconds."""
        self._status = answer.status
        seconds = DEFAULT_SLOW_BODY if fault.seconds is None else fault.seconds
        body = answer.body
        pieces = max(1, min(len(body), int(seconds / 0.05)))
        step = -(-len(body) // pieces) if body else 1
        self.wfile.write(self._head(answer, len(body)))
        if not self._with_body(answer.status):
            return
        for offset in range(0, len(body), step):
            if self.server.stopping.wait(seconds / pieces):
                self.close_connection = True
                return
            self.wfile.write(body[offset : offset + step])

    def _send_huge(self, fault: Fault, answer: Response, echo: tuple[tuple[str, str], ...]) -> None:
        """A valid JSON body of `size_mb`: the normal one with a giant padding member, streamed in chunks."""
        self._status = 200
        size = int((fault.size_mb or DEFAULT_HUGE_MB) * 1024 * 1024)
        normal = answer.body.removeprefix(BOM)
        head = b'{"padding":"'
        tail = b'",' + normal[1:] if normal.startswith(b"{") and len(normal) > 2 else b'"}'
        filler = max(0, size - len(head) - len(tail))
        self.wfile.write(self._head(Response(200, b"", JSON, echo), len(head) + filler + len(tail)))
        if not self._with_body(200):
            return
        self.wfile.write(head)
        chunk = b"x" * _CHUNK
        while filler > 0:
            if self.server.stopping.is_set():
                self.close_connection = True
                return
            piece = chunk if filler >= _CHUNK else chunk[:filler]
            self.wfile.write(piece)
            filler -= len(piece)
        self.wfile.write(tail)

    def _reset(self) -> None:
        """Close the connection with a TCP RST instead of an answer."""
        self._failure = "reset"
        self.close_connection = True
        # SO_LINGER with a zero timeout turns close() into an abortive close (RST).
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
