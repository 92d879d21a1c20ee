"""The exporter-toolkit web configuration file (`--web.config.file`): parsing and the TLS context.

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

from exporter.config.fields import check_keys, mapping, small_file, type_name
from exporter.config.yamlfile import MAX_FILE_BYTES, ConfigError, load_yaml, read_text

log = logging.getLogger(__name__)

# client_auth_type -> what Python's ssl does. It cannot request a client certificate without verifying it:
# RequestClientCert gates nothing in Go either, so not asking is equivalent, and RequireAnyClientCert (and Go's
# legacy alias RequireClientCert) is made stricter, verified against client_ca_file, which parsing then requires.
_CLIENT_AUTH: Mapping[str, ssl.VerifyMode] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
_TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
     "TLS13": ssl.TLSVersion.TLSv1_3}
)  # fmt: skip
# exporter-toolkit's allow-list, so a file valid here is valid for Go exporters and vice versa; None: any value.
_ALLOWED_HEADERS: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
     "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
)  # fmt: skip
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "auth_excluded_paths")
# Only meaningful in Go's crypto/tls; Python's ssl module has no equivalent knob.
_GO_ONLY_TLS_KEYS = ("cipher_suites", "curve_preferences")
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             *_GO_ONLY_TLS_KEYS, "prefer_server_cipher_suites")  # fmt: skip
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
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_HASH_PREFIX = re.compile(r"\$2[a-z]?\$")  # anything that may be a bcrypt hash, to keep it out of key paths
_TLS = "tls_server_config"


@dataclass(frozen=True)
class TLSServerConfig:
    """Server TLS settings; paths are absolute (resolved against the web config file's directory)."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class WebConfig:
    """A parsed web configuration; the defaults are plain HTTP without basic auth."""

    tls: TLSServerConfig | None = None
    # User name -> bcrypt hash. repr=False: the hashes must never reach a log line or an error message.
    basic_auth_users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    auth_excluded_paths: tuple[str, ...] = ()  # exact request paths served without basic auth


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file, including its certificate, key and CA files."""
    return parse_web_config(read_text(path), base_dir=path.absolute().parent)


def parse_web_config(text: str, *, base_dir: Path) -> WebConfig:
    """Parse web config YAML text; relative paths resolve against `base_dir`."""
    data = load_yaml(text)
    top = _section({} if data is None else data, "")
    check_keys(top, _TOP_KEYS, "")
    tls = _parse_tls(top.get(_TLS), base_dir)
    if tls is not None:
        build_ssl_context(tls)  # fail at load time, not at the first connection
    return WebConfig(
        tls=tls,
        basic_auth_users=MappingProxyType(_parse_users(top.get("basic_auth_users"))),
        headers=MappingProxyType(_parse_http(top.get("http_server_config"))),
        auth_excluded_paths=tuple(_string_list(top.get("auth_excluded_paths"), "auth_excluded_paths")),
    )


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """Build a server-side SSL context: certificate chain, client CA and client auth policy, versions."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    if not tls.prefer_server_cipher_suites:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if b"-----BEGIN CERTIFICATE-----" not in _read_file(tls.cert_file, "cert_file"):
        raise ConfigError(f"{_TLS}.cert_file", f"no PEM certificate in {tls.cert_file}")
    key = _read_file(tls.key_file, "key_file")
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"{_TLS}.key_file", f"no PEM private key in {tls.key_file}")
    if b"ENCRYPTED" in key:  # PKCS#8's "BEGIN ENCRYPTED PRIVATE KEY", or the older "Proc-Type: 4,ENCRYPTED"
        raise ConfigError(
            f"{_TLS}.key_file", f"the private key in {tls.key_file} is encrypted; store it without a passphrase"
        )
    try:
        # The password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{_TLS}.key_file", f"cannot load key pair {tls.cert_file}, {tls.key_file}: {_reason(exc)}"
        ) from None
    if tls.client_ca_file is not None:
        _read_file(tls.client_ca_file, "client_ca_file")
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{_TLS}.client_ca_file", f"no usable CA certificate in {tls.client_ca_file}: {_reason(exc)}"
            ) from None
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return ctx


