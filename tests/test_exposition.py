"""The cached /metrics body: plain, gzip stitched from cached segments, OpenMetrics, and re-rendering."""

from __future__ import annotations

import gzip
import random
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter import exposition as exposition_module
from exporter.app import business_registry
from exporter.collector import Sample
from exporter.config import TenantConfig
from exporter.exposition import Exposition, SnapshotRenderer
from exporter.gate import ScrapeGate
from exporter.model import InvoiceSummary, InvoiceTypeSummary, parse_summaries
from exporter.snapshot import SnapshotStore, TenantState
from tests.fakes import make_config, tenant_yaml
from tests.support import serving_thread, wait_until


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
    renderer = SnapshotRenderer(lambda: store.current)
    exposition = Exposition(renderer.parts, lambda: store.current.generation, live, min_interval=0.01)
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


def _wait_for_text(exposition: Exposition, text: bytes, *, gzipped: bool, what: str) -> None:
    def shown() -> bool:
        body = exposition.body(openmetrics=False, gzip=gzipped)[0]
        return text in (gzip.decompress(body) if gzipped else body)

    wait_until(shown, timeout=5, what=what)


def test_body_follows_snapshot_changes_via_renderer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    exposition = _exposition(store)
    exposition.start()
    try:
        exposition.body(openmetrics=False, gzip=False)  # asks for the plain format
        _set_balance(store, "t2", 99)
        _wait_for_text(exposition, b'tenant="t2"} 99.0', gzipped=False, what="renderer to pick up the change")
        _wait_for_text(exposition, b'tenant="t2"} 99.0', gzipped=True, what="gzip body to follow")
    finally:
        exposition.stop()


def test_unchanged_snapshot_is_not_rendered_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    renders = [0]
    renderer = SnapshotRenderer(lambda: store.current)

    def counting(openmetrics: bool) -> tuple[bytes, ...]:
        renders[0] += 1
        return renderer.parts(openmetrics)

    exposition = Exposition(counting, lambda: store.current.generation, None)
    for _ in range(20):
        exposition.body(openmetrics=False, gzip=False)
        exposition.body(openmetrics=False, gzip=True)
    assert renders[0] == 1


def _reference(store: SnapshotStore, openmetrics: bool) -> bytes:
    registry = business_registry(store)
    if openmetrics:
        return generate_openmetrics(registry).removesuffix(b"# EOF\n")  # type: ignore[no-untyped-call]
    return generate_latest(registry)  # type: ignore[no-any-return]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_incremental_render_is_byte_identical_to_prometheus_client(tmp_path: Path, openmetrics: bool) -> None:
    body = (Path(__file__).parent / "data" / "bodies" / "invoice_summaries.json").read_bytes()
    store = _store(tmp_path, tenants=4)
    renderer = SnapshotRenderer(lambda: store.current)
    assert renderer(openmetrics) == _reference(store, openmetrics)  # nothing polled yet
    store.update_tenant(
        "t1",
        lambda s: replace(
            s.counted("token", None),
            summaries=parse_summaries(body),
            up=True,
            last_success=1.5,
            poll_duration=0.1,
            token_expiry=99.0,
        ),
    )
    _set_balance(store, "t3", 7)
    assert renderer(openmetrics) == _reference(store, openmetrics)
    store.update_tenant("t3", lambda s: replace(s.counted("summary", "503"), up=False, last_error='odd "text"'))
    assert renderer(openmetrics) == _reference(store, openmetrics)
    # A reload that drops a tenant, adds one and changes a threshold: cached lines must not survive it.
    reloaded = make_config(tmp_path, tenant_yaml("t1", extra="thresholds: {GBP: {warning: 1}}") + tenant_yaml("t9"))
    store.replace_config(reloaded, restarted=(), now=5.0)
    assert renderer(openmetrics) == _reference(store, openmetrics)
    assert b'tenant="t3"' not in renderer(openmetrics)
    assert b'partnercenter_balance_threshold{currency="GBP",severity="warning",tenant="t1"} 1.0' in renderer(
        openmetrics
    )


def test_label_values_are_escaped_like_prometheus_client(tmp_path: Path) -> None:
    store = _store(tmp_path, tenants=1)
    odd = InvoiceSummary('U"S\\D\n', "$", 1.0, None, None, None, None, None, ())
    store.update_tenant("t0", lambda s: replace(s, summaries=(odd,), up=True))
    renderer = SnapshotRenderer(lambda: store.current)
    assert renderer(False) == _reference(store, False)
    assert renderer(True) == _reference(store, True)


