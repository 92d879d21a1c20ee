"""Turns the current snapshot into metric families; reads memory only (no I/O, no locks).

`TenantCollector` yields every per-tenant family (rendered once per change, see exposition.py);
`ExporterCollector` the exporter-wide ones, which are cheap and rendered at every scrape.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import TenantConfig
from exporter.snapshot import Snapshot, TenantState
from exporter.upstream.model import InvoiceSummary, InvoiceTypeSummary
from exporter.version import revision

_FROM_POLL = " Served from the last successful poll of the tenant."
_CUR = ["tenant", "currency"]
_TYPE = ["tenant", "currency", "invoice_type"]

# name, help, field: the gauges of one currency's summary, then those of one invoice type's.
_SUMMARY_GAUGES: tuple[tuple[str, str, Callable[[InvoiceSummary], float | None]], ...] = (
    ("partnercenter_balance", "Account balance (balanceAmount) in the currency's unit.", lambda s: s.balance),
    (
        "partnercenter_last_payment_amount",
        "Amount of the last payment (lastPaymentAmount).",
        lambda s: s.last_payment_amount,
    ),
    (
        "partnercenter_last_payment_timestamp_seconds",
        "Date of the last payment (lastPaymentDate), Unix seconds.",
        lambda s: s.last_payment_time,
    ),
    (
        "partnercenter_latest_invoice_timestamp_seconds",
        "Date of the latest invoice (latestInvoiceDate), Unix seconds.",
        lambda s: s.latest_invoice_time,
    ),
    (
        "partnercenter_first_invoice_timestamp_seconds",
        "Date of the first invoice (firstInvoiceCreationDate), Unix seconds.",
        lambda s: s.first_invoice_time,
    ),
    (
        "partnercenter_accounting_timestamp_seconds",
        "Accounting date (accountingDate), Unix seconds.",
        lambda s: s.accounting_time,
    ),
)
_TYPE_GAUGES: tuple[tuple[str, str, Callable[[InvoiceTypeSummary], float | None]], ...] = (
    (
        "partnercenter_invoice_type_balance",
        "Balance per invoice type (details[].summary.balanceAmount).",
        lambda d: d.balance,
    ),
    (
        "partnercenter_invoice_type_last_payment_amount",
        "Last payment amount per invoice type (details[].summary.lastPaymentAmount).",
        lambda d: d.last_payment_amount,
    ),
    (
        "partnercenter_invoice_type_latest_invoice_timestamp_seconds",
        "Latest invoice date per invoice type (details[].summary.latestInvoiceDate), Unix seconds.",
        lambda d: d.latest_invoice_time,
    ),
    (
        "partnercenter_invoice_type_last_payment_timestamp_seconds",
        "Last payment date per invoice type (details[].summary.lastPaymentDate), Unix seconds.",
        lambda d: d.last_payment_time,
    ),
)
# name, help, value: the per-tenant gauges of its polls, tokens and credentials.
_TENANT_GAUGES: tuple[tuple[str, str, Callable[[TenantConfig, TenantState], float | None]], ...] = (
    ("partnercenter_up", "1 if the last poll of the tenant succeeded, else 0.", lambda t, s: _number(s.up)),
    (
        "partnercenter_last_success_timestamp_seconds",
        "Time of the last successful poll of the tenant, Unix seconds.",
        lambda t, s: s.last_success,
    ),
    (
        "partnercenter_poll_duration_seconds",
        "Duration of the last poll of the tenant, retries included.",
        lambda t, s: s.poll_duration,
    ),
    (
        "partnercenter_token_expiry_timestamp_seconds",
        "Expiry of the access token in hand, Unix seconds.",
        lambda t, s: s.token_expiry,
    ),
    (
        "partnercenter_token_mfa",
        "App+User: 1 if the access token's amr claim has mfa, else 0 (Partner Center refuses it: 900421).",
        lambda t, s: _number(s.token_mfa),
    ),
    (
        "partnercenter_credential_expiry_timestamp_seconds",
        "Expiry (notAfter) of the tenant's client certificate, Unix seconds.",
        lambda t, s: t.certificate.not_after if t.certificate is not None else None,
    ),
    (
        "partnercenter_payment_terms_seconds",
        "Payment terms from the exporter config: how long after an invoice it is due.",
        lambda t, s: t.payment_terms,
    ),
)


def _number(flag: bool | None) -> float | None:
    return None if flag is None else float(flag)


class TenantCollector(Collector):
    """Every partnercenter_* family of the tenants in `snapshot()`, the store's current snapshot.

    Families are built one at a time, each one given to the renderer before the next is built: at 1000 tenants
    all of them at once were ~65,000 sample objects alive together, which left the process ~10 MiB larger.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without samples."""
        yield from self._families([])

    def collect(self) -> Iterator[Metric]:
        """The families of the current snapshot, samples sorted by tenant."""
        snap = self._snapshot()
        yield from self._families(
            [(t, s) for t in sorted(snap.config.tenants, key=lambda t: t.name) if (s := snap.tenants.get(t.name))]
        )

    def _families(self, tenants: list[tuple[TenantConfig, TenantState]]) -> Iterator[Metric]:
        # Each tenant's summaries by currency, and each summary's invoice types, in label order.
        billed = [
            (tenant, [(s, sorted(s.details, key=lambda d: d.invoice_type)) for s in _by_currency(state)])
            for tenant, state in tenants
        ]
        yield from _summary_families(billed)
        yield _thresholds(billed)
        yield from _tenant_families(tenants)


_Billed = list[tuple[TenantConfig, list[tuple[InvoiceSummary, list[InvoiceTypeSummary]]]]]


def _summary_families(billed: _Billed) -> Iterator[Metric]:
    """The business families: one sample per currency (and invoice type) of each tenant's last poll."""
    for name, text, field in _SUMMARY_GAUGES:
        family = GaugeMetricFamily(name, text + _FROM_POLL, labels=_CUR)
        for tenant, summaries in billed:
            for summary, _ in summaries:
                if (value := field(summary)) is not None:
                    family.add_metric([tenant.name, summary.currency], value)
        yield family
    for name, text, detail_field in _TYPE_GAUGES:
        family = GaugeMetricFamily(name, text + _FROM_POLL, labels=_TYPE)
        for tenant, summaries in billed:
            for summary, details in summaries:
                for detail in details:
                    if (value := detail_field(detail)) is not None:
                        family.add_metric([tenant.name, summary.currency, detail.invoice_type], value)
        yield family
    info = GaugeMetricFamily(
        "partnercenter_currency_info",
        "Currency symbol (currencySymbol) per currency; always 1." + _FROM_POLL,
        labels=["tenant", "currency", "symbol"],
    )
    for tenant, summaries in billed:
        for summary, _ in summaries:
            if summary.symbol:
                info.add_metric([tenant.name, summary.currency, summary.symbol], 1)
    yield info


