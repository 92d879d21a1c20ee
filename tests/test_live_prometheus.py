"""A real Prometheus, loaded with the shipped alerts, scrapes the real exporter polling the simulator.

Proves that every dashboard query and variable query returns data from what the exporter really exposes, and
that the shipped rules evaluate cleanly and alert for the right tenants.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.promql import (
    ALERTS_PATH,
    JOB,
    REPO_ROOT,
    alert_rules,
    data_panels,
    load_dashboard,
    parse_label_values,
    query_variables,
    substitute,
    variable_query,
)
from tests.support import free_port, wait_until

pytestmark = pytest.mark.e2e

HEALTHY = ("contoso", "fabrikam")
OVER_THRESHOLD = "northwind"
FAILING = "adatum"
DEAD_REFRESH_TOKEN = "tailspin"
# Payment terms: 30 days by default, 45 for fabrikam. contoso paid after its latest invoice; fabrikam has not,
# but its invoice is ten days old, within its terms; northwind is past them with a payment older than its
# invoice: overdue.
PAYMENT_TERMS = "30d"
FABRIKAM_PAYMENT_TERMS = "45d"
OVERDUE = ("northwind", "EUR")
_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
FABRIKAM_INVOICE = (_NOW - dt.timedelta(days=10)).isoformat()
FABRIKAM_PAYMENT = (_NOW - dt.timedelta(days=40)).isoformat()
_DEAD_GRANT = (
    '{"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token has expired due to '
    'inactivity.", "error_codes": [700082]}'
)
# The token endpoint rejects adatum's credentials: its polls fail without retries. tailspin is App+User with a
# refresh token Entra no longer accepts (400 invalid_grant).
SCENARIO: dict[str, Any] = {
    "seed": 1,
    "token_lifetime": 3600,
    "tenants": [
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-1111-4111-8111-111111111111",
            "client_secret": "demo-contoso-secret",
            "currencies": [
                {
                    "code": "USD",
                    "symbol": "$",
                    "balance": 42000.5,
                    "invoice_types": {"Recurring": 30000, "OneTime": 12000.5},
                    "last_payment": {"amount": 1000, "date": "2025-11-15T00:00:00Z"},
                    "latest_invoice_date": "2025-11-01T00:00:00",
                }
            ],
        },
        {
            "tenant_id": "fabrikam.onmicrosoft.com",
            "client_id": "22222222-2222-4222-8222-222222222222",
            "client_secret": "demo-fabrikam-secret",
            "refresh_token": "demo-fabrikam-refresh-token",
            "currencies": [
                {
                    "code": code,
                    "symbol": symbol,
                    "balance": balance,
                    "invoice_types": {"Recurring": balance - 100, "OneTime": 100},
                    "last_payment": {"amount": 500, "date": FABRIKAM_PAYMENT},
                    "latest_invoice_date": FABRIKAM_INVOICE,
                }
                for code, symbol, balance in (("USD", "$", 10000), ("EUR", "€", 20000), ("GBP", "£", 5000))
            ],
        },
        {
            "tenant_id": "northwind.onmicrosoft.com",
            "client_id": "33333333-3333-4333-8333-333333333333",
            "client_secret": "demo-northwind-secret",
            "currencies": [
                {
                    "code": "EUR",
                    "symbol": "€",
                    "balance": 120000,
                    "invoice_types": {"Recurring": 100000, "OneTime": 20000},
                    "last_payment": {"amount": 2000, "date": "2025-08-01T00:00:00Z"},
                    "latest_invoice_date": "2025-11-01T00:00:00Z",
                }
            ],
        },
        {
            "tenant_id": "adatum.onmicrosoft.com",
            "client_id": "44444444-4444-4444-8444-444444444444",
            "client_secret": "demo-adatum-secret",
            "currencies": [{"code": "USD", "symbol": "$", "balance": 1000}],
            "faults": [{"kind": "status", "status": 401, "endpoint": "token"}],
        },
        {
            "tenant_id": "tailspin.onmicrosoft.com",
            "client_id": "55555555-5555-4555-8555-555555555555",
            "client_secret": "demo-tailspin-secret",
            "refresh_token": "demo-tailspin-refresh-token",
            "currencies": [{"code": "USD", "symbol": "$", "balance": 1000}],
            "faults": [{"kind": "status", "status": 400, "endpoint": "token", "body": _DEAD_GRANT}],
        },
    ],
}
THRESHOLDS = {code: {"warning": 50000, "critical": 100000} for code in ("USD", "EUR", "GBP")}
# Grafana's $__rate_interval is at least four scrape intervals; the scrape interval here is 1s.
RATE_INTERVAL = "10s"
DEADLINE = 30.0


@dataclass(frozen=True)
class Stack:
    """The running simulator, exporter and Prometheus."""

    exporter_url: str
    prometheus_url: str
    logs: tuple[Path, ...]

    def diagnostics(self) -> str:
        """The last lines of every process's output, for failure messages."""
        parts = []
        for path in self.logs:
            if not path.exists():  # a process started later than the one that failed
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _start(argv: list[str], log: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """Start a process with its output in `log`, recorded for clean-up."""
    with log.open("wb") as out:
        processes.append(
            subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every process, killing those that do not exit in time."""
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(processes):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _answers(url: str) -> bool:
    """True once `url` answers 200."""
    return httpx.get(url, timeout=2).status_code == 200


def _wait_answers(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait for `url` to answer 200; fail at once, not at the deadline, if `process` exits first."""
    state = wait_until(
        lambda: "exited" if process.poll() is not None else _answers(url), DEADLINE, interval=0.2, what=what
    )
    assert state is True, f"{what}: the process exited with status {process.returncode}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Simulator, exporter and Prometheus on free 127.0.0.1 ports, stopped afterwards."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found on PATH (Debian package `prometheus`)"
    tmp = tmp_path_factory.mktemp("live")
    sim_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"

    (tmp / "scenario.yml").write_text(yaml.safe_dump(SCENARIO, allow_unicode=True), encoding="utf-8")
    tenants = []
    for tenant in SCENARIO["tenants"]:
        name = tenant["tenant_id"].split(".")[0]
        entry = {"name": name, **{k: tenant[k] for k in ("tenant_id", "client_id", "client_secret")}}
        if "refresh_token" in tenant:
            (tmp / f"{name}.token").write_text(tenant["refresh_token"] + "\n", encoding="utf-8")
            entry.update(endpoint="summaries", refresh_token_file=str(tmp / f"{name}.token"))
        if name == "fabrikam":
            entry["payment_terms"] = FABRIKAM_PAYMENT_TERMS
        tenants.append(entry)
    config = {
        "interval": "2s",
        "timeout": "5s",
        "api_url": sim_url,
        "login_url": sim_url,
        "payment_terms": PAYMENT_TERMS,
        "thresholds": THRESHOLDS,
        "tenants": tenants,
    }
    (tmp / "exporter.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(ALERTS_PATH)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config), encoding="utf-8")

    logs = (tmp / "simulator.log", tmp / "exporter.log", tmp / "prometheus.log")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _start(
            [sys.executable, "-m", "exporter.simulator", f"--listen=127.0.0.1:{sim_port}",
             f"--scenario={tmp / 'scenario.yml'}"],
            logs[0],
            processes,
        )  # fmt: skip
        _wait_answers(f"{sim_url}/_sim/healthz", processes[-1], "simulator healthz")
        _start(
            [sys.executable, "-m", "exporter", f"--config.file={tmp / 'exporter.yml'}",
             f"--web.listen-address=127.0.0.1:{exporter_port}"],
            logs[1],
            processes,
        )  # fmt: skip
        exporter_url = f"http://127.0.0.1:{exporter_port}"
        _wait_answers(f"{exporter_url}/readyz", processes[-1], "exporter readyz")
        _start(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            logs[2],
            processes,
        )  # fmt: skip
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        _wait_answers(f"{prometheus_url}/-/ready", processes[-1], "prometheus ready")
        yield Stack(exporter_url, prometheus_url, logs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{Stack('', '', logs).diagnostics()}") from exc
    finally:
        _stop(processes)


def _api(stack: Stack, path: str, params: Mapping[str, str]) -> Any:
    """GET a Prometheus API endpoint and return its `data`."""
    response = httpx.get(f"{stack.prometheus_url}{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _query(stack: Stack, expr: str, instant: bool) -> list[dict[str, Any]]:
    """Result series of `expr`: an instant query now, or a range query over the last minute."""
    if instant:
        return list(_api(stack, "/api/v1/query", {"query": expr})["result"])
    end = float(_api(stack, "/api/v1/query", {"query": "time()"})["result"][1])
    params = {"query": expr, "start": str(end - 60), "end": str(end), "step": "1s"}
    return list(_api(stack, "/api/v1/query_range", params)["result"])


def _label_values(stack: Stack, label: str, selector: str | None) -> set[str]:
    """What Grafana's label_values([selector,] label) asks Prometheus for."""
    params = {"match[]": selector} if selector else {}
    return set(_api(stack, f"/api/v1/label/{label}/values", params))


def _label_values_are(stack: Stack, label: str, selector: str | None, want: set[str]) -> bool:
    """True when label_values() answers exactly `want`."""
    return _label_values(stack, label, selector) == want


def _alerts(stack: Stack) -> list[dict[str, Any]]:
    """Pending and firing alerts."""
    return list(_api(stack, "/api/v1/alerts", {})["alerts"])


# Variable values to try every query with: Grafana's "All" (allValue .*), the multi-value regex Grafana
# builds, and single values as a repeated panel gets them.
SELECTIONS = (
    {"job": JOB, "tenant": ".*", "currency": ".*"},
    {"job": f"({JOB})", "tenant": "(contoso|fabrikam)", "currency": "(USD|EUR)"},
    {"job": JOB, "tenant": ".*", "currency": "GBP"},
    {"job": JOB, "tenant": OVER_THRESHOLD, "currency": "EUR"},
)


def test_every_panel_query_returns_data(stack: Stack) -> None:
    targets = [(panel, target) for panel in data_panels(load_dashboard()) for target in panel["targets"]]
    assert targets
    for selection in SELECTIONS:
        values = {**selection, "__rate_interval": RATE_INTERVAL}
        for panel, target in targets:
            expr = substitute(target["expr"], values)
            instant = bool(target.get("instant"))
            try:
                wait_until(partial(_query, stack, expr, instant), DEADLINE, interval=0.5, what=expr)
            except AssertionError as exc:
                raise AssertionError(f"{panel['title']} / {target['refId']}: {exc}\n{stack.diagnostics()}") from exc


def test_overview_rows_are_per_tenant_and_currency(stack: Stack) -> None:
    (table,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Balances by tenant and currency"]
    balance = substitute(table["targets"][0]["expr"], {"job": JOB, "tenant": ".*", "currency": ".*"})
    expected = {("contoso", "USD"), ("fabrikam", "USD"), ("fabrikam", "EUR"), ("fabrikam", "GBP"), ("northwind", "EUR")}

    def rows() -> set[tuple[str, str]] | None:
        found = {(s["metric"]["tenant"], s["metric"]["currency"]) for s in _query(stack, balance, instant=True)}
        return found if found == expected else None

    wait_until(rows, DEADLINE, interval=0.5, what=f"rows {sorted(expected)}")


def test_every_variable_query_returns_values(stack: Stack) -> None:
    variables = {v["name"]: v for v in query_variables(load_dashboard())}
    tenants = {t["tenant_id"].split(".")[0] for t in SCENARIO["tenants"]}
    expected = {
        ("job", ".*"): {JOB},
        ("tenant", ".*"): tenants,
        ("currency", ".*"): {"USD", "EUR", "GBP"},
        ("currency", "fabrikam"): {"USD", "EUR", "GBP"},
        ("currency", OVER_THRESHOLD): {"EUR"},
    }
    for (name, tenant), want in expected.items():
        selector, label = parse_label_values(variable_query(variables[name]))
        if selector is not None:
            selector = substitute(selector, {"job": JOB, "tenant": tenant})
        wait_until(
            partial(_label_values_are, stack, label, selector, want),
            DEADLINE,
            interval=0.5,
            what=f"label_values({selector}, {label}) == {sorted(want)}",
        )


def test_shipped_rules_are_loaded_and_evaluate_without_errors(stack: Stack) -> None:
    def rules() -> list[dict[str, Any]] | None:
        groups = _api(stack, "/api/v1/rules", {"type": "alert"})["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        return found if found and all(r.get("lastEvaluation", "").startswith("2") for r in found) else None

    loaded = wait_until(rules, DEADLINE, interval=0.5, what="rules evaluated")
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in alert_rules())
    # Evaluate again a few seconds in, when every metric has samples: joins must not fail (many-to-many etc).
    wait_until(lambda: _query(stack, "partnercenter_balance", instant=True), DEADLINE, what="balances")
    for rule in wait_until(rules, DEADLINE, interval=0.5, what="rules evaluated"):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_threshold_alert_is_raised_for_the_right_tenant_only(stack: Stack) -> None:
    def balance_alerts() -> list[dict[str, Any]] | None:
        found = [a for a in _alerts(stack) if a["labels"]["alertname"] == "PartnerCenterBalanceHigh"]
        severities = {a["labels"]["severity"] for a in found if a["labels"]["tenant"] == OVER_THRESHOLD}
        return found if severities == {"warning", "critical"} else None

    try:
        found = wait_until(balance_alerts, DEADLINE, interval=0.5, what="PartnerCenterBalanceHigh for northwind")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnostics()}") from exc
    for alert in found:
        assert alert["state"] in {"pending", "firing"}
        assert alert["labels"]["tenant"] == OVER_THRESHOLD, alert
        assert alert["labels"]["currency"] == "EUR"
        assert float(alert["value"]) == 120000
    assert not [a for a in _alerts(stack) if a["labels"].get("tenant") in HEALTHY], "healthy tenants alert"


def test_failing_tenant_raises_its_alerts(stack: Stack) -> None:
    def failing_alerts() -> set[str] | None:
        names = {a["labels"]["alertname"] for a in _alerts(stack) if a["labels"].get("tenant") == FAILING}
        return names if {"PartnerCenterTenantDown", "PartnerCenterAuthFailing"} <= names else None

    try:
        wait_until(failing_alerts, DEADLINE, interval=0.5, what="TenantDown and AuthFailing for adatum")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_alerts(stack)}\n{stack.diagnostics()}") from exc
    auth = [a for a in _alerts(stack) if a["labels"]["alertname"] == "PartnerCenterAuthFailing"]
    assert {(a["labels"]["tenant"], a["labels"]["endpoint"], a["labels"]["status_code"]) for a in auth} <= {
        (FAILING, "token", "401"),
        (DEAD_REFRESH_TOKEN, "token", "400"),
    }
    # Pending for a moment before the first scrape; gone once the exporter is scraped.
    wait_until(
        lambda: not [a for a in _alerts(stack) if a["labels"]["alertname"] == "PartnerCenterExporterAbsent"],
        DEADLINE,
        interval=0.5,
        what="PartnerCenterExporterAbsent to clear",
    )


def test_dead_refresh_token_raises_the_auth_alert(stack: Stack) -> None:
    """400 invalid_grant from the token endpoint: its counter starts at 1, and the second failure makes it count."""

    def dead_grant() -> list[dict[str, Any]] | None:
        found = [
            a
            for a in _alerts(stack)
            if a["labels"]["alertname"] == "PartnerCenterAuthFailing" and a["labels"]["tenant"] == DEAD_REFRESH_TOKEN
        ]
        return found or None

    try:
        [alert] = wait_until(
            dead_grant, DEADLINE, interval=0.5, what=f"PartnerCenterAuthFailing for {DEAD_REFRESH_TOKEN}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_alerts(stack)}\n{stack.diagnostics()}") from exc
    assert (alert["labels"]["endpoint"], alert["labels"]["status_code"]) == ("token", "400")


def test_payment_overdue_alert_for_the_overdue_tenant_only(stack: Stack) -> None:
    """Past its terms with an older payment: northwind. Paid since (contoso), within terms (fabrikam): quiet."""

    def overdue() -> set[tuple[str, str]] | None:
        found = {
            (a["labels"]["tenant"], a["labels"]["currency"])
            for a in _alerts(stack)
            if a["labels"]["alertname"] == "PartnerCenterPaymentOverdue"
        }
        return found or None

    try:
        found = wait_until(overdue, DEADLINE, interval=0.5, what=f"PartnerCenterPaymentOverdue for {OVERDUE}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_alerts(stack)}\n{stack.diagnostics()}") from exc
    assert found == {OVERDUE}


def test_invoice_age_panel_shows_each_tenants_terms(stack: Stack) -> None:
    (table,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Invoice age and payment terms"]
    [terms] = [t for t in table["targets"] if "partnercenter_payment_terms_seconds" in t["expr"]]
    expr = substitute(terms["expr"], {"job": JOB, "tenant": ".*", "currency": ".*"})
    want = {
        ("contoso", "USD"): 30.0,
        ("northwind", "EUR"): 30.0,
        **{("fabrikam", c): 45.0 for c in ("USD", "EUR", "GBP")},
    }

    def rows() -> dict[tuple[str, str], float] | None:
        found = {
            (r["metric"]["tenant"], r["metric"]["currency"]): float(r["value"][1])
            for r in _query(stack, expr, instant=True)
        }
        return found if found == want else None

    wait_until(rows, DEADLINE, interval=0.5, what=f"payment terms in days {want}")


def _snake(key: str) -> str:
    """A ServiceMonitor relabeling key as Prometheus spells it: sourceLabels -> source_labels."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def test_the_service_monitor_keeps_the_exporters_endpoint_label(tmp_path: Path) -> None:
    """Under the Prometheus Operator, `endpoint` still names the API endpoint (token, summary, summaries).

    The operator adds a target label `endpoint` with the port's name to every ServiceMonitor target, then the
    endpoint's own relabelings (prometheus-operator, pkg/prometheus/promcfg.go). Without one that drops it, the
    exporter's label was renamed exported_endpoint: PartnerCenterAuthFailing never fired on Kubernetes.
    """
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found on PATH (Debian package `prometheus`)"
    monitor = yaml.safe_load((REPO_ROOT / "deploy" / "kubernetes" / "servicemonitor.yaml").read_text())
    [endpoint] = monitor["spec"]["endpoints"]
    relabel = [{"target_label": "endpoint", "replacement": endpoint["port"]}]  # what the operator generates
    relabel += [{_snake(key): value for key, value in r.items()} for r in endpoint.get("relabelings", [])]
    exporter_port, prom_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                "relabel_configs": relabel,
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    logs = (tmp_path / "exporter.log", tmp_path / "prometheus.log")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _start(
            [sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{exporter_port}"],
            logs[0],
            processes,
        )
        _start(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            logs[1],
            processes,
        )  # fmt: skip
        stack = Stack(f"http://127.0.0.1:{exporter_port}", f"http://127.0.0.1:{prom_port}", logs)
        _wait_answers(f"{stack.prometheus_url}/-/ready", processes[-1], "prometheus ready")

        def endpoints() -> set[str] | None:
            series = _query(stack, "count by (endpoint) (partnercenter_api_requests_total)", instant=True)
            found = {s["metric"].get("endpoint", "") for s in series}
            return found if len(found) >= 3 else None

        try:
            found = wait_until(endpoints, DEADLINE, interval=0.5, what="scraped requests by endpoint")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.diagnostics()}") from exc
        assert found == {"token", "summary", "summaries"}
    finally:
        _stop(processes)
