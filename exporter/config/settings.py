"""The configuration file: strict YAML -> a frozen, validated `Config`; every error is a `ConfigError`.

Parsing, `${VAR}` expansion, file reads (secrets, refresh tokens) and validation all happen here, at load
time, so the rest of the exporter only ever sees typed, checked values.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal
from urllib.parse import urlsplit

from exporter.config.yamlfile import ConfigError, load_yaml
from exporter.secret import Secret

logger = logging.getLogger(__name__)

CloudName = Literal["global", "usgov", "china"]
Endpoint = Literal["summary", "summaries"]

DEFAULT_INTERVAL: Final = 600.0
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_MAX_STALENESS: Final = 86400.0
DEFAULT_CLOUD: Final = "global"

# Partner Center allows a modest request rate per partner; faster polling mostly buys throttling.
_INTERVAL_WARNING_BELOW: Final = 60.0

# cloud -> (api_url, login_url), from Microsoft's national cloud documentation.
_CLOUDS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "global": ("https://api.partnercenter.microsoft.com", "https://login.microsoftonline.com"),
        "usgov": ("https://api.partnercenter.microsoft.com", "https://login.microsoftonline.us"),
        "china": ("https://partner.partnercenterapi.microsoftonline.cn", "https://login.chinacloudapi.cn"),
    }
)

_TOP_KEYS: Final = (
    "interval",
    "timeout",
    "concurrency",
    "max_staleness",
    "cloud",
    "api_url",
    "login_url",
    "thresholds",
    "tenants",
    "state_file",
)
_TENANT_KEYS: Final = (
    "name",
    "tenant_id",
    "client_id",
    "client_secret",
    "client_secret_file",
    "refresh_token_file",
    "endpoint",
    "thresholds",
)
_THRESHOLD_KEYS: Final = ("warning", "critical")

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_GUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# The tenant ID ends up in the token URL's path, so only real DNS names are let through.
_DOMAIN_RE: Final = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_VAR_RE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_RE: Final = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ms|s|m|h|d))+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS: Final[Mapping[str, float]] = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
)

# Longer than any sensible poll interval or staleness, and well inside what timers and sleeps accept.
_MAX_DURATION: Final = 365 * 86400.0
# Secret and token files are small; the cap keeps a mistaken path (a log, a disk image) from being slurped.
_MAX_SECRET_FILE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Threshold:
    """Balance alert thresholds for one currency."""

    warning: float | None
    critical: float | None


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One Partner Center tenant to poll."""

    name: str
    tenant_id: str
    client_id: str
    client_secret: Secret | None
    refresh_token_file: Path | None
    refresh_token: Secret | None = field(compare=False)
    endpoint: Endpoint
    # Mapping proxies are unhashable; leaving them out of the hash keeps configs usable as keys.
    thresholds: Mapping[str, Threshold] = field(hash=False)
    # Where client_secret came from, so that `--config.check` can say so; None for an inline secret.
    client_secret_file: Path | None = None

    @property
    def auth_mode(self) -> Literal["app", "app+user"]:
        """Return "app+user" when a refresh token drives authentication, else "app"."""
        return "app+user" if self.refresh_token_file is not None else "app"


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    interval: float
    timeout: float
    concurrency: int
    max_staleness: float
    cloud: CloudName
    api_url: str
    login_url: str
    thresholds: Mapping[str, Threshold] = field(hash=False)
    tenants: tuple[TenantConfig, ...]
    state_file: Path | None

    def reusing(self, previous: Config) -> Config:
        """This config, with every tenant equal to one of `previous` replaced by that object.

        Unchanged tenants then keep their objects across a reload, which tells the renderer to keep their
        rendered lines (it compares objects, not values), and lets the freshly parsed copies go at once.
        """
        kept = {t.name: t for t in previous.tenants}
        return replace(self, tenants=tuple(t if kept.get(t.name) != t else kept[t.name] for t in self.tenants))


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the config file at `path`; `environ` defaults to the process environment."""
    if environ is None:
        environ = os.environ
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {path}: not valid UTF-8 (byte {exc.start})") from None
    return parse_config(text, base_dir=path.absolute().parent, environ=environ)


def parse_config(text: str, *, base_dir: Path, environ: Mapping[str, str]) -> Config:
    """Parse config text; relative file paths resolve against `base_dir`."""
    document = load_yaml(text)
    if document is None:
        raise ConfigError("", "the config is empty: it needs at least `tenants`")
    if not isinstance(document, dict):
        raise ConfigError("", f"the top level must be a mapping, got {_type_name(document)}")
    return _Parser(base_dir, environ).config(document)


def parse_duration(value: object, path: str) -> float:
    """Return seconds from a positive number or a Go-style duration string (`500ms`, `1h30m`, `1d`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(path, f"must be a duration like 30s or a number of seconds, got {_type_name(value)}")
    if isinstance(value, str):
        if not _DURATION_RE.fullmatch(value):
            raise ConfigError(
                path,
                f"invalid duration {_quote(value)}: use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds",
            )
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART_RE.findall(value))
    else:
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigError(path, "must be a positive duration")
    if seconds > _MAX_DURATION:  # also catches inf
        raise ConfigError(path, "must be at most 365d")
    return seconds