def _thresholds(billed: _Billed) -> Metric:
    """The configured thresholds, only for currencies the tenant bills in: a threshold without a balance is noise."""
    thresholds = GaugeMetricFamily(
        "partnercenter_balance_threshold",
        "Balance alert threshold from the exporter config, per currency and severity.",
        labels=["tenant", "currency", "severity"],
    )
    for tenant, summaries in billed:
        for currency in sorted({s.currency for s, _ in summaries} & tenant.thresholds.keys()):
            limits = tenant.thresholds[currency]
            for severity, limit in (("warning", limits.warning), ("critical", limits.critical)):
                if limit is not None:
                    thresholds.add_metric([tenant.name, currency, severity], limit)
    return thresholds


def _tenant_families(tenants: list[tuple[TenantConfig, TenantState]]) -> Iterator[Metric]:
    """The families of each tenant's polls, tokens and credential: gauges, then request and write counters."""
    for name, text, tenant_field in _TENANT_GAUGES:
        family = GaugeMetricFamily(name, text, labels=["tenant"])
        for tenant, state in tenants:
            if (value := tenant_field(tenant, state)) is not None:
                family.add_metric([tenant.name], value)
        yield family
    requests = CounterMetricFamily(
        "partnercenter_api_requests", "Requests sent to Partner Center and Entra ID.", labels=["tenant", "endpoint"]
    )
    for tenant, state in tenants:
        for endpoint in sorted(state.requests):
            requests.add_metric([tenant.name, endpoint], state.requests[endpoint])
    yield requests
    errors = CounterMetricFamily(
        "partnercenter_api_request_errors",
        "Failed requests by HTTP status code, or timeout, connection, invalid_response.",
        labels=["tenant", "endpoint", "status_code"],
    )
    for tenant, state in tenants:
        for endpoint, status in sorted(state.errors):
            errors.add_metric([tenant.name, endpoint, status], state.errors[(endpoint, status)])
    yield errors
    write_errors = CounterMetricFamily(
        "partnercenter_refresh_token_write_errors",
        "Rotated refresh tokens that could not be written back to refresh_token_file.",
        labels=["tenant"],
    )
    for tenant, state in tenants:
        if tenant.refresh_token_file is not None:
            write_errors.add_metric([tenant.name], state.refresh_token_write_errors)
    yield write_errors


def _by_currency(state: TenantState) -> list[InvoiceSummary]:
    return sorted(state.summaries or (), key=lambda s: s.currency)


class ExporterCollector(Collector):
    """The exporter-wide families: last reload and build info."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self._build = [__version__, revision(), platform.python_version()]

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields: those of the current snapshot, a few samples read from memory."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        """The families of the current snapshot."""
        snap = self._snapshot()
        yield GaugeMetricFamily(
            "partnercenter_config_last_reload_successful",
            "Whether the last configuration reload succeeded.",
            value=1 if snap.reload_successful else 0,
        )
        reload_time = GaugeMetricFamily(
            "partnercenter_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration reload (or start-up), Unix seconds.",
        )
        if snap.reload_success_time is not None:
            reload_time.add_metric([], snap.reload_success_time)
        yield reload_time
        build = GaugeMetricFamily(
            "partnercenter_exporter_build_info",
            "The exporter's version, git revision and Python version; always 1.",
            labels=["version", "revision", "python_version"],
        )
        build.add_metric(self._build, 1)
        yield build
