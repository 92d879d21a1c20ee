"""HTTP/1.1 for the poller's clients: h11 over asyncio protocols, keep-alive connections per origin.

httpx's own transport (httpcore, anyio, h11) costs ~1.8 ms of CPU per request, which made a 1000-tenant poll
cycle CPU-bound; this one speaks the same protocol through the same parser (h11) for about half of that
(docs/architecture.md, bench/RESULTS.md). It keeps httpx's contract: it raises httpx's exception types, honours
the request's connect/read/write timeouts, gives httpx a streamed body to decode, and drops a connection it
cannot vouch for (idle past the keep-alive expiry, closed or written to by the server while idle, left in the
middle of an exchange by an error or a cancellation). Requests to an upstream behind an environment proxy never
reach it: the client pool gives those httpx's own proxy transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

# httpx's default: a connection idle longer than this may have been dropped by a NAT or a load balancer
# without either end hearing of it, and a request on it would wait for its whole read timeout.
KEEPALIVE_EXPIRY = 5.0
# Received bytes held before h11 has been asked for them; past this the socket stops being read.
_READ_HIGH_WATER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Not h11's message: it quotes the offending header, which may be the Authorization header.
_UNWRITABLE = "the request cannot be written as HTTP/1.1"

_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its h11 state machine; used by one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._h11 = h11.Connection(h11.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._received: collections.deque[bytes] = collections.deque()
        self._received_size = 0
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        self._received_size += len(data)
        if self._received_size > _READ_HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._lost = exc
        self._eof = True
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # used by the transport

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle, open, unexpired, and nothing arrived while idle (which would be read as the next answer)."""
        return (
            not self._closed
            and not self._eof
            and not self._received
            and self._h11.our_state is h11.IDLE
            and now - self.idle_since < expiry
        )

    async def send(self, request: h11.Request, body: bytes, timeout: float | None) -> None:
        try:
            data = self._h11.send(request) or b""
            if body:
                data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            raise httpx.LocalProtocolError(_UNWRITABLE) from None
        if self._closed or self._transport is None:
            raise httpx.WriteError("connection closed before the request was sent")
        self._transport.write(data)
        deadline = None if timeout is None else self._loop.time() + timeout
        while self._writing_paused and not self._closed:
            await self._wait(deadline, httpx.WriteTimeout)
        if self._closed and self._lost is not None:
            raise httpx.WriteError(str(self._lost))

    async def next_event(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                if type(event) is h11.ConnectionClosed:
                    raise httpx.RemoteProtocolError("server disconnected without a complete response")
                return event
            if self._received:
                self._feed()
            elif self._eof:
                if self._lost is not None:
                    raise httpx.ReadError(str(self._lost))
                self._h11.receive_data(b"")
            else:
                await self._wait(deadline, httpx.ReadTimeout)

    def start_next_cycle(self) -> bool:
        """After a complete exchange: ready the connection for the next one, or False if it must close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE and not self._eof:
            self._h11.start_next_cycle()
            self.idle_since = time.monotonic()
            return True
        return False

    def close(self) -> None:
        """Drop the connection now, unread bytes and all."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _feed(self) -> None:
        data = b"".join(self._received) if len(self._received) > 1 else self._received[0]
        self._received.clear()
        self._received_size = 0
        self._h11.receive_data(data)
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    async def _wait(self, deadline: float | None, timeout_error: type[httpx.TimeoutException]) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None if deadline is None else self._loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        except _ExpiredError:
            raise timeout_error("timed out") from None
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _ExpiredError(Exception):
    pass


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_ExpiredError())


class _ResponseStream(httpx.AsyncByteStream):
    """The response body as h11 hands it over; closing it returns the connection or drops it."""

    def __init__(self, transport: H11Transport, origin: _Origin, connection: _Connection, timeout: float | None):
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._timeout = timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        while True:
            event = await connection.next_event(self._timeout)
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self._complete = True
                return

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and connection.start_next_cycle():
            self._transport._release(self._origin, connection)
        else:
            connection.close()


class H11Transport(httpx.AsyncBaseTransport):
    """An httpx transport keeping up to `max_idle` keep-alive connections per origin."""

    def __init__(
        self, ssl_context: ssl.SSLContext, *, max_idle: int = 2, keepalive_expiry: float = KEEPALIVE_EXPIRY
    ) -> None:
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        if self._closed:
            raise httpx.ConnectError("transport is closed")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        try:
            head = h11.Request(method=request.method, target=url.raw_path, headers=request.headers.raw)
        except h11.LocalProtocolError:
            raise httpx.LocalProtocolError(_UNWRITABLE) from None
        body = await request.aread()
        connection = self._reused(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            await connection.send(head, body, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            event = await connection.next_event(read_timeout)
            while type(event) is h11.InformationalResponse:
                event = await connection.next_event(read_timeout)
        except BaseException:
            connection.close()
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_ResponseStream(self, origin, connection, read_timeout),
            extensions={"http_version": b"HTTP/" + event.http_version, "reason_phrase": event.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _reused(self, origin: _Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if connection.reusable(now, self._keepalive_expiry):
                return connection
            connection.close()
        return None

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        connections = self._idle.setdefault(origin, [])
        if self._closed or len(connections) >= self._max_idle:
            connection.close()
        else:
            connections.append(connection)

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return connection