def describe_config(config: Config) -> str:
    """Return a multi-line human summary for `--config.check`; secrets show only as `<set>`."""
    lines = [
        _fields(
            interval=format_duration(config.interval),
            timeout=format_duration(config.timeout),
            concurrency=str(config.concurrency),
            max_staleness=format_duration(config.max_staleness),
        ),
        _fields(cloud=config.cloud, api_url=config.api_url, login_url=config.login_url),
        _fields(state_file=str(config.state_file) if config.state_file else "<none>"),
        _fields(thresholds=_describe_thresholds(config.thresholds)),
        _fields(tenants=str(len(config.tenants))),
    ]
    for tenant in config.tenants:
        if tenant.client_secret_file is not None:
            secret = {"client_secret_file": str(tenant.client_secret_file)}
        else:
            secret = {"client_secret": "<set>" if tenant.client_secret is not None else "<none>"}
        token = {"refresh_token_file": str(tenant.refresh_token_file)} if tenant.refresh_token_file else {}
        lines.append(
            "  "
            + _fields(
                tenant=tenant.name,
                tenant_id=tenant.tenant_id,
                client_id=tenant.client_id,
                auth=tenant.auth_mode,
                endpoint=tenant.endpoint,
                **secret,
                **token,
                thresholds=_describe_thresholds(tenant.thresholds),
            )
        )
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """Format seconds the way they are written in the config: `1h30m`, `45s`, `500ms`."""
    millis = round(seconds * 1000)
    if millis == 0:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


