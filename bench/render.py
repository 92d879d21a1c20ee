"""Micro-benchmark of the exposition alone: render cost per change and serve cost per scrape, in-process.

    python bench/render.py --tenants=1000

Fills a SnapshotStore with N tenants (3 currencies, 3 invoice types each, counters, thresholds) and times one
full render (what the renderer thread pays per change) and `Exposition.body()` (what a scrape pays), so that
a change to exposition.py or collector.py can be judged in seconds, without processes or a network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from exporter.app import business_registry
from exporter.config import parse_config
from exporter.exposition import Exposition, SnapshotRenderer, generate_latest, generate_openmetrics, render
from exporter.model import InvoiceSummary, InvoiceTypeSummary
from exporter.snapshot import SnapshotStore, TenantState


def build_store(n: int) -> SnapshotStore:
    """A store with n polled tenants."""
    tenants = "".join(
        f"  - {{name: t{i:04d}, tenant_id: t{i}.onmicrosoft.com, "
        f"client_id: 00000000-0000-4000-8000-{i:012d}, client_secret: s{i}}}\n"
        for i in range(n)
    )
    text = (
        "thresholds:\n  USD: {warning: 50000, critical: 100000}\n  EUR: {warning: 40000, critical: 90000}\n"
        f"tenants:\n{tenants}"
    )
    config = parse_config(text, base_dir=Path.cwd(), environ={})
    store = SnapshotStore(config, time.time())
    for i, tenant in enumerate(config.tenants):
        summaries = tuple(
            InvoiceSummary(
                currency,
                symbol,
                1000.0 + i + 0.25,
                1000.0,
                1.79e9 - i * 3600,
                1.79e9,
                1.5e9,
                1.78e9,
                tuple(InvoiceTypeSummary(kind, 300.0 + i, 100.0, 1.79e9) for kind in ("onetime", "recurring", "usage")),
            )
            for currency, symbol in (("USD", "$"), ("EUR", "€"), ("GBP", "£"))
        )

        def change(state: TenantState, summaries: tuple[InvoiceSummary, ...] = summaries) -> TenantState:
            state = state.counted("token", None).counted("summary", None)
            return replace(
                state,
                summaries=summaries,
                up=True,
                last_success=1.79e9,
                poll_duration=0.1234,
                token_expiry=1.79e9 + 3600,
            )

        store.update_tenant(tenant.name, change)
    return store


def timed(func: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    """Print render and serve costs."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    store = build_store(args.tenants)
    registry = business_registry(store)
    live = CollectorRegistry(auto_describe=True)
    live.register(ProcessCollector(registry=None))
    renderer = SnapshotRenderer(lambda: store.current)
    exposition = Exposition(renderer.parts, lambda: store.current.generation, live)
    plain = generate_latest(registry)
    samples = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))
    print(f"{args.tenants} tenants, {samples} samples, {len(plain) / 1024:.0f} KiB")
    # The exporter's renderers must write what prometheus_client writes, byte for byte.
    assert render(registry, False) == plain, "text rendering differs from prometheus_client's"
    assert render(registry, True) + b"# EOF\n" == generate_openmetrics(registry), "OpenMetrics rendering differs"
    assert renderer(False) == plain, "incremental rendering differs from prometheus_client's"
    print(
        f"collect() alone:                      {timed(lambda: list(registry.collect()), args.repeat) * 1000:8.1f} ms"
    )
    print(
        f"generate_latest (prometheus_client):  {timed(lambda: generate_latest(registry), args.repeat) * 1000:8.1f} ms"
    )
    print(
        f"render (exporter, text, every tenant): {timed(lambda: render(registry, False), args.repeat) * 1000:7.1f} ms"
    )

    def one_tenant_changed() -> None:
        name = store.current.config.tenants[0].name
        store.update_tenant(name, lambda s: replace(s, poll_duration=(s.poll_duration or 0) + 1))
        renderer(False)

    print(f"incremental render, one tenant changed: {timed(one_tenant_changed, args.repeat) * 1000:6.1f} ms")

    def change_and_serve() -> None:
        one_tenant_changed()
        exposition._cache.clear()  # force the render + deflate that follows a change
        exposition.body(openmetrics=False, gzip=False)

    print(f"per change (render + deflate):        {timed(change_and_serve, args.repeat) * 1000:8.1f} ms")
    for gz in (False, True):

        def scrape(gz: bool = gz) -> None:
            exposition.body(openmetrics=False, gzip=gz)

        cost = timed(scrape, args.repeat * 20)
        print(f"body() per scrape, gzip={gz!s:5}:        {cost * 1000:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
