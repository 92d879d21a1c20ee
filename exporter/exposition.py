"""The /metrics body: rendered once per snapshot change, off the scrape path, plain and gzip.

Rendering tens of thousands of samples takes hundreds of milliseconds; a scrape must not pay that, nor wait
for a poll. A renderer thread renders again after a change (SnapshotRenderer: only the tenants that changed;
resting at least `min_interval` and four times the last render's duration in between) and a scrape serves the
last rendered parts (one per family). The few process_* samples change on every scrape, so they are rendered
per scrape and sent after the cached parts.
For gzip, each cached part has a raw-deflate segment ended with a full flush: such a segment depends on nothing
before or after it, so a scrape only compresses its small live tail and stitches one valid gzip stream together
(header, cached segments, live segment, CRC-32 continued from the cached parts'), and a render compresses only
the parts that changed.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as _generate_text
from prometheus_client import utils as _prometheus_utils
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics
from prometheus_client.registry import Collector

from exporter import malloc
from exporter.collector import (
    TENANT_FAMILIES,
    VALUE_FAMILIES,
    FamilySpec,
    Sample,
    global_families,
    poll_samples,
    polled_tenants,
    value_samples,
)
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


@dataclass(frozen=True, slots=True)
class _Rendered:
    generation: int
    plain: tuple[bytes, ...]
    deflated: tuple[bytes, ...]  # raw deflate of each part of `plain`, each ended by a full flush
    crc: int
    length: int


class Exposition:
    """Serves bodies made by `render` (cached per generation) followed by `live` (rendered per request).

    `render(openmetrics)` returns the exposition without the OpenMetrics `# EOF`, in consecutive parts; it is
    only ever called with the render lock held. A part that is the same object as in the last render is not
    compressed again. `pause()` is called between parts (exporter/gate.py: it waits while requests are served).
    """

    def __init__(
        self,
        render: Callable[[bool], Sequence[bytes]],
        generation: Callable[[], int],
        live: CollectorRegistry | None = None,
        min_interval: float = 1.0,
        pause: Callable[[], None] = lambda: None,
    ) -> None:
        self._render_body = render
        self._pause = pause
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
            return (*rendered.plain, live), content_type
        tail = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        trailer = struct.pack("<II", zlib.crc32(live, rendered.crc), (rendered.length + len(live)) & 0xFFFFFFFF)
        return (_GZIP_HEADER, *rendered.deflated, tail.compress(live) + tail.flush(zlib.Z_FINISH) + trailer), (
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
            plain = tuple(self._render_body(openmetrics))
            # Parts unchanged since the last render keep their compressed segment.
            known = dict(zip(map(id, cached.plain), cached.deflated, strict=True)) if cached is not None else {}
            crc = length = 0
            deflated = []
            for part in plain:
                self._pause()
                segment = known.get(id(part))
                deflated.append(_deflate(part) if segment is None else segment)
                crc = zlib.crc32(part, crc)
                length += len(part)
            rendered = _Rendered(generation, plain, tuple(deflated), crc, length)
            self._cache[openmetrics] = rendered
            del cached, known
            malloc.trim()  # the last render's text and the lines joined into this one are free now
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


def _deflate(data: bytes) -> bytes:
    """A raw-deflate segment of `data` that depends on nothing before or after it (ended by a full flush)."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


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


@dataclass(frozen=True, slots=True)
class _TenantLines:
    tenant: TenantConfig
    state: TenantState
    # Where this tenant's sample lines of each entry of TENANT_FAMILIES start in that family's part of the last
    # body, and how long they are. Until the next parts are made, a re-rendered tenant keeps the lines that
    # changed in `fresh` (one object: thousands of small ones would leave the allocator's pools fragmented), and
    # for a family whose bit is set in `in_fresh`, `starts` says where in `fresh` its lines are.
    starts: array[int]
    lengths: array[int]
    fresh: bytes = b""
    in_fresh: int = 0


