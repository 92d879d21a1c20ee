"""Alert rules, their promtool unit tests, the example Prometheus configuration and the runbook."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.promql import (
    ALERT_TESTS_PATHS,
    ALERTS_PATH,
    JOB,
    PROMETHEUS_CONFIG_PATH,
    RUNBOOK_PATH,
    RUNBOOK_URL,
    alert_rules,
    check_exprs_parse,
    currency_mixing,
    is_known_metric,
    load_yaml,
    markdown_anchors,
    markdown_sections,
    metric_names,
    promtool,
)

# The alert names of the contract, besides the balance alert.
REQUIRED_ALERTS = {
    "PartnerCenterBalanceHigh",
    "PartnerCenterTenantDown",
    "PartnerCenterDataStale",
    "PartnerCenterAuthFailing",
    "PartnerCenterThrottled",
    "PartnerCenterExporterAbsent",
    "PartnerCenterConfigReloadFailed",
    "PartnerCenterTokenWithoutMFA",
    "PartnerCenterCredentialExpiring",
    "PartnerCenterPaymentOverdue",
    "PartnerCenterRefreshTokenNotSaved",
}


def _duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration like `1h30m`."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def _unit_tests() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(file, file document, test case) for every promtool unit test case."""
    cases = []
    for path in ALERT_TESTS_PATHS:
        doc = load_yaml(path)
        cases += [(path, doc, case) for case in doc["tests"]]
    return cases


def test_rules_pass_promtool_check_with_lint() -> None:
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(ALERTS_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, ALERT_TESTS_PATHS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_unit_test_files_load_the_shipped_rules() -> None:
    for path in ALERT_TESTS_PATHS:
        rule_files = [(path.parent / f).resolve() for f in load_yaml(path)["rule_files"]]
        assert rule_files == [ALERTS_PATH.resolve()], path


def test_every_required_alert_exists() -> None:
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_rule_has_severity_annotations_and_for(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= annotations.keys()
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert _duration_seconds(rule["for"]) > 0, "a `for:` keeps one bad evaluation from notifying"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_runbook_url_points_at_an_existing_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    base, _, anchor = url.partition("#")
    assert base == RUNBOOK_URL
    assert anchor == rule["alert"].lower(), "one runbook section per alert, named after it"
    assert anchor in markdown_anchors(RUNBOOK_PATH.read_text(encoding="utf-8"))


def test_runbook_says_what_how_to_check_and_how_to_fix_for_every_alert() -> None:
    sections = markdown_sections(RUNBOOK_PATH.read_text(encoding="utf-8"))
    for name in {rule["alert"] for rule in alert_rules()}:
        assert name in sections, f"runbook has no section for {name}"
        body = sections[name]
        for part in ("**What it means.**", "**How to check.**", "**How to fix.**"):
            assert part in body, f"{name}: missing {part}"


def test_runbook_explains_the_entra_codes_operators_meet() -> None:
    sections = markdown_sections(RUNBOOK_PATH.read_text(encoding="utf-8"))
    table = sections["Microsoft Entra error codes"]
    for code in ("7000215", "7000222", "700027", "700082", "50173", "70043", "50076", "50079", "53003", "65001",
                 "500011", "900421"):  # fmt: skip
        assert re.search(rf"^\| `(AADSTS)?{code}`", table, re.MULTILINE) or f"`AADSTS{code}`" in table, code
    assert "learn.microsoft.com/entra/identity-platform/reference-error-codes" in table


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_rule_names_only_exported_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "every rule selects a metric"
    assert {n for n in names if not is_known_metric(n)} == set()
    assert currency_mixing(rule["expr"]) == []


def test_balance_rules_join_thresholds_on_tenant_and_currency_at_both_severities() -> None:
    rules = [r for r in alert_rules() if r["alert"] == "PartnerCenterBalanceHigh"]
    assert sorted(r["labels"]["severity"] for r in rules) == ["critical", "warning"]
    for rule in rules:
        expr = " ".join(rule["expr"].split())
        assert "on (tenant, currency)" in expr
        assert f'partnercenter_balance_threshold{{severity="{rule["labels"]["severity"]}"}}' in expr


def test_exporter_absent_rule_watches_the_job() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "PartnerCenterExporterAbsent"]
    assert f'up{{job="{JOB}"}}' in rule["expr"]
    assert rule["expr"].strip().startswith("absent(")


def test_every_alert_is_unit_tested_firing_and_not_firing_with_annotations() -> None:
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for path, _doc, case in _unit_tests():
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            expected = check.get("exp_alerts") or []
            if not expected:
                silent[name] += 1
            for alert in expected:
                firing[name] += 1
                annotations = alert.get("exp_annotations", {})
                assert {"summary", "description", "runbook_url"} <= annotations.keys(), (path, case["name"])
    for name in {rule["alert"] for rule in alert_rules()}:
        assert firing[name], f"{name} is never shown firing"
        assert silent[name], f"{name} is never shown not firing"
    for rule in alert_rules():
        severities = {
            alert["exp_labels"]["severity"]
            for _p, _d, case in _unit_tests()
            for check in case["alert_rule_test"]
            if check["alertname"] == rule["alert"]
            for alert in check.get("exp_alerts") or []
        }
        assert rule["labels"]["severity"] in severities, f"{rule['alert']} never fires at its severities"


def test_every_alert_is_unit_tested_at_its_for_boundary() -> None:
    """Some test case shows the alert silent one evaluation before it fires, with the two checks `for:` apart."""
    rules_by_name = {rule["alert"]: rule for rule in alert_rules()}
    boundaries: set[str] = set()
    for _path, doc, case in _unit_tests():
        step = _duration_seconds(doc.get("evaluation_interval", "1m"))
        by_alert: dict[str, dict[float, int]] = defaultdict(dict)
        for check in case["alert_rule_test"]:
            by_alert[check["alertname"]][_duration_seconds(check["eval_time"])] = len(check.get("exp_alerts") or [])
        for name, counts in by_alert.items():
            for t, n in counts.items():
                before = counts.get(t - step)
                if before is not None and n > before:
                    boundaries.add(name)
    assert set(rules_by_name) <= boundaries


def test_unit_tests_catch_a_changed_for_duration(tmp_path: Path) -> None:
    """The unit tests pin each `for:`: a rule file with one `for:` shortened must fail them."""
    text = ALERTS_PATH.read_text(encoding="utf-8")
    mutated = text.replace("for: 30m", "for: 29m", 1)
    assert mutated != text
    (tmp_path / "alerts.yml").write_text(mutated, encoding="utf-8")
    for path in ALERT_TESTS_PATHS:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    result = promtool("test", "rules", *(str(tmp_path / p.name) for p in ALERT_TESTS_PATHS))
    assert result.returncode != 0
    assert "PartnerCenterTenantDown" in result.stdout + result.stderr


def test_rule_exprs_parse_with_promtool(tmp_path: Path) -> None:
    exprs = {f"{r['alert']}_{r['labels']['severity']}": r["expr"] for r in alert_rules()}
    result = check_exprs_parse(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_example_config_is_valid_and_wired() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_yaml(PROMETHEUS_CONFIG_PATH)
    rule_files = [(PROMETHEUS_CONFIG_PATH.parent / f).resolve() for f in config["rule_files"]]
    assert ALERTS_PATH.resolve() in rule_files
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["exporter:9089"]
    alertmanagers = [
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
