"""Helpers for the dashboard and alert tests: PromQL lexing, variable substitution, promtool, runbook anchors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = REPO_ROOT / "grafana" / "partnercenter-exporter.json"
ALERTS_PATH = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS_PATHS = (
    REPO_ROOT / "deploy" / "prometheus" / "alerts_test.yml",
    *sorted((REPO_ROOT / "deploy" / "prometheus" / "tests").glob("*.yml")),
)
PROMETHEUS_CONFIG_PATH = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
RUNBOOK_PATH = REPO_ROOT / "docs" / "runbook.md"
# Where docs/runbook.md is read: declared once, in pyproject.toml (deploy/kubernetes/generate.py writes it out).
with (REPO_ROOT / "pyproject.toml").open("rb") as _pyproject:
    RUNBOOK_URL: str = tomllib.load(_pyproject)["project"]["urls"]["Runbook"]
JOB = "partnercenter-exporter"

# The metric table of CONTRACT.md: name -> labels (besides job/instance added by Prometheus).
EXPORTED_METRICS: Mapping[str, frozenset[str]] = {
    "partnercenter_balance": frozenset({"tenant", "currency"}),
    "partnercenter_last_payment_amount": frozenset({"tenant", "currency"}),
    "partnercenter_last_payment_timestamp_seconds": frozenset({"tenant", "currency"}),
    "partnercenter_latest_invoice_timestamp_seconds": frozenset({"tenant", "currency"}),
    "partnercenter_first_invoice_timestamp_seconds": frozenset({"tenant", "currency"}),
    "partnercenter_accounting_timestamp_seconds": frozenset({"tenant", "currency"}),
    "partnercenter_invoice_type_balance": frozenset({"tenant", "currency", "invoice_type"}),
    "partnercenter_invoice_type_last_payment_amount": frozenset({"tenant", "currency", "invoice_type"}),
    "partnercenter_invoice_type_latest_invoice_timestamp_seconds": frozenset({"tenant", "currency", "invoice_type"}),
    "partnercenter_currency_info": frozenset({"tenant", "currency", "symbol"}),
    "partnercenter_balance_threshold": frozenset({"tenant", "currency", "severity"}),
    "partnercenter_up": frozenset({"tenant"}),
    "partnercenter_last_success_timestamp_seconds": frozenset({"tenant"}),
    "partnercenter_poll_duration_seconds": frozenset({"tenant"}),
    "partnercenter_api_requests_total": frozenset({"tenant", "endpoint"}),
    "partnercenter_api_request_errors_total": frozenset({"tenant", "endpoint", "status_code"}),
    "partnercenter_token_expiry_timestamp_seconds": frozenset({"tenant"}),
    "partnercenter_invoice_type_last_payment_timestamp_seconds": frozenset({"tenant", "currency", "invoice_type"}),
    "partnercenter_payment_terms_seconds": frozenset({"tenant"}),
    "partnercenter_token_mfa": frozenset({"tenant"}),
    "partnercenter_credential_expiry_timestamp_seconds": frozenset({"tenant"}),
    "partnercenter_refresh_token_write_errors_total": frozenset({"tenant"}),
    "partnercenter_config_last_reload_successful": frozenset(),
    "partnercenter_config_last_reload_success_timestamp_seconds": frozenset(),
    "partnercenter_exporter_build_info": frozenset({"version", "revision", "python_version"}),
}
CURRENCY_METRICS = frozenset(name for name, labels in EXPORTED_METRICS.items() if "currency" in labels)


def is_known_metric(name: str) -> bool:
    """True for a metric the exporter exposes (contract table), a process_* metric or Prometheus' `up`."""
    return name in EXPORTED_METRICS or name.startswith("process_") or name == "up"


# --- PromQL lexing ----------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<number>\d[\w.]*|\.\d[\w.]*)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<variable>\$\{\w+(?::\w+)?\}|\$\w+)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){}\[\],@])
    |(?P<space>\s+)
    |(?P<other>.)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)


@dataclass(frozen=True)
class Token:
    """One lexical token of a PromQL expression."""

    kind: str
    text: str


def tokenize(expr: str) -> list[Token]:
    """Split a PromQL expression into tokens (whitespace dropped); raise ValueError on a stray character."""
    tokens = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup or "other"
        if kind == "space":
            continue
        if kind == "other":
            raise ValueError(f"unexpected character {m.group()!r} in {expr!r}")
        tokens.append(Token(kind, m.group()))
    return tokens


def _closing(tokens: list[Token], start: int) -> int:
    """Index of the token closing the bracket at `start`."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    opening = tokens[start].text
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].text == opening:
            depth += 1
        elif tokens[i].text == pairs[opening]:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced brackets")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers outside matchers, label lists and function calls)."""
    tokens = tokenize(expr)
    names = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.text in ("{", "["):
            i = _closing(tokens, i) + 1  # label matchers and range durations name no metric
            continue
        if tok.kind == "ident":
            nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
            if tok.text in _GROUPING and nxt == "(":
                i = _closing(tokens, i + 1) + 1  # a label list
                continue
            is_operator = nxt == "(" or (tok.text in AGGREGATIONS and nxt in ("by", "without"))
            if tok.text not in _KEYWORDS and not is_operator:
                names.add(tok.text)
        i += 1
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """Every metric selector of `expr`: (metric name, its label matchers without spaces; "" without braces)."""
    tokens = tokenize(expr)
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if tok.text == "[":
            i = _closing(tokens, i) + 1
            continue
        if tok.text == "{":  # a selector without a metric name
            end = _closing(tokens, i)
            found.append(("", "".join(t.text for t in tokens[i + 1 : end])))
            i = end + 1
            continue
        if tok.kind == "ident" and tok.text in _GROUPING and nxt == "(":
            i = _closing(tokens, i + 1) + 1
            continue
        is_operator = nxt == "(" or (tok.text in AGGREGATIONS and nxt in ("by", "without"))
        if tok.kind == "ident" and tok.text not in _KEYWORDS and not is_operator:
            if nxt == "{":
                end = _closing(tokens, i + 1)
                found.append((tok.text, "".join(t.text for t in tokens[i + 2 : end])))
                i = end + 1
                continue
            found.append((tok.text, ""))
        i += 1
    return found


