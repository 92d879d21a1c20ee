"""Soak: under faults, expiring tokens, reloads and scrapes, the exporter's memory, descriptors and threads stay flat.

An exporter runs for months. Here the exporter CLI runs against the simulator CLI with all of that going on at
once; the exporter is sampled from /proc every second and the run fails when a resource grows beyond noise
(docs/soak.md). CI runs about a minute of it; `SOAK_SECONDS=600 python -m pytest tests/test_soak.py` runs ten.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.processes import Process, eventually, scrape, sim_stats, start_exporter, start_simulator

DURATION = float(os.environ.get("SOAK_SECONDS", "55"))  # seconds of load, after the exporter is up
TENANTS = 100
RELOAD_EVERY = 8.0  # seconds between SIGHUPs, each swapping the config for the other one
WARMUP = 15.0  # first polls, first renders of each format, first error of each kind: allocated for good
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# One fault of each kind, handed out round-robin to 40% of the tenants, each firing now and then. The exporter's
# timeout is 1 s, so `timeout` and the first `slow_body` run past it.
FAULTS: tuple[dict[str, object], ...] = (
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
    {"kind": "status", "status": 503, "retry_after": 1},
    {"kind": "status", "status": 401, "endpoint": "token"},
    {"kind": "throttle", "retry_after": 1},
    {"kind": "timeout", "seconds": 2},
    {"kind": "reset"},
    {"kind": "reset", "endpoint": "token"},
    {"kind": "html"},
    {"kind": "truncated"},
    {"kind": "huge", "size_mb": 1},
    {"kind": "slow_body", "seconds": 2},
    {"kind": "slow_body", "seconds": 0.4},
)


@dataclass(frozen=True)
class Sample:
    """One reading of the exporter process from /proc."""

    t: float
    rss_kib: int
    fds: int
    threads: int


@dataclass(frozen=True)
class Tenant:
    name: str
    tenant_id: str
    client_id: str
    secret: str
    refresh_token: str | None  # App+User: the refresh token rotates and is written back on every token


def _tenants() -> list[Tenant]:
    out = []
    for i in range(1, TENANTS + 1):
        tenant_id = f"soak-{i:04d}.onmicrosoft.com"
        refresh = f"soak-refresh-{i:04d}" if i % 10 == 1 else None
        out.append(
            Tenant(f"soak-{i:04d}", tenant_id, str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant_id)), f"s-{i}", refresh)
        )
    return out


def _scenario(tenants: list[Tenant]) -> str:
    """Short-lived tokens for all, faults on 40%, drifting balances on half, odd bodies on a third."""
    rng = random.Random(1)
    faulty = set(rng.sample(range(len(tenants)), round(0.4 * len(tenants))))
    docs = []
    for i, t in enumerate(tenants):
        currencies = [
            {"code": code, "symbol": symbol, "balance": 1000.0 + i, "latest_invoice_date": "2026-11-01T00:00:00Z"}
            for code, symbol in (("USD", "$"), ("EUR", "€"))[: 2 if t.refresh_token else 1]
        ]
        if i % 2 == 0:
            for currency in currencies:
                currency["drift"] = {
                    "invoice_every": 20,
                    "invoice_amount": 300,
                    "payment_every": 45,
                    "payment_amount": 500,
                }
        doc: dict[str, object] = {
            "tenant_id": t.tenant_id,
            "client_id": t.client_id,
            "client_secret": t.secret,
            "token_lifetime": rng.randint(2, 5),
            "currencies": currencies,
        }
        if t.refresh_token:
            doc["refresh_token"] = t.refresh_token
        if i % 3 == 0:
            doc["quirks"] = rng.sample(["bom", "naive_dates", "integer_amounts", "lowercase_invoice_types"], 2)
        if i in faulty:
            fault = FAULTS[len(docs) % len(FAULTS)]
            probability = 0.1 if fault["kind"] == "huge" else round(rng.uniform(0.15, 0.3), 2)
            doc["faults"] = [{**fault, "probability": probability}]
        docs.append(doc)
    return yaml.safe_dump({"seed": 1, "tenants": docs}, allow_unicode=True)


def _config(url: str, tenants: list[Tenant], workdir: Path, variant: int) -> str:
    """Poll every second with a 1 s timeout; half of the secrets from files, App+User tenants with token files."""
    entries = []
    for n, t in enumerate(tenants):
        entry: dict[str, object] = {"name": t.name, "tenant_id": t.tenant_id, "client_id": t.client_id}
        if n % 2:
            secret_file = workdir / "secrets" / t.name
            secret_file.write_text(t.secret + "\n")
            entry["client_secret_file"] = str(secret_file)
        else:
            entry["client_secret"] = t.secret
        if t.refresh_token:
            token_file = workdir / "tokens" / f"{t.name}.token"
            if not token_file.exists():
                token_file.write_text(t.refresh_token + "\n")
            entry.update(refresh_token_file=str(token_file), endpoint="summaries")
        entries.append(entry)
    thresholds = {"USD": {"warning": 50000 + 10000 * variant, "critical": 100000}}
    doc = {"interval": "1s", "timeout": "1s", "concurrency": 16, "max_staleness": "30s", "api_url": url}
    return yaml.safe_dump({**doc, "login_url": url, "thresholds": thresholds, "tenants": entries})


def _write(path: Path, text: str) -> None:
    """Replace `path` in one step, so that a reload never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_proc(pid: int, t: float) -> Sample:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0])
    return Sample(t, rss, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"]))


@dataclass
class Scrapes:
    """Scraper threads' tally: every kind of request Prometheus and people make, and what failed."""

    ok: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, url: str, keep_alive: bool) -> None:
        kinds = [
            ("/metrics", {"Accept-Encoding": "identity"}),
            ("/metrics", {"Accept-Encoding": "gzip"}),
            ("/metrics", {"Accept": OPENMETRICS}),
            ("/", {}),
        ]
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                for path, headers in kinds:
                    try:
                        if keep_alive:
                            answer = client.get(url + path, headers=headers)
                        else:
                            answer = httpx.get(url + path, headers=headers, timeout=10)
                        good = answer.status_code == 200 and len(answer.content) > 0
                        message = f"{path} {headers}: {answer.status_code}"
                    except httpx.HTTPError as exc:
                        good, message = False, f"{path} {headers}: {exc!r}"
                    with self.lock:
                        if good:
                            self.ok += 1
                        else:
                            self.failures.append(message)
                    self.stop.wait(0.5)


