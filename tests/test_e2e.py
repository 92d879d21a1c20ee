"""End to end: the installed exporter process polls the simulator process over HTTP; we scrape it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    Process,
    eventually,
    exporter_command,
    kill_leftovers,
    monotonic,
    sample,
    scrape,
    set_faults,
    sim_stats,
    start_exporter,
    start_simulator,
)

pytestmark = pytest.mark.e2e

SECRETS = {
    "alpha": "alpha-SECRET-5f1d9c0e",
    "beta": "beta-SECRET-from-env-77ab",
    "gamma": "gamma-SECRET-in-file-a1b2",
    "delta": "delta-SECRET-9e8d7c6b",
}
REFRESH = "beta-REFRESH-initial-31415926"

SCENARIO = f"""
seed: 7
token_lifetime: 3600
tenants:
  - tenant_id: alpha.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000001
    client_secret: {SECRETS["alpha"]}
    currencies:
      - code: USD
        symbol: "$"
        balance: 1234.5
        invoice_types: {{Recurring: 1000, OneTime: 234.5}}
        last_payment: {{amount: 99.5, date: "2026-10-01T00:00:00Z"}}
  - tenant_id: beta.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000002
    client_secret: {SECRETS["beta"]}
    refresh_token: {REFRESH}
    currencies:
      - {{code: USD, symbol: "$", balance: 500}}
      - {{code: EUR, symbol: "€", balance: 750.25}}
  - tenant_id: gamma.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000003
    client_secret: {SECRETS["gamma"]}
    currencies:
      - {{code: GBP, symbol: "£", balance: 10}}
    faults:
      - {{kind: status, status: 503}}
  - tenant_id: delta.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000004
    client_secret: {SECRETS["delta"]}
    quirks: [bom, naive_dates, integer_amounts, lowercase_invoice_types]
    currencies:
      - code: EUR
        symbol: "€"
        balance: 120000
        invoice_types: {{Recurring: 100000, OneTime: 20000}}
"""


def _config(url: str, extra_tenant: str = "") -> str:
    return f"""
interval: 2s
timeout: 3s
concurrency: 3
max_staleness: 1h
api_url: {url}
login_url: {url}
thresholds:
  EUR: {{warning: 50000, critical: 100000}}
