"""Property tests: whatever text or structure reaches the web config parser, it yields a WebConfig or a ConfigError.

A ConfigError is one line and never quotes a secret: a bcrypt hash, a value under basic_auth_users, key file bytes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError
from exporter.config.web import WebConfig, parse_web_config
from tests.yamlfuzz import PUNCTUATION, replaced, scalars, structures

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HASH = bcrypt.hashpw(b"fuzz-password-5b2e", bcrypt.gensalt(rounds=4)).decode()
PASSWORD = "fuzz-password-5b2e"
# Secrets planted as basic_auth_users values: a real hash, the password, hashes one character off, htpasswd lines.
SECRETS = [HASH, PASSWORD, HASH[:-1], HASH + "x", HASH.replace("$2b$", "$2z$"), "$2y$04$" + "A" * 53, f"alice:{HASH}"]
ANY_HASH = re.compile(r"\$2[a-z]?\$[0-9]{2}\$[./A-Za-z0-9]{20,}")

KEYS = [
    "tls_server_config", "http_server_config", "basic_auth_users", "auth_excluded_paths", "cert_file", "key_file",
    "client_auth_type", "client_ca_file", "min_version", "max_version", "cipher_suites", "curve_preferences",
    "prefer_server_cipher_suites", "cert", "key", "client_ca", "client_allowed_sans", "headers", "http2",
    "X-Frame-Options", "Content-Security-Policy", "alice",
]  # fmt: skip
FILES = ["server.crt", "server.key", "ca.crt", "other.key", "encrypted.key", "empty", "garbage", "subdir", "missing"]
# File paths: real, missing, a directory, a device, and names the file system cannot hold.
PATHS = st.sampled_from(
    [*FILES, "/dev/null", "/", "..", "subdir/", "server.crt\0", "\0", "a\nb", "x" * 300, "x/" * 3000]
)

# Values that get past the type checks: real files, TLS versions, client auth types, header values.
PLAUSIBLE: st.SearchStrategy[object] = st.sampled_from(
    [
        *FILES, "/dev/null", "server.crt\0", "a\nb", "TLS10", "TLS12", "TLS13",
        "TLS14", "tls12", "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "RequireClientCert",
        "VerifyClientCertIfGiven", "RequireAndVerifyClientCert", "deny", "sameorigin", "nosniff", "/metrics", "",
        True, False, None, 0, 1, -1, 2.5, float("nan"), float("inf"), 10**30, [], {}, ["TLS_AES_128_GCM_SHA256"],
    ]
)  # fmt: skip

SCALARS = scalars(PLAUSIBLE)
STRUCTURES = structures(SCALARS, KEYS)

VALID: dict[str, Any] = {
    "tls_server_config": {
        "cert_file": "server.crt",
        "key_file": "server.key",
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "ca.crt",
        "min_version": "TLS12",
        "max_version": "TLS13",
    },
    "http_server_config": {"headers": {"X-Frame-Options": "deny"}, "http2": True},
    "basic_auth_users": {"alice": HASH},
    "auth_excluded_paths": ["/health"],
}

SLOTS = [
    ("tls_server_config",), ("http_server_config",), ("basic_auth_users",), ("auth_excluded_paths",), ("bogus",),
    *[("tls_server_config", key) for key in ("cert_file", "key_file", "client_auth_type", "client_ca_file",
                                             "min_version", "max_version", "cipher_suites",
                                             "prefer_server_cipher_suites", "cert", "bogus")],
    ("http_server_config", "headers"), ("http_server_config", "http2"),
    ("http_server_config", "headers", "X-Frame-Options"), ("http_server_config", "headers", "X-XSS-Protection"),
    ("basic_auth_users", "alice"), ("basic_auth_users", "bob"),
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A directory with real and broken cert, key and CA files; yields it and the lines of the server key."""
    directory = tmp_path_factory.mktemp("webfuzz")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(directory / "other.key"))
    (directory / "encrypted.key").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nQUJD\n")
    (directory / "empty").write_bytes(b"")
    (directory / "garbage").write_bytes(b"-----BEGIN CERTIFICATE-----\n\xff\xfe PRIVATE KEY-----\n")
    (directory / "subdir").mkdir()
    key_lines = [line for line in server.private_key_pem.bytes().decode().splitlines() if "-----" not in line]
    return directory, key_lines


def outcome(text: str, base_dir: Path) -> WebConfig | ConfigError:
    """Parse `text`; return the WebConfig or the ConfigError. Any other exception fails the test."""
    try:
        return parse_web_config(text, base_dir=base_dir)
    except ConfigError as exc:
        return exc