def _configured(url: str) -> tuple[frozenset[str], float | None]:
    """The tenants /metrics shows (error counters start at 0 for each) and whether the last reload succeeded."""
    samples = scrape(url)
    tenants = frozenset(dict(labels)["tenant"] for name, labels in samples if name.endswith("_errors_total"))
    return tenants, samples.get(("partnercenter_config_last_reload_successful", frozenset()))


def thirds(samples: list[Sample], warmup: float = WARMUP) -> dict[str, tuple[float, float]] | None:
    """Per resource, the median of the first and of the last third of the samples after `warmup` (None: too few).

    Medians leave one spike (a huge body parsed, a burst of scrapes) out.
    """
    steady = [s for s in samples if s.t >= warmup]
    if len(steady) < 9:
        return None
    n = len(steady) // 3
    return {
        name: (statistics.median(values[:n]), statistics.median(values[-n:]))
        for name, values in (
            ("RSS KiB", [s.rss_kib for s in steady]),
            ("open fds", [s.fds for s in steady]),
            ("threads", [s.threads for s in steady]),
        )
    }


def growth_problems(samples: list[Sample], warmup: float = WARMUP) -> list[str]:
    """Growth beyond noise between the thirds: RSS 4 MiB or 10%, 8 file descriptors (upstream keep-alive sockets
    come and go with faults), 3 threads."""
    medians = thirds(samples, warmup)
    if medians is None:
        return [f"only {sum(s.t >= warmup for s in samples)} samples after the {warmup:g} s warm-up (need 9)"]
    problems = []
    head, tail = medians["RSS KiB"]
    if tail - head > 4 * 1024 or tail - head > 0.1 * head:
        problems.append(f"RSS grew +{(tail - head) / 1024:.1f} MiB (+{100 * (tail - head) / head:.1f}%)")
    for name, allowed in (("open fds", 8), ("threads", 3)):
        head, tail = medians[name]
        if tail - head > allowed:
            problems.append(f"{name} grew by +{tail - head:g} (allowed {allowed})")
    return problems


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(DURATION + 120)
def test_soak(tmp_path: Path) -> None:
    for sub in ("secrets", "tokens"):
        (tmp_path / sub).mkdir()
    tenants = _tenants()
    sim = start_simulator(tmp_path, _scenario(tenants))
    # Each reload drops a tenth of the tenants and brings back the tenth the other config dropped.
    variants = [tenants[: -TENANTS // 10], tenants[TENANTS // 10 :]]
    configs = [_config(sim.url, v, tmp_path, n) for n, v in enumerate(variants)]
    config = tmp_path / "config.yml"
    _write(config, configs[0])
    exporter = start_exporter(tmp_path, config)
    scrapes = Scrapes()
    threads = [threading.Thread(target=scrapes.run, args=(exporter.url, n > 0), daemon=True) for n in range(3)]
    for thread in threads:
        thread.start()
    samples: list[Sample] = []
    problems: list[str] = []
    reloads = 0
    try:
        started = time.monotonic()
        next_reload = started + RELOAD_EVERY
        while (t := time.monotonic() - started) < DURATION:
            assert exporter.proc.poll() is None, f"the exporter exited:\n{exporter.log()[-3000:]}"
            samples.append(_read_proc(exporter.proc.pid, t))
            if time.monotonic() >= next_reload:
                # The last reload must show by now: the config's tenants, and success.
                if _configured(exporter.url) != (frozenset(x.name for x in variants[reloads % 2]), 1.0):
                    problems.append(f"reload {reloads} did not show in /metrics within {RELOAD_EVERY:g} s")
                reloads += 1
                _write(config, configs[reloads % 2])
                exporter.proc.send_signal(signal.SIGHUP)
                next_reload += RELOAD_EVERY
            time.sleep(max(0.0, started + len(samples) - time.monotonic()))
        expected = (frozenset(x.name for x in variants[reloads % 2]), 1.0)
        eventually(lambda: _configured(exporter.url) == expected, what="the last reload in /metrics")
    finally:
        scrapes.stop.set()
        for thread in threads:
            thread.join(timeout=15)
    errors = {
        dict(labels)["status_code"]
        for (name, labels), value in scrape(exporter.url).items()
        if name == "partnercenter_api_request_errors_total" and value > 0
    }
    tokens = sum(counts.get("token", 0) for counts in sim_stats(sim).values())
    report = _report(samples, problems, scrapes, reloads)
    report += f"\nerror classes counted: {sorted(errors)}; token requests at the simulator: {tokens}"
    print(report)  # shown for a passing run too with `pytest -rP`
    assert _stopped(exporter) == 0, report
    assert "Traceback" not in exporter.log(), report
    assert not problems, report
    assert not growth_problems(samples), report + "\n" + "\n".join(growth_problems(samples))
    assert not scrapes.failures, report
    # It did what it claims: sampled all along, reloaded, scraped, failed in many ways, renewed tokens all the time.
    assert len(samples) >= 0.9 * DURATION, report
    assert reloads >= DURATION // RELOAD_EVERY - 1, report
    assert scrapes.ok >= DURATION, report
    assert len(errors) >= 5, report
    assert tokens >= TENANTS * DURATION / 6, report


def _stopped(exporter: Process) -> int:
    """SIGTERM; the exit status, which must come within 5 s."""
    began = time.monotonic()
    status = exporter.stop(signal.SIGTERM)
    assert time.monotonic() - began < 5, "the exporter took more than 5 s to stop"
    return status


def _report(samples: list[Sample], problems: list[str], scrapes: Scrapes, reloads: int) -> str:
    """Every tenth sample, the thirds' medians, and what else went on."""
    lines = ["", "| t s | RSS MiB | open fds | threads |", "|---:|---:|---:|---:|"]
    lines += [f"| {s.t:.0f} | {s.rss_kib / 1024:.1f} | {s.fds} | {s.threads} |" for s in samples[::10]]
    for name, (head, tail) in (thirds(samples) or {}).items():
        lines.append(f"{name}: median {head:g} in the first third after the warm-up, {tail:g} in the last")
    lines.append(f"scrapes: {scrapes.ok} ok, {len(scrapes.failures)} failed {scrapes.failures[:5]}; reloads {reloads}")
    return "\n".join(lines + problems)


# --- the growth rule itself, on synthetic samples: the soak cannot pass by measuring nothing ----------------------


def _synthetic(rss: float = 0.0, fds: float = 0.0, seconds: int = 60) -> list[Sample]:
    """One sample a second: a steep warm-up, then the given slopes per second plus a little jitter."""
    out = []
    for t in range(seconds):
        jitter, steady = (-1, 0, 1, 0)[t % 4], max(0, t - 15)
        rss_kib = 40_000 + min(t, 15) * 1_300 + steady * rss + jitter * 300
        out.append(Sample(float(t), int(rss_kib), int(20 + min(t, 15) + steady * fds + jitter), 8 + t % 2))
    return out


def test_growth_rule_passes_flat_noise_with_a_spike() -> None:
    samples = _synthetic()
    samples[40] = Sample(40.0, 90_000, 60, 20)
    assert growth_problems(samples) == []


def test_growth_rule_catches_slow_leaks() -> None:
    assert growth_problems(_synthetic(fds=1 / 3)) == ["open fds grew by +10 (allowed 8)"]
    assert growth_problems(_synthetic(rss=150))[0].startswith("RSS grew +4.")
    assert growth_problems(_synthetic(seconds=20)) == ["only 5 samples after the 15 s warm-up (need 9)"]
