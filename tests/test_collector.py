"""Golden expositions: upstream body in, exact exposition out; and the collector's rules around it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.app import business_registry
from exporter.collector import ExporterCollector, TenantCollector
from exporter.snapshot import SnapshotStore, TenantState
from exporter.upstream.model import parse_summaries, parse_summary
from exporter.version import revision
from tests.fakes import make_config, tenant_yaml

BODIES = Path(__file__).parent / "data" / "bodies"
GOLDEN = Path(__file__).parent / "data" / "golden"
NOW = 1_764_000_000.0

VALID_BODIES = sorted(
    p.name for p in BODIES.glob("*.json") if p.name.startswith(("invoice_summary", "summary-", "summaries-"))
)


def _store_with(tmp_path: Path, body_name: str) -> SnapshotStore:
    body = (BODIES / body_name).read_bytes()
    many = body_name.startswith(("invoice_summaries", "summaries-"))
    endpoint = "summaries" if many else "summary"
    extra = "refresh_token_file: rt\n" if many else ""
    (tmp_path / "rt").write_text("refresh")
    config = make_config(
        tmp_path,
        tenant_yaml("contoso", endpoint=endpoint, extra=extra),
        thresholds="{USD: {warning: 50000, critical: 100000}, EUR: {critical: 90000}}",
    )
    store = SnapshotStore(config, NOW)
    summaries = parse_summaries(body) if many else (parse_summary(body),)

    def polled(state: TenantState) -> TenantState:
        state = state.counted("token", None).counted(endpoint, "503").counted(endpoint, None)
        return replace(
            state, summaries=summaries, up=True, last_success=NOW, poll_duration=0.25, token_expiry=NOW + 3599
        )

    store.update_tenant("contoso", polled)
    return store


def _exposition(store: SnapshotStore) -> str:
    """The tenants' families (the exporter-wide ones carry the build's revision: test_exporter_families)."""
    registry = CollectorRegistry()
    registry.register(TenantCollector(lambda: store.current))
    return generate_latest(registry).decode()


@pytest.mark.parametrize("body_name", VALID_BODIES)
def test_golden_exposition(tmp_path: Path, body_name: str) -> None:
    text = _exposition(_store_with(tmp_path, body_name))
    golden = GOLDEN / (Path(body_name).stem + ".prom")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"exposition differs from {golden.name} (UPDATE_GOLDEN=1 rewrites)"


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.prom")), ids=lambda p: p.name)
def test_golden_files_pass_promtool_check_metrics(golden: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    result = subprocess.run([promtool, "check", "metrics"], input=golden.read_bytes(), capture_output=True, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_every_valid_body_has_a_golden_file() -> None:
    assert {Path(n).stem for n in VALID_BODIES} == {p.stem for p in GOLDEN.glob("*.prom")}


# Read off the bodies by hand (dates with `date -u -d ... +%s`), not from the code: UPDATE_GOLDEN=1 rewrites the golden
# files from whatever the code renders, and a family showing another field (first invoice for accounting date) then
# passed every test. The two bodies between them give every summary date a value of its own.
_USD = {"tenant": "contoso", "currency": "USD"}
_CHF = {"tenant": "contoso", "currency": "CHF"}
_USD_RECURRING, _USD_ONETIME = ({**_USD, "invoice_type": t} for t in ("recurring", "onetime"))
_GOLDEN_BUSINESS_SAMPLES: dict[str, list[tuple[str, dict[str, str], float]]] = {
    "invoice_summary.prom": [
        ("partnercenter_balance", _USD, 751094.39),
        ("partnercenter_last_payment_amount", _USD, 1000),
        ("partnercenter_last_payment_timestamp_seconds", _USD, 1483272000),  # 2017-01-01T12:00:00Z
        ("partnercenter_latest_invoice_timestamp_seconds", _USD, 1521158400),  # 2018-03-16, no zone: UTC
        ("partnercenter_first_invoice_timestamp_seconds", _USD, 1484956800),  # 2017-01-21
        ("partnercenter_accounting_timestamp_seconds", _USD, 1521158400),  # 2018-03-16
        ("partnercenter_invoice_type_balance", _USD_RECURRING, 202955.87),
        ("partnercenter_invoice_type_balance", _USD_ONETIME, 548138.52),
        ("partnercenter_invoice_type_last_payment_amount", _USD_RECURRING, 1000),
        ("partnercenter_invoice_type_last_payment_amount", _USD_ONETIME, 0),
        ("partnercenter_invoice_type_last_payment_timestamp_seconds", _USD_RECURRING, 1483272000),
        # Recurring's latestInvoiceDate and OneTime's lastPaymentDate are 0001-01-01 (never): no sample
        ("partnercenter_invoice_type_latest_invoice_timestamp_seconds", _USD_ONETIME, 1521158400),
        ("partnercenter_currency_info", {**_USD, "symbol": "$"}, 1),
        ("partnercenter_balance_threshold", {**_USD, "severity": "warning"}, 50000),
        ("partnercenter_balance_threshold", {**_USD, "severity": "critical"}, 100000),
    ],
    "summary-offsets.prom": [
        ("partnercenter_balance", _CHF, 42.42),
        ("partnercenter_last_payment_amount", _CHF, 10),
        ("partnercenter_last_payment_timestamp_seconds", _CHF, 1714518000.5),  # 2024-04-30T18:00:00.5-05:00
        ("partnercenter_latest_invoice_timestamp_seconds", _CHF, 1714521600),  # 2024-05-01T00:00:00.0000000
        ("partnercenter_first_invoice_timestamp_seconds", _CHF, 1699219800),  # 2023-11-05T23:30:00+02:00
        ("partnercenter_accounting_timestamp_seconds", _CHF, 1714558830.1234567),  # 2024-05-01T10:20:30.1234567Z
        ("partnercenter_invoice_type_balance", {**_CHF, "invoice_type": "recurring"}, 42.42),
        ("partnercenter_invoice_type_balance", {**_CHF, "invoice_type": "onetime"}, 0),
        # 2024-04-01T09:15:00.1234567+05:30; OneTime's "not a date" gives no sample
        ("partnercenter_invoice_type_latest_invoice_timestamp_seconds", {**_CHF, "invoice_type": "recurring"},
         1711943100.1234567),
        ("partnercenter_currency_info", {**_CHF, "symbol": "CHF"}, 1),
    ],
}  # fmt: skip
_TENANT_FAMILIES = ("partnercenter_up", "partnercenter_last_success", "partnercenter_poll_duration",
                    "partnercenter_token_expiry", "partnercenter_api_request")  # fmt: skip


@pytest.mark.parametrize("name", sorted(_GOLDEN_BUSINESS_SAMPLES))
def test_golden_files_hold_the_values_read_off_their_bodies(name: str) -> None:
    text = (GOLDEN / name).read_text()
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith(_TENANT_FAMILIES)
    }
    expected = {(n, frozenset(labels.items())): value for n, labels, value in _GOLDEN_BUSINESS_SAMPLES[name]}
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=0, abs=1e-6), key


def _registry_value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


def test_microsoft_sample_values(tmp_path: Path) -> None:
    registry = business_registry(_store_with(tmp_path, "invoice_summary.json"))
    usd = {"tenant": "contoso", "currency": "USD"}
    assert _registry_value(registry, "partnercenter_balance", usd) == 751094.39
    assert _registry_value(registry, "partnercenter_last_payment_amount", usd) == 1000
    # 2017-01-01T12:00:00Z
    assert _registry_value(registry, "partnercenter_last_payment_timestamp_seconds", usd) == 1483272000
    # 2018-03-16T00:00:00 has no zone: UTC
    assert _registry_value(registry, "partnercenter_latest_invoice_timestamp_seconds", usd) == 1521158400
    recurring = {**usd, "invoice_type": "recurring"}
    assert _registry_value(registry, "partnercenter_invoice_type_balance", recurring) == 202955.87
    # 0001-01-01T00:00:00 means never: no sample at all
    assert _registry_value(registry, "partnercenter_invoice_type_latest_invoice_timestamp_seconds", recurring) is None
    assert _registry_value(registry, "partnercenter_currency_info", {**usd, "symbol": "$"}) == 1
    threshold = {**usd, "severity": "critical"}
    assert _registry_value(registry, "partnercenter_balance_threshold", threshold) == 100000
    # EUR has a threshold in the config, but the tenant does not bill in EUR.
    eur = {"tenant": "contoso", "currency": "EUR", "severity": "critical"}
    assert _registry_value(registry, "partnercenter_balance_threshold", eur) is None
    assert _registry_value(registry, "partnercenter_up", {"tenant": "contoso"}) == 1
    errors = {"tenant": "contoso", "endpoint": "summary", "status_code": "503"}
    assert _registry_value(registry, "partnercenter_api_request_errors_total", errors) == 1
    seeded = {"tenant": "contoso", "endpoint": "token", "status_code": "429"}
    assert _registry_value(registry, "partnercenter_api_request_errors_total", seeded) == 0


def test_vanished_currency_and_invoice_type_drop_their_series(tmp_path: Path) -> None:
    store = _store_with(tmp_path, "invoice_summaries.json")
    registry = business_registry(store)
    assert _registry_value(registry, "partnercenter_balance", {"tenant": "contoso", "currency": "CHF"}) == 1230.33
    summaries = store.current.tenants["contoso"].summaries
    assert summaries is not None
    gbp = next(s for s in summaries if s.currency == "GBP")
    only_gbp_recurring = replace(gbp, details=tuple(d for d in gbp.details if d.invoice_type == "recurring"))
    store.update_tenant("contoso", lambda s: replace(s, summaries=(only_gbp_recurring,)))
    assert _registry_value(registry, "partnercenter_balance", {"tenant": "contoso", "currency": "CHF"}) is None
    onetime = {"tenant": "contoso", "currency": "GBP", "invoice_type": "onetime"}
    assert _registry_value(registry, "partnercenter_invoice_type_balance", onetime) is None
    assert _registry_value(registry, "partnercenter_balance", {"tenant": "contoso", "currency": "GBP"}) == 751094.39


def test_unpolled_tenant_has_counters_but_no_up_and_no_thresholds(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_yaml("fresh"), thresholds="{USD: {warning: 1}}")
    registry = business_registry(SnapshotStore(config, NOW))
    assert _registry_value(registry, "partnercenter_up", {"tenant": "fresh"}) is None
    labels = {"tenant": "fresh", "endpoint": "summary", "status_code": "401"}
    assert _registry_value(registry, "partnercenter_api_request_errors_total", labels) == 0
    assert _registry_value(registry, "partnercenter_api_requests_total", {"tenant": "fresh", "endpoint": "token"}) == 0
    threshold = {"tenant": "fresh", "currency": "USD", "severity": "warning"}
    assert _registry_value(registry, "partnercenter_balance_threshold", threshold) is None
    assert _registry_value(registry, "partnercenter_config_last_reload_successful", {}) == 1


def test_down_tenant_keeps_values_with_up_zero(tmp_path: Path) -> None:
    store = _store_with(tmp_path, "invoice_summary.json")
    store.update_tenant("contoso", lambda s: replace(s, up=False, last_error="summary: 503"))
    registry = business_registry(store)
    assert _registry_value(registry, "partnercenter_up", {"tenant": "contoso"}) == 0
    assert _registry_value(registry, "partnercenter_balance", {"tenant": "contoso", "currency": "USD"}) == 751094.39


def test_payment_terms_and_token_families(tmp_path: Path) -> None:
    (tmp_path / "rt").write_text("refresh")
    config = make_config(
        tmp_path,
        tenant_yaml("own", extra="payment_terms: 45d\n")
        + tenant_yaml("inherited", extra="refresh_token_file: rt\n")
        + tenant_yaml("none"),
        payment_terms="30d",
    )
    store = SnapshotStore(config, NOW)
    store.update_tenant("inherited", lambda s: replace(s, token_mfa=False, refresh_token_write_errors=2))
    store.update_tenant("own", lambda s: replace(s, token_mfa=None))
    registry = business_registry(store)
    assert _registry_value(registry, "partnercenter_payment_terms_seconds", {"tenant": "own"}) == 45 * 86400
    assert _registry_value(registry, "partnercenter_payment_terms_seconds", {"tenant": "inherited"}) == 30 * 86400
    assert _registry_value(registry, "partnercenter_token_mfa", {"tenant": "inherited"}) == 0
    assert _registry_value(registry, "partnercenter_token_mfa", {"tenant": "own"}) is None  # app-only: no sample
    write_errors = "partnercenter_refresh_token_write_errors_total"
    assert _registry_value(registry, write_errors, {"tenant": "inherited"}) == 2
    assert _registry_value(registry, write_errors, {"tenant": "own"}) is None  # no refresh token to write


def test_payment_terms_absent_without_config(tmp_path: Path) -> None:
    registry = business_registry(SnapshotStore(make_config(tmp_path, tenant_yaml("none")), NOW))
    assert _registry_value(registry, "partnercenter_payment_terms_seconds", {"tenant": "none"}) is None


@pytest.mark.parametrize(
    ("collector", "name"),
    [(TenantCollector, "partnercenter_up"), (ExporterCollector, "partnercenter_exporter_build_info")],
)
def test_collectors_describe_their_families_to_the_registry(
    tmp_path: Path, collector: type[TenantCollector | ExporterCollector], name: str
) -> None:
    """The registry learns a collector's names from describe(), so a second family of the same name is refused."""
    store = SnapshotStore(make_config(tmp_path, tenant_yaml("a")), NOW)
    registry = CollectorRegistry()
    registry.register(collector(lambda: store.current))
    clash = Gauge(name, "another family of the same name", registry=None)
    with pytest.raises(ValueError, match=f"Duplicated timeseries.*{name}"):
        registry.register(clash)


def test_exporter_families_carry_the_build_and_the_reload_state(tmp_path: Path) -> None:
    store = SnapshotStore(make_config(tmp_path, tenant_yaml("a")), NOW)
    registry = CollectorRegistry()
    registry.register(ExporterCollector(lambda: store.current))
    build = {"version": __version__, "revision": revision(), "python_version": platform.python_version()}
    assert _registry_value(registry, "partnercenter_exporter_build_info", build) == 1
    assert _registry_value(registry, "partnercenter_config_last_reload_successful", {}) == 1
    assert _registry_value(registry, "partnercenter_config_last_reload_success_timestamp_seconds", {}) == NOW
    store.reload_failed()
    assert _registry_value(registry, "partnercenter_config_last_reload_successful", {}) == 0