def test_body_parses_as_prometheus_text(tmp_path: Path) -> None:
    store = _store(tmp_path, tenants=50)
    for i in range(50):
        _set_balance(store, f"t{i}", i)
    body, _ = _exposition(store).body(openmetrics=False, gzip=False)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    balances = {s.labels["tenant"]: s.value for s in families["partnercenter_balance"].samples}
    assert balances == {f"t{i}": float(i) for i in range(50)}


def _random_summaries(rng: random.Random, step: int) -> tuple[InvoiceSummary, ...]:
    return tuple(
        InvoiceSummary(
            c,
            rng.choice([None, "$", "€", "zł", 'a"b', "c\\d"]),  # multi-byte text shifts offsets; some need escapes
            rng.random() * 10 ** rng.randint(0, 12),  # Go writes 1e+07 and up with an exponent
            rng.choice([None, 0.0, -1.5, float("inf")]),
            None,
            float(step),
            None,
            None,
            tuple(
                InvoiceTypeSummary(kind, rng.random(), None, rng.choice([None, 1.7e9]))
                for kind in rng.sample(["recurring", "onetime", "usage\nbased"], k=rng.randint(0, 3))
            ),
        )
        for c in rng.sample(["USD", "EUR", "GBP"], k=rng.randint(0, 3))
    )


@pytest.mark.parametrize("openmetrics", [False, True])
def test_incremental_render_stays_identical_through_many_random_changes(tmp_path: Path, openmetrics: bool) -> None:
    rng = random.Random(7)
    store = _store(tmp_path, tenants=12)
    renderer = SnapshotRenderer(lambda: store.current)
    for step in range(60):
        for name in rng.sample([f"t{i}" for i in range(12)], k=rng.randint(0, 4)):
            if rng.random() < 0.4:
                # A poll that brings the same values again, as new objects: only its bookkeeping changes.
                def again(s: TenantState, d: float = rng.random()) -> TenantState:
                    copies = tuple(replace(x) for x in s.summaries) if s.summaries is not None else None
                    return replace(s.counted("summary", None), summaries=copies, poll_duration=d)

                store.update_tenant(name, again)
                continue
            summaries = _random_summaries(rng, step)
            store.update_tenant(
                name, lambda s, v=summaries: replace(s.counted("summary", None), summaries=v, up=bool(v))
            )
        assert renderer(openmetrics) == _reference(store, openmetrics), f"step {step}"


def test_a_poll_that_brings_the_same_values_does_not_write_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    for name in ("t0", "t1", "t2"):
        _set_balance(store, name, 5.0)
    renderer = SnapshotRenderer(lambda: store.current)
    renderer.parts(False)
    written: list[str] = []
    real_value_samples = exposition_module.value_samples

    def counting(tenant: TenantConfig, summaries: tuple[InvoiceSummary, ...] | None) -> list[list[Sample]]:
        written.append(tenant.name)
        return real_value_samples(tenant, summaries)

    monkeypatch.setattr(exposition_module, "value_samples", counting)
    # t0: equal values in new objects, and a new poll duration; t1: a new balance.
    store.update_tenant("t0", lambda s: replace(s, summaries=tuple(map(replace, s.summaries or ())), poll_duration=2.0))
    _set_balance(store, "t1", 6.0)
    body = renderer(False)
    assert written == ["t1"]
    assert body == _reference(store, False)
    assert b'partnercenter_poll_duration_seconds{tenant="t0"} 2.0' in body


