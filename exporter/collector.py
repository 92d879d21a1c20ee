"""Turns the current snapshot into metric families; reads memory only (no I/O, no locks).

Families come in a fixed order: the per-tenant families (`TENANT_FAMILIES`, each tenant's samples produced by
`tenant_families()` alone, so that a renderer can cache them per tenant), then the exporter-wide ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import TenantConfig
from exporter.model import InvoiceSummary, InvoiceTypeSummary
from exporter.snapshot import Snapshot, TenantState

_FROM_POLL = " Served from the last successful poll of the tenant."


@dataclass(frozen=True)
class FamilySpec:
    """Name, help, type and labels of one family."""

    name: str
    help: str
    kind: str  # "gauge" or "counter"
    labels: tuple[str, ...]

    def new(self) -> GaugeMetricFamily | CounterMetricFamily:
        """An empty family of this spec."""
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=list(self.labels))
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))


_CUR = ("tenant", "currency")
_TYPE = ("tenant", "currency", "invoice_type")
_TENANT = ("tenant",)

# (spec, field) of the per-currency gauges.
_SUMMARY_GAUGES: tuple[tuple[FamilySpec, Callable[[InvoiceSummary], float | None]], ...] = (
    (
        FamilySpec(
            "partnercenter_balance",
            "Account balance (balanceAmount) in the currency's unit." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.balance,
    ),
    (
        FamilySpec(
            "partnercenter_last_payment_amount",
            "Amount of the last payment (lastPaymentAmount)." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.last_payment_amount,
    ),
    (
        FamilySpec(
            "partnercenter_last_payment_timestamp_seconds",
            "Date of the last payment (lastPaymentDate), Unix seconds." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.last_payment_time,
    ),
    (
        FamilySpec(
            "partnercenter_latest_invoice_timestamp_seconds",
            "Date of the latest invoice (latestInvoiceDate), Unix seconds." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.latest_invoice_time,
    ),
    (
        FamilySpec(
            "partnercenter_first_invoice_timestamp_seconds",
            "Date of the first invoice (firstInvoiceCreationDate), Unix seconds." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.first_invoice_time,
    ),
    (
        FamilySpec(
            "partnercenter_accounting_timestamp_seconds",
            "Accounting date (accountingDate), Unix seconds." + _FROM_POLL,
            "gauge",
            _CUR,
        ),
        lambda s: s.accounting_time,
    ),
)

_TYPE_GAUGES: tuple[tuple[FamilySpec, Callable[[InvoiceTypeSummary], float | None]], ...] = (
    (
        FamilySpec(
            "partnercenter_invoice_type_balance",
            "Balance per invoice type (details[].summary.balanceAmount)." + _FROM_POLL,
            "gauge",
            _TYPE,
        ),
        lambda d: d.balance,
    ),
    (
        FamilySpec(
            "partnercenter_invoice_type_last_payment_amount",
            "Last payment amount per invoice type (details[].summary.lastPaymentAmount)." + _FROM_POLL,
            "gauge",
            _TYPE,
        ),
        lambda d: d.last_payment_amount,
    ),
    (
        FamilySpec(
            "partnercenter_invoice_type_latest_invoice_timestamp_seconds",
            "Latest invoice date per invoice type (details[].summary.latestInvoiceDate), Unix seconds." + _FROM_POLL,
            "gauge",
            _TYPE,
        ),
        lambda d: d.latest_invoice_time,
    ),
)

# Per-tenant families besides the gauges above whose samples come from the summaries and config alone.
_OTHER_VALUE_FAMILIES = (
    FamilySpec(
        "partnercenter_currency_info",
        "Currency symbol (currencySymbol) per currency; always 1." + _FROM_POLL,
        "gauge",
        ("tenant", "currency", "symbol"),
    ),
    FamilySpec(
        "partnercenter_balance_threshold",
        "Balance alert threshold from the exporter config, per currency and severity.",
        "gauge",
        ("tenant", "currency", "severity"),
    ),
)

# Per-tenant families that describe its polls.
_POLL_FAMILIES = (
    FamilySpec("partnercenter_up", "1 if the last poll of the tenant succeeded, else 0.", "gauge", _TENANT),
    FamilySpec(
        "partnercenter_last_success_timestamp_seconds",
        "Time of the last successful poll of the tenant, Unix seconds.",
        "gauge",
        _TENANT,
    ),
    FamilySpec(
        "partnercenter_poll_duration_seconds",
        "Duration of the last poll of the tenant, retries included.",
        "gauge",
        _TENANT,
    ),
    FamilySpec(
        "partnercenter_api_requests", "Requests sent to Partner Center and Entra ID.", "counter", ("tenant", "endpoint")
    ),
    FamilySpec(
        "partnercenter_api_request_errors",
        "Failed requests by HTTP status code, or timeout, connection, invalid_response.",
        "counter",
        ("tenant", "endpoint", "status_code"),
    ),
    FamilySpec(
        "partnercenter_token_expiry_timestamp_seconds",
        "Expiry of the access token in hand, Unix seconds.",
        "gauge",
        _TENANT,
    ),
)

TENANT_FAMILIES: tuple[FamilySpec, ...] = (
    *(spec for spec, _ in _SUMMARY_GAUGES),
    *(spec for spec, _ in _TYPE_GAUGES),
    *_OTHER_VALUE_FAMILIES,
    *_POLL_FAMILIES,
)

GLOBAL_FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "partnercenter_config_last_reload_successful", "Whether the last configuration reload succeeded.", "gauge", ()
    ),
    FamilySpec(
        "partnercenter_config_last_reload_success_timestamp_seconds",
        "Time of the last successful configuration reload (or start-up), Unix seconds.",
        "gauge",
        (),
    ),
    FamilySpec("partnercenter_exporter_build_info", "The exporter's version; always 1.", "gauge", ("version",)),
)


Sample = tuple[tuple[str, ...], float]  # label values in the family's label order, and the value

# The first VALUE_FAMILIES entries of TENANT_FAMILIES hold the tenant's invoice values: their samples depend on
# its config and last summaries only. The rest describe its polls, which change every time.
VALUE_FAMILIES = len(_SUMMARY_GAUGES) + len(_TYPE_GAUGES) + len(_OTHER_VALUE_FAMILIES)


def value_samples(tenant: TenantConfig, summaries: tuple[InvoiceSummary, ...] | None) -> list[list[Sample]]:
    """A tenant's samples of the first VALUE_FAMILIES families, one list per family."""
    families: list[list[Sample]] = [[] for _ in range(VALUE_FAMILIES)]
    summary_fams = families[: len(_SUMMARY_GAUGES)]
    type_fams = families[len(_SUMMARY_GAUGES) : len(_SUMMARY_GAUGES) + len(_TYPE_GAUGES)]
    currency_info, threshold = families[len(_SUMMARY_GAUGES) + len(_TYPE_GAUGES) :]
    name = tenant.name
    ordered = sorted(summaries or (), key=lambda s: s.currency)
    for summary in ordered:
        labels = (name, summary.currency)
        for family, (_, field) in zip(summary_fams, _SUMMARY_GAUGES, strict=True):
            value = field(summary)
            if value is not None:
                family.append((labels, value))
        if summary.symbol:
            currency_info.append(((*labels, summary.symbol), 1))
        for detail in sorted(summary.details, key=lambda d: d.invoice_type):
            type_labels = (*labels, detail.invoice_type)
            for family, (_, dfield) in zip(type_fams, _TYPE_GAUGES, strict=True):
                value = dfield(detail)
                if value is not None:
                    family.append((type_labels, value))
    # Thresholds only for currencies the tenant bills in: a threshold without a balance is noise.
    billed = {s.currency for s in ordered}
    for currency in sorted(billed & tenant.thresholds.keys()):
        limits = tenant.thresholds[currency]
        for severity, limit in (("warning", limits.warning), ("critical", limits.critical)):
            if limit is not None:
                threshold.append(((name, currency, severity), limit))
    return families


