"""The exporter's config file: strict YAML -> a frozen, validated `Config`; every error is a `ConfigError`.

Parsing, `${VAR}` expansion, file reads (secrets, certificates, refresh tokens) and validation all happen here,
at load time, so the rest of the exporter only ever sees typed, checked values.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, cast
from urllib.parse import urlsplit

import httpx

from exporter.config import credentials, fields
from exporter.config.credentials import AssertionFile, Certificate, Credential
from exporter.config.fields import Mapping_, Reader, check_keys, mapping, present, type_name
from exporter.config.yamlfile import ConfigError, join, load_yaml, read_text
from exporter.files import written
from exporter.secret import Secret

logger = logging.getLogger(__name__)

CloudName = Literal["global", "usgov", "china"]
Endpoint = Literal["summary", "summaries"]


@dataclass(frozen=True, slots=True)
class Cloud:
    """One Microsoft cloud: where Partner Center and Entra ID are."""

    api_url: str  # also the resource of the token scope (`Config.scope`)
    login_url: str


_GLOBAL_PC = "https://api.partnercenter.microsoft.com"
# From Microsoft's national cloud docs and the Partner Center SDKs (docs/configuration.md: why China's login differs).
CLOUDS: Final[Mapping[str, Cloud]] = MappingProxyType(
    {
        "global": Cloud(_GLOBAL_PC, "https://login.microsoftonline.com"),
        "usgov": Cloud(_GLOBAL_PC, "https://login.microsoftonline.us"),
        "china": Cloud("https://partner.partnercenterapi.microsoftonline.cn", "https://login.chinacloudapi.cn"),
    }
)
_TOP_KEYS: Final = ("interval", "timeout", "concurrency", "max_staleness", "payment_terms", "cloud", "api_url",
                    "login_url", "thresholds", "tenants", "state_file")  # fmt: skip
_CREDENTIAL_KEYS: Final = ("client_secret", "client_secret_file", "client_certificate_file", "client_assertion_file")
_TENANT_KEYS: Final = ("name", "tenant_id", "client_id", *_CREDENTIAL_KEYS, "refresh_token_file", "payment_terms",
                       "endpoint", "thresholds")  # fmt: skip
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_GUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# The tenant ID ends up in the token URL's path, so only real DNS names are let through.
_DOMAIN_RE: Final = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")


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
    # The app's credential: a secret, a certificate, a federated token file; None for a public client (App+User).
    credential: Credential | None
    refresh_token_file: Path | None  # set => App+User auth
    refresh_token: Secret | None = field(compare=False)  # the token read from refresh_token_file at load
    endpoint: Endpoint
    # Mapping proxies are unhashable; leaving them out of the hash keeps configs usable as keys.
    thresholds: Mapping[str, Threshold] = field(hash=False)
    payment_terms: float | None = None  # seconds
    credential_source: tuple[str, str] = ("", "")  # for `--config.check`: the key, and the file as written

    @property
    def auth_mode(self) -> Literal["app", "app+user"]:
        """ "app+user" when a refresh token drives authentication, else "app"."""
        return "app+user" if self.refresh_token_file is not None else "app"

    @property
    def certificate(self) -> Certificate | None:
        """The client certificate, when that is the credential."""
        return self.credential if isinstance(self.credential, Certificate) else None


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
    payment_terms: float | None = None

    @property
    def scope(self) -> str:
        """The token scope: the cloud's own Partner Center URL, whatever api_url says (a proxy, the simulator)."""
        return CLOUDS[self.cloud].api_url + "/.default"


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the config file at `path`; `environ` defaults to the process environment."""
    environ = os.environ if environ is None else environ
    return parse_config(read_text(path), base_dir=path.absolute().parent, environ=environ)


def parse_config(text: str, *, base_dir: Path, environ: Mapping[str, str]) -> Config:
    """Parse config text; relative file paths resolve against `base_dir`."""
    document = load_yaml(text)
    if document is None:
        raise ConfigError("", "the config is empty: it needs at least `tenants`")
    if not isinstance(document, dict):
        raise ConfigError("", f"the top level must be a mapping, got {type_name(document)}")
    return _Parser(Reader(base_dir, environ)).config(document)


class _Parser:
    def __init__(self, read: Reader) -> None:
        self._read = read
        self._writable: set[Path] = set()  # directories already proven writable (one probe file per directory)

    def config(self, doc: Mapping_) -> Config:
        read = self._read
        check_keys(doc, _TOP_KEYS, "")
        interval = cast(float, read.duration(doc, "interval", 600.0))
        if interval < 1:
            raise ConfigError("interval", "must be at least 1s")
        timeout = cast(float, read.duration(doc, "timeout", 30.0))
        concurrency = read.integer(doc, "concurrency", 8, 1, 1000)
        max_staleness = cast(float, read.duration(doc, "max_staleness", 86400.0))
        payment_terms = read.duration(doc, "payment_terms", None)
        cloud = cast(CloudName, read.choice(doc, "cloud", "", tuple(CLOUDS)) or "global")
        api_url = self._url(doc, "api_url", CLOUDS[cloud].api_url)
        login_url = self._url(doc, "login_url", CLOUDS[cloud].login_url)
        state_file = read.path(doc, "state_file", "")
        thresholds = self._thresholds(doc, "", MappingProxyType({}))
        tenants = self._tenants(doc, thresholds, payment_terms)
        # Partner Center allows a modest request rate per partner; faster polling mostly buys throttling.
        if interval < 60:
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
            state_file=state_file[0] if state_file else None,
            payment_terms=payment_terms,
        )

    def _tenants(
        self, doc: Mapping_, defaults: Mapping[str, Threshold], payment_terms: float | None
    ) -> tuple[TenantConfig, ...]:
        """Validate the tenant list: non-empty, unique names, no shared refresh token file."""
        if not present(doc, "tenants"):
            raise ConfigError("tenants", "required key is missing: list at least one tenant")
        value = doc["tenants"]
        if not isinstance(value, list):
            raise ConfigError("tenants", f"must be a list of tenants, got {type_name(value)}")
        if not value:
            raise ConfigError("tenants", "must list at least one tenant")
        tenants: list[TenantConfig] = []
        names: dict[str, int] = {}
        token_files: dict[Path, int] = {}  # by resolved path: `tokens/a` and `./tokens/../tokens/a` are one file
        for index, item in enumerate(value):
            path = f"tenants[{index}]"
            tenant = self._tenant(item, path, defaults, payment_terms)
            if tenant.name in names:
                shown = self._read.text(item["name"], path).shown  # how the name may be quoted: not from ${VAR}
                raise ConfigError(f"{path}.name", f"duplicate tenant name {shown} (also tenants[{names[tenant.name]}])")
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

    def _tenant(
        self, item: object, path: str, defaults: Mapping[str, Threshold], payment_terms: float | None
    ) -> TenantConfig:
        read = self._read
        entry = mapping(item, path)
        check_keys(entry, _TENANT_KEYS, path)
        name = read.required(entry, "name", path)
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{path}.name", "must consist of letters, digits, '_', '.' and '-'")
        tenant_id = read.required(entry, "tenant_id", path)
        if not (_GUID_RE.fullmatch(tenant_id) or _DOMAIN_RE.fullmatch(tenant_id)):
            raise ConfigError(
                f"{path}.tenant_id", "must be a tenant GUID or a domain name such as contoso.onmicrosoft.com"
            )
        client_id = read.required(entry, "client_id", path)
        if not _GUID_RE.fullmatch(client_id):
            raise ConfigError(
                f"{path}.client_id", "must be an application GUID like 00000000-0000-0000-0000-000000000000"
            )
        credential, source = self._credential(entry, path)
        refresh_token_file, refresh_token = self._refresh_token(entry, path)
        if refresh_token is None and credential is None:
            raise ConfigError(
                path,
                "app-only auth needs a credential: client_secret, client_secret_file, client_certificate_file or "
                "client_assertion_file (or set refresh_token_file for App+User auth)",
            )
        endpoint = cast(Endpoint, read.choice(entry, "endpoint", path, ("summary", "summaries")) or "summary")
        if endpoint == "summaries" and refresh_token_file is None:
            raise ConfigError(f"{path}.endpoint", "summaries needs App+User auth: set refresh_token_file")
        return TenantConfig(
            name=str(name),
            tenant_id=str(tenant_id),
            client_id=str(client_id),
            credential=credential,
            refresh_token_file=refresh_token_file,
            refresh_token=refresh_token,
            endpoint=endpoint,
            thresholds=self._thresholds(entry, path, defaults),
            payment_terms=read.duration(entry, "payment_terms", payment_terms, path),
            credential_source=source,
        )

    def _credential(self, entry: Mapping_, path: str) -> tuple[Credential | None, tuple[str, str]]:
        """The tenant's one app credential, read and checked now."""
        read = self._read
        keys = [key for key in _CREDENTIAL_KEYS if present(entry, key)]
        if len(keys) > 1:
            raise ConfigError(path, f"{' and '.join(keys)} are mutually exclusive: set one credential")
        if not keys:
            return None, ("", "")
        key = keys[0]
        where = join(path, key)
        if key == "client_secret":
            value = read.text(entry[key], where)
            if not value:
                raise ConfigError(where, "must not be empty")
            return Secret(str(value)), (key, "<set>")
        file, shown = cast(tuple[Path, str], read.path(entry, key, path))
        if key == "client_certificate_file":
            certificate = credentials.load_certificate(fields.small_file(file, shown, where), file, shown, where)
            return certificate, (key, str(file))
        text = read.small_text_file(file, shown, where)
        if key == "client_assertion_file":
            # It rotates and is read at every token request; reading it now proves it readable.
            if not text.strip():
                raise ConfigError(where, f"{shown} is empty")
            return AssertionFile(file), (key, str(file))
        if not (secret := text.rstrip("\r\n")):
            raise ConfigError(where, f"{shown} is empty")
        return Secret(secret), (key, str(file))

    def _refresh_token(self, entry: Mapping_, path: str) -> tuple[Path | None, Secret | None]:
        """App+User: the refresh token file (its directory must be writable for the rotated token) and its token."""
        found = self._read.path(entry, "refresh_token_file", path)
        if found is None:
            return None, None
        file, shown = found
        where = join(path, "refresh_token_file")
        token = self._read.small_text_file(file, shown, where).strip()
        if not token:
            raise ConfigError(where, f"{shown} is empty")
        directory = written(file).parent
        if directory not in self._writable:
            credentials.check_writable_directory(directory, shown, where)
            self._writable.add(directory)
        return file, Secret(token)

    def _thresholds(self, item: Mapping_, path: str, default: Mapping[str, Threshold]) -> Mapping[str, Threshold]:
        """The optional currency -> {warning, critical} mapping; currency codes are upper-cased."""
        if not present(item, "thresholds"):
            return default
        path = join(path, "thresholds")
        result: dict[str, Threshold] = {}
        for key, entry in mapping(item["thresholds"], path, "a mapping of currency code to thresholds").items():
            if not isinstance(key, str):
                raise ConfigError(path, f"currency codes must be strings, got {type_name(key)}")
            where = f"{path}.{key}"
            code = key.upper()
            if not _CURRENCY_RE.fullmatch(code):
                raise ConfigError(where, "not a currency code: use three letters such as USD")
            if code in result:
                raise ConfigError(where, f"duplicate currency {code} (codes are case-insensitive)")
            levels = mapping(entry, where, "a mapping with warning and/or critical")
            check_keys(levels, ("warning", "critical"), where)
            warning = fields.optional_number(levels, "warning", where)
            critical = fields.optional_number(levels, "critical", where)
            if warning is None and critical is None:
                raise ConfigError(where, "set warning, critical or both")
            if warning is not None and critical is not None and warning > critical:
                order = f"warning ({fields.number_text(warning)}) is above critical ({fields.number_text(critical)})"
                raise ConfigError(where, order)
            result[code] = Threshold(warning=warning, critical=critical)
        return MappingProxyType(result)

    def _url(self, doc: Mapping_, key: str, default: str) -> str:
        """An http(s) URL without trailing slash; never echoed, as it may hold a password."""
        if not present(doc, key):
            return default
        value = self._read.text(doc[key], key)
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
        try:
            httpx.URL(value)  # what the client will make of it: a host name IDNA refuses, for one
        except httpx.InvalidURL:
            raise ConfigError(key, "must be an http:// or https:// URL with a valid host name") from None
        return str(value).rstrip("/")
