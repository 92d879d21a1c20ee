"""The exporter's HTTP surface, in-process against a scripted upstream: routes, reload, auth, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from exporter import __version__
from exporter.app import App
from exporter.config import load_config
from exporter.config.web import load_web_config
from exporter.logs import LogfmtFormatter
from exporter.poller import RetryPolicy
from exporter.server.connections import DEFAULT_LIMITS, Limits, serve_in_thread
from exporter.server.http import ExporterServer, Routes
from exporter.server.landing import landing_page
from exporter.snapshot import Snapshot, SnapshotStore
from tests.fakes import FakeUpstream, make_config, respond, tenant_yaml
from tests.support import wait_until

FAST = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.001)


def _write_config(path: Path, tenants: str, interval: str = "1m") -> None:
    path.write_text(
        f"interval: {interval}\ntimeout: 2s\napi_url: http://pc.test\nlogin_url: http://login.test\ntenants:\n"
        + "".join("  " + line + "\n" for line in tenants.splitlines())
    )


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


def _start(
    config_file: Path, upstream: FakeUpstream, web_config_file: Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> App:
    app = App(
        load_config(config_file),
        config_path=config_file,
        listen=("127.0.0.1", 0),
        web_config=load_web_config(web_config_file) if web_config_file else None,
        retry=FAST,
        transport_factory=upstream.transport,
        render_settle=0.01,
        server_limits=limits,
    )
    app.start()
    return app


@pytest.fixture
def running(tmp_path: Path, upstream: FakeUpstream) -> Iterator[tuple[App, Path]]:
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso") + tenant_yaml("broken"))
    upstream.tenants["broken.onmicrosoft.com"] = [
        respond(503, '{"code":"x","description":"<script>alert(1)</script>"}')
    ]
    app = _start(config_file, upstream)
    yield app, config_file
    app.stop()


def _metric(app: App, line_prefix: str) -> str | None:
    body = httpx.get(app.url + "/metrics").text
    return next((ln.rsplit(" ", 1)[1] for ln in body.splitlines() if ln.startswith(line_prefix)), None)


def test_endpoints(running: tuple[App, Path]) -> None:
    app, _ = running
    wait_until(lambda: httpx.get(app.url + "/readyz").status_code == 200, what="readiness")
    assert httpx.get(app.url + "/healthz").text == "OK\n"
    metrics = httpx.get(app.url + "/metrics", headers={"Accept-Encoding": "identity"})
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'partnercenter_up{tenant="contoso"} 1.0' in metrics.text
    assert 'partnercenter_up{tenant="broken"} 0.0' in metrics.text
    assert "process_resident_memory_bytes" in metrics.text
    om = httpx.get(app.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert httpx.get(app.url + "/nope").status_code == 404
    get_reload = httpx.get(app.url + "/-/reload")
    assert get_reload.status_code == 405


def test_metrics_gzip_when_asked(running: tuple[App, Path]) -> None:
    app, _ = running
    with httpx.Client() as client:
        raw = client.get(app.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert "partnercenter_exporter_build_info" in raw.text  # httpx decoded a single gzip member
        plain = client.get(app.url + "/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in plain.headers
    # On the wire: one gzip stream, whole.
    raw_answer = _exchange(app, b"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
    status, headers, body, _ = _answer(raw_answer)
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert b"partnercenter_exporter_build_info" in gzip.decompress(body)


PROMETHEUS_2 = (  # Prometheus 2's default scrape Accept
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# Prometheus 3 with scrape_protocols: [PrometheusText0.0.4, OpenMetricsText1.0.0]: the operator prefers text.
TEXT_FIRST = "text/plain;version=0.0.4;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.4"


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_2, True),
        ("application/openmetrics-text; version=1.0.0", True),
        (TEXT_FIRST, False),
        ("application/openmetrics-text;q=0, text/plain;version=0.0.4", False),  # q=0: "not acceptable"
        ("*/*", False),
        ("", False),
    ],
)
def test_the_format_is_chosen_by_the_accept_headers_weights(
    running: tuple[App, Path], accept: str, openmetrics: bool
) -> None:
    app, _ = running
    answer = httpx.get(app.url + "/metrics", headers={"Accept": accept} if accept else {})
    expected = "application/openmetrics-text" if openmetrics else "text/plain; version=0.0.4"
    assert answer.headers["content-type"].startswith(expected)


def test_a_garbled_weight_is_ignored_like_any_invalid_one(running: tuple[App, Path]) -> None:
    # str.strip() takes \x1c-\x1f for white space, float() does not: the weight passed the check, then raised.
    app, _ = running
    raw = _exchange(
        app,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: application/openmetrics-text;q=\x1c0, text/plain;q=0.5\r\n"
        b"Accept-Encoding: gzip;q=\x1f1\r\nConnection: close\r\n\r\n",
    )
    status, headers, _, _ = _answer(raw)
    assert (status, headers["content-type"]) == (200, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("lengths", [(b"-1",), (b"abc",), (b"\xc2\xb2",), (b"0", b"30")])
def test_a_request_of_unknown_length_is_refused_and_its_connection_closed(
    running: tuple[App, Path], lengths: tuple[bytes, ...]
) -> None:
    # RFC 9112 6.3: where the request ends is unknown; what follows must not be taken for another request.
    app, _ = running
    heads = b"".join(b"Content-Length: " + n + b"\r\n" for n in lengths)
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
    raw = _exchange(app, b"POST /-/reload HTTP/1.1\r\nHost: t\r\n" + heads + b"\r\n" + smuggled)
    status, headers, _, rest = _answer(raw)
    assert (status, headers["connection"], rest) == (400, "close", b"")


def test_landing_page_lists_tenants_and_escapes_upstream_text(running: tuple[App, Path]) -> None:
    app, _ = running
    wait_until(lambda: httpx.get(app.url + "/readyz").status_code == 200, what="readiness")
    page = httpx.get(app.url + "/")
    assert page.headers["content-type"].startswith("text/html")
    assert "<td>contoso</td>" in page.text
    assert '<td class="down">down</td>' in page.text
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert 'href="metrics"' in page.text


@pytest.mark.parametrize(("interval", "shown"), [("90s", "1m30s"), ("1h59m", "1h59m"), ("36h", "36h"), ("10m", "10m")])
def test_landing_page_gives_the_interval_as_configured(tmp_path: Path, interval: str, shown: str) -> None:
    store = SnapshotStore(make_config(tmp_path, tenant_yaml("contoso"), interval=interval), time.time())
    assert f"every\n{shown}." in landing_page(store.current)


def test_readyz_waits_for_every_tenant(tmp_path: Path, upstream: FakeUpstream) -> None:
    gate = threading.Event()

    async def blocked(request: httpx.Request) -> httpx.Response:
        await asyncio.to_thread(gate.wait, 10)
        return httpx.Response(200, json={"currencyCode": "EUR", "balanceAmount": 3})

    upstream.tenants["slow.onmicrosoft.com"] = [blocked]  # type: ignore[list-item]
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("slow") + tenant_yaml("quick"))
    app = _start(config_file, upstream)
    try:
        wait_until(lambda: _metric(app, 'partnercenter_up{tenant="quick"}') == "1.0", what="quick tenant up")
        not_ready = httpx.get(app.url + "/readyz")
        assert not_ready.status_code == 503
        assert "1 of 2" in not_ready.text
        gate.set()
        wait_until(lambda: httpx.get(app.url + "/readyz").status_code == 200, what="readiness")
    finally:
        gate.set()
        app.stop()


def test_reload_rejects_bad_config_and_keeps_running(running: tuple[App, Path]) -> None:
    app, config_file = running
    good = config_file.read_text()
    config_file.write_text(good.replace("client_id:", "clientid:", 1))
    answer = httpx.post(app.url + "/-/reload")
    assert answer.status_code == 400
    assert "tenants[0].clientid" in answer.text
    # The answer comes after the gauge changed: a script may reload and check it at once.
    assert _metric(app, "partnercenter_config_last_reload_successful") == "0.0"
    assert {t.name for t in app.store.current.config.tenants} == {"contoso", "broken"}

    running_tenants = {t.name: t for t in app.store.current.config.tenants}
    config_file.write_text(good + "".join("  " + ln + "\n" for ln in tenant_yaml("added").splitlines()))
    ok = httpx.post(app.url + "/-/reload")
    assert ok.status_code == 200, ok.text
    reloaded = {t.name: t for t in app.store.current.config.tenants}
    assert all(reloaded[name] == tenant for name, tenant in running_tenants.items())
    assert _metric(app, "partnercenter_config_last_reload_successful") == "1.0"
    wait_until(lambda: _metric(app, 'partnercenter_up{tenant="added"}') == "1.0", what="new tenant polled")


def test_a_reload_that_fails_unexpectedly_is_rejected_without_quoting_the_file(
    running: tuple[App, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A library's exception (PyYAML's KeyError for `!!bool <secret>` was one) may quote what it read.
    def broken(path: Path) -> None:
        raise KeyError("quoted-secret-value")

    app, _ = running
    monkeypatch.setattr("exporter.app.load_config", broken)
    answer = httpx.post(app.url + "/-/reload")
    assert (answer.status_code, answer.text) == (400, "config reload failed: internal error\n")
    assert _metric(app, "partnercenter_config_last_reload_successful") == "0.0"
    # As the exporter writes them: caplog.text holds messages and tracebacks, not the fields a leak would be in.
    assert not [r for r in caplog.records if "quoted-secret-value" in LogfmtFormatter().format(r)]
    assert [r.err for r in caplog.records if r.getMessage().startswith("config reload failed")] == ["KeyError"]  # type: ignore[attr-defined]


def test_reload_removes_series_of_removed_tenants(running: tuple[App, Path], upstream: FakeUpstream) -> None:
    app, config_file = running
    wait_until(lambda: _metric(app, 'partnercenter_up{tenant="broken"}') == "0.0", what="first poll")
    _write_config(config_file, tenant_yaml("contoso"))
    assert httpx.post(app.url + "/-/reload").status_code == 200
    wait_until(lambda: 'tenant="broken"' not in httpx.get(app.url + "/metrics").text, what="series gone")
    assert upstream.count("contoso.onmicrosoft.com", "token") == 1  # unchanged tenant kept its token


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _tls_web_config(tmp_path: Path, extra: str = "") -> Path:
    """A web config serving TLS with a certificate for 127.0.0.1, signed by tmp_path/ca.pem."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n" + extra)
    return web


