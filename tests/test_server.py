"""The exporter's HTTP surface, in-process against a scripted upstream: routes, reload, auth, TLS."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from exporter.app import App
from exporter.config import load_config
from exporter.config.web import load_web_config
from exporter.poller import RetryPolicy
from tests.fakes import FakeUpstream, respond, tenant_yaml
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


def _start(config_file: Path, upstream: FakeUpstream, web_config_file: Path | None = None) -> App:
    app = App(
        load_config(config_file),
        config_path=config_file,
        listen=("127.0.0.1", 0),
        web_config=load_web_config(web_config_file) if web_config_file else None,
        retry=FAST,
        transport_factory=upstream.transport,
        render_settle=0.01,
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
    stream = httpx.get(app.url + "/metrics", headers={"Accept-Encoding": "gzip"}).content
    assert stream  # decoded transparently
    assert gzip.compress(b"x")  # sanity: gzip module present


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
            assert client.post(app.url + "/-/reload").status_code == 401
        with pytest.raises(httpx.ConnectError):
            httpx.get(app.url + "/healthz")  # untrusted certificate
    finally:
        app.stop()


def test_auth_excluded_paths_are_served_without_credentials(tmp_path: Path, upstream: FakeUpstream) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{_hash('pw')}'\nauth_excluded_paths: [/readyz]\n")
    config_file = tmp_path / "config.yml"
    _write_config(config_file, tenant_yaml("contoso"))
    app = _start(config_file, upstream, web)
    try:
        assert httpx.get(app.url + "/readyz").status_code in (200, 503)
        assert httpx.get(app.url + "/metrics").status_code == 401
        assert httpx.get(app.url + "/").status_code == 401
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
