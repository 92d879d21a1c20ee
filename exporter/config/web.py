"""The exporter-toolkit web configuration file (`--web.config.file`): parsing, the TLS context, basic auth.

The format is the one Go exporters read (prometheus/exporter-toolkit, docs/web-configuration.md), so one file
can serve this exporter and node_exporter alike. Parsing is strict: every error names its key path.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from exporter.config.fields import check_keys, type_name
from exporter.config.yamlfile import ConfigError, load_yaml, read_text

log = logging.getLogger(__name__)

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

_CLIENT_AUTH_TYPES: Mapping[str, ClientAuthType] = MappingProxyType(
    {
        "": "NoClientCert",
        "NoClientCert": "NoClientCert",
        "RequestClientCert": "RequestClientCert",
        "RequireAnyClientCert": "RequireAnyClientCert",
        "RequireClientCert": "RequireAnyClientCert",  # alias kept by exporter-toolkit for compatibility
        "VerifyClientCertIfGiven": "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert": "RequireAndVerifyClientCert",
    }
)
# Python's ssl cannot request a client certificate without verifying it. RequestClientCert gates nothing in
# Go either, so not asking is equivalent; RequireAnyClientCert is made stricter (verified against
# client_ca_file, which parsing then requires).
_VERIFY_MODES: Mapping[ClientAuthType, ssl.VerifyMode] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
_TLS_VERSION_NAMES: Mapping[str, TLSVersion] = MappingProxyType(
    {"TLS10": "TLS10", "TLS11": "TLS11", "TLS12": "TLS12", "TLS13": "TLS13"}
)
_TLS_VERSIONS: Mapping[TLSVersion, ssl.TLSVersion] = MappingProxyType(
    {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
)
# Same allow-list as exporter-toolkit, so a file accepted here is accepted by Go exporters and vice versa;
# None means any value.
_ALLOWED_HEADERS: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "Strict-Transport-Security": None,
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": None,
        "Content-Security-Policy": None,
    }
)
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "auth_excluded_paths")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
)
# Keys exporter-toolkit knows but this exporter cannot honour; ignoring them would weaken security or
# silently change behaviour, so they are rejected with a reason instead of "unknown key".
_UNSUPPORTED_TLS_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "cert": "inline certificates are not supported; use cert_file",
        "key": "inline keys are not supported; use key_file",
        "client_ca": "inline CA certificates are not supported; use client_ca_file",
        "client_allowed_sans": "not supported by this exporter; restrict clients through client_ca_file",
    }
)
# Only these are meaningful in Go's crypto/tls; Python's ssl module has no equivalent knob.
_GO_ONLY_TLS_KEYS = ("cipher_suites", "curve_preferences")
_HTTP_KEYS = ("headers", "http2")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(ConfigError):
    """An invalid web configuration file; `path` is the offending key path ("" for the whole file)."""


@dataclass(frozen=True)
class TLSServerConfig:
    """Server TLS settings; paths are absolute (resolved against the web config file's directory)."""

    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion = "TLS13"
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class WebConfig:
    """A parsed web configuration; `basic_auth_users` maps user names to bcrypt hashes."""

    tls: TLSServerConfig | None
    # repr=False: the hashes must never reach a log line or an error message.
    basic_auth_users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Exact request paths served without basic auth (exporter-toolkit's auth_excluded_paths).
    auth_excluded_paths: tuple[str, ...] = ()


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file, including its certificate, key and CA files."""
    try:
        text = read_text(path)
    except ConfigError as exc:
        raise WebConfigError(exc.path, exc.message) from None
    return parse_web_config(text, base_dir=path.absolute().parent)


def parse_web_config(text: str, *, base_dir: Path) -> WebConfig:
    """Parse web config YAML text; relative paths resolve against `base_dir`."""
    try:
        data = load_yaml(text)
    except ConfigError as exc:
        raise WebConfigError(exc.path, exc.message) from None
    if data is None:
        data = {}
    top = _mapping(data, "")
    _check_keys(top, "", _TOP_KEYS)
    tls = _parse_tls(top.get("tls_server_config"), base_dir)
    headers = _parse_http(top.get("http_server_config"))
    users = _parse_users(top.get("basic_auth_users"))
    excluded = _string_list(top.get("auth_excluded_paths"), "auth_excluded_paths")
    if tls is not None:
        build_ssl_context(tls)  # fail at load time, not at the first connection
    return WebConfig(
        tls=tls,
        basic_auth_users=MappingProxyType(users),
        headers=MappingProxyType(headers),
        auth_excluded_paths=tuple(excluded),
    )


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """Build a server-side SSL context: certificate chain, client CA and client auth policy, versions."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    if not tls.prefer_server_cipher_suites:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    cert_pem = _read_file(tls.cert_file, "tls_server_config.cert_file")
    key_pem = _read_file(tls.key_file, "tls_server_config.key_file")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise WebConfigError("tls_server_config.cert_file", f"no PEM certificate in {tls.cert_file}")
    if b"PRIVATE KEY-----" not in key_pem:
        raise WebConfigError("tls_server_config.key_file", f"no PEM private key in {tls.key_file}")
    try:
        # The password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(
            "tls_server_config.key_file",
            f"cannot load key pair {tls.cert_file}, {tls.key_file}: {_reason(exc)}",
        ) from None
    if tls.client_ca_file is not None:
        _read_file(tls.client_ca_file, "tls_server_config.client_ca_file")
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(
                "tls_server_config.client_ca_file",
                f"no usable CA certificate in {tls.client_ca_file}: {_reason(exc)}",
            ) from None
    ctx.verify_mode = _VERIFY_MODES[tls.client_auth_type]
    return ctx


def _parse_tls(value: object, base_dir: Path) -> TLSServerConfig | None:
    """Parse `tls_server_config`; None when it does not enable TLS (as in exporter-toolkit)."""
    if value is None:
        return None
    section = _mapping(value, "tls_server_config")
    for name, reason in _UNSUPPORTED_TLS_KEYS.items():
        if name in section:
            raise WebConfigError(f"tls_server_config.{name}", reason)
    _check_keys(section, "tls_server_config", _TLS_KEYS)

    cert = _optional_str(section, "cert_file", "tls_server_config")
    key = _optional_str(section, "key_file", "tls_server_config")
    auth = _optional_str(section, "client_auth_type", "tls_server_config")
    ca = _optional_str(section, "client_ca_file", "tls_server_config")
    min_version = _tls_version(section, "min_version", "TLS12")
    max_version = _tls_version(section, "max_version", "TLS13")
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError("tls_server_config.prefer_server_cipher_suites", "must be true or false")
    for go_only in _GO_ONLY_TLS_KEYS:
        if go_only in section:
            _string_list(section[go_only], f"tls_server_config.{go_only}")
            log.warning(
                "web config key ignored: Go-only TLS setting, OpenSSL defaults apply",
                extra={"key": f"tls_server_config.{go_only}"},
            )

    # exporter-toolkit enables TLS as soon as any of these is set, and then insists on cert and key.
    if not (cert or key or auth or ca):
        return None
    if not cert:
        raise WebConfigError("tls_server_config.cert_file", "required when TLS is enabled")
    if not key:
        raise WebConfigError("tls_server_config.key_file", "required when TLS is enabled")

    client_auth = _client_auth_type(auth)
    if ca and client_auth == "NoClientCert":
        raise WebConfigError(
            "tls_server_config.client_ca_file",
            "set, but client_auth_type is NoClientCert (nothing would use it)",
        )
    if not ca and _VERIFY_MODES[client_auth] != ssl.CERT_NONE:
        raise WebConfigError("tls_server_config.client_ca_file", f"required when client_auth_type is {client_auth}")
    if _TLS_VERSIONS[min_version] > _TLS_VERSIONS[max_version]:
        raise WebConfigError("tls_server_config.min_version", f"{min_version} is above max_version {max_version}")
    if client_auth == "RequireAnyClientCert":
        log.warning(
            "RequireAnyClientCert verifies client certificates against client_ca_file (stricter than Go)",
            extra={"key": "tls_server_config.client_auth_type"},
        )
    return TLSServerConfig(
        cert_file=base_dir / cert,
        key_file=base_dir / key,
        client_auth_type=client_auth,
        client_ca_file=base_dir / ca if ca else None,
        min_version=min_version,
        max_version=max_version,
        prefer_server_cipher_suites=prefer,
    )


def _client_auth_type(value: str | None) -> ClientAuthType:
    """Map a client_auth_type string (including Go's legacy alias) to its canonical name."""
    name = _CLIENT_AUTH_TYPES.get(value or "")
    if name is None:
        expected = ", ".join(dict.fromkeys(v for v in _CLIENT_AUTH_TYPES.values()))
        raise WebConfigError(
            "tls_server_config.client_auth_type", f"unknown value {value!r}; expected one of {expected}"
        )
    return name


def _tls_version(section: Mapping[str, object], key: str, default: TLSVersion) -> TLSVersion:
    """Read min_version/max_version (TLS10..TLS13)."""
    value = section.get(key, default)
    name = _TLS_VERSION_NAMES.get(value) if isinstance(value, str) else None
    if name is None:
        raise WebConfigError(
            f"tls_server_config.{key}",
            f"unknown TLS version {value!r}; expected one of TLS10, TLS11, TLS12, TLS13",
        )
    return name


def _parse_http(value: object) -> dict[str, str]:
    """Parse `http_server_config`; returns the extra response headers (http2 is accepted and ignored)."""
    if value is None:
        return {}
    section = _mapping(value, "http_server_config")
    _check_keys(section, "http_server_config", _HTTP_KEYS)
    if "http2" in section and not isinstance(section["http2"], bool):
        raise WebConfigError("http_server_config.http2", "must be true or false")
    raw = section.get("headers")
    if raw is None:
        return {}
    headers: dict[str, str] = {}
    for name, header_value in _mapping(raw, "http_server_config.headers").items():
        path = f"http_server_config.headers.{name}"
        if name not in _ALLOWED_HEADERS:
            raise WebConfigError(path, f"cannot be configured; allowed: {', '.join(_ALLOWED_HEADERS)}")
        if not isinstance(header_value, str):
            raise WebConfigError(path, "must be a string")
        if any(c in header_value for c in "\r\n\0"):
            raise WebConfigError(path, "must not contain line breaks")
        allowed = _ALLOWED_HEADERS[name]
        if allowed is not None and header_value not in allowed:
            raise WebConfigError(path, f"invalid value {header_value!r}; expected one of {', '.join(allowed)}")
        if header_value:  # blank means unset, as in exporter-toolkit
            headers[name] = header_value
    return headers


def _parse_users(value: object) -> dict[str, bytes]:
    """Parse `basic_auth_users`: user name -> bcrypt hash. Hashes never appear in errors."""
    if value is None:
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(value, "basic_auth_users").items():
        path = f"basic_auth_users.{user}"
        if ":" in user:
            raise WebConfigError(path, "user names cannot contain ':' (basic auth splits on it)")
        if not isinstance(hashed, str):
            raise WebConfigError(path, "must be a bcrypt hash string")
        if not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(path, "not a bcrypt hash (expected $2a$, $2b$ or $2y$, cost 04-31, 60 characters)")
        users[user] = hashed.encode("ascii")
    return users


def _mapping(value: object, path: str) -> dict[str, object]:
    """Return `value` as a str-keyed dict or raise naming `path`."""
    if not isinstance(value, dict):
        what = "must be a mapping" if path else "the web config must be a mapping"
        raise WebConfigError(path, f"{what}, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise WebConfigError(path, f"keys must be strings, got {type_name(key)} {key!r}")
    return value


def _check_keys(section: Mapping[str, object], path: str, allowed: tuple[str, ...]) -> None:
    """Reject keys not in `allowed`, suggesting the closest one."""
    try:
        check_keys(section, allowed, path)
    except ConfigError as exc:
        raise WebConfigError(exc.path, exc.message) from None


def _optional_str(section: Mapping[str, object], key: str, path: str) -> str | None:
    """Return a string value or None; anything else is an error."""
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebConfigError(f"{path}.{key}", f"must be a string, got {type_name(value)}")
    return value


def _string_list(value: object, path: str) -> list[str]:
    """Return a list of strings (None -> empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise WebConfigError(path, f"must be a list of strings, got {type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise WebConfigError(f"{path}[{i}]", f"must be a string, got {type_name(item)}")
    return value


def _read_file(path: Path, key: str) -> bytes:
    """Read a referenced file, naming the key on failure."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WebConfigError(key, f"cannot read {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """A short reason for an OS or SSL error, without content of the file."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _no_password() -> bytes:
    """Password callback for encrypted keys: none is configured, so loading fails instead of prompting."""
    return b""
