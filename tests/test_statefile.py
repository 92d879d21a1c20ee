"""Persisted state: a restart serves the last good values at once; a corrupt or foreign file starts clean."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from exporter.app import App
from exporter.config import load_config
from exporter.poller import RetryPolicy
from tests.fakes import FakeUpstream, ok_summary, respond, tenant_yaml
from tests.support import wait_until

FAST = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.001)


def _config_file(tmp_path: Path, tenants: str) -> Path:
    path = tmp_path / "config.yml"
    body = "".join("  " + line + "\n" for line in tenants.splitlines())
    path.write_text(
        "interval: 1m\ntimeout: 2s\nmax_staleness: 1h\nstate_file: state.json\n"
        f"api_url: http://pc.test\nlogin_url: http://login.test\ntenants:\n{body}"
    )
    return path


def _app(config_file: Path, upstream: FakeUpstream) -> App:
    app = App(
        load_config(config_file),
        config_path=config_file,
        listen=("127.0.0.1", 0),
        retry=FAST,
        transport_factory=upstream.transport,
    )
    app.start()
    return app


def _value(app: App, prefix: str) -> str | None:
    text = httpx.get(app.url + "/metrics").text
    return next((ln.rsplit(" ", 1)[1] for ln in text.splitlines() if ln.startswith(prefix)), None)


BALANCE = 'partnercenter_balance{currency="USD",tenant="a"}'
LAST_SUCCESS = 'partnercenter_last_success_timestamp_seconds{tenant="a"}'


def test_restart_serves_last_good_values_at_once(tmp_path: Path) -> None:
    config_file = _config_file(tmp_path, tenant_yaml("a") + tenant_yaml("b", extra="refresh_token_file: b.token"))
    (tmp_path / "b.token").write_text("refresh-token-never-in-state\n")
    first = _app(config_file, FakeUpstream(tenants={"a.onmicrosoft.com": [ok_summary(4242.5)]}))
    try:
        wait_until(lambda: _value(first, BALANCE) == "4242.5", what="first poll")
        last_success = _value(first, LAST_SUCCESS)
        wait_until((tmp_path / "state.json").exists, what="state written")
    finally:
        first.stop()
    state_text = (tmp_path / "state.json").read_text()
    assert "refresh-token" not in state_text
    assert "secret-of-a" not in state_text
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o600

    # The upstream is down now: only the state file can provide values.
    second = _app(config_file, FakeUpstream(tenants={"a.onmicrosoft.com": [respond(503)]}))
    try:
        assert _value(second, BALANCE) == "4242.5"
        assert _value(second, LAST_SUCCESS) == last_success
        wait_until(lambda: _value(second, 'partnercenter_up{tenant="a"}') == "0.0", what="failed poll")
        assert _value(second, BALANCE) == "4242.5"
        assert _value(second, LAST_SUCCESS) == last_success
    finally:
        second.stop()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01garbage",
        b"{not json",
        b'{"format": "something-else", "version": 1, "tenants": {}}',
        b'{"format": "partnercenter-exporter-state", "version": 99, "tenants": {}}',
        b'{"format": "partnercenter-exporter-state", "version": 1, "tenants": {"a": {"tenant_id": '
        b'"a.onmicrosoft.com", "endpoint": "summary", "last_success": "yesterday", "summaries": []}}}',
    ],
)
def test_corrupt_or_foreign_state_file_is_a_warning_and_a_clean_start(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = _config_file(tmp_path, tenant_yaml("a"))
    (tmp_path / "state.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="exporter.statefile"):
        app = _app(config_file, FakeUpstream(tenants={"a.onmicrosoft.com": [respond(503)]}))
    try:
        assert any("state file" in r.getMessage() for r in caplog.records)
        assert _value(app, BALANCE) is None
        assert _value(app, LAST_SUCCESS) is None
    finally:
        app.stop()


_USD = {"currency": "USD", "balance": 1, "details": [{"invoice_type": "recurring", "balance": 1}]}


@pytest.mark.parametrize(
    ("summaries", "restored"),
    [
        ([_USD], True),  # the shape itself is fine
        ([{**_USD, "symbol": "\ud800"}], False),  # a lone surrogate: no label value can hold it
        ([{**_USD, "currency": "US\nD"}], False),
        ([{**_USD, "currency": "usd"}], False),
        ([_USD, _USD], False),  # one series twice
        ([{**_USD, "details": [{"invoice_type": "x"}, {"invoice_type": "x"}]}], False),
        ([{**_USD, "details": [{"invoice_type": "x" * 257}]}], False),
        ([{**_USD, "details": [{"invoice_type": f"t{i}"} for i in range(101)]}], False),
    ],
)
def test_a_state_file_is_held_to_what_an_answer_may_hold(
    tmp_path: Path, summaries: list[dict[str, object]], restored: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The file is the exporter's own, but edited or damaged it must not take /metrics down for every tenant.
    config_file = _config_file(tmp_path, tenant_yaml("a"))
    entry = {"tenant_id": "a.onmicrosoft.com", "endpoint": "summary", "summaries": summaries}
    entry["last_success"] = time.time()
    state = {"format": "partnercenter-exporter-state", "version": 1, "tenants": {"a": entry}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger="exporter.statefile"):
        app = _app(config_file, FakeUpstream(tenants={"a.onmicrosoft.com": [respond(503)]}))
    try:
        answer = httpx.get(app.url + "/metrics")
        assert answer.status_code == 200
        assert (BALANCE + " 1.0" in answer.text) is restored
        assert any("state file" in r.getMessage() for r in caplog.records) is not restored
    finally:
        app.stop()


def test_state_of_a_tenant_that_changed_account_is_ignored(tmp_path: Path) -> None:
    config_file = _config_file(tmp_path, tenant_yaml("a"))
    first = _app(config_file, FakeUpstream(tenants={"a.onmicrosoft.com": [ok_summary(1)]}))
    try:
        wait_until(lambda: _value(first, BALANCE) == "1.0", what="first poll")
        wait_until((tmp_path / "state.json").exists, what="state written")
    finally:
        first.stop()
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["tenants"]["a"]["summaries"][0]["balance"] == 1
    config_file.write_text(config_file.read_text().replace("tenant_id: a.onmicrosoft.com", "tenant_id: z.example.com"))
    second = _app(config_file, FakeUpstream(tenants={"z.example.com": [respond(503)]}))
    try:
        assert _value(second, BALANCE) is None
    finally:
        second.stop()


def test_temp_files_of_a_killed_state_write_are_removed_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each holds a tenant's balances; a process killed while writing leaves one.
    config_file = _config_file(tmp_path, tenant_yaml("a"))
    orphan = tmp_path / ".state.json.k1ll3d.tmp"
    orphan.write_text("{}")
    unrelated = tmp_path / ".other.json.x.tmp"
    unrelated.write_text("{}")
    app = _app(config_file, FakeUpstream())
    app.stop()
    assert not orphan.exists()
    assert unrelated.exists()
    assert any("killed state file write" in r.getMessage() for r in caplog.records)


def test_a_state_file_that_is_a_symbolic_link_keeps_its_link(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "state.json").symlink_to(tmp_path / "data" / "real-state.json")
    app = _app(_config_file(tmp_path, tenant_yaml("a")), FakeUpstream(tenants={"a.onmicrosoft.com": [ok_summary(7)]}))
    try:
        wait_until((tmp_path / "data" / "real-state.json").exists, what="state written through the link")
    finally:
        app.stop()
    assert (tmp_path / "state.json").is_symlink()
    assert '"balance":7.0' in (tmp_path / "data" / "real-state.json").read_text()