@dataclass(frozen=True)
class Aggregation:
    """An aggregation operator with its grouping clause (`modifier` is None without one)."""

    op: str
    modifier: str | None
    labels: tuple[str, ...]
    argument: str


def _labels(tokens: list[Token], open_index: int) -> tuple[str, ...]:
    """The label names of the parenthesised list starting at `open_index`."""
    end = _closing(tokens, open_index)
    return tuple(t.text for t in tokens[open_index + 1 : end] if t.kind == "ident")


def aggregations(expr: str) -> list[Aggregation]:
    """Every aggregation in `expr`, whether written `sum by (x) (...)` or `sum(...) by (x)`."""
    tokens = tokenize(expr)
    found = []
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text not in AGGREGATIONS:
            continue
        j = i + 1
        modifier: str | None = None
        labels: tuple[str, ...] = ()
        if j < len(tokens) and tokens[j].text in ("by", "without"):
            modifier = tokens[j].text
            labels = _labels(tokens, j + 1)
            j = _closing(tokens, j + 1) + 1
        if j >= len(tokens) or tokens[j].text != "(":
            continue  # an identifier that only looks like an operator (e.g. a label named `max`)
        end = _closing(tokens, j)
        argument = " ".join(t.text for t in tokens[j + 1 : end])
        if modifier is None and end + 1 < len(tokens) and tokens[end + 1].text in ("by", "without"):
            modifier = tokens[end + 1].text
            labels = _labels(tokens, end + 2)
        found.append(Aggregation(tok.text, modifier, labels, argument))
    return found


def currency_mixing(expr: str) -> list[str]:
    """Aggregations over currency-labelled metrics that do not keep `currency` (summing money across currencies)."""
    problems = []
    for agg in aggregations(expr):
        if not metric_names(agg.argument) & CURRENCY_METRICS:
            continue
        keeps_currency = (agg.modifier == "by" and "currency" in agg.labels) or (
            agg.modifier == "without" and "currency" not in agg.labels
        )
        if not keeps_currency:
            problems.append(f"{agg.op} {agg.modifier or ''} {agg.labels} over {agg.argument}")
    return problems


_RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\s*\(")


def rate_interval_violations(expr: str) -> list[str]:
    """rate()/irate()/increase() calls whose range is not exactly `[$__rate_interval]`."""
    problems = []
    for m in _RANGE_FUNCTIONS.finditer(expr):
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            if depth == 0:
                break
        ranges = re.findall(r"\[([^\]]*)\]", expr[m.end() : end])
        if ranges != ["$__rate_interval"]:
            problems.append(f"{m.group(1)}(...) with ranges {ranges}")
    return problems


# --- Grafana variables ------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) with `values`; raise KeyError for an unknown one."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values[name]

    return _VARIABLE.sub(repl, text)


def variables_in(text: str) -> set[str]:
    """Names of the Grafana variables `text` refers to."""
    return {m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(text)}


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.DOTALL)


def parse_label_values(query: str) -> tuple[str | None, str]:
    """Split a `label_values([selector,] label)` variable query into its selector and label."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return m.group("selector"), m.group("label")


def load_dashboard() -> dict[str, Any]:
    """The shipped dashboard, parsed."""
    data: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Panels that query data (everything but rows)."""
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's query variables."""
    return [v for v in dashboard["templating"]["list"] if v.get("type") == "query"]


def variable_query(variable: Mapping[str, Any]) -> str:
    """The PromQL text of a query variable (object or string form)."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


# --- promtool ---------------------------------------------------------------------------------------------------


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args`; fail clearly when it is not installed."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found on PATH (Debian package `prometheus`)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, check=False)


def check_exprs_parse(exprs: Mapping[str, str], tmp_dir: Path) -> subprocess.CompletedProcess[str]:
    """Write `exprs` (name -> PromQL) as recording rules and run `promtool check rules` on them."""
    rules = [{"record": f"check:{re.sub(r'[^A-Za-z0-9_]', '_', name)}", "expr": expr} for name, expr in exprs.items()]
    path = tmp_dir / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}), encoding="utf-8")
    return promtool("check", "rules", "--lint=none", str(path))


# --- Markdown ---------------------------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading's text."""
    text = re.sub(r"[`*_~]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown document, with GitHub's -1, -2 suffixes for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or m is None:
            continue
        base = github_anchor(m.group(1))
        count = seen.get(base, 0)
        anchors.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return anchors


def markdown_sections(markdown: str, level: int = 2) -> dict[str, str]:
    """Heading text -> body for every heading of exactly `level`."""
    sections: dict[str, str] = {}
    current: str | None = None
    prefix = "#" * level + " "
    for line in markdown.splitlines():
        if line.startswith(prefix):
            current = line[len(prefix) :].strip()
            sections[current] = ""
        elif re.match(rf"^#{{1,{level}}} ", line):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def load_yaml(path: Path) -> Any:
    """Parse a YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped alerts.yml."""
    return [rule for group in load_yaml(ALERTS_PATH)["groups"] for rule in group["rules"] if "alert" in rule]
