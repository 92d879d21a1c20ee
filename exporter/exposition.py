"""The /metrics body: rendered once per snapshot change, off the scrape path, plain and gzip.

Rendering tens of thousands of samples takes hundreds of milliseconds; a scrape must not pay that, nor wait
for a poll. A renderer thread renders again after a change (SnapshotRenderer: only the tenants that changed;
resting at least `min_interval` and four times the last render's duration in between) and a scrape serves the
last rendered bytes. The few process_* samples change on every scrape, so they are rendered per scrape and sent
after the cached part.
For gzip, the cached part is a raw-deflate segment ended with a full flush: such a segment depends on nothing
before or after it, so a scrape only compresses its small live tail and stitches one valid gzip stream together
(header, cached segment, live segment, CRC-32 continued from the cached part's).
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as _generate_text
from prometheus_client import utils as _prometheus_utils
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics
from prometheus_client.registry import Collector

from exporter.collector import TENANT_FAMILIES, global_families, polled_tenants, tenant_families
from exporter.config import TenantConfig
from exporter.snapshot import Snapshot, TenantState

log = logging.getLogger(__name__)

# prometheus_client's renderers carry no type hints.
generate_latest = cast(Callable[[Collector], bytes], _generate_text)
generate_openmetrics = cast(Callable[[Collector], bytes], _generate_openmetrics)
float_to_go_string = cast(Callable[[float], str], _prometheus_utils.floatToGoString)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OM_EOF = b"# EOF\n"
# A fixed gzip member header: deflate, no name, no mtime (so equal bodies give equal bytes), unknown OS.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# Level 3 deflates a 6 MiB exposition in ~13 ms to 236 KiB; level 6 takes ~50 ms for 206 KiB. Every change
# pays this, a scrape never does.
_LEVEL = 3
# Names that need no escaping in either format (prometheus_client's "legacy" character sets).
_PLAIN_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PLAIN_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# How long the renderer rests after a render, as a multiple of that render's duration (see _run).
_RENDER_REST = 4.0


@dataclass(frozen=True)
class _Rendered:
    generation: int
    plain: bytes
    deflated: bytes  # raw deflate of `plain`, ended by a full flush
    crc: int


class Exposition:
    """Serves bodies made by `render` (cached per generation) followed by `live` (rendered per request).

    `render(openmetrics)` returns the exposition without the OpenMetrics `# EOF`; it is only ever called with
    the render lock held.
    """

    def __init__(
        self,
        render: Callable[[bool], bytes],
        generation: Callable[[], int],
        live: CollectorRegistry | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self._render_body = render
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
        parts, content_type = self.parts(openmetrics, gzip)
        return b"".join(parts), content_type

    def parts(self, openmetrics: bool, gzip: bool) -> tuple[tuple[bytes, ...], str]:
        """The current body as consecutive parts (sent one after another, never copied together)."""
        rendered = self._cache.get(openmetrics)
        if rendered is None:
            rendered = self._render(openmetrics)
        live = self._render_live(openmetrics)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if not gzip:
            # Megabytes at a thousand tenants: appending the live part would copy them on every scrape.
            return (rendered.plain, live), content_type
        tail = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        trailer = struct.pack("<II", zlib.crc32(live, rendered.crc), (len(rendered.plain) + len(live)) & 0xFFFFFFFF)
        return (_GZIP_HEADER + rendered.deflated + tail.compress(live) + tail.flush(zlib.Z_FINISH) + trailer,), (
            content_type
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
            plain = self._render_body(openmetrics)
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
            # A poll cycle publishes a change per tenant, and a render costs time linear in the tenants: rest at
            # least min_interval and _RENDER_REST times the last render, so that rendering takes at most a fifth
            # of a core (and of the GIL the poller and the scrapes need) however many tenants change at once.
            took = time.monotonic() - started
            self._stopped.wait(max(self._min_interval - took, _RENDER_REST * took))


class _Families(Collector):
    """A collector of given families: hands single families to prometheus_client's renderers."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        """The families."""
        return self._families


