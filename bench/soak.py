"""Soak test: the real exporter process, for minutes, against the simulator process with many churning tenants.

    python bench/soak.py --duration 600          # the long run (numbers in docs/soak.md)
    python bench/soak.py --duration 120 --csv samples.csv

Owns the whole soak: a generated scenario (many tenants, tokens living a few seconds, random faults of every
kind on a share of the tenants), two valid exporter configs swapped by SIGHUP every so often (the second drops
some tenants and adds others), concurrent scrapers of /metrics (plain, gzip, OpenMetrics) and `/`, and a
sampler of the exporter's RSS, open file descriptors and threads from /proc. It prints a table over time and a
summary (first vs last, medians of the first and last thirds after warm-up, least-squares slope) and exits 1
when a check failed: the exporter died or logged a traceback, a scrape failed or did not parse, a reload was not
applied, the simulator did not see every tenant, a fault class never showed up, a secret reached the log,
shutdown was not clean, or a resource grew beyond noise (see `Limits`). tests/test_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families as parse_text

# `python bench/soak.py` puts bench/ first on sys.path; the repo root holds `exporter` and `tests`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.processes import Process, sim_stats, start_simulator
from tests.support import free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MIB = 1024.0  # KiB per MiB: /proc reports RSS in KiB

# Every fault kind of the scenario format, with settings that suit a 1 s exporter timeout. A faulty tenant
# gets one of these round-robin (so each is in play) plus up to two random ones, each with a probability.
FAULT_CATALOGUE: tuple[dict[str, object], ...] = (
    {"kind": "status", "status": 400},
    {"kind": "status", "status": 401},
    {"kind": "status", "status": 403},
    {"kind": "status", "status": 404},
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
    {"kind": "status", "status": 503, "retry_after": 1},
    {"kind": "status", "status": 504, "body": ""},
    {"kind": "status", "status": 500, "endpoint": "token"},
    {"kind": "status", "status": 401, "endpoint": "token"},
    {"kind": "throttle", "retry_after": 1},
    {"kind": "throttle", "retry_after": 3},
    {"kind": "latency", "seconds": 0.3},
    {"kind": "timeout", "seconds": 2},  # longer than the exporter's timeout: a read timeout
    {"kind": "reset"},
    {"kind": "reset", "endpoint": "token"},
    {"kind": "html"},
    {"kind": "xml"},
    {"kind": "empty"},
    {"kind": "truncated"},
    {"kind": "huge"},  # size_mb from SoakOptions.huge_mb
    {"kind": "slow_body", "seconds": 2},  # dribbled past the timeout
    {"kind": "slow_body", "seconds": 0.4},  # slow but in time
)
# Error classes (status_code label values) the faults above must produce during a soak.
EXPECTED_ERROR_CLASSES = ("400", "401", "404", "429", "500", "503", "timeout", "connection", "invalid_response")

CURRENCIES = (("USD", "$"), ("EUR", "€"), ("GBP", "£"), ("JPY", "¥"), ("AUD", "A$"), ("CAD", "C$"))
QUIRKS = ("bom", "naive_dates", "integer_amounts", "lowercase_invoice_types", "null_symbol", "seven_digit_fractions")


@dataclass(frozen=True)
class Limits:
    """What counts as growth beyond noise, judged on the samples after `warmup` seconds.

    The median of the last third of those samples is compared with the median of the first third, so that a
    single spike (a huge body, a burst of scrapes) moves neither.
    """

    warmup: float = 15.0
    rss_mib: float = 4.0  # RSS may grow by at most this much ...
    rss_fraction: float = 0.10  # ... and at most this fraction
    # Open file descriptors: at most this many more. Upstream keep-alive sockets (up to 2 per client slot) and
    # scrape connections come and go with faults and reloads; a leak per poll grows by hundreds a minute.
    fds: int = 8
    threads: int = 3
    min_samples: int = 9


@dataclass(frozen=True)
class SoakOptions:
    """Knobs of one soak run; the defaults are the long run's."""

    duration: float = 600.0  # seconds of load after the exporter is up
    tenants: int = 200
    interval: float = 2.0  # exporter poll interval, seconds
    timeout: float = 1.0  # exporter per-request timeout, seconds
    concurrency: int = 16
    token_lifetime: int = 3  # seconds; each tenant gets 2-5 around it so that tokens churn all the time
    fault_share: float = 0.4  # share of tenants with faults
    app_user_every: int = 10  # every Nth tenant is App+User (refresh token rotation, endpoint summaries)
    swap_share: float = 0.1  # share of tenants only in config A, and again only in config B
    reload_every: float = 15.0  # seconds between SIGHUPs
    scrapers: int = 3  # concurrent scraper threads
    scrape_pause: float = 1.0  # seconds each scraper rests between requests
    huge_mb: float = 1.0  # size of `huge` fault bodies
    sample_every: float = 1.0
    seed: int = 1
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class PlannedTenant:
    """One tenant as both the scenario and the configs see it."""

    index: int
    name: str
    tenant_id: str
    client_id: str
    secret: str
    refresh_token: str | None
    secret_in_file: bool
    token_lifetime: int
    faults: tuple[dict[str, object], ...]


