"""Property tests: whatever bytes a client sends, and however it leaves, the server answers in HTTP/1.1 or closes.

Raw requests go over real sockets to running servers (plain, with basic auth, and with basic auth over TLS) whose
limits are short, so that deadlines cost little. After each example: the server thread is alive, every answer
parsed, none was a 500, nothing reached the exporter's log at ERROR (or the server's at WARNING, but for a full
server), stderr or threading.excepthook, a fresh /healthz answers at once, and every connection slot is free again.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.config.web import load_web_config
from exporter.server.connections import Limits, serve_in_thread
from exporter.server.http import ExporterServer, Routes
from tests.fakes import FakeUpstream, tenant_yaml
from tests.support import captured_logs, wait_until
from tests.test_server import _hash, _start, _tls_web_config, _write_config

# Short enough that a client keeping its connection open costs a fraction of a second; a few slots, so that
# checking all of them are free again is cheap.
LIMITS = Limits(connections=4, header_timeout=0.4, idle_timeout=0.2, write_timeout=2.0)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
USER, PASSWORD = b"prometheus", b"pw"


@dataclass
class _Served:
    server: ExporterServer
    thread: threading.Thread
    tls: ssl.SSLContext | None  # a client's, trusting the server's certificate

    def connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        except BaseException:
            sock.close()
            raise

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Served]]:
    """Plain, with basic auth, and with basic auth over TLS: servers over one app's routes."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config_file = tmp / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    users = f"basic_auth_users:\n  {USER.decode()}: '{_hash(PASSWORD.decode())}'\n"
    web = tmp / "web.yml"
    web.write_text(users)
    webs = {"plain": None, "auth": load_web_config(web), "tls": load_web_config(_tls_web_config(tmp, users))}
    trust = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    app = _start(config_file, FakeUpstream())
    served: dict[str, _Served] = {}
    try:
        for name, web_config in webs.items():
            routes = Routes(app.exposition, lambda: app.store.current, app.reload, web_config)
            server = ExporterServer("127.0.0.1", 0, routes, LIMITS)
            served[name] = _Served(server, serve_in_thread(server), trust if name == "tls" else None)
        yield served
    finally:
        for s in served.values():
            s.server.shutdown()
            s.server.server_close()
        app.stop()


# --- what a client sends --------------------------------------------------------------------------------------------

T = TypeVar("T")


def mostly(usual: st.SearchStrategy[T], odd: st.SearchStrategy[T], odds: int = 2) -> st.SearchStrategy[T]:
    """`usual` but `odds` times in 10 (shrinking towards it), so that most requests get past the parser."""
    return st.sampled_from(range(10)).flatmap(lambda i: odd if i < odds else usual)