def poll_samples(tenant: TenantConfig, state: TenantState) -> list[list[Sample]]:
    """A tenant's samples of the families after the first VALUE_FAMILIES, one list per family."""
    families: list[list[Sample]] = [[] for _ in _POLL_FAMILIES]
    up, last_success, duration, requests, errors, token_expiry = families
    name = (tenant.name,)
    if state.up is not None:
        up.append((name, 1 if state.up else 0))
    if state.last_success is not None:
        last_success.append((name, state.last_success))
    if state.poll_duration is not None:
        duration.append((name, state.poll_duration))
    if state.token_expiry is not None:
        token_expiry.append((name, state.token_expiry))
    for endpoint in sorted(state.requests):
        requests.append(((tenant.name, endpoint), state.requests[endpoint]))
    for endpoint, status in sorted(state.errors):
        errors.append(((tenant.name, endpoint, status), state.errors[(endpoint, status)]))
    return families


def tenant_samples(tenant: TenantConfig, state: TenantState) -> list[list[Sample]]:
    """One tenant's samples, one list per entry of TENANT_FAMILIES (in that order; some may be empty).

    The one place that decides which samples a tenant has: `tenant_families` wraps them in families for
    prometheus_client, and the exposition's renderer formats them straight to text.
    """
    return value_samples(tenant, state.summaries) + poll_samples(tenant, state)


def tenant_families(tenant: TenantConfig, state: TenantState) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """`tenant_samples` as prometheus_client families, one per entry of TENANT_FAMILIES."""
    families = [spec.new() for spec in TENANT_FAMILIES]
    for family, samples in zip(families, tenant_samples(tenant, state), strict=True):
        for labels, value in samples:
            family.add_metric(list(labels), value)
    return families


def global_families(snap: Snapshot) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The exporter-wide families, in GLOBAL_FAMILIES order."""
    reload_ok, reload_time, build = (spec.new() for spec in GLOBAL_FAMILIES)
    reload_ok.add_metric([], 1 if snap.reload_successful else 0)
    if snap.reload_success_time is not None:
        reload_time.add_metric([], snap.reload_success_time)
    build.add_metric([__version__], 1)
    return [reload_ok, reload_time, build]


def polled_tenants(snap: Snapshot) -> list[tuple[TenantConfig, TenantState]]:
    """Configured tenants with their state, sorted by name (the order of samples in every family)."""
    pairs = [(t, snap.tenants.get(t.name)) for t in sorted(snap.config.tenants, key=lambda t: t.name)]
    return [(t, s) for t, s in pairs if s is not None]


class PartnerCenterCollector(Collector):
    """Yields every partnercenter_* family from `snapshot()`, the store's current snapshot."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without samples."""
        for spec in (*TENANT_FAMILIES, *GLOBAL_FAMILIES):
            yield spec.new()

    def collect(self) -> Iterator[Metric]:
        """Samples of the current snapshot."""
        snap = self._snapshot()
        merged = [spec.new() for spec in TENANT_FAMILIES]
        for tenant, state in polled_tenants(snap):
            for family, own in zip(merged, tenant_families(tenant, state), strict=True):
                family.samples.extend(own.samples)
        yield from merged
        yield from global_families(snap)
