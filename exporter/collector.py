"""Turns the current snapshot into metric families; reads memory only (no I/O, no locks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.model import InvoiceSummary, InvoiceTypeSummary
from exporter.snapshot import Snapshot

_FROM_POLL = " Served from the last successful poll of the tenant."

# (name, help, field) of the per-currency gauges.
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
)


class PartnerCenterCollector(Collector):
    """Yields every partnercenter_* family from `snapshot()`, the store's current snapshot."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without samples."""
        for name, help_text, _ in _SUMMARY_GAUGES:
            yield GaugeMetricFamily(name, help_text, labels=["tenant", "currency"])
        for name, help_text, _ in _TYPE_GAUGES:
            yield GaugeMetricFamily(name, help_text, labels=["tenant", "currency", "invoice_type"])
        yield from _TenantFamilies.new()
        yield GaugeMetricFamily("partnercenter_config_last_reload_successful", "")
        yield GaugeMetricFamily("partnercenter_config_last_reload_success_timestamp_seconds", "")
        yield GaugeMetricFamily("partnercenter_exporter_build_info", "", labels=["version"])

    def collect(self) -> Iterator[Metric]:
        """Samples of the current snapshot."""
        snap = self._snapshot()
        summary_fams = [
            GaugeMetricFamily(n, h + _FROM_POLL, labels=["tenant", "currency"]) for n, h, _ in _SUMMARY_GAUGES
        ]
        type_fams = [
            GaugeMetricFamily(n, h + _FROM_POLL, labels=["tenant", "currency", "invoice_type"])
            for n, h, _ in _TYPE_GAUGES
        ]
        fams = _TenantFamilies.new()
        currency_info, threshold, up, last_success = fams.currency_info, fams.threshold, fams.up, fams.last_success
        duration, requests, errors, token_expiry = fams.duration, fams.requests, fams.errors, fams.token_expiry

        for tenant in sorted(snap.config.tenants, key=lambda t: t.name):
            name = tenant.name
            state = snap.tenants.get(name)
            if state is None:
                continue
            # Thresholds only for currencies the tenant bills in: a threshold without a balance is noise.
            billed = {s.currency for s in state.summaries or ()}
            for currency in sorted(billed & tenant.thresholds.keys()):
                limits = tenant.thresholds[currency]
                for severity, value in (("warning", limits.warning), ("critical", limits.critical)):
                    if value is not None:
                        threshold.add_metric([name, currency, severity], value)
            for summary in sorted(state.summaries or (), key=lambda s: s.currency):
                labels = [name, summary.currency]
                for family, (_, _, field) in zip(summary_fams, _SUMMARY_GAUGES, strict=True):
                    value = field(summary)
                    if value is not None:
                        family.add_metric(labels, value)
                if summary.symbol:
                    currency_info.add_metric([*labels, summary.symbol], 1)
                for detail in sorted(summary.details, key=lambda d: d.invoice_type):
                    for family, (_, _, dfield) in zip(type_fams, _TYPE_GAUGES, strict=True):
                        value = dfield(detail)
                        if value is not None:
                            family.add_metric([*labels, detail.invoice_type], value)
            if state.up is not None:
                up.add_metric([name], 1 if state.up else 0)
            if state.last_success is not None:
                last_success.add_metric([name], state.last_success)
            if state.poll_duration is not None:
                duration.add_metric([name], state.poll_duration)
            if state.token_expiry is not None:
                token_expiry.add_metric([name], state.token_expiry)
            for endpoint in sorted(state.requests):
                requests.add_metric([name, endpoint], state.requests[endpoint])
            for endpoint, status in sorted(state.errors):
                errors.add_metric([name, endpoint, status], state.errors[(endpoint, status)])

        yield from summary_fams
        yield from type_fams
        yield from fams
        reload_ok = GaugeMetricFamily(
            "partnercenter_config_last_reload_successful", "Whether the last configuration reload succeeded."
        )
        reload_ok.add_metric([], 1 if snap.reload_successful else 0)
        yield reload_ok
        reload_time = GaugeMetricFamily(
            "partnercenter_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration reload (or start-up), Unix seconds.",
        )
        if snap.reload_success_time is not None:
            reload_time.add_metric([], snap.reload_success_time)
        yield reload_time
        build = GaugeMetricFamily(
            "partnercenter_exporter_build_info", "The exporter's version; always 1.", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build


class _TenantFamilies(NamedTuple):
    """The per-tenant families that are not invoice values, in exposition order."""

    currency_info: GaugeMetricFamily
    threshold: GaugeMetricFamily
    up: GaugeMetricFamily
    last_success: GaugeMetricFamily
    duration: GaugeMetricFamily
    requests: CounterMetricFamily
    errors: CounterMetricFamily
    token_expiry: GaugeMetricFamily

    @classmethod
    def new(cls) -> _TenantFamilies:
        """Fresh, empty families."""
        return cls(
            GaugeMetricFamily(
                "partnercenter_currency_info",
                "Currency symbol (currencySymbol) per currency; always 1." + _FROM_POLL,
                labels=["tenant", "currency", "symbol"],
            ),
            GaugeMetricFamily(
                "partnercenter_balance_threshold",
                "Balance alert threshold from the exporter config, per currency and severity.",
                labels=["tenant", "currency", "severity"],
            ),
            GaugeMetricFamily(
                "partnercenter_up", "1 if the last poll of the tenant succeeded, else 0.", labels=["tenant"]
            ),
            GaugeMetricFamily(
                "partnercenter_last_success_timestamp_seconds",
                "Time of the last successful poll of the tenant, Unix seconds.",
                labels=["tenant"],
            ),
            GaugeMetricFamily(
                "partnercenter_poll_duration_seconds",
                "Duration of the last poll of the tenant, retries included.",
                labels=["tenant"],
            ),
            CounterMetricFamily(
                "partnercenter_api_requests",
                "Requests sent to Partner Center and Entra ID.",
                labels=["tenant", "endpoint"],
            ),
            CounterMetricFamily(
                "partnercenter_api_request_errors",
                "Failed requests by HTTP status code, or timeout, connection, invalid_response.",
                labels=["tenant", "endpoint", "status_code"],
            ),
            GaugeMetricFamily(
                "partnercenter_token_expiry_timestamp_seconds",
                "Expiry of the access token in hand, Unix seconds.",
                labels=["tenant"],
            ),
        )