def test_basic_auth_and_tls(tmp_path: Path, upstream: FakeUpstream) -> None:
    web = _tls_web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{_hash('s3cr3t-pass')}'\n")
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, web)
    try:
        assert app.url.startswith("https://")
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with httpx.Client(verify=verify) as client:
            denied = client.get(app.url + "/metrics")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic")
            assert client.get(app.url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
            assert client.get(app.url + "/", auth=("nobody", "s3cr3t-pass")).status_code == 401
            allowed = client.get(app.url + "/metrics", auth=("prometheus", "s3cr3t-pass"))
            assert allowed.status_code == 200
            assert "partnercenter_exporter_build_info" in allowed.text
            assert client.get(app.url + "/healthz").status_code == 200  # probes need no credentials
            assert client.get(app.url + "/readyz").status_code in (200, 503)
            assert client.head(app.url + "/readyz").status_code in (200, 503)
            assert client.post(app.url + "/-/reload").status_code == 401
        with pytest.raises(httpx.ConnectError):
            httpx.get(app.url + "/healthz")  # untrusted certificate
        # A scraper with the wrong scheme is told, as Go's net/http tells it, not reset.
        plain = httpx.get(app.url.replace("https://", "http://") + "/metrics")
        assert (plain.status_code, plain.text) == (400, "Client sent an HTTP request to an HTTPS server.\n")
    finally:
        app.stop()


def test_auth_excluded_paths_are_served_without_credentials(tmp_path: Path, upstream: FakeUpstream) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{_hash('pw')}'\nauth_excluded_paths: [/]\n")
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, web)
    try:
        assert httpx.get(app.url + "/").status_code == 200
        assert httpx.get(app.url + "/readyz").status_code in (200, 503)
        assert httpx.get(app.url + "/metrics").status_code == 401
        assert httpx.get(app.url + "/-/reload").status_code == 401
        assert httpx.get(app.url + "/metrics", auth=("prometheus", "pw")).status_code == 200
    finally:
        app.stop()