def render(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    """The exposition of `registry` (OpenMetrics without `# EOF`), byte for byte what prometheus_client writes."""
    out: list[str] = []
    for metric in registry.collect():
        header, samples = _render_family(metric, openmetrics)
        out += (header, samples)
    return "".join(out).encode("utf-8")


@dataclass(frozen=True)
class _TenantLines:
    tenant: TenantConfig
    state: TenantState
    # Where this tenant's sample lines of each entry of TENANT_FAMILIES start in the last body, and how long they
    # are. A tenant rendered afresh has its lines in `fresh` until the next body is joined.
    starts: array[int]
    lengths: array[int]
    fresh: tuple[bytes, ...] | None = None


class SnapshotRenderer:
    """Renders a snapshot's partnercenter_* families, re-rendering only tenants whose state or config changed.

    A poll cycle changes one tenant at a time; rendering all of them after each change made the renderer's CPU
    grow with tenants x changes. Each tenant's place in the last body is kept against its (immutable) state and
    config objects, and a render joins, family by family, runs of unchanged tenants (one slice of the last body
    each) with the changed tenants' fresh lines: the same bytes prometheus_client would write for the collector
    (a test holds them equal), at a cost linear in the tenants that changed, with one copy of the text in memory.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self._tenants: dict[bool, dict[str, _TenantLines]] = {False: {}, True: {}}
        self._bodies: dict[bool, bytes] = {False: b"", True: b""}
        self._headers = {
            om: tuple(_render_family(spec.new(), om)[0].encode() for spec in TENANT_FAMILIES) for om in (False, True)
        }

    def __call__(self, openmetrics: bool) -> bytes:
        """The exposition of the current snapshot (OpenMetrics without `# EOF`). Not thread-safe."""
        snap = self._snapshot()
        cached = self._tenants[openmetrics]
        entries: list[tuple[str, _TenantLines]] = []
        for tenant, state in polled_tenants(snap):
            entry = cached.get(tenant.name)
            if entry is None or entry.state is not state or entry.tenant is not tenant:
                families = tenant_families(tenant, state)
                fresh = tuple(_render_family(f, openmetrics)[1].encode() for f in families)
                entry = _TenantLines(tenant, state, array("Q"), array("Q", map(len, fresh)), fresh)
            entries.append((tenant.name, entry))
        last = memoryview(self._bodies[openmetrics])
        count = len(TENANT_FAMILIES)
        starts = [array("Q", bytes(8 * count)) for _ in entries]
        out: list[bytes | memoryview] = []
        position = 0
        for index, header in enumerate(self._headers[openmetrics]):
            out.append(header)
            position += len(header)
            run_from = run_to = 0  # a run of unchanged tenants' lines, contiguous in the last body
            for (_, entry), new_starts in zip(entries, starts, strict=True):
                length = entry.lengths[index]
                if entry.fresh is None:
                    start = entry.starts[index]
                    if start != run_to:
                        if run_to > run_from:
                            out.append(last[run_from:run_to])
                        run_from = start
                    run_to = start + length
                else:
                    if run_to > run_from:
                        out.append(last[run_from:run_to])
                    run_from = run_to = 0
                    out.append(entry.fresh[index])
                new_starts[index] = position
                position += length
            if run_to > run_from:
                out.append(last[run_from:run_to])
        for metric in global_families(snap):
            out.extend(part.encode() for part in _render_family(metric, openmetrics))
        body = b"".join(out)
        del out, last  # the slices of the previous body must go before it can
        self._bodies[openmetrics] = body
        # Tenants no longer configured fall out here.
        self._tenants[openmetrics] = {
            name: _TenantLines(entry.tenant, entry.state, new_starts, entry.lengths)
            for (name, entry), new_starts in zip(entries, starts, strict=True)
        }
        return body


def _render_family(metric: Metric, openmetrics: bool) -> tuple[str, str]:
    """(HELP/TYPE lines, sample lines) of one family."""
    rendered = _render_simple(metric, openmetrics)
    if rendered is not None:
        return rendered
    one = _Families([metric])
    text = (generate_openmetrics(one).removesuffix(_OM_EOF) if openmetrics else generate_latest(one)).decode()
    header_end = 0
    for _ in range(3 if metric.unit and openmetrics else 2):
        header_end = text.index("\n", header_end) + 1
    return text[:header_end], text[header_end:]


def _render_simple(metric: Metric, openmetrics: bool) -> tuple[str, str] | None:
    """Header and sample lines of a gauge or counter family with plain names and samples; None for others.

    prometheus_client validates and escapes every name of every sample, which made rendering 60,000 samples
    take ~0.5 s; this checks each name once per family and writes the same bytes.
    """
    kind = metric.type
    if kind not in ("gauge", "counter") or not _PLAIN_METRIC_NAME.fullmatch(metric.name):
        return None
    sample_name = metric.name + "_total" if kind == "counter" else metric.name
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        name, doc = metric.name, doc.replace('"', r"\"")
        header = f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"
        if metric.unit:
            header += f"# UNIT {name} {metric.unit}\n"
    else:
        header = f"# HELP {sample_name} {doc}\n# TYPE {sample_name} {kind}\n"
    lines: list[str] = []
    plain_labels: set[str] = set()
    for sample in metric.samples:
        if sample.name != sample_name or sample.timestamp is not None or sample.exemplar is not None:
            return None
        value = float_to_go_string(sample.value)
        if not sample.labels:
            lines.append(f"{sample_name} {value}\n")
            continue
        pairs = []
        for key, label in sorted(sample.labels.items()):
            if key not in plain_labels:
                # prometheus_client escapes reserved (`__`) and non-legacy label names: leave those to it.
                if not _PLAIN_LABEL_NAME.fullmatch(key) or key.startswith("__"):
                    return None
                plain_labels.add(key)
            escaped = label
            if "\\" in label or "\n" in label or '"' in label:
                escaped = label.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            pairs.append(f'{key}="{escaped}"')
        lines.append(f"{sample_name}{{{','.join(pairs)}}} {value}\n")
    return header, "".join(lines)
