"""The /metrics body: rendered once per snapshot change, off the scrape path, plain and gzip.

Rendering tens of thousands of samples takes tens of milliseconds; a scrape must not pay that, nor wait for a
poll. A renderer thread re-renders the business registry after each change (at most once per `min_interval`)
and a scrape serves the last rendered bytes. The few process_* samples change on every scrape, so they are
rendered per scrape and appended. For gzip, the cached part is a raw-deflate segment ended with a full flush:
such a segment depends on nothing before or after it, so a scrape only compresses its small live tail and
stitches one valid gzip stream together (header, cached segment, live segment, CRC-32 continued from the
cached part's).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as _generate_text
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics

log = logging.getLogger(__name__)

# prometheus_client's renderers carry no type hints.
generate_latest = cast(Callable[[CollectorRegistry], bytes], _generate_text)
generate_openmetrics = cast(Callable[[CollectorRegistry], bytes], _generate_openmetrics)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OM_EOF = b"# EOF\n"
# A fixed gzip member header: deflate, no name, no mtime (so equal bodies give equal bytes), unknown OS.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_LEVEL = 6


@dataclass(frozen=True)
class _Rendered:
    generation: int
    plain: bytes
    deflated: bytes  # raw deflate of `plain`, ended by a full flush
    crc: int


class Exposition:
    """Serves rendered bodies of `registry` (cached) followed by `live` (rendered per request)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        generation: Callable[[], int],
        live: CollectorRegistry | None = None,
        min_interval: float = 0.2,
    ) -> None:
        self._registry = registry
        self._generation = generation
        self._live = live
        self._min_interval = min_interval
        self._cache: dict[bool, _Rendered] = {}  # keyed by openmetrics?; replaced, never mutated
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
        """Tell the renderer that the snapshot changed (cheap; called by the store)."""
        self._changed.set()

    def body(self, openmetrics: bool, gzip: bool) -> tuple[bytes, str]:
        """The current body and its content type."""
        rendered = self._cache.get(openmetrics)
        if rendered is None:
            rendered = self._render(openmetrics)
        live = self._render_live(openmetrics)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if not gzip:
            return rendered.plain + live, content_type
        tail = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        trailer = struct.pack("<II", zlib.crc32(live, rendered.crc), (len(rendered.plain) + len(live)) & 0xFFFFFFFF)
        return (
            _GZIP_HEADER + rendered.deflated + tail.compress(live) + tail.flush(zlib.Z_FINISH) + trailer,
            content_type,
        )

    def _render_live(self, openmetrics: bool) -> bytes:
        if openmetrics:
            if self._live is None:
                return _OM_EOF
            return generate_openmetrics(self._live)  # ends with "# EOF"
        return generate_latest(self._live) if self._live is not None else b""

    def _render(self, openmetrics: bool) -> _Rendered:
        with self._render_lock:
            generation = self._generation()
            cached = self._cache.get(openmetrics)
            if cached is not None and cached.generation == generation:
                return cached
            if openmetrics:
                plain = generate_openmetrics(self._registry)
                plain = plain.removesuffix(_OM_EOF)
            else:
                plain = generate_latest(self._registry)
            compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            deflated = compressor.compress(plain) + compressor.flush(zlib.Z_FULL_FLUSH)
            rendered = _Rendered(generation, plain, deflated, zlib.crc32(plain))
            self._cache[openmetrics] = rendered
            return rendered

    def _run(self) -> None:
        while True:
            self._changed.wait()
            if self._stopped.is_set():
                return
            self._changed.clear()
            started = time.monotonic()
            for openmetrics in list(self._cache):  # only the formats somebody has asked for
                try:
                    self._render(openmetrics)
                except Exception:  # a bug in a collector must not kill the renderer
                    log.exception("rendering metrics failed")
            # At most one render per min_interval: a poll cycle publishes many changes in a burst.
            self._stopped.wait(max(0.0, self._min_interval - (time.monotonic() - started)))
