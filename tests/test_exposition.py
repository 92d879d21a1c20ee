"""The cached /metrics body: plain and gzip, OpenMetrics, the live families, and rendering after changes."""

from __future__ import annotations

import gzip
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import TenantCollector
from exporter.exposition import Exposition, generate_openmetrics, generate_text
from exporter.snapshot import SnapshotStore
from exporter.upstream.model import InvoiceSummary
from tests.fakes import make_config, tenant_yaml
from tests.support import wait_until


def _store(tmp_path: Path, tenants: int = 3) -> SnapshotStore:
    config = make_config(tmp_path, "".join(tenant_yaml(f"t{i}") for i in range(tenants)))
    return SnapshotStore(config, time.time())


def _set_balance(store: SnapshotStore, name: str, balance: float) -> None:
    summary = InvoiceSummary("USD", "$", balance, None, None, None, None, None, ())
    store.update_tenant(name, lambda s: replace(s, summaries=(summary,), up=True, last_success=1.0))


class _Counting(TenantCollector):
    """The tenant collector, counting how often it is rendered."""

    renders = 0

    def collect(self):  # type: ignore[no-untyped-def]
        self.renders += 1
        return super().collect()


def _exposition(store: SnapshotStore, settle: float = 0.05) -> tuple[Exposition, _Counting]:
    tenants = CollectorRegistry()
    collector = _Counting(lambda: store.current)
    tenants.register(collector)
    live = CollectorRegistry()
    Gauge("live_gauge", "changes on every scrape", registry=live).set_function(time.monotonic)
    exposition = Exposition(tenants, live, lambda: store.current.generation, settle=settle, max_delay=1.0)
    store.on_change(exposition.notify)
    collector.renders = 0
    return exposition, collector


def _lines(body: bytes) -> list[str]:
    """The body's lines, but for the live gauge's value."""
    return [line for line in body.decode().splitlines() if not line.startswith("live_gauge ")]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_gzip_body_is_one_valid_stream_equal_to_plain(tmp_path: Path, openmetrics: bool) -> None:
    store = _store(tmp_path)
    _set_balance(store, "t1", 12.5)
    exposition, _ = _exposition(store)
    plain, zipped = (b"".join(exposition.body(openmetrics=openmetrics, gzip=z)[0]) for z in (False, True))
    # A single-member decoder (what httpx, Go and most HTTP clients use) must see the whole body.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    unzipped = decoder.decompress(zipped) + decoder.flush()
    assert decoder.eof
    assert decoder.unused_data == b""
    assert unzipped == gzip.decompress(zipped)
    assert _lines(unzipped) == _lines(plain)
    assert b'partnercenter_balance{currency="USD",tenant="t1"} 12.5' in plain
    assert b"live_gauge" in plain


def test_every_scrape_renders_the_live_part_afresh(tmp_path: Path) -> None:
    exposition, _ = _exposition(_store(tmp_path))
    values = set()
    for _ in range(3):
        for zipped in (False, True):
            body = b"".join(exposition.body(openmetrics=False, gzip=zipped)[0])
            text = gzip.decompress(body) if zipped else body
            values.add(next(line for line in text.decode().splitlines() if line.startswith("live_gauge ")))
    assert len(values) == 6


def test_plain_body_is_what_prometheus_client_writes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _set_balance(store, "t0", 1)
    exposition, _ = _exposition(store)
    parts, content_type = exposition.body(openmetrics=False, gzip=False)
    body = b"".join(parts)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    registry = CollectorRegistry()
    registry.register(TenantCollector(lambda: store.current))
    assert body.startswith(generate_text(registry))
    assert b"# EOF" not in body


def test_openmetrics_body_ends_with_one_eof(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _set_balance(store, "t0", 1)
    exposition, _ = _exposition(store)
    parts, content_type = exposition.body(openmetrics=True, gzip=False)
    body = b"".join(parts)
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    registry = CollectorRegistry()
    registry.register(TenantCollector(lambda: store.current))
    assert body.startswith(generate_openmetrics(registry).removesuffix(b"# EOF\n"))
    assert body.endswith(b"# EOF\n")
    assert body.count(b"# EOF") == 1
    zipped = b"".join(exposition.body(openmetrics=True, gzip=True)[0])
    assert gzip.decompress(zipped).count(b"# EOF") == 1


def test_unchanged_snapshot_is_not_rendered_again(tmp_path: Path) -> None:
    exposition, collector = _exposition(_store(tmp_path))
    for _ in range(20):
        exposition.body(openmetrics=False, gzip=False)
        exposition.body(openmetrics=False, gzip=True)
    assert collector.renders == 1


def test_body_follows_snapshot_changes_after_they_settle(tmp_path: Path) -> None:
    store = _store(tmp_path)
    exposition, collector = _exposition(store, settle=0.5)  # far longer than the burst below takes
    exposition.start()
    try:
        exposition.body(openmetrics=False, gzip=False)  # asks for the plain format: the renderer keeps it current
        for balance in range(1, 6):
            _set_balance(store, "t2", balance)  # a burst of changes ...

        def shows(text: bytes, zipped: bool) -> bool:
            body = b"".join(exposition.body(openmetrics=False, gzip=zipped)[0])
            return text in (gzip.decompress(body) if zipped else body)

        wait_until(lambda: shows(b'tenant="t2"} 5.0', False), timeout=5, what="the renderer to pick up the changes")
        assert shows(b'tenant="t2"} 5.0', True)
        assert collector.renders == 2  # ... is rendered once, not change by change (the first scrape rendered too)
    finally:
        exposition.stop()


def test_only_formats_somebody_asked_for_are_rendered_after_a_change(tmp_path: Path) -> None:
    store = _store(tmp_path)
    exposition, collector = _exposition(store)
    exposition.start()
    try:
        exposition.body(openmetrics=True, gzip=False)
        _set_balance(store, "t1", 7)
        wait_until(
            lambda: b'tenant="t1"} 7.0' in b"".join(exposition.body(openmetrics=True, gzip=False)[0]),
            timeout=5,
            what="the OpenMetrics rendering to follow",
        )
        assert collector.renders == 2  # the first scrape's and the renderer's, both OpenMetrics
    finally:
        exposition.stop()


def test_body_parses_as_prometheus_text(tmp_path: Path) -> None:
    store = _store(tmp_path, tenants=50)
    for i in range(50):
        _set_balance(store, f"t{i}", i)
    body = b"".join(_exposition(store)[0].body(openmetrics=False, gzip=False)[0])
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    balances = {s.labels["tenant"]: s.value for s in families["partnercenter_balance"].samples}
    assert balances == {f"t{i}": float(i) for i in range(50)}