def test_families_that_did_not_change_are_kept_and_not_compressed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    for name, balance in (("t0", 1.0), ("t1", 2.0), ("t2", 3.0)):
        _set_balance(store, name, balance)
    renderer = SnapshotRenderer(lambda: store.current)
    deflated: list[bytes] = []
    real_deflate = exposition_module._deflate

    def counting_deflate(data: bytes) -> bytes:
        deflated.append(data)
        return real_deflate(data)

    monkeypatch.setattr(exposition_module, "_deflate", counting_deflate)
    exposition = Exposition(renderer.parts, lambda: store.current.generation, None, min_interval=0.01)
    store.on_change(exposition.notify)
    exposition.body(openmetrics=False, gzip=True)  # the first render, in the scrape
    before = renderer.parts(False)  # the same objects: nothing changed since
    assert len(deflated) == len(before)
    deflated.clear()
    exposition.start()
    try:
        # A poll that only moves the tenant's timestamp: its balance lines are the same text as before.
        store.update_tenant("t1", lambda s: replace(s, last_success=99.0))
        _wait_for_text(exposition, b'{tenant="t1"} 99.0', gzipped=True, what="the renderer to render the change")
    finally:
        exposition.stop()
    after = renderer.parts(False)

    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old is not new]
    assert len(changed) == 1
    assert b'partnercenter_last_success_timestamp_seconds{tenant="t1"} 99.0' in after[changed[0]]
    assert deflated == [after[changed[0]]]
    balances = next(part for part in after if part.startswith(b"# HELP partnercenter_balance "))
    assert any(balances is part for part in before)
    assert gzip.decompress(exposition.body(False, True)[0]) == _reference(store, False)


def test_a_reload_re_renders_only_the_tenants_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tenants = "".join(tenant_yaml(f"t{i}") for i in range(3))
    store = _store(tmp_path)
    for i in range(3):
        _set_balance(store, f"t{i}", float(i))
    renderer = SnapshotRenderer(lambda: store.current)
    renderer.parts(False)
    rendered: list[str] = []
    real_poll_samples = exposition_module.poll_samples

    def counting(tenant: TenantConfig, state: TenantState) -> list[list[Sample]]:
        rendered.append(tenant.name)  # every tenant rendered again has its poll samples written
        return real_poll_samples(tenant, state)

    monkeypatch.setattr(exposition_module, "poll_samples", counting)
    # The same file again, but for t1's thresholds: parsed anew, every tenant is a new object.
    reparsed = make_config(tmp_path, tenants.replace("- name: t1\n", "- name: t1\n  thresholds: {USD: {warning: 5}}\n"))
    store.replace_config(reparsed.reusing(store.current.config), restarted=(), now=2.0)
    body = renderer(False)
    assert rendered == ["t1"]
    assert body == _reference(store, False)
    assert b'partnercenter_balance_threshold{currency="USD",severity="warning",tenant="t1"} 5.0' in body


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_reload_that_only_removes_a_tenant_takes_its_lines_out_of_every_family(
    tmp_path: Path, openmetrics: bool
) -> None:
    store = _store(tmp_path)
    for i in range(3):
        _set_balance(store, f"t{i}", float(i))
    renderer = SnapshotRenderer(lambda: store.current)
    assert b'tenant="t1"' in renderer(openmetrics)
    # Nothing else changes: no tenant has new lines, yet every family that held t1's must be joined again.
    remaining = make_config(tmp_path, tenant_yaml("t0") + tenant_yaml("t2"))
    store.replace_config(remaining.reusing(store.current.config), restarted=(), now=3.0)
    body = renderer(openmetrics)
    assert b'tenant="t1"' not in body
    assert body == _reference(store, openmetrics)


@pytest.mark.parametrize("where", ["before each tenant", "before each part it compresses"])
def test_the_renderer_waits_while_a_request_is_served(tmp_path: Path, where: str) -> None:
    store = _store(tmp_path)
    gate = ScrapeGate(max_wait=30.0)
    pause = gate.step_aside
    renderer = SnapshotRenderer(lambda: store.current, pause=pause if where == "before each tenant" else lambda: None)
    exposition = Exposition(
        renderer.parts,
        lambda: store.current.generation,
        min_interval=0.01,
        pause=pause if where == "before each part it compresses" else lambda: None,
    )
    exposition.body(openmetrics=False, gzip=True)  # the first render, as a scrape makes it: the renderer's own follow
    store.on_change(exposition.notify)
    exposition.start()
    try:
        release = serving_thread(gate)
        _set_balance(store, "t1", 99.0)
        rendered = lambda: b"99.0" in exposition.body(openmetrics=False, gzip=False)[0]  # noqa: E731
        with pytest.raises(AssertionError, match="timed out"):
            wait_until(rendered, timeout=0.3, what="a render while a request is served")
        release.set()
        wait_until(rendered, what="the render once the request was served")
    finally:
        exposition.stop()
        gate.close()
