"""Simulator scenarios as frozen values, each checked when it is built, from a YAML file or from Python.

A value built in Python (the exporter's `--demo` appends a certificate tenant to the default scenario with
`dataclasses.replace`) is held to the same rules as one read from a file: the checks live in `__post_init__`.
An error raised there names the key relative to the value (`certificates[0]`); the file loader prefixes the
path of the value in the file (`tenants[4].certificates[0]`).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from exporter.config.yamlfile import ConfigError
from exporter.simulator.assertions import Federation, load_certificate
from exporter.simulator.clouds import CLOUDS, Cloud
from exporter.simulator.rand import unit

FaultKind = Literal[
    "status", "throttle", "latency", "timeout", "reset", "html", "empty", "xml", "truncated", "huge", "slow_body"
]
FaultEndpoint = Literal["token", "summary", "summaries", "api", "any"]
Quirk = Literal[
    "bom",
    "naive_dates",
    "integer_amounts",
    "lowercase_invoice_types",
    "null_symbol",
    "no_details",
    "seven_digit_fractions",
]

FAULT_KINDS: Final = frozenset(get_args(FaultKind))
FAULT_ENDPOINTS: Final = frozenset(get_args(FaultEndpoint))
QUIRKS: Final = frozenset(get_args(Quirk))
# Entra's default lifetime of a refresh token that is not used: 90 days ("Refresh tokens in the Microsoft
# identity platform", https://learn.microsoft.com/entra/identity-platform/refresh-tokens).
REFRESH_TOKEN_LIFETIME: Final = 90 * 24 * 3600

# Upper bounds, so that a value that passes the checks also works where it ends up (a value beyond them used to
# pass and then crash every request that used it).
# Seconds (lifetimes, latencies, hangs, drift periods, Retry-After): 10 years is far beyond anything a demo or a
# test waits for, keeps `now + seconds` a date that renders, and keeps every wait below threading.TIMEOUT_MAX
# (292 years on Linux), beyond which Event.wait raises OverflowError.
MAX_SECONDS: Final = 10 * 365 * 24 * 3600
# Amounts: ten trillion is beyond any real balance, and below 2**53 cents (about 9 * 10**13), so every cent
# survives the double a JSON reader parses it into.
MAX_AMOUNT: Final = 10.0**13
# `huge` bodies: 1 TiB is more than any client reads; the bound keeps the byte count a number.
MAX_HUGE_MB: Final = 1024.0 * 1024.0
# Dates must render (Python's datetime: years 1 to 9999), once converted to UTC.
FIRST_DATE: Final = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
LAST_DATE: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
DATE_RANGE: Final = "must be a date between the years 1 and 9999 in UTC"

# Fixed currency list for generated scenarios: code and symbol.
_GENERATED_CURRENCIES: Final = (
    ("USD", "$"),
    ("EUR", "€"),
    ("GBP", "£"),
    ("JPY", "¥"),
    ("CHF", "CHF"),
    ("AUD", "A$"),
    ("CAD", "CA$"),
    ("SEK", "kr"),
)
_GENERATED_INVOICE_TYPES: Final = ("Recurring", "OneTime", "UsageBased")


class ScenarioError(ConfigError):
    """An invalid scenario; `path` names the offending key (`tenants[2].faults[0].kind`), str() is `path: message`."""


def _text(value: object, path: str) -> None:
    """A non-empty string, or ScenarioError."""
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(path, "must be a non-empty string")


def check_range(value: float, path: str, low: float, high: float) -> None:
    """`low <= value <= high`, or ScenarioError naming the bound it breaks.

    Compared as given: Python compares an int with a float exactly, so an integer too large for a float (YAML
    reads `1` followed by 400 zeros as one) is refused here instead of overflowing later.
    """
    if isinstance(value, float) and math.isnan(value):
        raise ScenarioError(path, "must be a number")
    if value < low:
        raise ScenarioError(path, f"must be at least {low:,.15g}")
    if value > high:
        raise ScenarioError(path, f"must be at most {high:,.15g}")


def _date_in_range(value: float, path: str) -> None:
    """A Unix time that renders as a date, or ScenarioError."""
    if not FIRST_DATE <= value <= LAST_DATE:
        raise ScenarioError(path, DATE_RANGE)


@dataclass(frozen=True)
class Drift:
    """How a currency's balance moves: an invoice every N seconds raises it, a payment lowers it."""

    invoice_every: float | None = None
    invoice_amount: float = 0.0
    payment_every: float | None = None
    payment_amount: float = 0.0


@dataclass(frozen=True)
class LastPayment:
    """The last payment known at start: amount and Unix time."""

    amount: float
    date: float


