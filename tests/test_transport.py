"""H11Transport against raw HTTP servers on 127.0.0.1: keep-alive, stale connections, errors, timeouts, TLS."""

from __future__ import annotations

import asyncio
import gc
import gzip
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from exporter.config import Config
from exporter.poller import ClientPool, environment_proxy
from exporter.secret import Secret
from exporter.transport import _READ_HIGH_WATER, H11Transport, _Connection
from tests.fakes import make_config, tenant_yaml

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Request:
    connection: int
    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


async def _send(raw: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(raw)
    await writer.drain()


def answer(raw: bytes = OK, *, close: bool = False) -> Answer:
    async def respond(_: Request, writer: asyncio.StreamWriter) -> None:
        await _send(raw, writer)
        if close:
            writer.close()

    return respond


@dataclass
class Upstream:
    """Records every request with the number of the connection it came on; `respond` writes the answer."""

    respond: Answer = field(default_factory=answer)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    readers: list[asyncio.StreamReader] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.readers.append(reader)
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = Request(number, head, await reader.readexactly(length))
                self.requests.append(request)
                await self.respond(request, writer)
                if writer.is_closing():
                    return
        except asyncio.CancelledError:
            return  # the test is over; a cancelled handler task would be logged as an error
        finally:
            self.closed += 1
            writer.close()


@asynccontextmanager
async def serving(upstream: Upstream, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in upstream.writers:
            writer.close()
        await server.wait_closed()


def client(transport: H11Transport | None = None, timeout: float = 5.0) -> httpx.AsyncClient:
    """An httpx client over `transport` (a new H11Transport by default), for exercising it."""
    transport = transport or H11Transport(ssl.create_default_context())
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.005)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_keeps_the_connection_alive_between_requests() -> None:
    upstream = Upstream()

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            for _ in range(3):
                response = await http.get(url + "/v1/invoices/summary?x=1")
                assert (response.status_code, response.text) == (200, "ok")
            assert response.http_version == "HTTP/1.1"
            assert response.reason_phrase == "OK"

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 1, 1]
    assert upstream.requests[0].line == b"GET /v1/invoices/summary?x=1 HTTP/1.1"
    assert b"\r\nhost: 127.0.0.1:" in upstream.requests[0].head.lower()


def test_posts_a_form_body_with_its_length() -> None:
    upstream = Upstream()

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            await http.post(url + "/t/oauth2/v2.0/token", data={"grant_type": "client_credentials", "a": "b c"})

    run(go)
    (request,) = upstream.requests
    assert request.line == b"POST /t/oauth2/v2.0/token HTTP/1.1"
    assert request.body == b"grant_type=client_credentials&a=b+c"
    assert b"content-length: 35\r\n" in request.head.lower()


def test_a_connection_the_server_closes_is_not_reused() -> None:
    upstream = Upstream(answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", close=True))

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            for _ in range(2):
                assert (await http.get(url)).text == "ok"

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_an_idle_connection_closed_by_the_server_is_replaced_without_an_error() -> None:
    upstream = Upstream()

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            assert (await http.get(url)).text == "ok"
            for writer in upstream.writers:
                writer.close()  # the server times the idle connection out
            await until(lambda: upstream.closed == 1)
            assert (await http.get(url)).text == "ok"

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_bytes_arriving_on_an_idle_connection_retire_it() -> None:
    upstream = Upstream()

    async def go() -> None:
        transport = H11Transport(ssl.create_default_context())
        async with serving(upstream) as url, client(transport) as http:
            assert (await http.get(url)).text == "ok"
            upstream.writers[0].write(OK)  # an unasked-for answer must not be taken for the next one
            await upstream.writers[0].drain()
            await until(lambda: any(c._received for cs in transport._idle.values() for c in cs))
            upstream.respond = answer(OK.replace(b"ok", b"no"))
            assert (await http.get(url)).text == "no"

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_connections_idle_past_the_keepalive_expiry_are_not_reused() -> None:
    upstream = Upstream()

    async def go() -> None:
        transport = H11Transport(ssl.create_default_context(), keepalive_expiry=0.0)
        async with serving(upstream) as url, client(transport) as http:
            for _ in range(2):
                assert (await http.get(url)).text == "ok"
            await until(lambda: upstream.closed == 1)

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_chunked_and_gzip_bodies_reach_httpx_decoded() -> None:
    payload = b'{"balanceAmount": 1}' * 500
    packed = gzip.compress(payload)
    half = len(packed) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (packed[:half], packed[half:]))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
    upstream = Upstream(answer(head + chunks + b"0\r\n\r\n"))

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            for _ in range(2):
                assert (await http.get(url)).content == payload

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 1]


