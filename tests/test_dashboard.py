"""Lint the Grafana dashboard and its provisioning files without running Grafana."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.promql import (
    CURRENCY_METRICS,
    DASHBOARD_PATH,
    EXPORTED_METRICS,
    JOB,
    REPO_ROOT,
    RUNBOOK_URL,
    check_exprs_parse,
    currency_mixing,
    data_panels,
    is_known_metric,
    iter_panels,
    load_dashboard,
    load_yaml,
    metric_names,
    parse_label_values,
    query_variables,
    rate_interval_violations,
    selectors,
    substitute,
    variable_query,
    variables_in,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What each variable stands for when an expression is checked: the "All" value of the multi-value variables,
# a rate window for $__rate_interval.
SUBSTITUTIONS = {"job": JOB, "tenant": ".*", "currency": ".*", "__rate_interval": "2m", "datasource": "prometheus"}
# Grafana unit ids this dashboard may use (packages/grafana-data/src/valueFormats/categories.ts).
KNOWN_UNITS = {
    "none", "short", "locale", "s", "ms", "d", "reqps", "dateTimeAsIso", "percentunit",
    *(f"currency{c}" for c in (
        "USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK", "NOK", "SEK", "CZK", "CHF", "PLN", "ZAR",
        "INR", "KRW",
    )),
}  # fmt: skip
# Metrics the issue asks the dashboard to show.
REQUIRED_METRICS = {
    "partnercenter_balance",
    "partnercenter_balance_threshold",
    "partnercenter_last_payment_amount",
    "partnercenter_last_payment_timestamp_seconds",
    "partnercenter_latest_invoice_timestamp_seconds",
    "partnercenter_invoice_type_balance",
    "partnercenter_up",
    "partnercenter_last_success_timestamp_seconds",
    "partnercenter_poll_duration_seconds",
    "partnercenter_api_requests_total",
    "partnercenter_api_request_errors_total",
    "partnercenter_token_expiry_timestamp_seconds",
    "partnercenter_payment_terms_seconds",
}
OVERVIEW_TITLE = "Balances by tenant and currency"
INVOICE_AGE_TITLE = "Invoice age and payment terms"


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of the dashboard."""
    return [(panel, target) for panel in data_panels(load_dashboard()) for target in panel.get("targets", [])]


def _all_exprs() -> dict[str, str]:
    """name -> PromQL (variables substituted) for every panel query and every variable query's selector."""
    exprs = {f"panel_{p['id']}_{t['refId']}": substitute(t["expr"], SUBSTITUTIONS) for p, t in _targets()}
    for variable in query_variables(load_dashboard()):
        selector, _label = parse_label_values(variable_query(variable))
        if selector is not None:
            exprs[f"variable_{variable['name']}"] = substitute(selector, SUBSTITUTIONS)
    return exprs


def test_dashboard_is_valid_json_for_grafana_10_4() -> None:
    dashboard = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == "partnercenter-exporter"
    assert dashboard["title"]
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"
    # An exported dashboard's ${DS_...} inputs only resolve on manual import, never with file provisioning.
    assert "__inputs" not in dashboard
    assert "${DS_" not in DASHBOARD_PATH.read_text(encoding="utf-8")


def test_runbook_link_is_the_projects_runbook() -> None:
    links = [link for link in load_dashboard()["links"] if link["title"] == "Runbook"]
    assert [link["url"] for link in links] == [RUNBOOK_URL]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in iter_panels(load_dashboard())]
    assert len(ids) == len(set(ids)), ids


def test_panels_fit_the_grid() -> None:
    for panel in iter_panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0, panel["title"]


def test_datasource_variable_exists() -> None:
    variables = load_dashboard()["templating"]["list"]
    (ds,) = [v for v in variables if v["type"] == "datasource"]
    assert ds["name"] == "datasource"
    assert ds["query"] == "prometheus"


def test_every_panel_target_and_variable_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    for panel in data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
    for variable in query_variables(dashboard):
        assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_panel_has_title_description_and_unit() -> None:
    for panel in data_panels(load_dashboard()):
        assert panel.get("title", "").strip(), panel["id"]
        assert panel.get("description", "").strip(), panel["title"]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in KNOWN_UNITS, (panel["title"], unit)
        for override in panel["fieldConfig"].get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in KNOWN_UNITS, (panel["title"], prop["value"])


def test_rows_have_titles() -> None:
    rows = [p for p in iter_panels(load_dashboard()) if p["type"] == "row"]
    assert rows
    assert all(row["title"].strip() for row in rows)