@dataclass(frozen=True)
class Currency:
    """One billing currency of a tenant; `invoice_types` splits `balance` (name, amount) in order."""

    code: str
    symbol: str | None
    balance: float
    invoice_types: tuple[tuple[str, float], ...] = ()
    last_payment: LastPayment | None = None
    latest_invoice_date: float | None = None
    drift: Drift | None = None

    def __post_init__(self) -> None:
        """An ISO 4217-looking code, amounts and dates in range, and a split that adds up."""
        if len(self.code) != 3 or not self.code.isalpha() or not self.code.isascii() or not self.code.isupper():
            raise ScenarioError("code", "must be a three-letter ISO 4217 code")
        check_range(self.balance, "balance", -MAX_AMOUNT, MAX_AMOUNT)
        for name, amount in self.invoice_types:
            check_range(amount, f"invoice_types.{name}", -MAX_AMOUNT, MAX_AMOUNT)
        if self.invoice_types and abs(sum(amount for _, amount in self.invoice_types) - self.balance) > 0.005:
            raise ScenarioError("invoice_types", f"amounts must add up to the balance {self.balance}")
        if self.last_payment is not None:
            check_range(self.last_payment.amount, "last_payment.amount", 0.0, MAX_AMOUNT)
            _date_in_range(self.last_payment.date, "last_payment.date")
        if self.latest_invoice_date is not None:
            _date_in_range(self.latest_invoice_date, "latest_invoice_date")
        if self.drift is not None:
            for event in ("invoice", "payment"):
                every = getattr(self.drift, f"{event}_every")
                if every is not None:
                    # Drift catches up event by event at the next request: one a second is 86,400 a day.
                    check_range(every, f"drift.{event}_every", 1.0, MAX_SECONDS)
                check_range(getattr(self.drift, f"{event}_amount"), f"drift.{event}_amount", 0.0, MAX_AMOUNT)

    @property
    def split(self) -> tuple[tuple[str, float], ...]:
        """The invoice-type split, or the whole balance as `Recurring` when none was given."""
        return self.invoice_types or (("Recurring", self.balance),)


@dataclass(frozen=True)
class Fault:
    """One injected failure; see docs/simulator.md for what each kind does."""

    kind: FaultKind
    endpoint: FaultEndpoint = "api"
    probability: float = 1.0
    count: int | None = None
    status: int | None = None
    body: str | None = None
    content_type: str | None = None
    retry_after: int | None = None
    seconds: float | None = None
    size_mb: float | None = None

    def __post_init__(self) -> None:
        """Reject values that make no sense, whichever way the fault was built."""
        # Strings are checked first: a list or mapping cannot even be looked up in a set.
        if not isinstance(self.kind, str) or self.kind not in FAULT_KINDS:
            raise ScenarioError("kind", f"must be one of {', '.join(sorted(FAULT_KINDS))}")
        if not isinstance(self.endpoint, str) or self.endpoint not in FAULT_ENDPOINTS:
            raise ScenarioError("endpoint", f"must be one of {', '.join(sorted(FAULT_ENDPOINTS))}")
        check_range(self.probability, "probability", 0.0, 1.0)
        if self.count is not None and self.count < 1:
            raise ScenarioError("count", "must be at least 1")
        if self.kind == "status" and (self.status is None or not 200 <= self.status <= 599):
            raise ScenarioError("status", "required for kind status: an HTTP status between 200 and 599")
        if self.retry_after is not None:
            check_range(self.retry_after, "retry_after", 0, MAX_SECONDS)
        if self.seconds is not None:
            check_range(self.seconds, "seconds", 0.0, MAX_SECONDS)
        if self.kind == "latency" and self.seconds is None:
            raise ScenarioError("seconds", "required for kind latency")
        if self.size_mb is not None:
            if self.size_mb <= 0:
                raise ScenarioError("size_mb", "must be positive")
            check_range(self.size_mb, "size_mb", 0.0, MAX_HUGE_MB)

    def matches(self, endpoint: str) -> bool:
        """Whether this fault applies to requests to `endpoint` (token, summary or summaries)."""
        if self.endpoint == "any":
            return True
        if self.endpoint == "api":
            return endpoint != "token"
        return self.endpoint == endpoint


def directory_id(tenant_id: str) -> str:
    """The tenant's GUID, as Entra puts it in `tid` and its endpoints: the id itself, or one derived from a domain."""
    try:
        return str(uuid.UUID(tenant_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant_id.lower()))