tenants:
  - name: alpha
    tenant_id: alpha.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000001
    client_secret: {SECRETS["alpha"]}
  - name: beta
    tenant_id: beta.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000002
    client_secret: ${{BETA_SECRET}}
    refresh_token_file: beta.token
    endpoint: summaries
  - name: gamma
    tenant_id: gamma.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000003
    client_secret_file: gamma.secret
  - name: delta
    tenant_id: delta.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000004
    client_secret: {SECRETS["delta"]}
{extra_tenant}"""


@dataclass
class Stack:
    sim: Process
    exporter: Process
    config: Path
    tmp: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    sim = start_simulator(tmp_path, SCENARIO)
    (tmp_path / "beta.token").write_text(REFRESH + "\n")
    (tmp_path / "gamma.secret").write_text(SECRETS["gamma"] + "\n")
    config = tmp_path / "config.yml"
    config.write_text(_config(sim.url))
    exporter = start_exporter(tmp_path, config, "--log.level=debug", env={"BETA_SECRET": SECRETS["beta"]})
    try:
        yield Stack(sim, exporter, config, tmp_path)
    finally:
        exporter.stop(signal.SIGKILL)
        sim.stop()


def test_a_process_its_test_left_running_is_killed(tmp_path: Path) -> None:
    # As when a fixture's exporter fails to start: the simulator it started first is past any `finally`.
    sim = start_simulator(tmp_path, SCENARIO)
    assert kill_leftovers() == [" ".join(map(str, sim.proc.args))]
    assert sim.proc.poll() is not None
    assert kill_leftovers() == []


def _ready(stack: Stack) -> None:
    eventually(lambda: httpx.get(stack.exporter.url + "/readyz").status_code == 200, what="every tenant polled")


def test_values_for_several_tenants_with_one_failing(stack: Stack) -> None:
    _ready(stack)
    m = scrape(stack.exporter.url)
    assert sample(m, "partnercenter_balance", tenant="alpha", currency="USD") == 1234.5
    assert sample(m, "partnercenter_last_payment_amount", tenant="alpha", currency="USD") == 99.5
    assert sample(m, "partnercenter_last_payment_timestamp_seconds", tenant="alpha", currency="USD") == 1790812800
    assert (
        sample(m, "partnercenter_invoice_type_balance", tenant="alpha", currency="USD", invoice_type="recurring")
        == 1000
    )
    assert sample(m, "partnercenter_balance", tenant="beta", currency="USD") == 500
    assert sample(m, "partnercenter_balance", tenant="beta", currency="EUR") == 750.25
    assert sample(m, "partnercenter_currency_info", tenant="beta", currency="EUR", symbol="€") == 1
    assert sample(m, "partnercenter_balance", tenant="delta", currency="EUR") == 120000
    assert (
        sample(m, "partnercenter_invoice_type_balance", tenant="delta", currency="EUR", invoice_type="onetime") == 20000
    )
    assert sample(m, "partnercenter_balance_threshold", tenant="delta", currency="EUR", severity="critical") == 100000
    for tenant in ("alpha", "beta", "delta"):
        assert sample(m, "partnercenter_up", tenant=tenant) == 1
    assert sample(m, "partnercenter_up", tenant="gamma") == 0
    assert sample(m, "partnercenter_balance", tenant="gamma", currency="GBP") is None
    assert (
        sample(m, "partnercenter_api_request_errors_total", tenant="gamma", endpoint="summary", status_code="503") or 0
    ) >= 1
    assert (
        sample(m, "partnercenter_api_request_errors_total", tenant="alpha", endpoint="summary", status_code="503")
        is None
    )
    assert (
        sample(m, "partnercenter_api_request_errors_total", tenant="alpha", endpoint="summary", status_code="500") == 0
    )
    log = stack.exporter.log()
    failure = next(line for line in log.splitlines() if "tenant=gamma" in line and "status=503" in line)
    assert "endpoint=summary" in failure
    assert "request_id=" in failure
    assert "correlation_id=" in failure


def test_one_token_per_tenant_per_lifetime_and_rotation(stack: Stack) -> None:
    _ready(stack)
    eventually(lambda: sim_stats(stack.sim)["alpha.onmicrosoft.com"].get("summary", 0) >= 3, what="three polls")
    stats = sim_stats(stack.sim)
    assert stats["alpha.onmicrosoft.com"]["token"] == 1
    assert stats["beta.onmicrosoft.com"]["token"] == 1
    assert stats["beta.onmicrosoft.com"]["summaries"] >= 2
    rotated = (stack.tmp / "beta.token").read_text().strip()
    assert rotated
    assert rotated != REFRESH
    m = scrape(stack.exporter.url)
    assert sample(m, "partnercenter_api_requests_total", tenant="alpha", endpoint="token") == 1
    assert (sample(m, "partnercenter_token_expiry_timestamp_seconds", tenant="alpha") or 0) > 0


def test_sighup_reload_and_sigterm_exit(stack: Stack) -> None:
    _ready(stack)
    extra = """  - name: epsilon
    tenant_id: alpha.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000001
    client_secret: ${ALPHA}
"""
    stack.config.write_text(_config(stack.sim.url, extra))
    stack.exporter.proc.send_signal(signal.SIGHUP)
    eventually(
        lambda: sample(scrape(stack.exporter.url), "partnercenter_config_last_reload_successful") == 0,
        what="rejected reload (unset ${ALPHA})",
    )
    assert "ALPHA" in stack.exporter.log()
    stack.config.write_text(_config(stack.sim.url, extra.replace("${ALPHA}", SECRETS["alpha"])))
    stack.exporter.proc.send_signal(signal.SIGHUP)
    eventually(
        lambda: sample(scrape(stack.exporter.url), "partnercenter_up", tenant="epsilon") == 1,
        what="new tenant polled after reload",
    )
    assert sample(scrape(stack.exporter.url), "partnercenter_config_last_reload_successful") == 1
    started = monotonic()
    assert stack.exporter.stop(signal.SIGTERM, timeout=5) == 0
    assert monotonic() - started < 5


def test_no_secret_in_logs_metrics_landing_page_or_config_check(stack: Stack) -> None:
    _ready(stack)
    eventually(lambda: sim_stats(stack.sim)["beta.onmicrosoft.com"].get("summaries", 0) >= 2, what="two polls")
    rotated = (stack.tmp / "beta.token").read_text().strip()
    check = subprocess.run(
        [*exporter_command(), f"--config.file={stack.config}", "--config.check"],
        capture_output=True,
        text=True,
        check=False,
        env={"BETA_SECRET": SECRETS["beta"], "PATH": "/usr/bin:/bin"},
    )
    assert check.returncode == 0, check.stderr
    assert "beta" in check.stdout
    outputs = {
        "metrics": httpx.get(stack.exporter.url + "/metrics").text,
        "landing": httpx.get(stack.exporter.url + "/").text,
        "config.check": check.stdout + check.stderr,
    }
    assert stack.exporter.stop(signal.SIGTERM) == 0
    outputs["log"] = stack.exporter.log()
    for secret in [*SECRETS.values(), REFRESH, rotated]:
        for where, text in outputs.items():
            assert secret not in text, f"a secret leaked into {where}"


def _once(stack: Stack) -> subprocess.CompletedProcess[str]:
    """`--once` on the stack's config, as a separate process."""
    return subprocess.run(
        [*exporter_command(), f"--config.file={stack.config}", "--once"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"BETA_SECRET": SECRETS["beta"], "PATH": "/usr/bin:/bin"},
        cwd=stack.tmp,
    )