class SnapshotRenderer:
    """Renders a snapshot's partnercenter_* families, re-rendering only tenants whose state or config changed.

    A poll cycle changes one tenant at a time; rendering all of them after each change made the renderer's CPU
    grow with tenants x changes. Each tenant's place in the last body is kept against its (immutable) state and
    config objects, and a render joins, family by family, runs of unchanged tenants (one slice of the last body
    each) with the changed tenants' fresh lines: the same bytes prometheus_client would write for the collector
    (a test holds them equal), at a cost linear in the tenants that changed, with one copy of the text in memory.

    The body is kept in parts, one per tenant family and one for the global families. A family whose text came
    out unchanged (balances rarely move; poll timestamps always do) stays the same object, which the exposition
    need not compress again, so a render makes new text only for the families that changed instead of a whole
    new body next to the old. `pause()` is called before each tenant (exporter/gate.py).
    """

    def __init__(self, snapshot: Callable[[], Snapshot], pause: Callable[[], None] = lambda: None) -> None:
        self._snapshot = snapshot
        self._pause = pause
        self._tenants: dict[bool, dict[str, _TenantLines]] = {False: {}, True: {}}
        self._parts: dict[bool, tuple[bytes, ...]] = {False: (), True: ()}
        self._headers = {
            om: tuple(_render_family(spec.new(), om)[0].encode() for spec in TENANT_FAMILIES) for om in (False, True)
        }

    def __call__(self, openmetrics: bool) -> bytes:
        """The exposition of the current snapshot (OpenMetrics without `# EOF`). Not thread-safe."""
        return b"".join(self.parts(openmetrics))

    def parts(self, openmetrics: bool) -> tuple[bytes, ...]:
        """`self(openmetrics)` in consecutive parts; a part equal to the last call's is the same object."""
        snap = self._snapshot()
        cached = self._tenants[openmetrics]
        entries: list[tuple[str, _TenantLines]] = []
        for tenant, state in polled_tenants(snap):
            self._pause()
            entry = cached.get(tenant.name)
            if entry is None or entry.state is not state or entry.tenant is not tenant:
                entry = self._rerender(tenant, state, entry, openmetrics)
            entries.append((tenant.name, entry))
        count = len(TENANT_FAMILIES)
        last = self._parts[openmetrics] or (b"",) * (count + 1)
        # A family no tenant has new lines for, among the same tenants in the same order, is the last one: its
        # megabytes are neither joined nor compared again (most of a render where polls brought the same values).
        touched = (1 << count) - 1
        if self._parts[openmetrics] and [name for name, _ in entries] == list(cached):
            touched = 0
            for _, entry in entries:
                touched |= entry.in_fresh
        starts = [array("Q", entry.starts) for _, entry in entries]
        parts: list[bytes] = []
        for index, header in enumerate(self._headers[openmetrics]):
            if not touched >> index & 1:
                parts.append(last[index])
                continue
            part = _join_family(header, index, entries, starts, last[index])
            parts.append(last[index] if part == last[index] else part)
            del part  # an unchanged family's new copy goes before the next family is joined
        globals_part = b"".join(p.encode() for m in global_families(snap) for p in _render_family(m, openmetrics))
        parts.append(last[count] if globals_part == last[count] else globals_part)
        self._parts[openmetrics] = result = tuple(parts)
        # Tenants no longer configured fall out here.
        self._tenants[openmetrics] = {
            name: _TenantLines(entry.tenant, entry.state, new_starts, entry.lengths)
            for (name, entry), new_starts in zip(entries, starts, strict=True)
        }
        return result

    def _rerender(
        self, tenant: TenantConfig, state: TenantState, old: _TenantLines | None, openmetrics: bool
    ) -> _TenantLines:
        """A tenant's lines afresh; those equal to its lines in the last parts are taken from there instead.

        A poll changes a few one-line families (timestamps, durations, counters) and seldom the balances, which
        are most of a tenant's text: when its config and summaries are unchanged, the value families are not
        written again at all, and of the rest only lines that changed are kept (a render's extra memory).
        """
        count = len(TENANT_FAMILIES)
        lengths = array("Q", bytes(8 * count))
        starts = array("Q", bytes(8 * count))
        fresh: list[bytes] = []
        position = in_fresh = 0
        first = 0
        if old is not None and old.tenant is tenant and old.state.summaries == state.summaries:
            first = VALUE_FAMILIES
            starts[:first] = old.starts[:first]
            lengths[:first] = old.lengths[:first]
            lines = _lines(_POLL_LINES, poll_samples(tenant, state))
        else:
            lines = _lines(_VALUE_LINES, value_samples(tenant, state.summaries))
            lines += _lines(_POLL_LINES, poll_samples(tenant, state))
        last = self._parts[openmetrics]
        for index, text in enumerate(lines, first):
            lengths[index] = len(text)
            if old is not None and old.lengths[index] == len(text):
                start = old.starts[index]
                if memoryview(last[index])[start : start + len(text)] == text:
                    starts[index] = start
                    continue
            starts[index] = position
            position += len(text)
            in_fresh |= 1 << index
            fresh.append(text)
        return _TenantLines(tenant, state, starts, lengths, b"".join(fresh), in_fresh)


