"""Scenario files: strict YAML (the exporter's own loader) into checked values, and the packaged default scenario."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar, cast

from exporter.config.yamlfile import ConfigError, load_yaml, read_text
from exporter.simulator.assertions import Federation
from exporter.simulator.clouds import Cloud
from exporter.simulator.scenario import (
    DATE_RANGE,
    FAULT_ENDPOINTS,
    FAULT_KINDS,
    MAX_AMOUNT,
    MAX_HUGE_MB,
    MAX_SECONDS,
    QUIRKS,
    REFRESH_TOKEN_LIFETIME,
    Currency,
    Drift,
    Fault,
    FaultEndpoint,
    FaultKind,
    LastPayment,
    Quirk,
    Scenario,
    ScenarioError,
    TenantScenario,
    check_range,
)

T = TypeVar("T")

_TOP_KEYS: Final = {
    "seed",
    "token_lifetime",
    "refresh_token_lifetime",
    "expires_in_as_string",
    "latency",
    "cloud",
    "tenants",
}
_TENANT_KEYS: Final = {
    "tenant_id",
    "client_id",
    "client_secret",
    "refresh_token",
    "certificates",
    "federated",
    "mfa",
    "token_lifetime",
    "latency",
    "currencies",
    "quirks",
    "faults",
}
_CURRENCY_KEYS: Final = {"code", "symbol", "balance", "invoice_types", "last_payment", "latest_invoice_date", "drift"}
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


def default_scenario() -> Scenario:
    """The built-in demo scenario (default.yaml): contoso, fabrikam, northwind, adatum and woodgrove."""
    text = importlib.resources.files("exporter.simulator").joinpath("default.yaml").read_text(encoding="utf-8")
    return parse_scenario(text)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; every problem is a ScenarioError naming the key path."""
    try:
        text = read_text(path)
    except ConfigError as exc:
        raise ScenarioError(exc.path, exc.message) from None
    return parse_scenario(text)


def parse_scenario(text: str) -> Scenario:
    """Parse scenario YAML text into a frozen Scenario."""
    try:
        data = load_yaml(text)
    except ConfigError as exc:
        raise ScenarioError(exc.path, exc.message) from None
    top = _mapping(data, "", _TOP_KEYS)
    tenants_raw = _list(top.get("tenants"), "tenants", required=True)
    tenants = tuple(_within(_tenant, item, f"tenants[{i}]") for i, item in enumerate(tenants_raw))
    cloud = top.get("cloud", "global")
    if not isinstance(cloud, str):
        raise ScenarioError("cloud", "must be a string")
    return Scenario(
        tenants=tenants,
        seed=_int(top.get("seed", 1), "seed"),
        token_lifetime=_int(top.get("token_lifetime", 3600), "token_lifetime", 1, MAX_SECONDS),
        refresh_token_lifetime=_int(
            top.get("refresh_token_lifetime", REFRESH_TOKEN_LIFETIME), "refresh_token_lifetime", 1, MAX_SECONDS
        ),
        expires_in_as_string=_bool(top.get("expires_in_as_string", False), "expires_in_as_string"),
        latency=_number(top.get("latency", 0.0), "latency", 0.0, MAX_SECONDS),
        cloud=cast(Cloud, cloud),  # Scenario checks it against CLOUDS
    )


def parse_faults(data: object, path: str = "") -> tuple[Fault, ...]:
    """Parse a list of fault mappings (scenario file or control API) into Faults."""
    items = _list(data, path, required=True)
    return tuple(_within(_fault, item, f"{path}[{i}]") for i, item in enumerate(items))


def _within(build: Callable[[object, str], T], data: object, path: str) -> T:
    """Build the value at `path`; an error a value's own checks raise (relative path) gets the path in front."""
    try:
        return build(data, path)
    except ScenarioError as exc:
        if exc.path == path or exc.path.startswith((f"{path}.", f"{path}[")):
            raise
        raise ScenarioError(f"{path}.{exc.path}" if exc.path else path, exc.message) from None


def _tenant(data: object, path: str) -> TenantScenario:
    """Parse one entry of `tenants`."""
    raw = _mapping(data, path, _TENANT_KEYS)
    currencies = tuple(
        _within(_currency, item, f"{path}.currencies[{i}]")
        for i, item in enumerate(_list(raw.get("currencies"), f"{path}.currencies", required=True))
    )
    quirks: set[Quirk] = set()
    for i, item in enumerate(_list(raw.get("quirks"), f"{path}.quirks")):
        if not isinstance(item, str) or item not in QUIRKS:
            raise ScenarioError(f"{path}.quirks[{i}]", f"unknown quirk; known: {', '.join(sorted(QUIRKS))}")
        quirks.add(cast(Quirk, item))
    pems = _list(raw.get("certificates"), f"{path}.certificates")
    certificates = tuple(_str(item, f"{path}.certificates[{i}]") for i, item in enumerate(pems))
    federated = None
    if raw.get("federated") is not None:
        fed = _mapping(raw["federated"], f"{path}.federated", {"issuer", "subject", "audience"})
        federated = Federation(
            issuer=_str(fed.get("issuer"), f"{path}.federated.issuer"),
            subject=_str(fed.get("subject"), f"{path}.federated.subject"),
            audience=_str(fed.get("audience", "api://AzureADTokenExchange"), f"{path}.federated.audience"),
        )
    lifetime, latency = raw.get("token_lifetime"), raw.get("latency")
    return TenantScenario(
        tenant_id=_str(raw.get("tenant_id"), f"{path}.tenant_id"),
        client_id=_str(raw.get("client_id"), f"{path}.client_id"),
        client_secret=_opt_str(raw.get("client_secret"), f"{path}.client_secret"),
        refresh_token=_opt_str(raw.get("refresh_token"), f"{path}.refresh_token"),
        token_lifetime=None if lifetime is None else _int(lifetime, f"{path}.token_lifetime", 1, MAX_SECONDS),
        latency=None if latency is None else _number(latency, f"{path}.latency", 0.0, MAX_SECONDS),
        currencies=currencies,
        quirks=frozenset(quirks),
        faults=parse_faults(raw["faults"], f"{path}.faults") if raw.get("faults") is not None else (),
        mfa=_bool(raw.get("mfa", True), f"{path}.mfa"),
        certificates=certificates,
        federated=federated,
    )


