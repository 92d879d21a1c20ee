"""The cached /metrics body: plain, gzip stitched from cached segments, OpenMetrics, and re-rendering."""

from __future__ import annotations

import gzip
import time
import zlib
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import business_registry
from exporter.exposition import Exposition
from exporter.model import InvoiceSummary
from exporter.snapshot import SnapshotStore
from tests.fakes import make_config, tenant_yaml
from tests.support import wait_until


def _store(tmp_path: Path, tenants: int = 3) -> SnapshotStore:
    config = make_config(tmp_path, "".join(tenant_yaml(f"t{i}") for i in range(tenants)))
    return SnapshotStore(config, time.time())


def _set_balance(store: SnapshotStore, name: str, balance: float) -> None:
    summary = InvoiceSummary("USD", "$", balance, None, None, None, None, None, ())
    store.update_tenant(name, lambda s: replace(s, summaries=(summary,), up=True, last_success=1.0))


def _live_registry() -> CollectorRegistry:
    live = CollectorRegistry()
    Gauge("live_gauge", "changes on every scrape", registry=live).set_function(time.monotonic)
    return live


def _exposition(store: SnapshotStore, live: CollectorRegistry | None = None) -> Exposition:
    exposition = Exposition(business_registry(store), lambda: store.current.generation, live, min_interval=0.01)
    store.on_change(exposition.notify)
    return exposition


def test_gzip_body_is_one_valid_stream_equal_to_plain(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _set_balance(store, "t1", 12.5)
    exposition = _exposition(store, _live_registry())
    plain, content_type = exposition.body(openmetrics=False, gzip=False)
    zipped, _ = exposition.body(openmetrics=False, gzip=True)
    assert content_type.startswith("text/plain; version=0.0.4")
    # A single-member decoder (what httpx and most HTTP clients use) must see the whole body.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    unzipped = decoder.decompress(zipped) + decoder.flush()
    assert decoder.eof
    assert decoder.unused_data == b""
    assert unzipped == gzip.decompress(zipped)
    # Equal but for the live gauge's value.
    strip = lambda b: [ln for ln in b.decode().splitlines() if not ln.startswith("live_gauge ")]  # noqa: E731
    assert strip(unzipped) == strip(plain)
    assert b'partnercenter_balance{currency="USD",tenant="t1"} 12.5' in plain
    assert b"live_gauge " in plain


def test_openmetrics_body_ends_with_one_eof(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _set_balance(store, "t0", 1)
    exposition = _exposition(store, _live_registry())
    body, content_type = exposition.body(openmetrics=True, gzip=False)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert body.count(b"# EOF") == 1
    assert b"partnercenter_api_requests_total{" in body
    zipped, _ = exposition.body(openmetrics=True, gzip=True)
    assert gzip.decompress(zipped).count(b"# EOF") == 1


def test_body_follows_snapshot_changes_via_renderer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    exposition = _exposition(store)
    exposition.start()
    try:
        exposition.body(openmetrics=False, gzip=False)  # asks for the plain format
        _set_balance(store, "t2", 99)
        wait_until(
            lambda: b'tenant="t2"} 99.0' in exposition.body(False, False)[0],
            timeout=5,
            what="renderer to pick up the change",
        )
        wait_until(
            lambda: b'tenant="t2"} 99.0' in gzip.decompress(exposition.body(False, True)[0]),
            timeout=5,
            what="gzip body to follow",
        )
    finally:
        exposition.stop()


def test_unchanged_snapshot_is_not_rendered_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    renders = [0]
    registry = business_registry(store)
    original = registry.collect

    def counting_collect():  # type: ignore[no-untyped-def]
        renders[0] += 1
        return original()

    registry.collect = counting_collect  # type: ignore[method-assign]
    exposition = Exposition(registry, lambda: store.current.generation, None)
    for _ in range(20):
        exposition.body(openmetrics=False, gzip=False)
        exposition.body(openmetrics=False, gzip=True)
    assert renders[0] == 1


def test_body_parses_as_prometheus_text(tmp_path: Path) -> None:
    store = _store(tmp_path, tenants=50)
    for i in range(50):
        _set_balance(store, f"t{i}", i)
    body, _ = _exposition(store).body(openmetrics=False, gzip=False)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    balances = {s.labels["tenant"]: s.value for s in families["partnercenter_balance"].samples}
    assert balances == {f"t{i}": float(i) for i in range(50)}