class RecordingTransport(H11Transport):
    """Keeps every connection it opens, so a test can look at its read state."""

    def __init__(self) -> None:
        super().__init__(ssl.create_default_context())
        self.opened: list[_Connection] = []

    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Connection:
        connection = await super()._connect(origin, timeout)
        self.opened.append(connection)
        return connection


def test_a_reader_that_falls_behind_pauses_the_socket_and_still_gets_the_whole_body() -> None:
    body = bytes(range(256)) * (24 * 1024 * 4)  # 24 MiB, far past the read high-water mark

    async def respond(_: Request, writer: asyncio.StreamWriter) -> None:
        await _send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), writer)
        for start in range(0, len(body), 1 << 20):
            await _send(body[start : start + (1 << 20)], writer)

    upstream = Upstream(respond)
    transport = RecordingTransport()

    async def go() -> None:
        async with serving(upstream) as url, client(transport) as http:
            async with http.stream("GET", url) as response:
                chunks = response.aiter_raw()
                received = bytearray(await anext(chunks))
                (connection,) = transport.opened
                # Not reading: the connection must stop taking bytes off the socket, not buffer the 24 MiB.
                await until(lambda: connection._reading_paused)
                assert connection._received_size <= _READ_HIGH_WATER + 256 * 1024
                async for chunk in chunks:
                    received += chunk
            assert received == body
            assert (await http.get(url)).content == body

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 1]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError),
        (b"", httpx.RemoteProtocolError),
        (b"NOT HTTP AT ALL\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["truncated-body", "closed-without-answer", "garbage"],
)
def test_broken_answers_raise_httpx_errors_and_retire_the_connection(raw: bytes, error: type[Exception]) -> None:
    upstream = Upstream(answer(raw, close=True))

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            with pytest.raises(error):
                await http.get(url)
            upstream.respond = answer()
            assert (await http.get(url)).text == "ok"

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_a_reset_connection_is_a_read_error() -> None:
    async def reset(_: Request, writer: asyncio.StreamWriter) -> None:
        # Linger 0: close sends a RST instead of a FIN.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    upstream = Upstream(reset)

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.get(url)

    run(go)


def test_read_timeout_and_refused_connect_map_to_httpx_errors() -> None:
    async def silent(_: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    upstream = Upstream(silent)

    async def go() -> None:
        transport = H11Transport(ssl.create_default_context())
        async with serving(upstream) as url, client(transport, timeout=0.2) as http:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url)
            assert time.monotonic() - started < 5
            port = url.rsplit(":", 1)[1]
        # The server is gone: nothing listens on its port any more.
        async with client(transport) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")

    run(go)


def test_a_cancelled_exchange_never_leaves_its_connection_for_the_next_request() -> None:
    async def slow_body(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.connection == 1:
            await _send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok", writer)
            await asyncio.sleep(30)  # the rest never comes
        else:
            await _send(OK, writer)

    upstream = Upstream(slow_body)

    async def go() -> None:
        async with serving(upstream) as url, client() as http:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await http.get(url)
            assert (await http.get(url)).text == "ok"
            await until(upstream.readers[0].at_eof)  # the client dropped the half-read connection

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 2]


def test_unsupported_scheme() -> None:
    async def go() -> None:
        async with client() as http:
            with pytest.raises(httpx.UnsupportedProtocol):
                await http.get("ftp://127.0.0.1/")

    run(go)


def test_tls_verifies_the_server_against_the_given_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    upstream = Upstream()

    async def go() -> None:
        async with serving(upstream, server_context) as url:
            async with client(H11Transport(trusting)) as http:
                for _ in range(2):
                    assert (await http.get(url)).text == "ok"
            async with client() as http:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await http.get(url)

    run(go)
    assert [r.connection for r in upstream.requests] == [1, 1]


SUMMARY = b'{"balanceAmount": 12.5, "currencyCode": "EUR", "currencySymbol": "\xe2\x82\xac"}'
SUMMARY_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SUMMARY), SUMMARY)