@dataclass(frozen=True)
class TenantScenario:
    """One simulated tenant: its Entra app and credentials, its billing currencies, quirks and faults.

    Credentials: `client_secret`, `certificates` (PEM texts) and `federated` make a confidential client, which
    must authenticate on every grant; a tenant with none of them is a public client and needs a
    `refresh_token`. `mfa` says whether the user's consent behind App+User tokens included MFA.
    """

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_lifetime: int | None = None
    latency: float | None = None
    currencies: tuple[Currency, ...] = ()
    quirks: frozenset[Quirk] = frozenset()
    faults: tuple[Fault, ...] = ()
    mfa: bool = True
    certificates: tuple[str, ...] = ()
    federated: Federation | None = None

    def __post_init__(self) -> None:
        """Credentials that can be used, certificates that parse, at least one currency."""
        _text(self.tenant_id, "tenant_id")
        _text(self.client_id, "client_id")
        for name in ("client_secret", "refresh_token"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), name)
        if not (self.confidential or self.refresh_token):
            raise ScenarioError("client_secret", "required unless certificates, federated or refresh_token is set")
        for i, pem in enumerate(self.certificates):
            try:
                load_certificate(pem)
            except ValueError as exc:
                raise ScenarioError(f"certificates[{i}]", str(exc)) from None
        if self.federated is not None:
            for name in ("issuer", "subject", "audience"):
                _text(getattr(self.federated, name), f"federated.{name}")
        if not self.currencies:
            raise ScenarioError("currencies", "must list at least one currency")
        codes = [c.code for c in self.currencies]
        if len(set(codes)) != len(codes):
            # One summary per currency: Partner Center bills a partner in each currency once.
            raise ScenarioError(
                "currencies", f"currency {next(c for c in codes if codes.count(c) > 1)} is listed twice"
            )
        if self.token_lifetime is not None:
            check_range(self.token_lifetime, "token_lifetime", 1, MAX_SECONDS)
        if self.latency is not None:
            check_range(self.latency, "latency", 0.0, MAX_SECONDS)

    @property
    def confidential(self) -> bool:
        """Whether the app has a credential of its own (secret, certificate or federation)."""
        return bool(self.client_secret or self.certificates or self.federated)

    @property
    def directory_id(self) -> str:
        """The tenant's GUID (`tid`)."""
        return directory_id(self.tenant_id)


@dataclass(frozen=True)
class Scenario:
    """A complete simulator scenario."""

    tenants: tuple[TenantScenario, ...]
    seed: int = 1
    token_lifetime: int = 3600
    expires_in_as_string: bool = False
    latency: float = 0.0
    cloud: Cloud = "global"
    refresh_token_lifetime: int = REFRESH_TOKEN_LIFETIME

    def __post_init__(self) -> None:
        """Each tenant once (by domain or GUID, as Entra resolves either), a known cloud, sane lifetimes."""
        if not isinstance(self.cloud, str) or self.cloud not in CLOUDS:
            raise ScenarioError("cloud", f"must be one of {', '.join(sorted(CLOUDS))}")
        check_range(self.token_lifetime, "token_lifetime", 1, MAX_SECONDS)
        check_range(self.refresh_token_lifetime, "refresh_token_lifetime", 1, MAX_SECONDS)
        check_range(self.latency, "latency", 0.0, MAX_SECONDS)
        seen: dict[str, int] = {}
        for i, tenant in enumerate(self.tenants):
            for key in {tenant.tenant_id.lower(), tenant.directory_id}:
                if key in seen:
                    raise ScenarioError(f"tenants[{i}].tenant_id", f"duplicate of tenants[{seen[key]}].tenant_id")
                seen[key] = i

    @classmethod
    def generated(
        cls,
        count: int,
        currencies: int = 3,
        latency: float = 0.0,
        *,
        seed: int = 1,
        token_lifetime: int = 3600,
        app_user: bool = False,
        drift: bool = False,
    ) -> Scenario:
        """N tenants `tenant-0001.onmicrosoft.com`... with deterministic ids, secrets and balances (benchmarks).

        Tenant i has client_id uuid5(NAMESPACE_DNS, tenant_id), secret `secret-000i`, the first `currencies`
        codes of a fixed list rotated by i, and 2-3 invoice types per currency; with `app_user` it also has
        refresh token `refresh-000i`.
        """
        if count < 0:
            raise ValueError("count must not be negative")
        if not 1 <= currencies <= len(_GENERATED_CURRENCIES):
            raise ValueError(f"currencies must be between 1 and {len(_GENERATED_CURRENCIES)}")
        tenants = []
        for i in range(1, count + 1):
            label = f"{i:04d}"
            tenant_id = f"tenant-{label}.onmicrosoft.com"
            chosen = []
            for c in range(currencies):
                code, symbol = _GENERATED_CURRENCIES[(i - 1 + c) % len(_GENERATED_CURRENCIES)]
                types = _GENERATED_INVOICE_TYPES[: 2 + (i + c) % 2]
                split = tuple((name, round(100.0 + 59900.0 * unit(seed, tenant_id, code, name), 2)) for name in types)
                balance = round(sum(amount for _, amount in split), 2)
                chosen.append(
                    Currency(
                        code=code,
                        symbol=symbol,
                        balance=balance,
                        invoice_types=split,
                        last_payment=LastPayment(amount=1000.0, date=1_790_000_000.0 - i * 3600.0),
                        latest_invoice_date=1_790_000_000.0,
                        drift=Drift(60.0, 250.0, 300.0, 900.0) if drift else None,
                    )
                )
            tenants.append(
                TenantScenario(
                    tenant_id=tenant_id,
                    client_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant_id)),
                    client_secret=f"secret-{label}",
                    refresh_token=f"refresh-{label}" if app_user else None,
                    currencies=tuple(chosen),
                )
            )
        return cls(tenants=tuple(tenants), seed=seed, token_lifetime=token_lifetime, latency=latency)

    def tenant(self, tenant_id: str) -> TenantScenario | None:
        """The tenant with this tenant_id or GUID (case-insensitive, as Entra treats domains), or None."""
        wanted = tenant_id.lower()
        return next((t for t in self.tenants if wanted in (t.tenant_id.lower(), t.directory_id)), None)