def test_job_tenant_and_currency_variables_are_multi_select_label_values_queries() -> None:
    variables = {v["name"]: v for v in query_variables(load_dashboard())}
    assert set(variables) == {"job", "tenant", "currency"}
    for name, variable in variables.items():
        assert variable["multi"] is True, name
        assert variable["includeAll"] is True, name
        selector, label = parse_label_values(variable_query(variable))
        assert label == name
        assert variable["definition"] == variable_query(variable)
        if name != "job":
            assert selector is not None
            assert metric_names(selector) <= {"partnercenter_up", "partnercenter_balance"}
            assert 'job=~"$job"' in selector, name
    # Jobs are those that scrape the exporter, whatever their name.
    assert parse_label_values(variable_query(variables["job"])) == ("partnercenter_up", "job")
    # "All" must be the jobs found, not `.*`: `up{job=~".*"}` would count every target Prometheus has.
    assert variables["job"].get("allValue") in (None, "")
    # Currencies follow the tenant selection.
    assert "tenant" in variables_in(variable_query(variables["currency"]))


def test_every_selector_filters_on_the_job_variable() -> None:
    """No query names the job: another job name needs no change to the dashboard."""
    exprs = [t["expr"] for _p, t in _targets()]
    exprs += [
        selector
        for v in query_variables(load_dashboard())
        if v["name"] != "job" and (selector := parse_label_values(variable_query(v))[0]) is not None
    ]
    for expr in exprs:
        assert selectors(expr), expr
        for name, matchers in selectors(expr):
            assert 'job=~"$job"' in matchers, (name, expr)
    for expr in exprs:
        assert set(re.findall(r'\bjob\s*(=~|!~|!=|=)\s*"([^"]*)"', expr)) == {("=~", "$job")}, expr


def test_every_variable_reference_is_defined() -> None:
    dashboard = load_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]} | {"__rate_interval"}
    used: set[str] = set()
    for panel, target in _targets():
        used |= variables_in(target["expr"]) | variables_in(panel["title"])
        if "repeat" in panel:
            used.add(panel["repeat"])
    for variable in query_variables(dashboard):
        used |= variables_in(variable_query(variable))
    assert used <= defined
    assert {"job", "tenant", "currency"} <= used


@pytest.mark.parametrize("name_expr", sorted(_all_exprs().items()), ids=lambda x: x[0])
def test_expression_names_only_exported_metrics(name_expr: tuple[str, str]) -> None:
    _name, expr = name_expr
    names = metric_names(expr)
    assert names
    assert {n for n in names if not is_known_metric(n)} == set()


def test_dashboard_shows_everything_the_issue_asks_for() -> None:
    used = set().union(*(metric_names(expr) for expr in _all_exprs().values()))
    assert used >= REQUIRED_METRICS


def test_rate_and_increase_use_rate_interval() -> None:
    for panel, target in _targets():
        assert rate_interval_violations(target["expr"]) == [], (panel["title"], target["expr"])
    assert any("$__rate_interval" in t["expr"] for _p, t in _targets())


def test_tenant_filter_on_every_tenant_metric() -> None:
    """Each selector of a metric with a tenant (currency) label filters on $tenant ($currency) itself."""
    checked = 0
    for panel, target in _targets():
        for name, matchers in selectors(target["expr"]):
            labels = EXPORTED_METRICS.get(name, frozenset())
            where = (panel["title"], target["refId"], name)
            if "tenant" in labels:
                checked += 1
                assert 'tenant=~"$tenant"' in matchers, where
            if "currency" in labels:
                assert 'currency=~"$currency"' in matchers, where
    assert checked


def test_money_is_never_aggregated_across_currencies() -> None:
    for panel, target in _targets():
        assert currency_mixing(target["expr"]) == [], (panel["title"], target["expr"])


def test_money_series_carry_their_currency() -> None:
    """Charts name the currency in each series' legend; tables keep `currency` as a column."""
    for panel, target in _targets():
        if not metric_names(target["expr"]) & CURRENCY_METRICS:
            continue
        if panel["type"] == "table":
            assert target["format"] == "table"
        else:
            assert "{{currency}}" in target["legendFormat"], panel["title"]


def test_money_charts_are_repeated_per_currency() -> None:
    for panel in data_panels(load_dashboard()):
        if panel["type"] == "table":
            continue
        if any(metric_names(t["expr"]) & CURRENCY_METRICS for t in panel["targets"]):
            assert panel.get("repeat") == "currency", panel["title"]
            assert "$currency" in panel["title"]


def _table(title: str) -> dict[str, Any]:
    (table,) = [p for p in data_panels(load_dashboard()) if p["type"] == "table" and p["title"] == title]
    return table