EOL = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]), odds=1)
methods = mostly(
    st.sampled_from([b"GET", b"GET", b"GET", b"HEAD", b"POST", b"PUT"]),
    st.sampled_from([b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT", b"PATCH", b"BREW", b"get", b"G\x00T", b"\xc3\xa9"])
    | st.sampled_from([b"", b"do_GET", b"GET GET"])
    | st.binary(max_size=8),
)
targets = mostly(
    st.sampled_from([b"/", b"/metrics", b"/metrics", b"/healthz", b"/readyz", b"/-/reload", b"/metrics?x=1&y"]),
    st.sampled_from([b"*", b"http://127.0.0.1/metrics", b"//metrics", b"/nope", b"/%00", b"/\xff\xfe", b"/metrics#f"])
    | st.sampled_from([b"", b"/\x00", b"/ /"])
    | st.binary(max_size=16)
    | st.sampled_from([1000, 65_400, 65_536, 70_000]).map(lambda n: b"/" + b"a" * n),
)
versions = mostly(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1 x", b"HTTP/1.12", b"HTTP/1", b"http/1.1"])
    | st.sampled_from([b"HTTP/\xc2\xb2.1", b"HTTP/01.01", b"HTTP/1.1\x00", b"HTTP/1.01", b"HTTP/9999999999.1"])
    | st.binary(max_size=10),
)
request_lines = mostly(
    st.builds(
        lambda method, sep, target, version, eol: method + sep + target + (sep + version if version else b"") + eol,
        methods,
        mostly(st.just(b" "), st.sampled_from([b"  ", b"\t", b"\x0b"]), odds=1),
        targets,
        versions,
        EOL,
    ),
    st.binary(max_size=40),
    odds=1,
)


def _basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


authorizations = mostly(
    st.just(_basic(USER + b":" + PASSWORD)),
    st.sampled_from(
        [
            _basic(USER + b":wrong"),
            _basic(b"nobody:" + PASSWORD),
            _basic(USER),  # no colon
            _basic(b"\xff\xfe:" + PASSWORD),  # not UTF-8
            _basic(USER + b":" + b"p" * 100),  # past bcrypt's 72 bytes
            _basic(USER + b":\x00pw"),
            b"basic " + base64.b64encode(USER + b":" + PASSWORD),
            b"Basic !!!not-base64",
            b"Basic " + base64.b64encode(USER + b":" + PASSWORD)[:-1],
            b"Basic \xe9\xe9\xe9",
            b"Basic",
            b"Bearer x",
            b"",
        ]
    )
    | st.binary(max_size=24).map(lambda b: b"Basic " + b),
    odds=5,
)
# Whatever a strip() or a float() might take for white space, in the header's Latin-1.
_PADDING = st.sampled_from(
    [b"", b"", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x85", b"\xa0"]
)
qvalues = st.builds(
    lambda before, q, after: before + q + after,
    _PADDING,
    st.sampled_from([b"0", b"1", b"0.5", b"1.000", b"1.0001", b"-1", b"nan", b"inf", b"1e3", b"", b"0.", b"1."])
    | st.sampled_from([b"0x1", b"\xb2", b"1_0", b"\x00", b"0.\xb2"])
    | st.binary(max_size=5),
    _PADDING,
)
media = st.sampled_from(
    [b"application/openmetrics-text", b"text/plain", b"*/*", b"gzip", b"GZIP", b"identity", b"br", b"", b"\xff"]
) | st.binary(max_size=6)
weighted_lists = st.lists(
    st.builds(
        lambda m, params, q: m + params + (b";q=" + q if q is not None else b""),
        media,
        st.sampled_from([b"", b";version=1.0.0", b"; version=0.0.4", b";;", b";q", b";=1"]),
        mostly(qvalues, st.none()),
    ),
    max_size=4,
).map(b",".join)

# The body's declared length: as sent, off by a little, or whatever a client claims.
LENGTH_AUTO = st.integers(min_value=-3, max_value=3)
lengths = LENGTH_AUTO | st.sampled_from(
    [b"0", b"5", b"-1", b"abc", b"\xc2\xb2", b" 3", b"3 ", b"99999999999999999999", b"65537", b"1e3", b"+4", b""]
)
headers = st.one_of(
    st.tuples(st.just(b"Host"), st.sampled_from([b"t", b"", b"127.0.0.1:1", b"\xff"])),
    st.tuples(st.just(b"Authorization"), authorizations),
    st.tuples(st.sampled_from([b"Accept", b"Accept-Encoding"]), weighted_lists),
    st.tuples(st.just(b"Content-Length"), lengths),
    st.tuples(st.just(b"Transfer-Encoding"), st.sampled_from([b"chunked", b"gzip, chunked", b"identity", b"\xff"])),
    st.tuples(st.just(b"Connection"), st.sampled_from([b"close", b"keep-alive", b"Upgrade", b"\x00"])),
    st.tuples(st.just(b"Expect"), st.sampled_from([b"100-continue", b"100-Continue", b"200-ok"])),
    st.tuples(st.just(b"X-Big"), st.sampled_from([1000, 60_000, 65_000, 65_600, 70_000]).map(lambda n: b"v" * n)),
    st.tuples(st.just(b"X-Fold"), st.sampled_from([b"a\r\n continued", b"a\n\tcontinued", b"\r\n folded"])),
    st.tuples(st.sampled_from([b"NoColon", b"", b" Leading", b"\x00\x01", b"Name "]), st.binary(max_size=8)),
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=16)),
)
bodies = mostly(st.just(b""), st.binary(max_size=40), odds=4) | st.sampled_from(
    [
        b"5\r\nhello\r\n0\r\n\r\n",
        b"zz\r\nxx\r\n",
        b"ffffffffffffffff\r\n",
        b"0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request, more or less."""
    body = draw(bodies)
    out = [draw(request_lines)]
    fields = draw(st.lists(headers, max_size=6))
    if draw(mostly(st.just(True), st.just(False))):  # past basic auth, on the server that has it
        fields.insert(draw(st.integers(0, len(fields))), (b"Authorization", _basic(USER + b":" + PASSWORD)))
    for name, value in fields:
        # A Content-Length off by an int from the body's.
        raw = str(max(0, len(body) + value)).encode() if isinstance(value, int) else value
        colon = draw(mostly(st.just(b": "), st.sampled_from([b":", b" : ", b"\t:"]), odds=1))
        out.append(name + colon + raw + draw(EOL))
    out.append(draw(EOL))
    return b"".join(out) + body


@dataclass(frozen=True)
class Client:
    """How a client sends its bytes and how it leaves."""

    data: bytes
    pieces: int  # sent in this many writes, a moment apart
    leaves: str  # "shutdown": half-close, then read; "keep": read until the server closes; "reset"; "close"

    def __repr__(self) -> str:
        """Runs of one byte written as repetitions: a 70 kB head is short to print, and pastes back as it was."""
        parts, at = [], 0
        for run in re.finditer(rb"(.)\1{99,}", self.data, flags=re.DOTALL):
            parts += [repr(self.data[at : run.start()])] if run.start() > at else []
            parts.append(f"{run[1]!r} * {len(run[0])}")
            at = run.end()
        parts += [repr(self.data[at:])] if at < len(self.data) or not parts else []
        return f"Client({' + '.join(parts)}, {self.pieces}, {self.leaves!r})"


clients = st.builds(
    Client,
    st.lists(requests(), min_size=1, max_size=3).map(b"".join),
    mostly(st.just(1), st.sampled_from([2, 3]), odds=2),
    mostly(st.just("shutdown"), st.sampled_from(["keep", "keep", "reset", "close"]), odds=4),
)


# --- what the server must answer ------------------------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]*")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([\x20-\x7e]*)")


def parse_answers(raw: bytes, head_sent: bool, truncated: bool) -> list[int]:
    """The statuses of the HTTP/1.1 answers `raw` holds, whole (the last may be cut short if `truncated`)."""
    statuses: list[int] = []
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            assert truncated, f"an answer's head does not end: {raw[:200]!r}"
            break
        status_line, *lines = raw[:end].split(b"\r\n")
        raw = raw[end + 4 :]
        match = _STATUS_LINE.fullmatch(status_line)
        assert match, f"not a status line: {status_line[:200]!r}"
        status = int(match[1])
        statuses.append(status)
        fields: dict[bytes, list[bytes]] = {}
        for line in lines:
            header = _HEADER_LINE.fullmatch(line)
            assert header, f"not a header line: {line[:200]!r}"
            fields.setdefault(header[1].lower(), []).append(header[2])
        assert b"transfer-encoding" not in fields
        if status < 200:  # 100 Continue: no body, the answer follows
            continue
        [length] = fields[b"content-length"]
        assert length.isdigit(), length
        size = int(length)
        # A HEAD's answer has no body; what follows it is the next answer or nothing (no body here says "HTTP/1.").
        no_body = status in (204, 304) or (head_sent and size and (not raw or raw.startswith(b"HTTP/1.")))
        if not no_body:
            if len(raw) < size:
                assert truncated, f"{status}: {len(raw)} of {size} body bytes"
                break
            raw = raw[size:]
        if fields.get(b"connection") == [b"close"]:
            assert not raw, f"an answer after Connection: close: {raw[:200]!r}"
    return statuses


def converse(served: _Served, client: Client) -> tuple[bytes, bool]:
    """Play `client`; what came back, and whether the connection was reset (so that it may be cut short)."""
    received = b""
    with served.connect(timeout=5) as sock:
        try:
            step = -(-len(client.data) // client.pieces)
            for start in range(0, len(client.data), step):
                if start:
                    time.sleep(0.01)
                sock.sendall(client.data[start : start + step])
            if client.leaves == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return b"", True
            if client.leaves == "close":
                return b"", True
            if client.leaves == "shutdown" and served.tls is None:
                # Over TLS, a half-close without close_notify is a truncation, which OpenSSL answers with a
                # decode_error alert after the answers; there the client waits for the idle timeout instead.
                sock.shutdown(socket.SHUT_WR)
            # Both ways the server must close: at EOF, or past its deadlines (a socket timeout fails the example).
            while chunk := sock.recv(65536):
                received += chunk
        except ssl.SSLEOFError:  # the server closes TCP without a TLS close_notify
            return received, False
        except (ConnectionResetError, BrokenPipeError):
            # The server closed with input unread (a head past the cap): the kernel resets, maybe before we read.
            return received, True
    return received, False


def healthz(served: _Served) -> int:
    with served.connect(timeout=2) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = b""
        with contextlib.suppress(ssl.SSLEOFError):
            while chunk := sock.recv(65536):
                raw += chunk
    [status] = parse_answers(raw, head_sent=False, truncated=False)
    return status


def all_slots_serve(served: _Served) -> bool:
    """Whether `LIMITS.connections` connections at once are all served (a full server closes one at once)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(served.connect(timeout=2)) for _ in range(LIMITS.connections)]
        for sock in socks:  # all connected before any is answered: each holds a slot
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        return all(sock.recv(65536).startswith(b"HTTP/1.1 200 OK") for sock in socks)


@contextlib.contextmanager
def watched() -> Iterator[tuple[list[logging.LogRecord], io.StringIO, list[threading.ExceptHookArgs]]]:
    """What the exporter logs, what reaches stderr, and exceptions that escape threads, while in the block."""
    stderr, escaped = io.StringIO(), []
    hook, threading.excepthook = threading.excepthook, escaped.append
    try:
        with captured_logs("exporter") as records, contextlib.redirect_stderr(stderr):
            yield records, stderr, escaped
    finally:
        threading.excepthook = hook


def _bad(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
        return True
    # A full server says so (the slot check fills it); a client's doing is never more than a debug line.
    return (
        record.levelno >= logging.WARNING
        and record.name.startswith("exporter.server")
        and not record.getMessage().startswith("connection limit reached")
    )


@FUZZ
@given(client=clients, server=st.sampled_from(["plain", "auth", "tls"]))
def test_whatever_a_client_sends_the_server_answers_in_http_or_closes(
    servers: dict[str, _Served], client: Client, server: str
) -> None:
    check(servers[server], client)


@st.composite
def route_requests(draw: st.DrawFn) -> bytes:
    """A well-formed request to a route, credentials included, with Accept headers and others as odd as they come."""
    method, path = draw(
        mostly(
            st.tuples(st.sampled_from([b"GET", b"GET", b"HEAD"]), st.just(b"/metrics")),
            st.tuples(
                st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT"]), st.sampled_from([b"/", b"/readyz", b"/-/reload"])
            ),
            odds=3,
        )
    )
    fields = [(b"Host", b"t"), (b"Authorization", _basic(USER + b":" + PASSWORD))]
    for name in (b"Accept", b"Accept-Encoding"):
        fields += [(name, value) for value in draw(mostly(weighted_lists.map(lambda v: [v]), st.just([])))]
    fields += draw(st.lists(headers, max_size=2))  # the odd Authorization, Content-Length, Expect...
    head = b"".join(name + b": " + (b"0" if isinstance(value, int) else value) + b"\r\n" for name, value in fields)
    return method + b" " + path + b" HTTP/1.1\r\n" + head + b"\r\n"


@FUZZ
@given(
    data=st.lists(route_requests(), min_size=1, max_size=2).map(b"".join),
    server=st.sampled_from(["plain", "auth", "tls"]),
)
def test_whatever_headers_a_route_gets_it_answers_without_a_bug(
    servers: dict[str, _Served], data: bytes, server: str
) -> None:
    # Past the parser and the credentials, into the routes: the Accept headers' weights, the reload, the page.
    check(servers[server], Client(data, 1, "shutdown"))


def check(served: _Served, client: Client) -> None:
    """Play `client` against `served`, and check the server and its answers."""
    with watched() as (records, stderr, escaped):
        raw, reset = converse(served, client)
        statuses = parse_answers(raw, head_sent=b"HEAD" in client.data, truncated=reset)
        assert 500 not in statuses
        event(f"client {client.leaves}, {min(len(statuses), 2)} answers")
        for status in set(statuses):
            event(f"answered {status}")
        assert served.thread.is_alive()
        assert healthz(served) == 200  # at once, on a fresh connection
        wait_until(lambda: all_slots_serve(served), timeout=5, what="every connection slot free again")
        # Once the check's own connections are gone, the next example starts with every slot free.
        wait_until(lambda: served.server._slots._value == LIMITS.connections, timeout=5, what="slots given back")
    assert not [r for r in records if _bad(r)], [(r.levelname, r.getMessage()) for r in records]
    assert not escaped, escaped
    assert not stderr.getvalue(), stderr.getvalue()
