"""Which CA the exporter trusts for Partner Center and Entra ID: httpx's default, or SSL_CERT_FILE / SSL_CERT_DIR.

A real HTTPS upstream on 127.0.0.1, its certificate issued by a CA of the test's own; the poller's real transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from exporter.poller import Poller, RetryPolicy
from exporter.snapshot import SnapshotStore
from tests.fakes import SUMMARY_BODY, make_config, tenant_yaml


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(json.dumps({"token_type": "Bearer", "expires_in": 3600, "access_token": "tok"}).encode())

    def do_GET(self) -> None:
        self._answer(SUMMARY_BODY)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL of an HTTPS upstream, PEM file of the CA that issued its certificate)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", tmp_path / "ca.pem"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _poll_once(tmp_path: Path, url: str) -> SnapshotStore:
    config = make_config(tmp_path, tenant_yaml("a"), api_url=url, login_url=url)
    store = SnapshotStore(config, time.time())

    async def go() -> None:
        async with contextlib.aclosing(Poller(config, store, retry=RetryPolicy(attempts=1))) as poller:
            await poller.poll_all()

    asyncio.run(go())
    return store


def _hashed_dir(ca_pem: Path, directory: Path) -> Path:
    """An OpenSSL CA directory (`<subject hash>.0`) holding the CA, as SSL_CERT_DIR expects."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command makes the CA directory"
    digest = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(ca_pem)], check=True, capture_output=True, text=True
    ).stdout.strip()
    directory.mkdir()
    shutil.copy(ca_pem, directory / f"{digest}.0")
    return directory


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_the_upstream_is_trusted_through_the_ca_the_environment_names(
    https_upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    url, ca_pem = https_upstream
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(ca_pem if variable == "SSL_CERT_FILE" else _hashed_dir(ca_pem, tmp_path / "ca")))
    state = _poll_once(tmp_path, url).current.tenants["a"]
    assert state.up is True, state.last_error
    assert state.summaries is not None
    assert state.summaries[0].currency == "USD"


def test_an_upstream_certificate_from_an_unknown_ca_fails_the_poll(
    https_upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = https_upstream
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    state = _poll_once(tmp_path, url).current.tenants["a"]
    assert state.up is False
    assert state.errors[("token", "connection")] == 1
    assert state.last_error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in state.last_error