def test_once_prints_exposition_and_reports_failure(stack: Stack) -> None:
    result = _once(stack)
    assert result.returncode == 1  # gamma fails
    assert 'partnercenter_balance{currency="USD",tenant="alpha"} 1234.5' in result.stdout
    assert 'partnercenter_up{tenant="gamma"} 0.0' in result.stdout


def test_once_prints_every_tenant_when_a_token_answer_is_hostile(stack: Stack) -> None:
    # A 200 from the token endpoint whose expires_in int() cannot read used to crash the poll: no output at all.
    bad = {
        "kind": "status",
        "status": 200,
        "endpoint": "token",
        "body": '{"access_token":"t","expires_in":"\u00b2\u00b3"}',
    }
    set_faults(stack.sim, "alpha.onmicrosoft.com", [bad])
    result = _once(stack)
    assert result.returncode == 1
    assert 'partnercenter_up{tenant="alpha"} 0.0' in result.stdout
    assert (
        'partnercenter_api_request_errors_total{endpoint="token",status_code="invalid_response",tenant="alpha"} 1.0'
        in result.stdout
    )
    assert 'partnercenter_balance{currency="EUR",tenant="delta"} 120000.0' in result.stdout
    assert "Traceback" not in result.stderr


def test_config_check_rejects_bad_config_with_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("tenants:\n  - name: a\n    tenant_id: a.onmicrosoft.com\n    client_id: nope\n")
    result = subprocess.run(
        [*exporter_command(), f"--config.file={bad}", "--config.check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "tenants[0].client_id" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*exporter_command(), f"--config.file={tmp_path / 'absent.yml'}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert "absent.yml" in result.stderr


def test_demo_once_needs_no_set_up() -> None:
    result = subprocess.run(
        [*exporter_command(), "--demo", "--once"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode in (0, 1), result.stderr  # adatum fails now and then by design
    assert 'partnercenter_balance{currency="USD",tenant="contoso"}' in result.stdout
    assert 'partnercenter_balance{currency="EUR",tenant="fabrikam"}' in result.stdout
    assert "demo-contoso-secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_with_a_request_in_flight_exits_0_within_5s(tmp_path: Path, sig: int) -> None:
    scenario = SCENARIO.replace(
        "faults:\n      - {kind: status, status: 503}", "faults:\n      - {kind: timeout, seconds: 60}"
    )
    assert scenario != SCENARIO
    sim = start_simulator(tmp_path, scenario)
    (tmp_path / "beta.token").write_text(REFRESH + "\n")
    (tmp_path / "gamma.secret").write_text(SECRETS["gamma"] + "\n")
    config = tmp_path / "config.yml"
    config.write_text(_config(sim.url).replace("timeout: 3s", "timeout: 50s"))
    exporter = start_exporter(tmp_path, config, env={"BETA_SECRET": SECRETS["beta"]})
    try:
        # gamma's request hangs at the simulator: wait until it is in flight, then stop.
        eventually(lambda: sim_stats(sim).get("gamma.onmicrosoft.com", {}).get("summary", 0) >= 1, what="hang")
        started = monotonic()
        assert exporter.stop(sig, timeout=10) == 0
        assert monotonic() - started < 5
    finally:
        exporter.stop(signal.SIGKILL)
        sim.stop()