class _Parser:
    """Validates one parsed YAML document; holds only what that document's relative parts need."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        """Remember where relative paths start and where `${VAR}` values come from."""
        self._base_dir = base_dir
        self._environ = environ

    def config(self, doc: dict[object, object]) -> Config:
        """Validate the top-level mapping."""
        _check_keys(doc, _TOP_KEYS, "")
        interval = self._duration(doc, "interval", DEFAULT_INTERVAL)
        timeout = self._duration(doc, "timeout", DEFAULT_TIMEOUT)
        concurrency = self._positive_int(doc, "concurrency", DEFAULT_CONCURRENCY)
        max_staleness = self._duration(doc, "max_staleness", DEFAULT_MAX_STALENESS)
        cloud = self._cloud(doc)
        default_api, default_login = _CLOUDS[cloud]
        api_url = self._url(doc, "api_url", default_api)
        login_url = self._url(doc, "login_url", default_login)
        state_file = self._optional_path(doc, "state_file", "state_file")
        thresholds = self._thresholds(doc["thresholds"], "thresholds") if _present(doc, "thresholds") else _EMPTY
        tenants = self._tenants(doc, thresholds)
        if interval < _INTERVAL_WARNING_BELOW:
            logger.warning(
                "poll interval is below one minute; Partner Center may throttle the exporter",
                extra={"interval_seconds": interval},
            )
        if max_staleness < interval:
            logger.warning(
                "max_staleness is shorter than interval; business metrics will vanish between polls",
                extra={"max_staleness_seconds": max_staleness, "interval_seconds": interval},
            )
        return Config(
            interval=interval,
            timeout=timeout,
            concurrency=concurrency,
            max_staleness=max_staleness,
            cloud=cloud,
            api_url=api_url,
            login_url=login_url,
            thresholds=thresholds,
            tenants=tenants,
            state_file=state_file,
        )

    def _tenants(self, doc: dict[object, object], defaults: Mapping[str, Threshold]) -> tuple[TenantConfig, ...]:
        """Validate the tenant list: non-empty, unique names, no shared refresh token file."""
        if not _present(doc, "tenants"):
            raise ConfigError("tenants", "required key is missing: list at least one tenant")
        value = doc["tenants"]
        if not isinstance(value, list):
            raise ConfigError("tenants", f"must be a list of tenants, got {_type_name(value)}")
        if not value:
            raise ConfigError("tenants", "must list at least one tenant")
        tenants: list[TenantConfig] = []
        names: dict[str, int] = {}
        # Keyed by the resolved path: `tokens/a` and `./tokens/../tokens/a` are one file.
        token_files: dict[Path, int] = {}
        for index, item in enumerate(value):
            path = f"tenants[{index}]"
            tenant = self._tenant(item, path, defaults)
            if tenant.name in names:
                raise ConfigError(
                    f"{path}.name",
                    f"duplicate tenant name {_quote(tenant.name)} (also tenants[{names[tenant.name]}])",
                )
            names[tenant.name] = index
            if tenant.refresh_token_file is not None:
                # Two tenants rotating one file would overwrite each other's refresh tokens.
                key = tenant.refresh_token_file.resolve()
                if key in token_files:
                    raise ConfigError(
                        f"{path}.refresh_token_file", f"file is already used by tenants[{token_files[key]}]"
                    )
                token_files[key] = index
            tenants.append(tenant)
        return tuple(tenants)

    def _tenant(self, item: object, path: str, defaults: Mapping[str, Threshold]) -> TenantConfig:
        """Validate one tenant entry."""
        if not isinstance(item, dict):
            raise ConfigError(path, f"must be a mapping, got {_type_name(item)}")
        _check_keys(item, _TENANT_KEYS, path)
        name = self._required_str(item, "name", path)
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{path}.name", "must consist of letters, digits, '_', '.' and '-'")
        tenant_id = self._required_str(item, "tenant_id", path)
        if not (_GUID_RE.fullmatch(tenant_id) or _DOMAIN_RE.fullmatch(tenant_id)):
            raise ConfigError(
                f"{path}.tenant_id", "must be a tenant GUID or a domain name such as contoso.onmicrosoft.com"
            )
        client_id = self._required_str(item, "client_id", path)
        if not _GUID_RE.fullmatch(client_id):
            raise ConfigError(
                f"{path}.client_id", "must be an application GUID like 00000000-0000-0000-0000-000000000000"
            )

        has_secret, has_secret_file = _present(item, "client_secret"), _present(item, "client_secret_file")
        if has_secret and has_secret_file:
            raise ConfigError(path, "client_secret and client_secret_file are mutually exclusive: set one")
        client_secret: Secret | None = None
        client_secret_file: Path | None = None
        if has_secret:
            value = self._str(item["client_secret"], f"{path}.client_secret")
            if not value:
                raise ConfigError(f"{path}.client_secret", "must not be empty")
            client_secret = Secret(value)
        elif has_secret_file:
            file_path = f"{path}.client_secret_file"
            raw = self._str(item["client_secret_file"], file_path)
            client_secret_file = self._resolve(raw, file_path)
            client_secret = Secret(self._read_small_file(client_secret_file, raw, file_path).rstrip("\r\n"))
            if not client_secret.reveal():
                raise ConfigError(file_path, f"{raw} is empty")

        refresh_token_file = self._optional_path(item, "refresh_token_file", f"{path}.refresh_token_file")
        refresh_token: Secret | None = None
        if refresh_token_file is not None:
            token_path = f"{path}.refresh_token_file"
            raw = self._str(item["refresh_token_file"], token_path)
            refresh_token = Secret(self._read_small_file(refresh_token_file, raw, token_path).strip())
            if not refresh_token.reveal():
                raise ConfigError(token_path, f"{raw} is empty")
        elif client_secret is None:
            raise ConfigError(
                path,
                "app-only auth needs client_secret or client_secret_file (or set refresh_token_file for App+User auth)",
            )

        endpoint = self._endpoint(item, path)
        if endpoint == "summaries" and refresh_token_file is None:
            raise ConfigError(f"{path}.endpoint", "summaries needs App+User auth: set refresh_token_file")
        thresholds = (
            self._thresholds(item["thresholds"], f"{path}.thresholds") if _present(item, "thresholds") else defaults
        )
        return TenantConfig(
            name=name,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token_file=refresh_token_file,
            refresh_token=refresh_token,
            endpoint=endpoint,
            thresholds=thresholds,
            client_secret_file=client_secret_file,
        )

    def _thresholds(self, value: object, path: str) -> Mapping[str, Threshold]:
        """Validate a currency -> {warning, critical} mapping; currency codes are upper-cased."""
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping of currency code to thresholds, got {_type_name(value)}")
        result: dict[str, Threshold] = {}
        for key, entry in value.items():
            if not isinstance(key, str):
                raise ConfigError(path, f"currency codes must be strings, got {_type_name(key)}")
            entry_path = f"{path}.{key}"
            code = key.upper()
            if not _CURRENCY_RE.fullmatch(code):
                raise ConfigError(entry_path, "not a currency code: use three letters such as USD")
            if code in result:
                raise ConfigError(entry_path, f"duplicate currency {code} (codes are case-insensitive)")
            if not isinstance(entry, dict):
                raise ConfigError(
                    entry_path, f"must be a mapping with warning and/or critical, got {_type_name(entry)}"
                )
            _check_keys(entry, _THRESHOLD_KEYS, entry_path)
            warning = _optional_number(entry, "warning", entry_path)
            critical = _optional_number(entry, "critical", entry_path)
            if warning is None and critical is None:
                raise ConfigError(entry_path, "set warning, critical or both")
            if warning is not None and critical is not None and warning > critical:
                raise ConfigError(
                    entry_path,
                    f"warning ({_format_number(warning)}) is above critical ({_format_number(critical)})",
                )
            result[code] = Threshold(warning=warning, critical=critical)
        return MappingProxyType(result)

    def _duration(self, doc: dict[object, object], key: str, default: float) -> float:
        """Return an optional duration in seconds."""
        if not _present(doc, key):
            return default
        value = doc[key]
        if isinstance(value, str):
            value = self._expand(value, key)
        return parse_duration(value, key)

    def _positive_int(self, doc: dict[object, object], key: str, default: int) -> int:
        """Return an optional integer >= 1."""
        if not _present(doc, key):
            return default
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {_type_name(value)}")
        if value < 1:
            raise ConfigError(key, "must be at least 1")
        return value

    def _cloud(self, doc: dict[object, object]) -> CloudName:
        """Return the cloud name."""
        if not _present(doc, "cloud"):
            return DEFAULT_CLOUD
        value = self._str(doc["cloud"], "cloud")
        match value:
            case "global" | "usgov" | "china":
                return value
        raise ConfigError("cloud", f"unknown cloud {_quote(value)}: use global, usgov or china")

    def _endpoint(self, item: dict[object, object], path: str) -> Endpoint:
        """Return the tenant's upstream endpoint."""
        if not _present(item, "endpoint"):
            return "summary"
        value = self._str(item["endpoint"], f"{path}.endpoint")
        match value:
            case "summary" | "summaries":
                return value
        raise ConfigError(f"{path}.endpoint", f"unknown endpoint {_quote(value)}: use summary or summaries")

    def _url(self, doc: dict[object, object], key: str, default: str) -> str:
        """Return an http(s) URL without trailing slash; never echoed, as it may hold a password."""
        if not _present(doc, key):
            return default
        value = self._str(doc[key], key)
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            raise ConfigError(key, "must be an http:// or https:// URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ConfigError(key, "must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(key, "must not contain credentials")
        if parts.query or parts.fragment:
            raise ConfigError(key, "must not contain a query or fragment")
        return value.rstrip("/")

    def _optional_path(self, doc: dict[object, object], key: str, path: str) -> Path | None:
        """Return an optional file path, resolved against the config directory."""
        if not _present(doc, key):
            return None
        return self._resolve(self._str(doc[key], path), path)

    def _resolve(self, raw: str, path: str) -> Path:
        """Resolve a config-relative path."""
        if not raw:
            raise ConfigError(path, "must not be empty")
        if "\0" in raw:
            raise ConfigError(path, "must not contain NUL characters")
        return self._base_dir / raw

    def _read_small_file(self, file: Path, raw: str, path: str) -> str:
        """Return a small text file's content; errors name the path as written in the config."""
        try:
            mode = file.stat().st_mode
            # Opening a FIFO or a device could block start-up forever.
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ConfigError(path, f"cannot read {raw}: not a regular file")
            with file.open("rb") as handle:
                data = handle.read(_MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(path, f"cannot read {raw}: {exc.strerror or type(exc).__name__}") from None
        if len(data) > _MAX_SECRET_FILE_BYTES:
            raise ConfigError(path, f"cannot read {raw}: larger than {_MAX_SECRET_FILE_BYTES // 1024} KiB")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path, f"cannot read {raw}: not valid UTF-8") from None

    def _required_str(self, item: dict[object, object], key: str, path: str) -> str:
        """Return a required, non-empty string."""
        if not _present(item, key):
            raise ConfigError(f"{path}.{key}", "required key is missing")
        return self._str(item[key], f"{path}.{key}")

    def _str(self, value: object, path: str) -> str:
        """Return a string with `${VAR}` expanded; only the type is named on error, never the value."""
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_type_name(value)}")
        return self._expand(value, path)

    def _expand(self, value: str, path: str) -> str:
        """Expand `${VAR}` from the environment; `$$` is a literal `$`, a lone `$` stays as it is."""
        if "$" not in value:
            return value
        out: list[str] = []
        pos = 0
        while (dollar := value.find("$", pos)) >= 0:
            out.append(value[pos:dollar])
            follower = value[dollar + 1 : dollar + 2]
            if follower == "$":
                out.append("$")
                pos = dollar + 2
            elif follower == "{":
                match = _VAR_RE.match(value, dollar)
                if match is None:
                    raise ConfigError(path, "invalid variable reference: use ${NAME}, or $$ for a literal $")
                name = match.group(1)
                if name not in self._environ:
                    raise ConfigError(path, f"environment variable {name} is not set")
                out.append(self._environ[name])
                pos = match.end()
            else:
                out.append("$")
                pos = dollar + 1
        out.append(value[pos:])
        return "".join(out)