def _read_answers(sock: socket.socket, count: int) -> bytes:
    received = b""
    while received.count(b"HTTP/1.1 200 OK") < count or not received.endswith(b"OK\n"):
        chunk = sock.recv(65536)  # the socket's timeout fails the test if an answer never comes
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    return received


_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_pipelined_requests_are_all_answered(running: tuple[App, Path]) -> None:
    # The second request is read with the first, so it waits in the server's buffer, not in the socket.
    app, _ = running
    with socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10) as sock:
        sock.sendall(_HEALTHZ + _HEALTHZ)
        assert _read_answers(sock, 2).count(b"HTTP/1.1 200 OK") == 2


def test_pipelined_requests_are_all_answered_over_tls(tmp_path: Path, upstream: FakeUpstream) -> None:
    # One TLS record longer than the server's read buffer: once the server has read part of it, the rest (and the
    # second request) is decrypted and waiting in TLS while the socket is empty.
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, _tls_web_config(tmp_path))
    try:
        first = _HEALTHZ.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"p" * 9000 + b"\r\n\r\n")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with (
            socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(first + _HEALTHZ)
            assert _read_answers(sock, 2).count(b"HTTP/1.1 200 OK") == 2
    finally:
        app.stop()


def _exchange(app: App, data: bytes) -> bytes:
    """Send `data` on a new connection, say nothing more, and read until the server closes it."""
    received = b""
    with socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10) as sock:
        sock.sendall(data)
        # The server may have closed already, with part of `data` unread (a request head over the limit): then
        # the kernel resets the connection, after the answer.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
    return received