def _parse_tls(value: object, base_dir: Path) -> TLSServerConfig | None:
    """Parse `tls_server_config`; None when it does not enable TLS (as in exporter-toolkit)."""
    if value is None:
        return None
    section = _section(value, _TLS)
    for name, reason in _UNSUPPORTED_TLS_KEYS.items():
        if name in section:
            raise ConfigError(f"{_TLS}.{name}", reason)
    check_keys(section, _TLS_KEYS, _TLS)
    cert, key, auth, ca = (
        _optional_str(section, k) for k in ("cert_file", "key_file", "client_auth_type", "client_ca_file")
    )
    min_version = _tls_version(section, "min_version", "TLS12")
    max_version = _tls_version(section, "max_version", "TLS13")
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise ConfigError(f"{_TLS}.prefer_server_cipher_suites", "must be true or false")
    for go_only in _GO_ONLY_TLS_KEYS:
        if go_only in section:
            _string_list(section[go_only], f"{_TLS}.{go_only}")
            log.warning(
                "web config key ignored: Go-only TLS setting, OpenSSL defaults apply",
                extra={"key": f"{_TLS}.{go_only}"},
            )
    # exporter-toolkit enables TLS as soon as any of these is set, and then insists on cert and key.
    if not (cert or key or auth or ca):
        return None
    if not cert:
        raise ConfigError(f"{_TLS}.cert_file", "required when TLS is enabled")
    if not key:
        raise ConfigError(f"{_TLS}.key_file", "required when TLS is enabled")
    client_auth = auth or "NoClientCert"
    if client_auth not in _CLIENT_AUTH:
        expected = ", ".join(k for k in _CLIENT_AUTH if k != "RequireClientCert")
        raise ConfigError(f"{_TLS}.client_auth_type", f"unknown value {auth!r}; expected one of {expected}")
    if client_auth == "RequireClientCert":  # exporter-toolkit's legacy name
        client_auth = "RequireAnyClientCert"
    if ca and client_auth == "NoClientCert":
        raise ConfigError(f"{_TLS}.client_ca_file", "set, but client_auth_type is NoClientCert (nothing would use it)")
    if not ca and _CLIENT_AUTH[client_auth] != ssl.CERT_NONE:
        raise ConfigError(f"{_TLS}.client_ca_file", f"required when client_auth_type is {client_auth}")
    if _TLS_VERSIONS[min_version] > _TLS_VERSIONS[max_version]:
        raise ConfigError(f"{_TLS}.min_version", f"{min_version} is above max_version {max_version}")
    if client_auth == "RequireAnyClientCert":
        log.warning(
            "RequireAnyClientCert verifies client certificates against client_ca_file (stricter than Go)",
            extra={"key": f"{_TLS}.client_auth_type"},
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


def _tls_version(section: Mapping[str, object], key: str, default: str) -> str:
    value = section.get(key, default)
    if not isinstance(value, str) or value not in _TLS_VERSIONS:
        raise ConfigError(f"{_TLS}.{key}", f"unknown TLS version {value!r}; expected one of {', '.join(_TLS_VERSIONS)}")
    return value


def _parse_http(value: object) -> dict[str, str]:
    """Parse `http_server_config`; returns the extra response headers (http2 is accepted and ignored)."""
    if value is None:
        return {}
    section = _section(value, "http_server_config")
    check_keys(section, ("headers", "http2"), "http_server_config")
    if "http2" in section and not isinstance(section["http2"], bool):
        raise ConfigError("http_server_config.http2", "must be true or false")
    headers: dict[str, str] = {}
    headers_section = section.get("headers")
    for name, header_value in _section(
        {} if headers_section is None else headers_section, "http_server_config.headers"
    ).items():
        path = f"http_server_config.headers.{name}"
        if name not in _ALLOWED_HEADERS:
            raise ConfigError(path, f"cannot be configured; allowed: {', '.join(_ALLOWED_HEADERS)}")
        if not isinstance(header_value, str):
            raise ConfigError(path, "must be a string")
        if any(c in header_value for c in "\r\n\0"):
            raise ConfigError(path, "must not contain line breaks")
        allowed = _ALLOWED_HEADERS[name]
        if allowed is not None and header_value not in allowed:
            raise ConfigError(path, f"invalid value {header_value!r}; expected one of {', '.join(allowed)}")
        if header_value:  # blank means unset, as in exporter-toolkit
            headers[name] = header_value
    return headers


def _parse_users(value: object) -> dict[str, bytes]:
    """Parse `basic_auth_users`: user name -> bcrypt hash. Hashes never appear in errors."""
    users: dict[str, bytes] = {}
    # Only a missing or null section means no users: `basic_auth_users: false` must not turn authentication off.
    for user, hashed in _section({} if value is None else value, "basic_auth_users").items():
        # A name holding a hash (name and hash swapped, an htpasswd line pasted as the name) is not quoted.
        path = "basic_auth_users" if _HASH_PREFIX.search(user) else f"basic_auth_users.{user}"
        if ":" in user:
            raise ConfigError(path, "user names cannot contain ':' (basic auth splits on it)")
        if not isinstance(hashed, str):
            raise ConfigError(path, "must be a bcrypt hash string")
        if not _BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(path, "not a bcrypt hash (expected $2a$, $2b$ or $2y$, cost 04-31, 60 characters)")
        users[user] = hashed.encode("ascii")
    return users


def _section(value: object, path: str) -> dict[str, object]:
    if not path and not isinstance(value, dict):
        raise ConfigError("", f"the web config must be a mapping, got {type_name(value)}")
    section = mapping(value, path)
    for key in section:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {type_name(key)} {key!r}")
    return section  # type: ignore[return-value]


def _optional_str(section: Mapping[str, object], key: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{_TLS}.{key}", f"must be a string, got {type_name(value)}")
    if value is not None and "\0" in value:  # a file path with one makes os.stat raise ValueError
        raise ConfigError(f"{_TLS}.{key}", "must not contain NUL characters")
    return value


def _string_list(value: object, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of strings, got {type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", f"must be a string, got {type_name(item)}")
    return value


def _read_file(path: Path, key: str) -> bytes:
    # A CA bundle may be large, but a FIFO or a device must not block start-up.
    return small_file(path, str(path), f"{_TLS}.{key}", MAX_FILE_BYTES)


def _reason(exc: BaseException) -> str:
    """A short reason for an OS or SSL error, without content of the file."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
