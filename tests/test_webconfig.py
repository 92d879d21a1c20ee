"""Web config (exporter-toolkit format): parsing, real TLS over 127.0.0.1, basic auth checking."""

from __future__ import annotations

import base64
import http.client
import http.server
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from exporter.config import ConfigError
from exporter.config.web import TLSServerConfig, build_ssl_context, load_web_config
from exporter.server.basicauth import BasicAuthChecker
from tests.support import free_port

# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> Path:
    """Write server cert/key, the CA, and a key that does not match into tmp_path; return that dir."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    return tmp_path


def write_config(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text, encoding="utf-8")
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def tls_server(ctx: ssl.SSLContext) -> Iterator[int]:
    """Serve a tiny http.server wrapped with `ctx` on 127.0.0.1; yield its port."""
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def https_get(port: int, ctx: ssl.SSLContext) -> tuple[int, str]:
    """GET / over TLS; return the status and the negotiated TLS version."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.connect()
        assert isinstance(conn.sock, ssl.SSLSocket)
        version = str(conn.sock.version())
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status, version
    finally:
        conn.close()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


# --- parsing --------------------------------------------------------------------------------------------


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, ""))
    assert config.tls is None
    assert dict(config.basic_auth_users) == {}
    assert dict(config.headers) == {}


def test_full_config_resolves_relative_paths_against_the_config_dir(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = write_config(
        certs,
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
  cipher_suites: [TLS_AES_128_GCM_SHA256]
  curve_preferences: [X25519]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: ""
basic_auth_users:
  alice: {hashed}
auth_excluded_paths: [/healthz]
""",
    )
    with caplog.at_level(logging.WARNING, logger="exporter.config.web"):
        config = load_web_config(path)
    assert config.tls == TLSServerConfig(
        cert_file=certs / "server.crt",
        key_file=certs / "server.key",
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=certs / "ca.crt",
        min_version="TLS13",
        max_version="TLS13",
        prefer_server_cipher_suites=False,
    )
    assert dict(config.headers) == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000",
    }
    assert dict(config.basic_auth_users) == {"alice": hashed.encode()}
    assert config.auth_excluded_paths == ("/healthz",)
    ignored = sorted(getattr(r, "key", "") for r in caplog.records)
    assert ignored == ["tls_server_config.cipher_suites", "tls_server_config.curve_preferences"]
    # The hash is not part of the config's repr, so logging the config cannot leak it.
    assert hashed not in repr(config)


def test_tls_section_without_cert_key_or_client_auth_keeps_plain_http(tmp_path: Path) -> None:
    # exporter-toolkit only enables TLS once a file or client auth is set; match it.
    config = load_web_config(write_config(tmp_path, "tls_server_config:\n  min_version: TLS13\n"))
    assert config.tls is None


def test_legacy_require_client_cert_alias(certs: Path) -> None:
    path = write_config(
        certs,
        "tls_server_config: {cert_file: server.crt, key_file: server.key, "
        "client_auth_type: RequireClientCert, client_ca_file: ca.crt}\n",
    )
    tls = load_web_config(path).tls
    assert tls is not None
    assert tls.client_auth_type == "RequireAnyClientCert"


def test_absolute_paths_are_kept(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    path = write_config(
        elsewhere,
        f"tls_server_config: {{cert_file: {certs / 'server.crt'}, key_file: {certs / 'server.key'}}}\n",
    )
    tls = load_web_config(path).tls
    assert tls is not None
    assert tls.cert_file == certs / "server.crt"


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
HASH = "$2b$04$wTcYbwl4B4f1Le9o02yebOBth76te7Z/PkZjuYwZ/yX.UV60e/qHC"

INVALID: list[tuple[str, str]] = [
    ("- a\n- b\n", "the web config must be a mapping, got list"),
    (
        "tls_server_config: [\n",
        "invalid YAML at line 2, column 1: did not find expected node content "
        "(while parsing a flow node at line 2, column 1)",
    ),
    (
        "listen: :9089\n",
        "listen: unknown key; expected one of tls_server_config, http_server_config, basic_auth_users, "
        "auth_excluded_paths",
    ),
    ("tls_server_config: yes\n", "tls_server_config: must be a mapping, got boolean"),
    (
        TLS + "  certfile: x\n",
        "tls_server_config.certfile: unknown key (did you mean 'cert_file'?)",
    ),
    (TLS + "  key: inline\n", "tls_server_config.key: inline keys are not supported; use key_file"),
    (
        TLS + "  client_allowed_sans: [a]\n",
        "tls_server_config.client_allowed_sans: not supported by this exporter; restrict clients through "
        "client_ca_file",
    ),
    ("tls_server_config:\n  cert_file: 5\n", "tls_server_config.cert_file: must be a string, got integer"),
    (
        "tls_server_config:\n  cert_file: server.crt\n",
        "tls_server_config.key_file: required when TLS is enabled",
    ),
    (
        "tls_server_config:\n  key_file: server.key\n",
        "tls_server_config.cert_file: required when TLS is enabled",
    ),
    (
        "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.cert_file: required when TLS is enabled",
    ),
    (
        TLS + "  client_auth_type: Always\n",
        "tls_server_config.client_auth_type: unknown value 'Always'; expected one of NoClientCert, "
        "RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
    ),
    (
        TLS + "  client_ca_file: ca.crt\n",
        "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert (nothing would use it)",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: required when client_auth_type is RequireAndVerifyClientCert",
    ),
    (
        TLS + "  min_version: TLS14\n",
        "tls_server_config.min_version: unknown TLS version 'TLS14'; expected one of TLS10, TLS11, TLS12, TLS13",
    ),
    (
        TLS + "  max_version: 1.2\n",
        "tls_server_config.max_version: unknown TLS version 1.2; expected one of TLS10, TLS11, TLS12, TLS13",
    ),
    (
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "tls_server_config.min_version: TLS13 is above max_version TLS12",
    ),
    (
        TLS + "  cipher_suites: TLS_AES_128_GCM_SHA256\n",
        "tls_server_config.cipher_suites: must be a list of strings, got string",
    ),
    (
        TLS + "  curve_preferences: [1]\n",
        "tls_server_config.curve_preferences[0]: must be a string, got integer",
    ),
    (
        TLS + "  prefer_server_cipher_suites: yes please\n",
        "tls_server_config.prefer_server_cipher_suites: must be true or false",
    ),
    (
        "http_server_config:\n  gzip: true\n",
        "http_server_config.gzip: unknown key; expected one of headers, http2",
    ),
    ("http_server_config:\n  http2: maybe\n", "http_server_config.http2: must be true or false"),
    (
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        "http_server_config.headers.X-Powered-By: cannot be configured; allowed: Strict-Transport-Security, "
        "X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy",
    ),
    (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "http_server_config.headers.X-Frame-Options: invalid value 'allow'; expected one of deny, sameorigin",
    ),
    (
        "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n",
        "http_server_config.headers.X-XSS-Protection: must be a string",
    ),
    ("basic_auth_users: [alice]\n", "basic_auth_users: must be a mapping, got list"),
    (
        "basic_auth_users:\n  alice: plaintext-password\n",
        "basic_auth_users.alice: not a bcrypt hash (expected $2a$, $2b$ or $2y$, cost 04-31, 60 characters)",
    ),
    (
        f"basic_auth_users:\n  alice: '{HASH[:-1]}'\n",
        "basic_auth_users.alice: not a bcrypt hash (expected $2a$, $2b$ or $2y$, cost 04-31, 60 characters)",
    ),
    ("basic_auth_users:\n  alice: 12345\n", "basic_auth_users.alice: must be a bcrypt hash string"),
    (
        f"basic_auth_users:\n  'a:b': '{HASH}'\n",
        "basic_auth_users.a:b: user names cannot contain ':' (basic auth splits on it)",
    ),
    (f"basic_auth_users:\n  1: '{HASH}'\n", "basic_auth_users: keys must be strings, got integer 1"),
    ("auth_excluded_paths: /healthz\n", "auth_excluded_paths: must be a list of strings, got string"),
    # A section of the wrong type is an error: `false` once meant "no users", and so no authentication at all.
    ("basic_auth_users: false\n", "basic_auth_users: must be a mapping, got boolean"),
    ("basic_auth_users: []\n", "basic_auth_users: must be a mapping, got list"),
    ("http_server_config:\n  headers: false\n", "http_server_config.headers: must be a mapping, got boolean"),
    (
        "basic_auth_users:\n  alice: !!bool hunter2\n",
        "invalid YAML at line 2, column 10: value does not match its tag !!bool",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_config_errors_name_the_key(certs: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config(write_config(certs, text))
    assert str(info.value) == message


def test_bad_hash_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config(write_config(tmp_path, "basic_auth_users:\n  alice: hunter2-not-hashed\n"))
    assert info.value.path == "basic_auth_users.alice"
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        '"$2b$04$Xg/DLW.xsLN92l//B043CO16Mk7cOj8xBuxOmdVdJ/G65cHa1mqjS": alice',  # name and hash swapped
        '"alice:$2b$04$Xg/DLW.xsLN92l//B043CO16Mk7cOj8xBuxOmdVdJ/G65cHa1mqjS": ',  # an htpasswd line as the name
    ],
)
def test_a_hash_written_as_the_user_name_is_never_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config(write_config(tmp_path, f"basic_auth_users:\n  {text}\n"))
    assert info.value.path == "basic_auth_users"
    assert "Xg/DLW.xsLN92l" not in str(info.value)


def test_errors_are_one_line_whatever_the_key(tmp_path: Path) -> None:
    """A line break in a key (`"a\\nb":`) must not split the error: it is a log field or one line on stderr."""
    with pytest.raises(ConfigError) as info:
        load_web_config(write_config(tmp_path, '"a\\nb\\x1e\\u2028c": 1\n'))
    assert (
        str(info.value) == "a\\nb\\x1e\\u2028c: unknown key; expected one of tls_server_config, "
        "http_server_config, basic_auth_users, auth_excluded_paths"
    )


def test_a_nul_in_a_file_path_is_a_config_error(certs: Path) -> None:
    """os.stat raises ValueError for an embedded NUL, which used to escape as a crash."""
    with pytest.raises(ConfigError) as info:
        load_web_config(
            write_config(certs, 'tls_server_config:\n  cert_file: "server.crt\\0"\n  key_file: server.key\n')
        )
    assert str(info.value) == "tls_server_config.cert_file: must not contain NUL characters"


def file_error_cases(d: Path) -> list[tuple[str, str]]:
    """Cases whose message names a file under `d`."""
    both = "tls_server_config:\n  cert_file: {c}\n  key_file: {k}\n"
    return [
        (
            both.format(c="missing.crt", k="server.key"),
            f"tls_server_config.cert_file: cannot read {d / 'missing.crt'}: No such file or directory",
        ),
        (
            both.format(c="server.crt", k="missing.key"),
            f"tls_server_config.key_file: cannot read {d / 'missing.key'}: No such file or directory",
        ),
        (
            both.format(c="server.key", k="server.key"),
            f"tls_server_config.cert_file: no PEM certificate in {d / 'server.key'}",
        ),
        (
            both.format(c="server.crt", k="server.crt"),
            f"tls_server_config.key_file: no PEM private key in {d / 'server.crt'}",
        ),
        (
            both.format(c="server.crt", k="other.key"),
            f"tls_server_config.key_file: cannot load key pair {d / 'server.crt'}, {d / 'other.key'}: "
            "KEY_VALUES_MISMATCH",
        ),
        (
            both.format(c="server.crt", k="server.key")
            + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope/ca.crt\n",
            f"tls_server_config.client_ca_file: cannot read {d / 'nope' / 'ca.crt'}: No such file or directory",
        ),
        (
            both.format(c="server.crt", k="server.key")
            + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n",
            f"tls_server_config.client_ca_file: no usable CA certificate in {d / 'server.key'}: "
            "NO_CERTIFICATE_OR_CRL_FOUND",
        ),
    ]


def test_file_errors_name_key_and_path(certs: Path) -> None:
    os.mkfifo(certs / "fifo")  # opening it for reading would wait for a writer: start-up would hang
    cases = [
        (
            "tls_server_config:\n  cert_file: fifo\n  key_file: server.key\n",
            f"tls_server_config.cert_file: cannot read {certs / 'fifo'}: not a regular file",
        )
    ]
    for text, message in file_error_cases(certs) + cases:
        with pytest.raises(ConfigError) as info:
            load_web_config(write_config(certs, text))
        assert str(info.value) == message


def test_unreadable_web_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "web.yml"
    with pytest.raises(ConfigError) as info:
        load_web_config(missing)
    assert str(info.value) == f"cannot read {missing}: No such file or directory"
    assert info.value.path == ""


def test_encrypted_key_fails_instead_of_prompting(certs: Path) -> None:
    key = serialization.load_pem_private_key((certs / "server.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (certs / "encrypted.key").write_bytes(encrypted)
    with pytest.raises(ConfigError) as info:
        load_web_config(write_config(certs, "tls_server_config: {cert_file: server.crt, key_file: encrypted.key}\n"))
    assert str(info.value) == (
        f"tls_server_config.key_file: the private key in {certs / 'encrypted.key'} is encrypted; store it without a "
        "passphrase"
    )


# --- real TLS -------------------------------------------------------------------------------------------


def load_tls(certs: Path, extra: str = "") -> TLSServerConfig:
    tls = load_web_config(write_config(certs, TLS + extra)).tls
    assert tls is not None
    return tls


def test_tls_handshake_and_request(certs: Path, ca: trustme.CA) -> None:
    with tls_server(build_ssl_context(load_tls(certs))) as port:
        status, version = https_get(port, client_context(ca))
    assert status == 200
    assert version == "TLSv1.3"


def test_max_version_caps_the_protocol(certs: Path, ca: trustme.CA) -> None:
    with tls_server(build_ssl_context(load_tls(certs, "  max_version: TLS12\n"))) as port:
        _, version = https_get(port, client_context(ca))
    assert version == "TLSv1.2"


def test_min_version_is_enforced(certs: Path, ca: trustme.CA) -> None:
    old_client = client_context(ca)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    # The same client gets through with the default minimum (TLS12), so the failure below is the minimum's.
    with tls_server(build_ssl_context(load_tls(certs))) as port:
        assert https_get(port, old_client) == (200, "TLSv1.2")
    with tls_server(build_ssl_context(load_tls(certs, "  min_version: TLS13\n"))) as port:
        with pytest.raises(ssl.SSLError):
            https_get(port, old_client)
        # The server survives the failed handshake.
        assert https_get(port, client_context(ca))[0] == 200


MTLS = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


@contextmanager
def mtls_server(certs: Path) -> Iterator[int]:
    with tls_server(build_ssl_context(load_tls(certs, MTLS))) as port:
        yield port


def test_mtls_rejects_client_without_certificate(certs: Path, ca: trustme.CA) -> None:
    with mtls_server(certs) as port, pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3 finishes the client's side of the handshake first; the rejection arrives on the first read.
        https_get(port, client_context(ca))


def test_mtls_accepts_client_with_certificate_from_the_ca(certs: Path, ca: trustme.CA) -> None:
    ctx = client_context(ca)
    ca.issue_cert("scraper@example.com").configure_cert(ctx)
    with mtls_server(certs) as port:
        assert https_get(port, ctx)[0] == 200


def test_mtls_rejects_certificate_from_another_ca(certs: Path, ca: trustme.CA) -> None:
    ctx = client_context(ca)
    trustme.CA().issue_cert("scraper@example.com").configure_cert(ctx)
    with mtls_server(certs) as port, pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(port, ctx)


def test_verify_client_cert_if_given_allows_anonymous_clients(certs: Path, ca: trustme.CA) -> None:
    extra = "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
    with tls_server(build_ssl_context(load_tls(certs, extra))) as port:
        assert https_get(port, client_context(ca))[0] == 200
        stranger = client_context(ca)
        trustme.CA().issue_cert("stranger@example.com").configure_cert(stranger)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(port, stranger)


# --- basic auth -----------------------------------------------------------------------------------------


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def alice_hash() -> bytes:
    return bcrypt.hashpw(b"s3cret pass:word", bcrypt.gensalt(rounds=5))


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the hash of every bcrypt verification the checker runs."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_basic_auth_right_and_wrong_password(alice_hash: bytes) -> None:
    checker = BasicAuthChecker({"alice": alice_hash})
    assert checker.check(basic("alice", "s3cret pass:word"))
    assert checker.check("basic " + basic("alice", "s3cret pass:word")[6:])  # scheme is case-insensitive
    assert not checker.check(basic("alice", "s3cret"))
    assert not checker.check(basic("alice", ""))
    assert not checker.check(basic("Alice", "s3cret pass:word"))


def test_basic_auth_accepts_htpasswd_2y_hashes(alice_hash: bytes) -> None:
    checker = BasicAuthChecker({"alice": b"$2y" + alice_hash[3:]})
    assert checker.check(basic("alice", "s3cret pass:word"))


def test_unknown_user_is_rejected_even_if_the_decoy_matched(alice_hash: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    checker = BasicAuthChecker({"alice": alice_hash})
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: True)
    assert checker.check(basic("alice", "anything"))  # the stub is in effect
    assert not checker.check(basic("mallory", "anything"))


def test_unknown_user_runs_bcrypt_against_a_decoy_of_the_same_cost(
    alice_hash: bytes, checkpw_calls: list[bytes]
) -> None:
    checker = BasicAuthChecker({"alice": alice_hash})
    assert not checker.check(basic("mallory", "s3cret pass:word"))
    assert len(checkpw_calls) == 1
    decoy = checkpw_calls[0]
    assert decoy != alice_hash
    assert decoy[:7] == alice_hash[:7]  # same scheme and cost, so the same time spent


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(b"alice:s3cret pass:word").decode(),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no colon here").decode(),
        basic(b"\xff\xfe", "s3cret pass:word"),
        basic("alice", "x" * 100),
        basic("alice", b"s3cret\x00"),
    ],
)
def test_malformed_headers_are_rejected(alice_hash: bytes, header: str | None) -> None:
    assert not BasicAuthChecker({"alice": alice_hash}).check(header)


def test_successful_checks_are_cached(alice_hash: bytes, checkpw_calls: list[bytes]) -> None:
    checker = BasicAuthChecker({"alice": alice_hash})
    assert checker.check(basic("alice", "s3cret pass:word"))
    assert checker.check(basic("alice", "s3cret pass:word"))
    assert len(checkpw_calls) == 1
    # Failures are not cached: each wrong password costs a bcrypt run.
    assert not checker.check(basic("alice", "wrong"))
    assert not checker.check(basic("alice", "wrong"))
    assert len(checkpw_calls) == 3
    # A cached success is keyed on the hash too: a checker with a new hash verifies afresh.
    other = bcrypt.hashpw(b"s3cret pass:word", bcrypt.gensalt(rounds=4))
    assert BasicAuthChecker({"alice": other}).check(basic("alice", "s3cret pass:word"))
    assert len(checkpw_calls) == 4


def test_cache_is_bounded(checkpw_calls: list[bytes]) -> None:
    users = {f"user{i}": bcrypt.hashpw(f"pw{i}".encode(), bcrypt.gensalt(rounds=4)) for i in range(300)}
    checker = BasicAuthChecker(users)
    for i in range(300):
        assert checker.check(basic(f"user{i}", f"pw{i}"))
    checkpw_calls.clear()
    assert checker.check(basic("user299", "pw299"))  # recent: cached
    assert checkpw_calls == []
    assert checker.check(basic("user0", "pw0"))  # oldest: evicted, verified again
    assert checkpw_calls == [users["user0"]]


def test_no_users_means_no_basic_auth() -> None:
    assert BasicAuthChecker({}).check(None)


def test_checker_is_thread_safe(alice_hash: bytes) -> None:
    checker = BasicAuthChecker({"alice": alice_hash})
    results: list[bool] = []
    lock = threading.Lock()

    def worker(password: str) -> Callable[[], None]:
        def run() -> None:
            ok = checker.check(basic("alice", password))
            with lock:
                results.append(ok)

        return run

    threads = [threading.Thread(target=worker("s3cret pass:word" if i % 2 else "nope")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 4 + [True] * 4