def _answer(raw: bytes, head_only: bool = False) -> tuple[int, dict[str, str], bytes, bytes]:
    """The first answer in `raw`: status, headers (lower-case names), body, and what follows it."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers["content-length"])
    return int(status_line.split(" ")[1]), headers, rest[:length], rest[length:]


def _ready(app: App) -> None:
    wait_until(lambda: httpx.get(app.url + "/readyz").status_code == 200, what="readiness")


def test_head_answers_like_get_without_a_body(running: tuple[App, Path]) -> None:
    app, _ = running
    _ready(app)
    for path in ("/metrics", "/", "/healthz", "/readyz"):
        get = httpx.get(app.url + path, headers={"Accept-Encoding": "identity"})
        head = httpx.head(app.url + path, headers={"Accept-Encoding": "identity"})
        assert (head.status_code, head.headers["content-type"]) == (get.status_code, get.headers["content-type"])
        assert int(head.headers["content-length"]) > 0, path
    # On the wire, the next answer follows a HEAD answer's head straight away: no body went out.
    raw = _exchange(app, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, _, rest = _answer(raw, head_only=True)
    assert (status, headers["content-length"]) == (200, "3")
    assert _answer(rest)[::2] == (200, b"OK\n")


_LONG = b"a" * 70_000


@pytest.mark.parametrize(
    ("request_bytes", "status", "allow"),
    [
        (b"DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 405, "GET, HEAD"),
        (b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody", 405, "GET, HEAD"),
        (b"OPTIONS /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 405, "GET, HEAD"),
        (b"GET /-/reload HTTP/1.1\r\nHost: t\r\n\r\n", 405, "POST, PUT"),
        (b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, None),
        (b"BREW /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 501, None),
        (b"GET /metrics HTTP/2.0\r\nHost: t\r\n\r\n", 505, None),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage\r\n\r\n", 400, None),
        (b"GET / HTTP/1.1\r\nX-Long: " + _LONG + b"\r\n\r\n", 431, None),
        (b"GET /healthz\r\n\r\n", 400, None),  # HTTP/0.9: http.server would send "OK\n" alone
        (b"GET /metrics\n", 400, None),
        (b"GET /" + _LONG + b" HTTP/1.1\r\n\r\n", 431, None),
    ],
)
def test_errors_are_one_line_of_plain_text(
    running: tuple[App, Path], request_bytes: bytes, status: int, allow: str | None
) -> None:
    app, _ = running
    answer, headers, body, _ = _answer(_exchange(app, request_bytes))
    assert answer == status
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == f"{status} {HTTPStatus(status).phrase}\n".encode()
    assert headers.get("allow") == allow
    assert headers["server"] == f"partnercenter-exporter/{__version__}"


def test_metrics_varies_on_accept_and_encoding_and_server_has_no_trailing_space(running: tuple[App, Path]) -> None:
    app, _ = running
    raw = _exchange(app, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b"\r\nServer: partnercenter-exporter/" + __version__.encode() + b"\r\n" in raw
    for encoding in ("gzip", "identity"):
        answer = httpx.get(app.url + "/metrics", headers={"Accept-Encoding": encoding})
        assert [v.strip() for v in answer.headers["vary"].split(",")] == ["Accept", "Accept-Encoding"]


def test_a_failing_route_answers_500_and_logs_the_bug(
    running: tuple[App, Path], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = running

    def broken() -> Snapshot:
        raise RuntimeError("a bug")

    routes = Routes(app.exposition, broken, app.reload)
    server = ExporterServer("127.0.0.1", 0, routes)
    serve_in_thread(server)
    try:
        with httpx.Client(base_url=server.url) as client:
            failed = client.get("/")
            assert (failed.status_code, failed.text) == (500, "500 Internal Server Error\n")
            assert client.get("/healthz").status_code == 200  # the same connection goes on
    finally:
        server.shutdown()
        server.server_close()
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("exporter.server")]
    assert record.getMessage() == "answering a request failed"
    assert record.exc_info is not None


def test_reload_logs_what_changed(running: tuple[App, Path], caplog: pytest.LogCaptureFixture) -> None:
    app, config_file = running
    caplog.set_level(logging.INFO, logger="exporter.app")
    assert httpx.post(app.url + "/-/reload").status_code == 200
    _write_config(
        config_file,
        tenant_yaml("contoso").replace("secret-of-contoso", "rotated") + tenant_yaml("added"),
        interval="2m",
    )
    assert httpx.post(app.url + "/-/reload").status_code == 200
    unchanged, changed = [r for r in caplog.records if r.getMessage().startswith("config reloaded")]
    assert unchanged.getMessage() == "config reloaded; nothing changed"
    assert changed.getMessage() == "config reloaded"
    assert changed.__dict__["added"] == ("added",)
    assert changed.__dict__["removed"] == ("broken",)
    assert changed.__dict__["changed"] == ("contoso",)
    assert changed.__dict__["settings"] == ("interval",)
    assert "rotated" not in repr(vars(changed))  # names, never values


def _slow_client(app: App, partial: bytes = b"GET /metrics HTTP/1.1\r\nHost: t\r\n") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10)
    sock.sendall(partial)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_connections_past_the_limit_are_closed_at_once(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, limits=Limits(connections=3, header_timeout=30))
    held = [_slow_client(app) for _ in range(3)]
    try:
        with _slow_client(app) as extra:
            assert _closed_by_server(extra)  # at once: the header timeout is 30 s, the socket's 10 s
        held.pop().close()
        wait_until(lambda: httpx.get(app.url + "/healthz").status_code == 200, what="a slot given back")
    finally:
        for sock in held:
            sock.close()
        app.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("exporter.server")]
    assert [r.getMessage() for r in warnings] == ["connection limit reached; closing new connections until one ends"]


def test_a_request_head_has_a_deadline_however_slowly_it_trickles_in(tmp_path: Path, upstream: FakeUpstream) -> None:
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, limits=Limits(header_timeout=1.0))
    try:
        # Taken before connecting, so the server's deadline starts after it, however late this thread runs.
        started = time.monotonic()
        sock = _slow_client(app)
        sock.settimeout(0.1)
        closed = False
        while not closed and time.monotonic() - started < 8:
            try:
                sock.sendall(b"X")  # a byte every 0.1 s: each read is quick, the head never ends
                closed = _closed_by_server(sock)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "a trickling request head held its connection for 8 s"
        assert 1.0 <= time.monotonic() - started < 5
        sock.close()
    finally:
        app.stop()


def test_an_idle_keep_alive_connection_is_kept_then_closed(tmp_path: Path, upstream: FakeUpstream) -> None:
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, limits=Limits(idle_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10) as sock:
            for _ in range(2):  # the connection serves a second request
                # Taken before sending, so the server's idle deadline starts after it, however late this thread runs.
                started = time.monotonic()
                sock.sendall(_HEALTHZ)
                assert _read_answers(sock, 1).startswith(b"HTTP/1.1 200 OK")
            assert sock.recv(1) == b""  # the server closed it: idle for longer than 1 s
            assert 1.0 <= time.monotonic() - started < 5
    finally:
        app.stop()


def test_a_silent_tls_client_holds_up_nobody(tmp_path: Path, upstream: FakeUpstream) -> None:
    # The handshake runs in the connection's own thread: a client that connects and never says hello blocks
    # neither the accepting thread nor other clients, and its handshake has a deadline.
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, _tls_web_config(tmp_path), Limits(header_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", app.server.server_address[1]), timeout=10) as silent:
            verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            assert httpx.get(app.url + "/healthz", verify=verify).status_code == 200
            started = time.monotonic()
            assert _closed_by_server(silent)
            assert time.monotonic() - started < 5
    finally:
        app.stop()