def _currency(data: object, path: str) -> Currency:
    """Parse one entry of a tenant's `currencies`."""
    raw = _mapping(data, path, _CURRENCY_KEYS)
    split: tuple[tuple[str, float], ...] = ()
    if raw.get("invoice_types") is not None:
        types_path = f"{path}.invoice_types"
        types_raw = _mapping(raw["invoice_types"], types_path, None)
        if not types_raw:
            raise ScenarioError(types_path, "must name at least one invoice type")
        split = tuple(
            (_str(name, types_path), _number(amount, f"{types_path}.{name}", -MAX_AMOUNT, MAX_AMOUNT))
            for name, amount in types_raw.items()
        )
    last_payment = None
    if raw.get("last_payment") is not None:
        lp_path = f"{path}.last_payment"
        lp = _mapping(raw["last_payment"], lp_path, {"amount", "date"})
        last_payment = LastPayment(
            amount=_number(lp.get("amount"), f"{lp_path}.amount", 0.0, MAX_AMOUNT),
            date=_date(lp.get("date"), f"{lp_path}.date"),
        )
    latest = raw.get("latest_invoice_date")
    return Currency(
        code=_str(raw.get("code"), f"{path}.code").upper(),
        symbol=_opt_str(raw.get("symbol"), f"{path}.symbol"),
        balance=_number(raw.get("balance"), f"{path}.balance", -MAX_AMOUNT, MAX_AMOUNT),
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
            values[f"{event}_every"] = _number(every, f"{path}.{event}_every", 1.0, MAX_SECONDS)
            values[f"{event}_amount"] = _number(amount, f"{path}.{event}_amount", 0.0, MAX_AMOUNT)
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
    # Strings are checked first: a list or mapping (JSON from the control API) cannot be looked up in a set.
    if not isinstance(kind, str) or kind not in FAULT_KINDS:
        raise ScenarioError(f"{path}.kind", f"must be one of {', '.join(sorted(FAULT_KINDS))}")
    allowed = _COMMON_FAULT_KEYS | _FAULT_KEYS[kind]
    for key in raw:
        if key not in allowed:
            raise ScenarioError(f"{path}.{key}", f"unknown key for kind {kind}")
    endpoint = raw.get("endpoint", "api")
    if not isinstance(endpoint, str) or endpoint not in FAULT_ENDPOINTS:
        raise ScenarioError(f"{path}.endpoint", f"must be one of {', '.join(sorted(FAULT_ENDPOINTS))}")
    count, status, retry_after = raw.get("count"), raw.get("status"), raw.get("retry_after")
    seconds, size_mb = raw.get("seconds"), raw.get("size_mb")
    return Fault(
        kind=cast(FaultKind, kind),
        endpoint=cast(FaultEndpoint, endpoint),
        probability=_number(raw.get("probability", 1.0), f"{path}.probability", 0.0, 1.0),
        count=None if count is None else _int(count, f"{path}.count", 1),
        status=None if status is None else _int(status, f"{path}.status"),
        body=_body(raw.get("body"), f"{path}.body"),
        content_type=_opt_str(raw.get("content_type"), f"{path}.content_type"),
        retry_after=None if retry_after is None else _int(retry_after, f"{path}.retry_after", 0, MAX_SECONDS),
        seconds=None if seconds is None else _number(seconds, f"{path}.seconds", 0.0, MAX_SECONDS),
        size_mb=None if size_mb is None else _number(size_mb, f"{path}.size_mb", 0.0, MAX_HUGE_MB),
    )


def _mapping(data: object, path: str, allowed: set[str] | None) -> dict[str, object]:
    """A mapping with string keys, optionally restricted to `allowed`."""
    if not isinstance(data, dict):
        raise ScenarioError(path, "must be a mapping")
    for key in data:
        if not isinstance(key, str):
            raise ScenarioError(path, "keys must be strings")
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


def _number(data: object, path: str, low: float, high: float) -> float:
    """A number from `low` to `high`; the bounds are required, as they also keep float() from overflowing."""
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise ScenarioError(path, "must be a number")
    check_range(data, path, low, high)
    return float(data)


def _int(data: object, path: str, low: int | None = None, high: int | None = None) -> int:
    """An integer, from `low` and up to `high` when given."""
    if isinstance(data, bool) or not isinstance(data, int):
        raise ScenarioError(path, "must be an integer")
    check_range(data, path, -math.inf if low is None else low, math.inf if high is None else high)
    return data


def _date(data: object, path: str) -> float:
    """Unix time of an ISO 8601 date-time string (the YAML loader keeps dates as text); no zone is UTC."""
    try:
        value = dt.datetime.fromisoformat(data) if isinstance(data, str) else None
    except ValueError:
        value = None
    if value is None:
        raise ScenarioError(path, "must be an ISO 8601 date-time like 2026-11-01T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    # 0001-01-01T00:00:00+01:00 parses, but in UTC, where bodies render their dates, it falls in the year 0 (and
    # 9999-12-31T23:59:59-01:00 in the year 10000).
    try:
        return value.astimezone(dt.UTC).timestamp()
    except OverflowError:
        raise ScenarioError(path, DATE_RANGE) from None