def assert_sane(result: WebConfig | ConfigError, key_lines: list[str], planted: tuple[str, ...] = ()) -> None:
    """A ConfigError is one printable line without a hash, a planted secret or a line of the key file."""
    if isinstance(result, WebConfig):
        assert HASH not in repr(result)
        return
    text = str(result)
    assert isinstance(result.path, str)
    assert result.message
    assert len(text.splitlines()) == 1, text
    assert not ANY_HASH.search(text), text
    for secret in (*SECRETS, *planted, *key_lines):
        assert secret not in text, text


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(files: tuple[Path, list[str]], text: str) -> None:
    assert_sane(outcome(text, files[0]), files[1])


@FUZZ
@given(PUNCTUATION)
def test_yaml_punctuation_soup(files: tuple[Path, list[str]], text: str) -> None:
    assert_sane(outcome(text, files[0]), files[1])


@FUZZ
@given(STRUCTURES)
def test_arbitrary_yaml_structures(files: tuple[Path, list[str]], document: object) -> None:
    assert_sane(outcome(yaml.safe_dump(document, allow_unicode=True), files[0]), files[1])


@FUZZ
@given(st.sampled_from(SLOTS), STRUCTURES)
def test_one_field_of_a_valid_config_replaced(
    files: tuple[Path, list[str]], slot: tuple[str, ...], value: object
) -> None:
    result = outcome(replaced(VALID, slot, value), files[0])
    assert_sane(result, files[1])
    if isinstance(result, ConfigError):
        # Valid YAML, so the error names a key in the replaced value's section (TLS keys depend on each other).
        top = slot[0]
        assert result.path == top or result.path.startswith((f"{top}.", f"{top}[")), result


# Any user name, including ones that look like a hash or an htpasswd line; values are planted secrets or junk.
USER_NAMES = st.one_of(
    st.text(max_size=12), st.sampled_from(["alice", "bob:x", "", " ", "a\nb", HASH, f"alice:{HASH}", HASH[:-1]])
)
PLANTED = st.text(min_size=1, max_size=30).map(lambda s: f"S3cr3t-{s}")


@FUZZ
@given(st.dictionaries(USER_NAMES, st.one_of(st.sampled_from(SECRETS), PLANTED, SCALARS), max_size=4))
def test_basic_auth_users_never_echo_a_hash(files: tuple[Path, list[str]], users: dict[str, object]) -> None:
    planted = tuple(v for v in users.values() if isinstance(v, str) and v.startswith("S3cr3t-"))
    text = yaml.safe_dump({"basic_auth_users": users}, allow_unicode=True)
    result = outcome(text, files[0])
    assert_sane(result, files[1], planted)
    if isinstance(result, WebConfig):
        # The names as YAML reads them back: PyYAML writes a NEL (\x85) that its reader folds into a space.
        assert set(result.basic_auth_users) == set(yaml.safe_load(text)["basic_auth_users"])
    else:
        assert result.path.startswith("basic_auth_users"), result


TLS_VALUES = st.one_of(PATHS, PLAUSIBLE, SCALARS)
# Mostly a certificate and a key file (real or not), so that many examples get as far as reading the files.
TLS_SECTIONS = st.fixed_dictionaries(
    {"cert_file": st.one_of(PATHS, TLS_VALUES), "key_file": st.one_of(PATHS, TLS_VALUES)},
    optional=dict.fromkeys(
        ("client_auth_type", "client_ca_file", "min_version", "max_version", "prefer_server_cipher_suites",
         "cipher_suites"),
        TLS_VALUES,
    ),
)  # fmt: skip


@FUZZ
@given(TLS_SECTIONS, st.booleans())
def test_tls_server_config_with_any_values(
    files: tuple[Path, list[str]], tls: dict[str, object], absolute: bool
) -> None:
    if absolute:  # the same files named by absolute paths
        tls = {k: str(files[0] / v) if isinstance(v, str) and v in FILES else v for k, v in tls.items()}
    result = outcome(yaml.safe_dump({"tls_server_config": tls}, allow_unicode=True), files[0])
    assert_sane(result, files[1])
    if isinstance(result, ConfigError):
        assert result.path.startswith("tls_server_config"), result


def test_the_unmutated_document_is_valid(files: tuple[Path, list[str]]) -> None:
    """Guards the mutation test: without this, it could pass by rejecting everything."""
    result = outcome(yaml.safe_dump(VALID), files[0])
    assert isinstance(result, WebConfig), result
    assert result.tls is not None
    assert dict(result.basic_auth_users) == {"alice": HASH.encode()}