async def _poll_summary(config: Config) -> float | None:
    pool = ClientPool(config)
    try:
        async with pool.slot() as pc:
            (summary,) = await pc.get_invoice_summaries("summary", Secret("access-token"))
    finally:
        await pool.aclose()
    return summary.balance


@pytest.fixture
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_client_pool_sends_through_an_environment_proxy(
    tmp_path: Path, clean_proxy_environment: pytest.MonkeyPatch
) -> None:
    proxy = Upstream(answer(SUMMARY_ANSWER))

    async def go() -> None:
        async with serving(proxy) as proxy_url:
            clean_proxy_environment.setenv("HTTP_PROXY", proxy_url)
            assert await _poll_summary(make_config(tmp_path, tenant_yaml("a"))) == 12.5

    run(go)
    # Absolute-form request line: what a forward proxy gets.
    assert [r.line for r in proxy.requests] == [b"GET http://pc.test/v1/invoices/summary HTTP/1.1"]


def test_client_pool_goes_straight_to_a_no_proxy_host(
    tmp_path: Path, clean_proxy_environment: pytest.MonkeyPatch
) -> None:
    proxy, direct = Upstream(answer(SUMMARY_ANSWER)), Upstream(answer(SUMMARY_ANSWER))

    async def go() -> None:
        async with serving(proxy) as proxy_url, serving(direct) as url:
            clean_proxy_environment.setenv("HTTP_PROXY", proxy_url)
            clean_proxy_environment.setenv("NO_PROXY", "localhost,127.0.0.1")
            assert await _poll_summary(make_config(tmp_path, tenant_yaml("a"), api_url=url)) == 12.5

    run(go)
    assert proxy.requests == []
    assert [r.line for r in direct.requests] == [b"GET /v1/invoices/summary HTTP/1.1"]


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        ({}, "https://api.partnercenter.microsoft.com", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.partnercenter.microsoft.com", "http://proxy:3128"),
        ({"https_proxy": "http://lower:3128"}, "https://login.microsoftonline.com", "http://lower:3128"),
        ({"HTTP_PROXY": "http://proxy:3128"}, "https://api.partnercenter.microsoft.com", None),
        ({"ALL_PROXY": "socks5://proxy:1080"}, "https://api.partnercenter.microsoft.com", "socks5://proxy:1080"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".microsoft.com"}, "https://api.partnercenter.microsoft.com", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "microsoft.com"}, "https://login.microsoftonline.com", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://login.microsoftonline.com", None),
    ],
)
def test_environment_proxy_reads_the_variables_curl_and_httpx_read(
    clean_proxy_environment: pytest.MonkeyPatch, environment: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in environment.items():
        clean_proxy_environment.setenv(name, value)
    assert environment_proxy(url) == expected


def test_requests_on_a_kept_connection_leave_no_cyclic_garbage() -> None:
    # Garbage only the cyclic collector can free makes it run during polling, and every pass stalls scrapes.
    upstream = Upstream()
    transport = H11Transport(ssl.create_default_context())

    async def go() -> int:
        async with serving(upstream) as url:
            target = httpx.URL(url + "/v1/invoices/summary")
            for round_ in range(2):
                if round_:
                    gc.collect()  # first-use caches are not garbage
                for _ in range(20):
                    response = await transport.handle_async_request(httpx.Request("GET", target))
                    assert await response.aread() == b"ok"
                    await response.aclose()
            unreachable = gc.collect()
            await transport.aclose()
            return unreachable

    gc.disable()
    try:
        unreachable = asyncio.run(go())
    finally:
        gc.enable()
    assert {r.connection for r in upstream.requests} == {1}
    assert unreachable == 0


def test_a_request_h11_refuses_to_write_names_no_header_value() -> None:
    secret = "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi-secret-token"
    upstream = Upstream()

    async def go() -> None:
        async with serving(upstream) as url:
            transport = H11Transport(ssl.create_default_context())
            # h11 rejects a NUL in a header value; httpx's own checks let it through.
            request = httpx.Request("GET", url, headers={"Authorization": secret + "\x00"})
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await transport.handle_async_request(request)
            await transport.aclose()
            assert "secret-token" not in str(caught.value)

    run(go)
    assert upstream.requests == []
