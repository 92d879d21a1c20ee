"""The /metrics body: the tenants' families rendered off the scrape path once per change, plain and gzip.

prometheus_client renders a 1000-tenant snapshot (~60,000 samples) in about half a second, which neither a scrape
nor a poll cycle should pay. So a renderer thread renders the business families once the snapshot's changes settle
(a poll cycle publishes one every few tens of milliseconds; rendering each would take a core), for at most a tenth
of the time, and a scrape serves the last rendering followed by the `live` families (process_*, reload, build
info), rendered per scrape. For gzip, the rendering is compressed once with a sync flush and the compressor kept:
a scrape compresses only the live part on a `Compress.copy()` of it: one valid gzip stream, CRC and length kept.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import generate_latest as _generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# prometheus_client's renderers carry no type hints.
generate_text = cast(Callable[[Collector], bytes], _generate_text)
generate_openmetrics = cast(Callable[[Collector], bytes], _generate_openmetrics)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OM_EOF = b"# EOF\n"


def render(registry: Collector, openmetrics: bool) -> bytes:
    """The exposition of `registry`, OpenMetrics without its `# EOF` line."""
    # Family by family: prometheus_client keeps every line it renders until it joins them, and one family's lines
    # at a time (with collectors that build one family at a time) keep the peak a tenth as high.
    generate, eof = (generate_openmetrics, _OM_EOF) if openmetrics else (generate_text, b"")
    return b"".join(generate(_One(family)).removesuffix(eof) for family in registry.collect())


@dataclass(frozen=True, slots=True)
class _One(Collector):
    """One family, as a collector prometheus_client can render."""

    family: Metric

    def collect(self) -> list[Metric]:
        return [self.family]


@dataclass(frozen=True, slots=True)
class _Rendered:
    generation: int
    plain: bytes
    gzip_head: bytes  # `plain` deflated, gzip header first, ended with a sync flush
    compressor: zlib._Compress  # the compressor that made gzip_head, to be copied per scrape


class Exposition:
    """Serves `cached` as last rendered followed by `live` (per scrape).

    A change is rendered at most `max_delay` after the renderer wakes for it; one that comes while the renderer
    rests after a render (nine times the render's length) wakes it when the rest ends. Timed from the change
    itself, the renders of a long poll cycle would run back to back (6 s more CPU at 5000 tenants) for values
    only seconds fresher.
    """

    def __init__(
        self,
        cached: Collector,
        live: Collector,
        generation: Callable[[], int],
        settle: float = 0.5,
        max_delay: float = 5.0,
    ) -> None:
        self._cached = cached
        self._live = live
        self._generation = generation
        self._settle = settle
        self._max_delay = max_delay
        self._renderings: dict[bool, _Rendered] = {}  # by openmetrics?; replaced, never changed
        self._render_lock = threading.Lock()
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the renderer thread."""
        self._thread = threading.Thread(target=self._run, name="exposition-renderer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the renderer thread."""
        self._stopped.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def notify(self) -> None:
        """Tell the renderer that the snapshot changed (cheap; called by the store on every change)."""
        self._changed.set()

    def body(self, openmetrics: bool, gzip: bool) -> tuple[tuple[bytes, bytes], str]:
        """A scrape's body in two parts, sent one after the other (megabytes are not copied together), and its type."""
        rendered = self._renderings.get(openmetrics) or self._render(openmetrics)
        live = render(self._live, openmetrics) + (_OM_EOF if openmetrics else b"")
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if not gzip:
            return (rendered.plain, live), content_type
        tail = rendered.compressor.copy()
        return (rendered.gzip_head, tail.compress(live) + tail.flush()), content_type

    def _render(self, openmetrics: bool) -> _Rendered:
        with self._render_lock:
            generation = self._generation()
            current = self._renderings.get(openmetrics)
            if current is not None and current.generation == generation:
                return current
            plain = render(self._cached, openmetrics)
            # Level 3 deflates a 6 MiB exposition in ~15 ms to ~240 KiB; level 6 takes three times longer for 12% less.
            # The wbits of gzip: zlib writes the gzip header and trailer itself.
            compressor = zlib.compressobj(3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
            rendered = self._renderings[openmetrics] = _Rendered(generation, plain, head, compressor)
            return rendered

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._changed.wait()
            first = time.monotonic()
            # Wait until changes pause for `settle`, or `max_delay` after the first one.
            while not self._stopped.is_set():
                self._changed.clear()
                remaining = first + self._max_delay - time.monotonic()
                if remaining <= 0 or not self._changed.wait(min(self._settle, remaining)):
                    break
            if self._stopped.is_set():
                return
            started = time.monotonic()
            for openmetrics in list(self._renderings):  # only the formats somebody has asked for
                try:
                    self._render(openmetrics)
                except Exception:  # a bug in a collector must not kill the renderer
                    log.exception("rendering metrics failed")
            # While polls keep changing the snapshot, rendering would take whatever CPU is left: rest nine times
            # the last render, so that it takes at most a tenth of a core (at 1000 tenants a render takes ~0.6 s).
            self._stopped.wait(9 * (time.monotonic() - started))
