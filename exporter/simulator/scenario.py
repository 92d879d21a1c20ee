"""Simulator scenarios: the YAML format parsed strictly into frozen values, the default and generated ones."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, cast, get_args

import yaml

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

# Keys each fault kind accepts besides kind, endpoint, probability and count.
_FAULT_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "status": frozenset({"status", "body", "content_type", "retry_after"}),
    "throttle": frozenset({"retry_after"}),
    "latency": frozenset({"seconds"}),
    "timeout": frozenset({"seconds"}),
    "reset": frozenset(),
    "html": frozenset(),
    "empty": frozenset(),
    "xml": frozenset(),
    "truncated": frozenset(),
    "huge": frozenset({"size_mb"}),
    "slow_body": frozenset({"seconds"}),
}
_COMMON_FAULT_KEYS: Final = frozenset({"kind", "endpoint", "probability", "count"})

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


class ScenarioError(Exception):
    """An invalid scenario; `path` names the offending key (`tenants[2].faults[0].kind`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


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
        if self.kind not in FAULT_KINDS:
            raise ScenarioError("kind", f"must be one of {', '.join(sorted(FAULT_KINDS))}")
        if self.endpoint not in FAULT_ENDPOINTS:
            raise ScenarioError("endpoint", f"must be one of {', '.join(sorted(FAULT_ENDPOINTS))}")
        if not 0.0 <= self.probability <= 1.0:
            raise ScenarioError("probability", "must be between 0 and 1")
        if self.count is not None and self.count < 1:
            raise ScenarioError("count", "must be at least 1")
        if self.kind == "status" and (self.status is None or not 200 <= self.status <= 599):
            raise ScenarioError("status", "required for kind status: an HTTP status between 200 and 599")
        if self.retry_after is not None and self.retry_after < 0:
            raise ScenarioError("retry_after", "must not be negative")
        if self.seconds is not None and self.seconds < 0:
            raise ScenarioError("seconds", "must not be negative")
        if self.kind == "latency" and self.seconds is None:
            raise ScenarioError("seconds", "required for kind latency")
        if self.size_mb is not None and self.size_mb <= 0:
            raise ScenarioError("size_mb", "must be positive")

    def matches(self, endpoint: str) -> bool:
        """Whether this fault applies to requests to `endpoint` (token, summary or summaries)."""
        if self.endpoint == "any":
            return True
        if self.endpoint == "api":
            return endpoint != "token"
        return self.endpoint == endpoint


@dataclass(frozen=True)
class TenantScenario:
    """One simulated tenant: its Entra credentials, its billing currencies, quirks and faults."""

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_lifetime: int | None = None
    latency: float | None = None
    currencies: tuple[Currency, ...] = ()
    quirks: frozenset[Quirk] = frozenset()
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A complete simulator scenario."""

    tenants: tuple[TenantScenario, ...]
    seed: int = 1
    token_lifetime: int = 3600
    expires_in_as_string: bool = False
    latency: float = 0.0

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
        """The tenant with this tenant_id (case-insensitive, as Entra treats domains), or None."""
        wanted = tenant_id.lower()
        return next((t for t in self.tenants if t.tenant_id.lower() == wanted), None)


def _utc(text: str) -> float:
    """Unix time of an ISO 8601 date-time; one without zone is UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def _demo(tenant: str, what: str) -> str:
    """A published demo credential like `demo-contoso-secret` (shipped configs use them; they guard nothing)."""
    return f"demo-{tenant}-{what}"


def default_scenario() -> Scenario:
    """The built-in demo scenario: contoso, fabrikam (App+User), northwind (over threshold), adatum (flaky)."""
    demo_drift = Drift(invoice_every=60.0, invoice_amount=500.0, payment_every=300.0, payment_amount=2000.0)
    contoso = TenantScenario(
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-1111-4111-8111-111111111111",
        client_secret=_demo("contoso", "secret"),
        currencies=(
            Currency(
                code="USD",
                symbol="$",
                balance=42000.5,
                invoice_types=(("Recurring", 30000.0), ("OneTime", 12000.5)),
                last_payment=LastPayment(amount=1000.0, date=_utc("2026-10-01T00:00:00")),
                latest_invoice_date=_utc("2026-11-01T00:00:00"),
                drift=demo_drift,
            ),
        ),
    )
    fabrikam = TenantScenario(
        tenant_id="fabrikam.onmicrosoft.com",
        client_id="22222222-2222-4222-8222-222222222222",
        client_secret=_demo("fabrikam", "secret"),
        refresh_token=_demo("fabrikam", "refresh-token"),
        currencies=(
            Currency(
                code="USD",
                symbol="$",
                balance=18250.75,
                invoice_types=(("Recurring", 15000.0), ("OneTime", 3250.75)),
                last_payment=LastPayment(amount=5000.0, date=_utc("2026-10-15T00:00:00")),
                latest_invoice_date=_utc("2026-11-01T00:00:00"),
                drift=demo_drift,
            ),
            Currency(
                code="EUR",
                symbol="€",
                balance=9400.0,
                invoice_types=(("Recurring", 7400.0), ("OneTime", 2000.0)),
                latest_invoice_date=_utc("2026-11-01T00:00:00"),
                drift=Drift(invoice_every=90.0, invoice_amount=300.0, payment_every=600.0, payment_amount=1500.0),
            ),
            Currency(
                code="GBP",
                symbol="£",
                balance=3120.4,
                invoice_types=(("Recurring", 3120.4),),
                last_payment=LastPayment(amount=800.0, date=_utc("2026-09-30T00:00:00")),
                latest_invoice_date=_utc("2026-10-01T00:00:00"),
                drift=Drift(invoice_every=120.0, invoice_amount=150.0, payment_every=900.0, payment_amount=600.0),
            ),
        ),
    )
    northwind = TenantScenario(
        tenant_id="northwind.onmicrosoft.com",
        client_id="33333333-3333-4333-8333-333333333333",
        client_secret=_demo("northwind", "secret"),
        currencies=(
            Currency(
                code="EUR",
                symbol="€",
                balance=120500.0,
                invoice_types=(("Recurring", 95000.0), ("OneTime", 25500.0)),
                last_payment=LastPayment(amount=20000.0, date=_utc("2026-08-01T00:00:00")),
                latest_invoice_date=_utc("2026-11-01T00:00:00"),
            ),
        ),
    )
    adatum = TenantScenario(
        tenant_id="adatum.onmicrosoft.com",
        client_id="44444444-4444-4444-8444-444444444444",
        client_secret=_demo("adatum", "secret"),
        currencies=(
            Currency(
                code="USD",
                symbol="$",
                balance=7300.0,
                invoice_types=(("Recurring", 7300.0),),
                latest_invoice_date=_utc("2026-11-01T00:00:00"),
            ),
        ),
        faults=(
            Fault(kind="status", status=503, probability=0.25),
            Fault(kind="throttle", retry_after=30, probability=0.05),
        ),
    )
    return Scenario(tenants=(contoso, fabrikam, northwind, adatum), seed=1)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; every problem is a ScenarioError naming the key path."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError("", f"cannot read scenario file {path}: {exc.__class__.__name__}") from exc
    return parse_scenario(text)


def parse_scenario(text: str) -> Scenario:
    """Parse scenario YAML text into a frozen Scenario."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("", f"invalid YAML: {exc}") from exc
    top = _mapping(data, "", {"seed", "token_lifetime", "expires_in_as_string", "latency", "tenants"})
    tenants_raw = _list(top.get("tenants"), "tenants", required=True)
    tenants = tuple(_tenant(item, f"tenants[{i}]") for i, item in enumerate(tenants_raw))
    seen: dict[str, int] = {}
    for i, tenant in enumerate(tenants):
        key = tenant.tenant_id.lower()
        if key in seen:
            raise ScenarioError(f"tenants[{i}].tenant_id", f"duplicate of tenants[{seen[key]}].tenant_id")
        seen[key] = i
    return Scenario(
        tenants=tenants,
        seed=_int(top.get("seed", 1), "seed"),
        token_lifetime=_int(top.get("token_lifetime", 3600), "token_lifetime", minimum=1),
        expires_in_as_string=_bool(top.get("expires_in_as_string", False), "expires_in_as_string"),
        latency=_number(top.get("latency", 0.0), "latency", minimum=0.0),
    )


def parse_faults(data: object, path: str = "") -> tuple[Fault, ...]:
    """Parse a list of fault mappings (scenario file or control API) into Faults."""
    items = _list(data, path, required=True)
    return tuple(_fault(item, f"{path}[{i}]") for i, item in enumerate(items))


def _tenant(data: object, path: str) -> TenantScenario:
    """Parse one entry of `tenants`."""
    keys = {
        "tenant_id",
        "client_id",
        "client_secret",
        "refresh_token",
        "token_lifetime",
        "latency",
        "currencies",
        "quirks",
        "faults",
    }
    raw = _mapping(data, path, keys)
    client_secret = _opt_str(raw.get("client_secret"), f"{path}.client_secret")
    refresh_token = _opt_str(raw.get("refresh_token"), f"{path}.refresh_token")
    if client_secret is None and refresh_token is None:
        raise ScenarioError(f"{path}.client_secret", "required unless refresh_token is set")
    currencies_raw = _list(raw.get("currencies"), f"{path}.currencies", required=True)
    if not currencies_raw:
        raise ScenarioError(f"{path}.currencies", "must list at least one currency")
    currencies = tuple(_currency(item, f"{path}.currencies[{i}]") for i, item in enumerate(currencies_raw))
    quirks: set[Quirk] = set()
    for i, item in enumerate(_list(raw.get("quirks"), f"{path}.quirks")):
        if item not in QUIRKS:
            raise ScenarioError(f"{path}.quirks[{i}]", f"unknown quirk; known: {', '.join(sorted(QUIRKS))}")
        quirks.add(cast(Quirk, item))
    faults = parse_faults(raw["faults"], f"{path}.faults") if raw.get("faults") is not None else ()
    lifetime = raw.get("token_lifetime")
    latency = raw.get("latency")
    return TenantScenario(
        tenant_id=_str(raw.get("tenant_id"), f"{path}.tenant_id"),
        client_id=_str(raw.get("client_id"), f"{path}.client_id"),
        client_secret=client_secret,
        refresh_token=refresh_token,
        token_lifetime=None if lifetime is None else _int(lifetime, f"{path}.token_lifetime", minimum=1),
        latency=None if latency is None else _number(latency, f"{path}.latency", minimum=0.0),
        currencies=currencies,
        quirks=frozenset(quirks),
        faults=faults,
    )


def _currency(data: object, path: str) -> Currency:
    """Parse one entry of a tenant's `currencies`."""
    keys = {"code", "symbol", "balance", "invoice_types", "last_payment", "latest_invoice_date", "drift"}
    raw = _mapping(data, path, keys)
    code = _str(raw.get("code"), f"{path}.code").upper()
    if len(code) != 3 or not code.isalpha() or not code.isascii():
        raise ScenarioError(f"{path}.code", "must be a three-letter ISO 4217 code")
    balance = _number(raw.get("balance"), f"{path}.balance")
    split: tuple[tuple[str, float], ...] = ()
    if raw.get("invoice_types") is not None:
        types_path = f"{path}.invoice_types"
        types_raw = _mapping(raw["invoice_types"], types_path, None)
        if not types_raw:
            raise ScenarioError(types_path, "must name at least one invoice type")
        split = tuple(
            (_str(name, types_path), _number(amount, f"{types_path}.{name}")) for name, amount in types_raw.items()
        )
        if abs(sum(amount for _, amount in split) - balance) > 0.005:
            raise ScenarioError(types_path, f"amounts must add up to the balance {balance}")
    last_payment = None
    if raw.get("last_payment") is not None:
        lp_path = f"{path}.last_payment"
        lp = _mapping(raw["last_payment"], lp_path, {"amount", "date"})
        last_payment = LastPayment(
            amount=_number(lp.get("amount"), f"{lp_path}.amount", minimum=0.0),
            date=_date(lp.get("date"), f"{lp_path}.date"),
        )
    latest = raw.get("latest_invoice_date")
    return Currency(
        code=code,
        symbol=_opt_str(raw.get("symbol"), f"{path}.symbol"),
        balance=balance,
        invoice_types=split,
        last_payment=last_payment,
        latest_invoice_date=None if latest is None else _date(latest, f"{path}.latest_invoice_date"),
        drift=None if raw.get("drift") is None else _drift(raw["drift"], f"{path}.drift"),
    )


def _drift(data: object, path: str) -> Drift:
    """Parse a currency's `drift`; an `*_every` needs its `*_amount` and the other way round."""
    raw = _mapping(data, path, {"invoice_every", "invoice_amount", "payment_every", "payment_amount"})
    values: dict[str, float | None] = {}
    for event in ("invoice", "payment"):
        every, amount = raw.get(f"{event}_every"), raw.get(f"{event}_amount")
        if (every is None) != (amount is None):
            missing = f"{event}_amount" if amount is None else f"{event}_every"
            raise ScenarioError(f"{path}.{missing}", f"required with {event}_every and {event}_amount")
        if every is not None:
            values[f"{event}_every"] = _number(every, f"{path}.{event}_every", minimum=0.001)
            values[f"{event}_amount"] = _number(amount, f"{path}.{event}_amount", minimum=0.0)
    return Drift(
        invoice_every=values.get("invoice_every"),
        invoice_amount=values.get("invoice_amount") or 0.0,
        payment_every=values.get("payment_every"),
        payment_amount=values.get("payment_amount") or 0.0,
    )


def _fault(data: object, path: str) -> Fault:
    """Parse one fault mapping; keys are checked against the kind."""
    raw = _mapping(data, path, None)
    kind = raw.get("kind")
    if kind not in FAULT_KINDS:
        raise ScenarioError(f"{path}.kind", f"must be one of {', '.join(sorted(FAULT_KINDS))}")
    allowed = _COMMON_FAULT_KEYS | _FAULT_KEYS[str(kind)]
    for key in raw:
        if key not in allowed:
            raise ScenarioError(f"{path}.{key}", f"unknown key for kind {kind}")
    endpoint = raw.get("endpoint", "api")
    if endpoint not in FAULT_ENDPOINTS:
        raise ScenarioError(f"{path}.endpoint", f"must be one of {', '.join(sorted(FAULT_ENDPOINTS))}")
    count = raw.get("count")
    status = raw.get("status")
    retry_after = raw.get("retry_after")
    seconds = raw.get("seconds")
    size_mb = raw.get("size_mb")
    try:
        return Fault(
            kind=cast(FaultKind, kind),
            endpoint=cast(FaultEndpoint, endpoint),
            probability=_number(raw.get("probability", 1.0), f"{path}.probability"),
            count=None if count is None else _int(count, f"{path}.count"),
            status=None if status is None else _int(status, f"{path}.status"),
            body=_body(raw.get("body"), f"{path}.body"),
            content_type=_opt_str(raw.get("content_type"), f"{path}.content_type"),
            retry_after=None if retry_after is None else _int(retry_after, f"{path}.retry_after"),
            seconds=None if seconds is None else _number(seconds, f"{path}.seconds"),
            size_mb=None if size_mb is None else _number(size_mb, f"{path}.size_mb"),
        )
    except ScenarioError as exc:
        if exc.path.startswith(path):
            raise
        raise ScenarioError(f"{path}.{exc.path}", exc.message) from None


def _mapping(data: object, path: str, allowed: set[str] | None) -> dict[str, object]:
    """A mapping with string keys, optionally restricted to `allowed`."""
    if not isinstance(data, dict):
        raise ScenarioError(path, "must be a mapping")
    for key in data:
        if not isinstance(key, str):
            raise ScenarioError(path, f"keys must be strings, got {key!r}")
        if allowed is not None and key not in allowed:
            raise ScenarioError(f"{path}.{key}" if path else key, "unknown key")
    return cast(dict[str, object], data)


def _list(data: object, path: str, *, required: bool = False) -> Sequence[object]:
    """A list; None is the empty list unless required."""
    if data is None and not required:
        return []
    if not isinstance(data, list):
        raise ScenarioError(path, "must be a list")
    return data


def _str(data: object, path: str) -> str:
    """A non-empty string."""
    if not isinstance(data, str) or not data.strip():
        raise ScenarioError(path, "must be a non-empty string")
    return data


def _opt_str(data: object, path: str) -> str | None:
    """A non-empty string or None."""
    return None if data is None else _str(data, path)


def _body(data: object, path: str) -> str | None:
    """A response body: any string, the empty one included, or None."""
    if data is not None and not isinstance(data, str):
        raise ScenarioError(path, "must be a string")
    return data


def _bool(data: object, path: str) -> bool:
    """A YAML boolean."""
    if not isinstance(data, bool):
        raise ScenarioError(path, "must be true or false")
    return data


def _number(data: object, path: str, *, minimum: float | None = None) -> float:
    """A finite number, at least `minimum`."""
    if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
        raise ScenarioError(path, "must be a number")
    if minimum is not None and data < minimum:
        raise ScenarioError(path, f"must be at least {minimum:g}")
    return float(data)


def _int(data: object, path: str, *, minimum: int | None = None) -> int:
    """An integer, at least `minimum`."""
    if isinstance(data, bool) or not isinstance(data, int):
        raise ScenarioError(path, "must be an integer")
    if minimum is not None and data < minimum:
        raise ScenarioError(path, f"must be at least {minimum}")
    return data


def _date(data: object, path: str) -> float:
    """Unix time of a date-time string (or a YAML timestamp); one without zone is UTC."""
    if isinstance(data, dt.datetime):
        value = data
    elif isinstance(data, dt.date):
        value = dt.datetime(data.year, data.month, data.day)
    elif isinstance(data, str):
        try:
            value = dt.datetime.fromisoformat(data)
        except ValueError:
            raise ScenarioError(path, "must be an ISO 8601 date-time like 2026-11-01T00:00:00Z") from None
    else:
        raise ScenarioError(path, "must be an ISO 8601 date-time like 2026-11-01T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()