@dataclass(frozen=True)
class Sample:
    """One reading of the exporter process from /proc."""

    t: float  # seconds since the exporter answered /healthz
    rss_kib: int
    fds: int
    threads: int
    cpu_seconds: float  # user + system, cumulative
    sim_requests: int  # requests the simulator has served, cumulative


@dataclass(frozen=True)
class Trend:
    """How one resource moved over the steady part of a run."""

    name: str
    unit: str
    first: float
    last: float
    low: float
    high: float
    head_median: float
    tail_median: float
    slope_per_min: float


@dataclass(frozen=True)
class MetricsView:
    """What the latest plain scrape said, for the reload and end checks."""

    tenants: frozenset[str]  # tenants with request counters: the configured ones
    up: int  # tenants whose last poll succeeded
    reload_ok: float | None
    reload_time: float | None
    errors: dict[str, float]  # status_code -> total over tenants and endpoints
    requests: dict[str, float]  # endpoint -> total


@dataclass
class ScrapeTally:
    """Shared by the scraper threads: counts, latencies, failures and the latest view."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    view: MetricsView | None = None
    error_classes: set[str] = field(default_factory=set)  # status_code labels ever counted, tenants gone included

    def record(self, variant: str, seconds: float) -> None:
        """Count one good scrape."""
        with self.lock:
            self.ok[variant] += 1
            self.latencies.setdefault(variant, []).append(seconds)

    def fail(self, message: str) -> None:
        """Count one failed scrape; keep the first few messages."""
        with self.lock:
            self.failed += 1
            if len(self.failures) < 20:
                self.failures.append(message)


@dataclass
class SoakResult:
    """Everything a run measured, and what went wrong."""

    options: SoakOptions
    samples: list[Sample]
    problems: list[str]
    tally: ScrapeTally
    reloads_sent: int
    reloads_applied: int
    reload_latencies: list[float]
    sim_totals: dict[str, int]
    final_view: MetricsView | None
    exporter_log_bytes: int

    def report(self, max_rows: int = 25) -> str:
        """The table, the summary and the verdict, as Markdown."""
        parts = [
            _describe(self.options),
            "",
            format_table(self.samples, max_rows),
            "",
            format_trends(trends(self.samples, self.options.limits.warmup), self.options.limits),
            "",
            self._activity(),
            "",
            "Result: " + ("PASS" if not self.problems else "FAIL"),
        ]
        parts += [f"- {p}" for p in self.problems]
        return "\n".join(parts)

    def _activity(self) -> str:
        lines = ["| activity | |", "|---|---|"]
        with self.tally.lock:
            ok = dict(self.tally.ok)
            latencies = {k: list(v) for k, v in self.tally.latencies.items()}
            failed = self.tally.failed
        for variant in sorted(ok):
            lat = sorted(latencies.get(variant, [0.0]))
            p50 = lat[len(lat) // 2] * 1000
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            lines.append(
                f"| scrapes {variant} | {ok[variant]} ok; response time p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"max {lat[-1] * 1000:.1f} ms |"
            )
        lines.append(f"| failed scrapes | {failed} |")
        slowest = max(self.reload_latencies, default=None)
        lines.append(
            f"| reloads (SIGHUP) | {self.reloads_sent} sent, {self.reloads_applied} seen applied in /metrics"
            + (f" (each within {slowest:.1f} s, scrape cadence included)" if slowest is not None else "")
            + " |"
        )
        if len(self.samples) >= 2:
            first, last = self.samples[0], self.samples[-1]
            span = max(last.t - first.t, 1e-9)
            lines.append(
                f"| exporter CPU | {100 * (last.cpu_seconds - first.cpu_seconds) / span:.0f}% of a core on average "
                f"({last.cpu_seconds:.0f} s in all) |"
            )
            lines.append(
                f"| simulator load | {(last.sim_requests - first.sim_requests) / span:.0f} requests/s on average |"
            )
        lines.append(
            "| simulator requests | " + ", ".join(f"{k} {v}" for k, v in sorted(self.sim_totals.items())) + " |"
        )
        if self.final_view is not None:
            errors = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.final_view.errors.items()) if v)
            lines.append(f"| exporter error counters (current tenants) | {errors} |")
        lines.append(f"| exporter log | {self.exporter_log_bytes / 1e6:.1f} MB |")
        return "\n".join(lines)


# --- scenario and configs -------------------------------------------------------------------------------------


def plan_tenants(options: SoakOptions) -> list[PlannedTenant]:
    """The tenants of a run, reproducible from the seed."""
    rng = random.Random(options.seed)
    faulty = set(rng.sample(range(options.tenants), round(options.tenants * options.fault_share)))
    planned = []
    next_fault = 0
    for i in range(options.tenants):
        label = f"{i + 1:04d}"
        tenant_id = f"soak-{label}.onmicrosoft.com"
        faults: list[dict[str, object]] = []
        if i in faulty:
            picks = [FAULT_CATALOGUE[next_fault % len(FAULT_CATALOGUE)]]
            next_fault += 1
            picks += rng.sample(FAULT_CATALOGUE, rng.randint(0, 2))
            for n, pick in enumerate(picks):
                # Rare enough that every faulty tenant still succeeds now and then, huge bodies rarer still; the
                # round-robin pick fires often enough that even a one-minute run sees every error class.
                huge = pick["kind"] == "huge"
                extra: dict[str, object] = {"size_mb": options.huge_mb} if huge else {}
                probability = rng.uniform(0.15 if n == 0 else 0.05, 0.3)
                probability = min(probability, 0.1) if huge else probability
                faults.append({**pick, **extra, "probability": round(probability, 2)})
        planned.append(
            PlannedTenant(
                index=i,
                name=f"soak-{label}",
                tenant_id=tenant_id,
                client_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant_id)),
                secret=f"soak-secret-{label}-{rng.getrandbits(32):08x}",
                refresh_token=f"soak-refresh-{label}-{rng.getrandbits(32):08x}"
                if options.app_user_every and i % options.app_user_every == 0
                else None,
                secret_in_file=i % 2 == 1,
                token_lifetime=max(2, options.token_lifetime + rng.randint(-1, 2)),
                faults=tuple(faults),
            )
        )
    return planned


def scenario_yaml(options: SoakOptions, tenants: Sequence[PlannedTenant]) -> str:
    """The simulator scenario for `tenants`."""
    rng = random.Random(options.seed + 1)
    docs = []
    for t in tenants:
        count = 2 if t.refresh_token else 1
        currencies = []
        for c in range(count):
            code, symbol = CURRENCIES[(t.index + c) % len(CURRENCIES)]
            recurring, onetime = rng.randint(100, 90000), rng.randint(0, 20000)
            currency: dict[str, object] = {
                "code": code,
                "symbol": symbol,
                "balance": float(recurring + onetime),
                "invoice_types": {"Recurring": float(recurring), "OneTime": float(onetime)},
                "latest_invoice_date": "2026-11-01T00:00:00Z",
            }
            if t.index % 2 == 0:
                # Moving balances: the exposition changes content, not just counters.
                currency["drift"] = {
                    "invoice_every": 20,
                    "invoice_amount": 300,
                    "payment_every": 45,
                    "payment_amount": 500,
                }
            currencies.append(currency)
        doc: dict[str, object] = {
            "tenant_id": t.tenant_id,
            "client_id": t.client_id,
            "client_secret": t.secret,
            "token_lifetime": t.token_lifetime,
            "currencies": currencies,
        }
        if t.refresh_token:
            doc["refresh_token"] = t.refresh_token
        if t.index % 3 == 0:
            doc["quirks"] = rng.sample(QUIRKS, rng.randint(1, 2))
        if t.faults:
            doc["faults"] = [dict(f) for f in t.faults]
        docs.append(doc)
    scenario = {"seed": options.seed, "token_lifetime": options.token_lifetime, "tenants": docs}
    return yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True)


def config_variants(options: SoakOptions, tenants: Sequence[PlannedTenant]) -> tuple[list[PlannedTenant], ...]:
    """Config A leaves out the last `swap_share` of the tenants, config B the first: each reload swaps both."""
    swap = max(1, round(len(tenants) * options.swap_share))
    return list(tenants[:-swap]), list(tenants[swap:])


def config_yaml(options: SoakOptions, url: str, tenants: Sequence[PlannedTenant], variant: int) -> str:
    """One exporter config; `variant` 0 or 1 also changes the thresholds."""
    thresholds = (
        {"USD": {"warning": 50000, "critical": 100000}}
        if variant == 0
        else {"USD": {"warning": 60000, "critical": 90000}, "EUR": {"warning": 40000, "critical": 80000}}
    )
    entries = []
    for t in tenants:
        entry: dict[str, object] = {"name": t.name, "tenant_id": t.tenant_id, "client_id": t.client_id}
        if t.secret_in_file:
            entry["client_secret_file"] = f"secrets/{t.name}"
        else:
            entry["client_secret"] = t.secret
        if t.refresh_token:
            entry["refresh_token_file"] = f"tokens/{t.name}.token"
            entry["endpoint"] = "summaries"
        entries.append(entry)
    doc = {
        "interval": options.interval,
        "timeout": options.timeout,
        "concurrency": options.concurrency,
        "max_staleness": "30s",
        "api_url": url,
        "login_url": url,
        "state_file": "state.json",
        "thresholds": thresholds,
        "tenants": entries,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step, so that a reload never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- processes and /proc --------------------------------------------------------------------------------------


def start_exporter_module(workdir: Path, config: Path) -> Process:
    """`python -m exporter` on a free port (so the pid is the exporter's own); returns once /healthz answers."""
    port = free_port()
    argv = [sys.executable, "-m", "exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    log_path = workdir / "exporter.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
    process = Process(proc, f"http://127.0.0.1:{port}", log_path)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the exporter exited with {proc.returncode}:\n{process.log()[-4000:]}")
        return httpx.get(process.url + "/healthz", timeout=2).status_code == 200

    try:
        wait_until(up, timeout=30, what="the exporter to listen")
    except BaseException:
        process.stop(signal.SIGKILL)
        raise
    return process


def read_proc(pid: int) -> tuple[int, int, int, float]:
    """(RSS KiB, open fds, threads, CPU seconds) of a live process."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    # Fields after the command name, which may itself hold spaces: utime and stime are the 12th and 13th.
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return rss, fds, threads, cpu


# --- scrapers -------------------------------------------------------------------------------------------------


def _view(text: str) -> MetricsView:
    tenants: set[str] = set()
    up = 0
    reload_ok = reload_time = None
    errors: dict[str, float] = {}
    requests: dict[str, float] = {}
    for family in parse_text(text):
        for s in family.samples:
            if s.name == "partnercenter_up":
                up += int(s.value == 1)
            elif s.name == "partnercenter_config_last_reload_successful":
                reload_ok = s.value
            elif s.name == "partnercenter_config_last_reload_success_timestamp_seconds":
                reload_time = s.value
            elif s.name == "partnercenter_api_request_errors_total":
                code = s.labels["status_code"]
                errors[code] = errors.get(code, 0.0) + s.value
            elif s.name == "partnercenter_api_requests_total":
                # Seeded at 0 for every configured tenant the moment a config is applied.
                tenants.add(s.labels["tenant"])
                endpoint = s.labels["endpoint"]
                requests[endpoint] = requests.get(endpoint, 0.0) + s.value
    if "partnercenter_exporter_build_info" not in text:
        raise ValueError("no partnercenter_exporter_build_info in /metrics")
    return MetricsView(frozenset(tenants), up, reload_ok, reload_time, errors, requests)


def _fetch(client: httpx.Client, url: str, variant: str) -> tuple[httpx.Response, bytes]:
    """One request of one kind, body read in full: the part of a scrape that is timed."""
    headers = {
        "plain": {"Accept-Encoding": "identity"},
        "gzip": {"Accept-Encoding": "gzip"},
        "openmetrics": {"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "identity"},
        "landing": {},
    }[variant]
    path = "/" if variant == "landing" else "/metrics"
    # Raw bytes: for gzip, decompressing them ourselves lets gzip.decompress check the CRC and length.
    with client.stream("GET", url + path, headers=headers, timeout=10) as answer:
        return answer, b"".join(answer.iter_raw())


def scrape_once(client: httpx.Client, url: str, variant: str, tally: ScrapeTally) -> None:
    """One scrape of one kind; a non-200, a body that does not parse or a wrong encoding is a failure."""
    try:
        started = time.monotonic()
        answer, raw = _fetch(client, url, variant)
        took = time.monotonic() - started
        encoding = answer.headers.get("content-encoding", "identity")
        content_type = answer.headers.get("content-type", "")
        if answer.status_code != 200 or encoding != ("gzip" if variant == "gzip" else "identity"):
            raise ValueError(f"status {answer.status_code}, content-encoding {encoding}")
        if variant == "landing":
            if "Partner Center Exporter" not in raw.decode():
                raise ValueError("not the landing page")
        elif variant == "openmetrics":
            if not content_type.startswith("application/openmetrics-text"):
                raise ValueError(f"content-type {content_type}")
            list(openmetrics_parser.text_string_to_metric_families(raw.decode()))  # type: ignore[no-untyped-call]
        else:
            view = _view((gzip.decompress(raw) if variant == "gzip" else raw).decode())
            if variant == "plain":
                with tally.lock:
                    tally.view = view
                    tally.error_classes.update(code for code, total in view.errors.items() if total)
    except Exception as exc:  # any failure of any kind is what the soak counts
        tally.fail(f"{variant}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    tally.record(variant, took)


def scraper(url: str, number: int, stop: threading.Event, tally: ScrapeTally, pause: float) -> None:
    """Scrape every kind in turn until `stop`; scraper 0 opens a new connection per request, others keep one."""
    variants = ("plain", "gzip", "openmetrics", "landing")
    turn = number
    client = httpx.Client()
    try:
        while not stop.is_set():
            if number == 0:
                with httpx.Client() as fresh:
                    scrape_once(fresh, url, variants[turn % len(variants)], tally)
            else:
                scrape_once(client, url, variants[turn % len(variants)], tally)
            turn += 1
            stop.wait(pause)
    finally:
        client.close()


# --- analysis -------------------------------------------------------------------------------------------------

_RESOURCES: tuple[tuple[str, str, Callable[[Sample], float]], ...] = (
    ("RSS", "MiB", lambda s: s.rss_kib / MIB),
    ("open fds", "", lambda s: float(s.fds)),
    ("threads", "", lambda s: float(s.threads)),
)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def _thirds(steady: Sequence[Sample]) -> tuple[Sequence[Sample], Sequence[Sample]]:
    third = max(1, len(steady) // 3)
    return steady[:third], steady[-third:]


def trends(samples: Sequence[Sample], warmup: float) -> list[Trend]:
    """First vs last, thirds' medians and slope of each resource over the samples after `warmup`."""
    steady = [s for s in samples if s.t >= warmup] or list(samples)
    if not steady:
        return []
    head, tail = _thirds(steady)
    result = []
    for name, unit, get in _RESOURCES:
        values = [get(s) for s in steady]
        result.append(
            Trend(
                name=name,
                unit=unit,
                first=values[0],
                last=values[-1],
                low=min(values),
                high=max(values),
                head_median=statistics.median(get(s) for s in head),
                tail_median=statistics.median(get(s) for s in tail),
                slope_per_min=_slope([s.t for s in steady], values) * 60,
            )
        )
    return result


def growth_problems(samples: Sequence[Sample], limits: Limits) -> list[str]:
    """Growth beyond noise after the warm-up: median of the last third vs the first third (empty if none)."""
    steady = [s for s in samples if s.t >= limits.warmup]
    if len(steady) < limits.min_samples:
        return [f"only {len(steady)} samples after the {limits.warmup:.0f} s warm-up (need {limits.min_samples})"]
    head, tail = _thirds(steady)
    problems = []
    rss_head = statistics.median(s.rss_kib for s in head)
    rss_growth = statistics.median(s.rss_kib for s in tail) - rss_head
    if rss_growth > limits.rss_mib * MIB or rss_growth > limits.rss_fraction * rss_head:
        problems.append(
            f"RSS grew {rss_growth / MIB:+.1f} MiB ({rss_growth / rss_head:+.1%}) from the first to the last third "
            f"(limit {limits.rss_mib} MiB and {limits.rss_fraction:.0%})"
        )
    counted: tuple[tuple[str, int, Callable[[Sample], int]], ...] = (
        ("open fds", limits.fds, lambda s: s.fds),
        ("threads", limits.threads, lambda s: s.threads),
    )
    for name, limit, get in counted:
        growth = statistics.median(get(s) for s in tail) - statistics.median(get(s) for s in head)
        if growth > limit:
            problems.append(f"{name} grew by {growth:+.0f} from the first to the last third (limit {limit})")
    return problems


def format_table(samples: Sequence[Sample], max_rows: int) -> str:
    """Samples as a Markdown table, thinned to about `max_rows` rows (the last one always shown)."""
    lines = [
        "| t (s) | RSS (MiB) | open fds | threads | CPU (% of a core) | simulator req/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    if not samples:
        return "\n".join(lines)
    step = max(1, -(-len(samples) // max_rows))
    shown = list(samples[::step])
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    previous: Sample | None = None
    for s in shown:
        cpu = rate = ""
        if previous is not None and s.t > previous.t:
            cpu = f"{100 * (s.cpu_seconds - previous.cpu_seconds) / (s.t - previous.t):.0f}"
            rate = f"{(s.sim_requests - previous.sim_requests) / (s.t - previous.t):.0f}"
        lines.append(f"| {s.t:.0f} | {s.rss_kib / MIB:.1f} | {s.fds} | {s.threads} | {cpu} | {rate} |")
        previous = s
    return "\n".join(lines)


def format_trends(found: Sequence[Trend], limits: Limits) -> str:
    """The summary table of `trends`."""
    lines = [
        f"After the {limits.warmup:.0f} s warm-up:",
        "",
        "| resource | first | last | min | max | median, first third | median, last third | slope per minute |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in found:
        digits = 1 if t.unit else 0
        unit = f" {t.unit}" if t.unit else ""
        lines.append(
            f"| {t.name}{' (' + t.unit + ')' if t.unit else ''} | {t.first:.{digits}f} | {t.last:.{digits}f} | "
            f"{t.low:.{digits}f} | {t.high:.{digits}f} | {t.head_median:.{digits}f} | {t.tail_median:.{digits}f} | "
            f"{t.slope_per_min:+.2f}{unit} |"
        )
    return "\n".join(lines)


def _describe(o: SoakOptions) -> str:
    return (
        f"Soak: {o.duration:.0f} s, {o.tenants} tenants (share {o.fault_share:.0%} with faults, every "
        f"{o.app_user_every}th App+User), interval {o.interval:g} s, timeout {o.timeout:g} s, concurrency "
        f"{o.concurrency}, token lifetime ~{o.token_lifetime} s, SIGHUP every {o.reload_every:g} s, "
        f"{o.scrapers} scrapers."
    )


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class _Reloads:
    """SIGHUPs sent and whether each one showed up in /metrics."""

    sent: int = 0
    applied: int = 0
    latencies: list[float] = field(default_factory=list)
    pending: tuple[frozenset[str], float, float] | None = None  # expected tenants, sent at, previous reload time

    def check(self, view: MetricsView | None, now: float) -> bool:
        """True when the pending reload (if any) is visible in `view`."""
        if self.pending is None:
            return True
        expected, sent_at, previous = self.pending
        if (
            view is not None
            and view.reload_ok == 1
            and view.reload_time is not None
            and view.reload_time > previous
            and view.tenants == expected
        ):
            self.applied += 1
            self.latencies.append(now - sent_at)
            self.pending = None
            return True
        return False

    def overdue(self, now: float, limit: float) -> bool:
        """True when the pending reload was sent more than `limit` seconds ago."""
        return self.pending is not None and now - self.pending[1] > limit


def run_soak(options: SoakOptions, workdir: Path, progress: Callable[[str], None] | None = None) -> SoakResult:
    """Run one soak in `workdir` and return its samples and problems (raises only when a process cannot start)."""
    tenants = plan_tenants(options)
    (workdir / "secrets").mkdir()
    (workdir / "tokens").mkdir()
    for t in tenants:
        if t.secret_in_file:
            (workdir / "secrets" / t.name).write_text(t.secret + "\n")
        if t.refresh_token:
            (workdir / "tokens" / f"{t.name}.token").write_text(t.refresh_token + "\n")
    sim = start_simulator(workdir, scenario_yaml(options, tenants))
    try:
        config = workdir / "config.yml"
        variants = config_variants(options, tenants)
        configs = [config_yaml(options, sim.url, v, n) for n, v in enumerate(variants)]
        write_atomically(config, configs[0])
        exporter = start_exporter_module(workdir, config)
        run = _Run(options, tenants, variants, configs, config, sim, exporter, progress or (lambda _: None))
        run.go()
    finally:
        sim.stop()
    return run.result()


@dataclass
class _Run:
    """One soak in progress: the processes, the load threads, and everything measured so far."""

    options: SoakOptions
    tenants: Sequence[PlannedTenant]
    variants: tuple[list[PlannedTenant], ...]
    configs: list[str]
    config: Path
    sim: Process
    exporter: Process
    say: Callable[[str], None]
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tally: ScrapeTally = field(default_factory=ScrapeTally)
    reloads: _Reloads = field(default_factory=_Reloads)
    stop: threading.Event = field(default_factory=threading.Event)
    sim_totals: dict[str, int] = field(default_factory=dict)
    health_failures: int = 0

    def go(self) -> None:
        """Load, sample and reload for `duration`, then run the end checks."""
        threads = [
            threading.Thread(
                target=scraper,
                args=(self.exporter.url, n, self.stop, self.tally, self.options.scrape_pause),
                name=f"scraper-{n}",
                daemon=True,
            )
            for n in range(self.options.scrapers)
        ]
        try:
            for thread in threads:
                thread.start()
            self._drive()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=15)
            self._finish()
        self._check_simulator()
        self.problems += growth_problems(self.samples, self.options.limits)
        with self.tally.lock:
            if self.tally.failed:
                self.problems.append(f"{self.tally.failed} scrapes failed; first: {self.tally.failures[:5]}")
            missing = [c for c in EXPECTED_ERROR_CLASSES if c not in self.tally.error_classes]
        if missing:
            self.problems.append(f"error classes never counted by the exporter: {missing}")

    def result(self) -> SoakResult:
        """What this run measured."""
        with self.tally.lock:
            final_view = self.tally.view
        return SoakResult(
            options=self.options,
            samples=self.samples,
            problems=self.problems,
            tally=self.tally,
            reloads_sent=self.reloads.sent,
            reloads_applied=self.reloads.applied,
            reload_latencies=self.reloads.latencies,
            sim_totals=self.sim_totals,
            final_view=final_view,
            exporter_log_bytes=self.exporter.log_path.stat().st_size,
        )

    def _drive(self) -> None:
        """The main loop: sample every `sample_every` s, SIGHUP every `reload_every` s, until `duration`."""
        options = self.options
        start = time.monotonic()
        next_tick = start
        next_reload = start + options.reload_every
        next_progress = start + 30
        with httpx.Client() as control:
            while (now := time.monotonic()) - start <= options.duration:
                if self.exporter.proc.poll() is not None:
                    code = self.exporter.proc.returncode
                    self.problems.append(f"the exporter exited with {code} after {now - start:.0f} s")
                    return
                self._sample(control, now - start)
                with self.tally.lock:
                    view = self.tally.view
                if not self.reloads.check(view, now) and self.reloads.overdue(now, options.reload_every):
                    self.problems.append(_reload_problem(self.reloads, view, options.reload_every))
                    self.reloads.pending = None
                if now >= next_reload and self.reloads.pending is None and view and view.reload_time is not None:
                    self._reload(now, view.reload_time)
                    next_reload = now + options.reload_every
                if now >= next_progress and self.samples:
                    self._progress()
                    next_progress += 30
                next_tick += options.sample_every
                # The sampling cadence: the only pause in the loop.
                self.stop.wait(max(0.0, next_tick - time.monotonic()))
        if self.health_failures:
            self.problems.append(f"/healthz or /proc failed {self.health_failures} times")

    def _sample(self, control: httpx.Client, t: float) -> None:
        try:
            rss, fds, threads, cpu = read_proc(self.exporter.proc.pid)
            stats = control.get(self.sim.url + "/_sim/stats", timeout=5).json()
            requests = sum(sum(counts.values()) for counts in stats.values())
            self.samples.append(Sample(t, rss, fds, threads, cpu, requests))
            if control.get(self.exporter.url + "/healthz", timeout=5).status_code != 200:
                self.health_failures += 1
        except (OSError, httpx.HTTPError) as exc:
            self.health_failures += 1
            if self.health_failures <= 5:
                self.problems.append(f"sampling failed at {t:.0f} s: {type(exc).__name__}: {exc}")

    def _reload(self, now: float, previous_reload: float) -> None:
        """Swap the config file to the other variant and SIGHUP the exporter."""
        variant = (self.reloads.sent + 1) % 2
        write_atomically(self.config, self.configs[variant])
        self.reloads.pending = (frozenset(t.name for t in self.variants[variant]), now, previous_reload)
        self.exporter.proc.send_signal(signal.SIGHUP)
        self.reloads.sent += 1

    def _progress(self) -> None:
        s = self.samples[-1]
        with self.tally.lock:
            scrapes, failed = sum(self.tally.ok.values()), self.tally.failed
        self.say(
            f"t={s.t:.0f}s rss={s.rss_kib / MIB:.1f}MiB fds={s.fds} threads={s.threads} scrapes={scrapes} "
            f"failed={failed} reloads={self.reloads.applied}/{self.reloads.sent}"
        )

    def _finish(self) -> None:
        """End checks on the exporter: still up, last reload applied, clean SIGTERM, clean log and token files."""
        exporter = self.exporter
        if exporter.proc.poll() is not None:
            self.problems.append(f"the exporter was not running at the end (exit status {exporter.proc.returncode})")
            return
        with httpx.Client() as client:

            def last_reload_visible() -> bool:
                # A fresh plain scrape each time, so that the last reload is judged on current data.
                scrape_once(client, exporter.url, "plain", self.tally)
                with self.tally.lock:
                    view = self.tally.view
                return self.reloads.check(view, time.monotonic())

            try:
                wait_until(last_reload_visible, timeout=15, what="the last reload to show in /metrics")
            except AssertionError as exc:
                self.problems.append(str(exc))
        started = time.monotonic()
        try:
            status = exporter.stop(signal.SIGTERM, timeout=10)
        except subprocess.TimeoutExpired:
            self.problems.append("the exporter did not exit within 10 s of SIGTERM")
            return
        took = time.monotonic() - started
        if status != 0 or took > 5:
            self.problems.append(f"SIGTERM: exit status {status} after {took:.1f} s (want 0 within 5 s)")
        self.problems += _log_problems(exporter.log(), self.tenants, self.config.parent / "tokens")

    def _check_simulator(self) -> None:
        """Every tenant must have reached the simulator's invoice endpoints at least once."""
        try:
            stats = sim_stats(self.sim)
        except (httpx.HTTPError, ValueError) as exc:
            self.problems.append(f"cannot read the simulator's stats: {type(exc).__name__}: {exc}")
            return
        for counts in stats.values():
            for endpoint, n in counts.items():
                self.sim_totals[endpoint] = self.sim_totals.get(endpoint, 0) + n
        missing = [
            t.tenant_id
            for t in self.tenants
            if not sum(stats.get(t.tenant_id, {}).get(endpoint, 0) for endpoint in ("summary", "summaries"))
        ]
        if missing:
            self.problems.append(
                f"{len(missing)} tenants never reached the simulator's invoice endpoints: {missing[:10]}"
            )


def _reload_problem(reloads: _Reloads, view: MetricsView | None, limit: float) -> str:
    message = f"reload {reloads.sent} was not visible in /metrics within {limit:g} s"
    if view is not None and reloads.pending is not None:
        expected = reloads.pending[0]
        message += (
            f" (reload_successful {view.reload_ok}, reload time {view.reload_time} vs {reloads.pending[2]} before; "
            f"tenants missing {sorted(expected - view.tenants)[:5]}, extra {sorted(view.tenants - expected)[:5]})"
        )
    return message


def _log_problems(log: str, tenants: Sequence[PlannedTenant], token_dir: Path) -> list[str]:
    """No traceback and no secret in the log; rotated refresh tokens written back, no temp files left over."""
    problems = []
    if "Traceback" in log:
        at = log.index("Traceback")
        problems.append(f"the exporter logged a traceback:\n{log[max(0, at - 300) : at + 1500]}")
    leaked = [t.name for t in tenants if t.secret in log or (t.refresh_token and t.refresh_token in log)]
    rotated = {p.stem: p.read_text().strip() for p in token_dir.glob("*.token")}
    leaked += [f"{name} (rotated refresh token)" for name, token in rotated.items() if token and token in log]
    if leaked:
        # Name the tenants, never the values.
        problems.append(f"secrets of these tenants appear in the exporter log: {leaked[:10]}")
    stale = [t.name for t in tenants if t.refresh_token and rotated.get(t.name) == t.refresh_token]
    if stale:
        problems.append(f"refresh token files never rotated: {stale[:10]}")
    leftovers = [p.name for p in token_dir.iterdir() if not p.name.endswith(".token")]
    if leftovers:
        problems.append(f"files left over next to the refresh tokens: {leftovers[:10]}")
    return problems


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    """All samples, one row each."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_seconds", "rss_kib", "open_fds", "threads", "cpu_seconds", "simulator_requests"])
        for s in samples:
            out.writerow([f"{s.t:.2f}", s.rss_kib, s.fds, s.threads, f"{s.cpu_seconds:.2f}", s.sim_requests])


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a soak from the command line; exit 0 when every check passed."""
    defaults = SoakOptions()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load (600 for the long run)")
    p.add_argument("--tenants", type=int, default=defaults.tenants)
    p.add_argument("--interval", type=float, default=defaults.interval)
    p.add_argument("--token-lifetime", type=int, default=defaults.token_lifetime)
    p.add_argument("--fault-share", type=float, default=defaults.fault_share)
    p.add_argument("--reload-every", type=float, default=defaults.reload_every)
    p.add_argument("--scrapers", type=int, default=defaults.scrapers)
    p.add_argument("--scrape-pause", type=float, default=defaults.scrape_pause)
    p.add_argument("--warmup", type=float, default=defaults.limits.warmup)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--rows", type=int, default=25, help="rows of the table")
    p.add_argument("--csv", type=Path, help="write every sample to this CSV file")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temporary directory)")
    args = p.parse_args(argv)
    options = SoakOptions(
        duration=args.duration,
        tenants=args.tenants,
        interval=args.interval,
        token_lifetime=args.token_lifetime,
        fault_share=args.fault_share,
        reload_every=args.reload_every,
        scrapers=args.scrapers,
        scrape_pause=args.scrape_pause,
        seed=args.seed,
        limits=Limits(warmup=args.warmup),
    )
    with _workdir(args.workdir) as workdir:
        result = run_soak(options, workdir, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.csv:
        write_csv(args.csv, result.samples)
    print(result.report(args.rows))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