_EMPTY: Final[Mapping[str, Threshold]] = MappingProxyType({})


def _present(mapping: dict[object, object], key: str) -> bool:
    """Tell whether an optional key is set; YAML null counts as unset, like a commented-out value."""
    return mapping.get(key) is not None


def _optional_number(entry: dict[object, object], key: str, path: str) -> float | None:
    """Return an optional finite number."""
    if not _present(entry, key):
        return None
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}.{key}", f"must be a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{path}.{key}", "must be a finite number")
    return number


def _check_keys(mapping: dict[object, object], known: tuple[str, ...], path: str) -> None:
    """Reject non-string and unknown keys, suggesting the closest known key."""
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {_type_name(key)}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(key.lower(), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}.{key}" if path else key, f"unknown key{hint}")


def _type_name(value: object) -> str:
    """Name a YAML value's type the way a config author thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _quote(value: str, limit: int = 40) -> str:
    """Quote a user value for a message, shortened so a stray blob cannot flood it."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_number(value: float) -> str:
    """Format a threshold without a spurious `.0`."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _describe_thresholds(thresholds: Mapping[str, Threshold]) -> str:
    """Format thresholds compactly, without `=` so logfmt needs no quotes: `USD(warning:50000,critical:1e5)`."""
    if not thresholds:
        return "<none>"
    parts = []
    for code, threshold in sorted(thresholds.items()):
        levels = [
            f"{name}:{_format_number(level)}"
            for name, level in (("warning", threshold.warning), ("critical", threshold.critical))
            if level is not None
        ]
        parts.append(f"{code}({','.join(levels)})")
    return ",".join(parts)


def _fields(**values: str) -> str:
    """Format key=value pairs, quoting values that would otherwise be ambiguous."""
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in values.items())


def _logfmt_value(value: str) -> str:
    """Quote a value containing spaces, quotes or `=`."""
    if value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