class _SampleLines:
    """Writes one tenant family's samples as prometheus_client does (the same in both formats), without
    building its family and sample objects: that was half the cost of re-rendering a tenant."""

    def __init__(self, spec: FamilySpec) -> None:
        if not _PLAIN_METRIC_NAME.fullmatch(spec.name) or not all(map(_plain_label_name, spec.labels)):
            raise ValueError(f"{spec.name}: names that need escaping are prometheus_client's to render")
        sample_name = spec.name + "_total" if spec.kind == "counter" else spec.name
        # prometheus_client writes labels sorted by name; the value is the argument after the labels.
        pairs = ",".join(f'{label}="{{{spec.labels.index(label)}}}"' for label in sorted(spec.labels))
        self._format = f"{sample_name}{{{{{pairs}}}}} {{{len(spec.labels)}}}\n".format

    def __call__(self, samples: list[Sample]) -> bytes:
        line, value_text = self._format, float_to_go_string
        return "".join(
            line(*(labels if _plain(labels) else map(_escape, labels)), value_text(value)) for labels, value in samples
        ).encode()


def _plain_label_name(name: str) -> bool:
    """A label name prometheus_client writes as it is (reserved `__` names and others it escapes itself)."""
    return _PLAIN_LABEL_NAME.fullmatch(name) is not None and not name.startswith("__")


def _plain(labels: tuple[str, ...]) -> bool:
    joined = "".join(labels)
    return "\\" not in joined and "\n" not in joined and '"' not in joined


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_VALUE_LINES = tuple(_SampleLines(spec) for spec in TENANT_FAMILIES[:VALUE_FAMILIES])
_POLL_LINES = tuple(_SampleLines(spec) for spec in TENANT_FAMILIES[VALUE_FAMILIES:])


def _lines(writers: tuple[_SampleLines, ...], samples: list[list[Sample]]) -> list[bytes]:
    return [write(family) for write, family in zip(writers, samples, strict=True)]


def _join_family(
    header: bytes, index: int, entries: list[tuple[str, _TenantLines]], starts: list[array[int]], last: bytes
) -> bytes:
    """One tenant family's text: `header`, then every tenant's lines, noting where they start in `starts`."""
    previous = memoryview(last)
    out: list[bytes | memoryview] = [header]
    position = len(header)
    run_from = run_to = 0  # a run of unchanged tenants' lines, contiguous in the last text
    for (_, entry), new_starts in zip(entries, starts, strict=True):
        length = entry.lengths[index]
        if not entry.in_fresh >> index & 1:
            start = entry.starts[index]
            if start != run_to:
                if run_to > run_from:
                    out.append(previous[run_from:run_to])
                run_from = start
            run_to = start + length
        else:
            if run_to > run_from:
                out.append(previous[run_from:run_to])
            run_from = run_to = 0
            fresh_start = entry.starts[index]
            out.append(memoryview(entry.fresh)[fresh_start : fresh_start + length])
        new_starts[index] = position
        position += length
    if run_to > run_from:
        out.append(previous[run_from:run_to])
    part = b"".join(out)
    del out, previous  # the slices of the last text must go before it can
    return part


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
                if not _plain_label_name(key):
                    return None
                plain_labels.add(key)
            pairs.append(f'{key}="{_escape(label)}"')
        lines.append(f"{sample_name}{{{','.join(pairs)}}} {value}\n")
    return header, "".join(lines)