def _display_names(panel: dict[str, Any]) -> dict[str, str]:
    """Field name (`Value #A`, `tenant`) -> the column title it is shown under."""
    return {
        override["matcher"]["options"]: prop["value"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "displayName"
    }


def test_overview_table_has_the_requested_columns() -> None:
    table = _table(OVERVIEW_TITLE)
    assert set(_display_names(table).values()) >= {
        "Tenant", "Currency", "Balance", "Warning threshold", "Critical threshold", "Last payment",
        "Last payment date", "Days since last payment", "Latest invoice date", "Up",
    }  # fmt: skip
    for target in table["targets"]:
        assert target["instant"] is True
        assert target["format"] == "table"


def test_invoice_age_table_sets_days_since_the_invoice_next_to_the_terms() -> None:
    table = _table(INVOICE_AGE_TITLE)
    names = _display_names(table)
    columns = {names[f"Value #{t['refId']}"]: t["expr"] for t in table["targets"]}
    age = " ".join(columns["Days since latest invoice"].split())
    assert "time() - max by (tenant, currency) (partnercenter_latest_invoice_timestamp_seconds{" in age
    assert age.endswith("/ 86400")
    terms = " ".join(columns["Payment terms (days)"].split())
    assert metric_names(terms) == {
        "partnercenter_payment_terms_seconds",
        "partnercenter_latest_invoice_timestamp_seconds",
    }
    assert terms.endswith("/ 86400")
    assert {names["tenant"], names["currency"]} == {"Tenant", "Currency"}
    for target in table["targets"]:
        assert target["instant"] is True
        assert target["format"] == "table"
    # Both columns are days, and the terms are a whole number of them.
    units = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in table["fieldConfig"]["overrides"]
    }
    assert [units[f"Value #{t['refId']}"].get("unit") for t in table["targets"][:2]] == ["d", "d"]


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    result = check_exprs_parse(_all_exprs(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard_directory() -> None:
    provisioning = REPO_ROOT / "grafana" / "provisioning"
    datasources = [
        ds for path in sorted((provisioning / "datasources").glob("*.yml")) for ds in load_yaml(path)["datasources"]
    ]
    (prometheus,) = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True  # the datasource variable's default
    providers = [
        p for path in sorted((provisioning / "dashboards").glob("*.yml")) for p in load_yaml(path)["providers"]
    ]
    (provider,) = providers
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # compose mounts grafana/ there: the dashboard must sit at the top of that directory.
    assert DASHBOARD_PATH.parent == REPO_ROOT / "grafana"


# --- the linter's own checks catch what they are meant to catch ----------------------------------------------


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    result = check_exprs_parse({"ok": "up", "broken": "sum by (tenant (up)"}, tmp_path)
    assert result.returncode != 0
    assert "check:broken" in result.stdout + result.stderr


def test_metric_names_skips_functions_labels_and_keywords() -> None:
    expr = (
        'max by (tenant) (partnercenter_up{tenant=~"$tenant"}) * on (instance) group_left (version) '
        "partnercenter_exporter_build_info offset 5m and rate(foo_total[$__rate_interval]) > bool 1"
    )
    assert metric_names(expr) == {"partnercenter_up", "partnercenter_exporter_build_info", "foo_total"}
    assert not is_known_metric("foo_total")
    assert is_known_metric("process_cpu_seconds_total")
    assert is_known_metric("up")


def test_currency_mixing_flags_sums_that_drop_currency() -> None:
    assert currency_mixing("sum(partnercenter_balance)")
    assert currency_mixing("sum by (tenant) (partnercenter_balance)")
    assert currency_mixing("sum(partnercenter_balance) by (tenant)")
    assert currency_mixing("max without (currency) (partnercenter_balance)")
    assert currency_mixing("sum by (currency) (partnercenter_balance)") == []
    assert currency_mixing("sum(partnercenter_poll_duration_seconds)") == []


def test_rate_interval_violations_flag_fixed_windows() -> None:
    assert rate_interval_violations("rate(x[5m])")
    assert rate_interval_violations("sum(increase(x[1h]))")
    assert rate_interval_violations("rate(x[$__interval])")
    assert rate_interval_violations("sum(irate(x[$__rate_interval]))") == []


def test_substitute_fills_every_variable_form() -> None:
    text = 'x{a=~"$tenant", b=~"${currency}", c=~"${tenant:regex}", d="[[currency]]"}[$__rate_interval]'
    assert substitute(text, SUBSTITUTIONS) == 'x{a=~".*", b=~".*", c=~".*", d=".*"}[2m]'
    with pytest.raises(KeyError):
        substitute("$unknown", SUBSTITUTIONS)
