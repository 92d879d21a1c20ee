"""The benchmark: the figures a user of the exporter would notice, against their targets, from one run.

    python bench/run.py                                   # 10, 100, 1000 and 5000 tenants: ~17 minutes on 2 cores
    python bench/run.py --tenants=1000                    # the targets alone: ~4 minutes
    python bench/run.py --tenants=1000 --tree=../before   # the exporter of another checkout (before and after)

For each tenant count N, three processes, each with its own GIL: this checkout's simulator (bench/simulator.py:
N App+User tenants, --currencies each, --latency added to every invoice answer, access tokens that live
--token-lifetime seconds), the exporter of --tree (`python -m exporter`, endpoint `summaries`, --concurrency)
and, for a while, node_exporter. Then:

1. Start-up and cold cycle: the exporter starts with interval 1 h and polls every tenant once (a token and an
   invoice request each). The cycle is timed from the exporter's own samples (first poll start =
   min(last_success - poll_duration), end = max(last_success)) against the bound N x latency / concurrency. Its
   CPU is the process's own (/proc), from spawn to the end of that cycle. Then the floor (bench/floor.py): httpx
   alone sending the same requests with the same concurrency, in a process of its own, timed the same way.
2. Idle: /metrics plain and gzip, up to --scrapes sequential scrapes (or --budget seconds) over one keep-alive
   connection, timed to the last byte. Then the exporter's RSS.
3. node_exporter's textfile collector serving the same exposition from a file; the same scrapes.
4. Busy: a reload to interval max(1 s, 2 x bound); polling goes on for --lifetimes token lifetimes (at least
   --window seconds). The simulator's request counts, read every 0.5 s, give each tenant's invoice requests per
   interval and token requests per token lifetime, from the time between its requests (see RequestTimes), so
   that where the window cuts a tenant's schedule does not count it once more than another.

During the cold cycle and the busy phase /metrics is scraped gzip every 100 ms, like a busy Prometheus; the
slowest of those scrapes is the figure to hold against Prometheus's 10 s scrape timeout.

Prints the targets (judged at 1000 tenants, or at the largest count run; linearity needs three counts or more)
and a table of every figure per tenant count; writes results.json to --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BackgroundScrapes, Child, Sampler, Scraper, free_port, percentile, scrape_series, wait_until

ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "prometheus-node-exporter"
MIB = 1024 * 1024
_SAMPLE = re.compile(r'^(\w+)\{tenant="([^"]+)"\} (\S+)$')

# The targets (issue 18), judged at TARGETS_AT tenants.
TARGETS_AT = 1000
METRICS_TO_NODE = 0.02  # /metrics median, a fraction of node_exporter's textfile collector's
IDLE_RSS_MIB = 64.0
COLD_TO_BOUND = 1.35
CPU_MS_PER_TENANT = 5.0  # start-up plus one cold cycle
INVOICES_PER_INTERVAL = (0.98, 1.02)  # one; the rest is the resolution of the count
LINEAR = 1.5  # the cost of a tenant at the last step of tenant counts, at most this times that of the step before
# The exporter renews a token min(300 s, 10% of its lifetime) before it expires: one per lifetime, that early.
RENEW_MARGIN_MAX, RENEW_FRACTION = 300.0, 0.1

Result = dict[str, Any]


def main() -> int:
    """Run the benchmark for every tenant count and print the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", default="10,100,1000,5000", help="comma-separated tenant counts")
    p.add_argument("--tree", type=Path, default=ROOT, help="checkout whose exporter is measured (default: this one)")
    p.add_argument("--latency", type=float, default=0.1, help="simulated invoice latency, seconds")
    p.add_argument("--concurrency", type=int, default=50, help="exporter concurrency")
    p.add_argument("--currencies", type=int, default=3, help="currencies per tenant")
    p.add_argument("--token-lifetime", type=int, default=60, help="access token lifetime, seconds")
    p.add_argument("--lifetimes", type=float, default=3, help="token lifetimes of busy polling")
    p.add_argument("--window", type=float, default=30.0, help="seconds of busy polling at least")
    p.add_argument("--scrapes", type=int, default=300, help="sequential scrapes per series (fewer if --budget ends)")
    p.add_argument("--budget", type=float, default=15.0, help="seconds per scrape series at most")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="work directory: configs, logs, results")
    args = p.parse_args()
    args.tree = args.tree.resolve()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    check_tree(args.tree)
    results_path = args.out / "results.json"
    run: Result = {"machine": machine(args.tree), "settings": settings(args), "tenants": []}
    for n in [int(x) for x in args.tenants.split(",")]:
        began = time.monotonic()
        print(f"--- {n} tenants", file=sys.stderr, flush=True)
        run["tenants"].append(bench_one(n, args))
        print(f"    {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        results_path.write_text(json.dumps(run, indent=1))
    run["machine"]["loadavg_end"] = os.getloadavg()[0]
    results_path.write_text(json.dumps(run, indent=1))
    print(report(run))
    return 0


def exporter_env(tree: Path) -> dict[str, str]:
    """The environment that makes `python -m exporter` import the exporter of `tree`, with the allocator settings
    the container image runs it with (the Dockerfile's MALLOC_* values; none in a tree that has none)."""
    dockerfile = tree / "Dockerfile"
    image = dict(re.findall(r"\b(MALLOC_[A-Z_]+)=(\S+)", dockerfile.read_text())) if dockerfile.exists() else {}
    return {**os.environ, **image, "PYTHONPATH": str(tree)}


def check_tree(tree: Path) -> None:
    """Refuse a tree whose exporter would not be the one imported (another install shadowing it)."""
    found = subprocess.run(
        [sys.executable, "-c", "import exporter; print(exporter.__file__)"],
        cwd=tree,
        env=exporter_env(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree):
        raise SystemExit(f"--tree: `import exporter` there finds {found}, not the tree's own")


def machine(tree: Path) -> Result:
    """What the numbers were measured on, and which code."""
    version = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, check=False)
    git = ["git", "-C", str(tree)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False
    )
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node_exporter": (version.stdout or version.stderr).split("\n", 1)[0],
        "commit": (commit.stdout.strip() or "unknown") + (" with uncommitted changes" if dirty.stdout.strip() else ""),
        "loadavg_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def settings(args: argparse.Namespace) -> Result:
    """The knobs of this run."""
    keys = ("latency", "concurrency", "currencies", "token_lifetime", "lifetimes", "window", "scrapes", "budget")
    return {k: getattr(args, k) for k in keys}


def write_config(path: Path, n: int, sim_port: int, interval: float, concurrency: int) -> None:
    """An exporter config for the simulator's generated tenants (App+User, endpoint summaries); atomic."""
    tokens = path.parent / "tokens"
    tokens.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{sim_port}"
    lines = [
        f"interval: {interval:g}",
        "timeout: 30s",
        f"concurrency: {concurrency}",
        "max_staleness: 24h",
        f"api_url: {url}",
        f"login_url: {url}",
        "thresholds:",
        "  USD: {warning: 50000, critical: 100000}",
        "  EUR: {warning: 40000, critical: 90000}",
        "tenants:",
    ]
    for i in range(1, n + 1):
        label = f"{i:04d}"
        tenant_id = f"tenant-{label}.onmicrosoft.com"
        token_file = tokens / f"{label}.token"
        if not token_file.exists():
            token_file.write_text(f"refresh-{label}\n")
        lines += [
            f"  - name: t{label}",
            f"    tenant_id: {tenant_id}",
            f"    client_id: {uuid.uuid5(uuid.NAMESPACE_DNS, tenant_id)}",
            f"    client_secret: secret-{label}",
            f"    refresh_token_file: {token_file}",
            "    endpoint: summaries",
        ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def per_tenant(text: str, metric: str) -> dict[str, float]:
    """tenant -> value of a metric labelled only by tenant."""
    found = {}
    for line in text.splitlines():
        if line.startswith(metric + "{") and (m := _SAMPLE.match(line)):
            found[m.group(2)] = float(m.group(3))
    return found


def cycle_window(text: str) -> tuple[float, float]:
    """(first poll start, last poll end) of the cycle an exposition shows, from the exporter's own samples."""
    success = per_tenant(text, "partnercenter_last_success_timestamp_seconds")
    duration = per_tenant(text, "partnercenter_poll_duration_seconds")
    return min(success[t] - duration[t] for t in success), max(success.values())


def scrapes(child: Child, port: int, args: argparse.Namespace, *, gzip: bool) -> Result:
    """Median and p99 (ms) of a series of sequential scrapes."""
    child.check_alive()
    latencies = scrape_series(port, args.scrapes, args.budget, gzip=gzip)
    return {"p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000, "n": len(latencies)}


@dataclass
class _Track:
    """One tenant's requests of one kind: the count last seen, and when each later request was seen."""

    count: int
    seen: list[float] = field(default_factory=list)


@dataclass
class RequestTimes:
    """Reads the simulator's request counts every `period` seconds in a thread, per tenant: tokens and invoices.

    A rate is taken over the same number of requests for every tenant, from each one's second request in the
    window: the first comes in the rush after the reload, later after its scheduled start than the tenant's later
    requests. Polls queue for the concurrency slots in every cycle; a window cut at a fixed time would keep the
    last, cut cycle's requests of the tenants early in that queue only, and make their intervals look short.
    """

    port: int
    period: float = 0.5
    tracks: dict[tuple[str, str], _Track] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)
    _client: Scraper = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._client = Scraper(self.port)

    def start(self) -> None:
        """Take the counts to start from, then begin reading."""
        self._read()
        self.base = self.totals()
        self._thread = threading.Thread(target=self._run, name="sim-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """A last reading, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()
        self._client.close()

    def totals(self) -> dict[str, int]:
        """Requests of each kind so far, over all tenants."""
        out = {"token": 0, "invoice": 0}
        for (_, kind), track in self.tracks.items():
            out[kind] += track.count
        return out

    def rate(self, kind: str) -> tuple[float, float] | None:
        """(requests per second over all tenants, the highest of one tenant), or None with too few requests."""
        seen = [t.seen[1:] for (_, k), t in self.tracks.items() if k == kind]
        intervals = min((len(s) - 1 for s in seen), default=0)
        if intervals < 1:
            return None
        spans = [max(s[intervals] - s[0], self.period) for s in seen]
        return len(spans) * intervals / sum(spans), intervals / min(spans)

    def _read(self) -> None:
        stats = self._client.json("/_sim/stats")
        assert isinstance(stats, dict)
        now = time.time()
        for tenant, counts in stats.items():
            for kind, count in (
                ("token", int(counts.get("token", 0))),
                ("invoice", int(counts.get("summary", 0)) + int(counts.get("summaries", 0))),
            ):
                track = self.tracks.setdefault((tenant, kind), _Track(count))
                track.seen += [now] * (count - track.count)  # two requests between readings: both, at once
                track.count = count

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._read()


def bench_one(n: int, args: argparse.Namespace) -> Result:
    """Every measurement for N tenants."""
    work = args.out / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "tokens").glob("*.token"):  # rotated refresh tokens of an earlier run's simulator
        stale.unlink()
    bound = n * args.latency / args.concurrency
    result: Result = {"tenants": n, "bound_s": bound}
    sim_port, exp_port, node_port = free_port(), free_port(), free_port()
    sim = Child.spawn(
        "simulator",
        [
            sys.executable,
            str(ROOT / "bench" / "simulator.py"),
            f"--port={sim_port}",
            f"--tenants={n}",
            f"--currencies={args.currencies}",
            f"--latency={args.latency}",
            f"--token-lifetime={args.token_lifetime}",
        ],
        work / "simulator.log",
        cwd=ROOT,
    )
    children = [sim]
    try:
        sim_client = Scraper(sim_port)

        def sim_up() -> bool:
            sim.check_alive()
            return bool(sim_client.get("/_sim/healthz"))

        wait_until(sim_up, 60, "the simulator")
        sim_client.close()
        config = work / "config.yml"
        write_config(config, n, sim_port, 3600, args.concurrency)

        # 1. Start-up and the cold cycle, scraped as a busy Prometheus would.
        exporter = Child.spawn(
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{exp_port}",
                "--log.level=warning",
            ],
            work / "exporter.log",
            cwd=args.tree,
            env=exporter_env(args.tree),
        )
        children.append(exporter)
        sampler = Sampler(exporter)
        sampler.start()
        background = BackgroundScrapes(exp_port)
        background.start()
        client = Scraper(exp_port)
        wait_ready(exporter, client, 120 + bound * 10)
        background.stop()

        def settled() -> bool:
            # Every tenant's success is in the served exposition, and the exporter has gone quiet.
            exporter.check_alive()
            text = client.text("/metrics")
            cpu = exporter.cpu_seconds()
            time.sleep(0.5)
            up = per_tenant(text, "partnercenter_up")
            return len(up) == n and all(v == 1 for v in up.values()) and exporter.cpu_seconds() - cpu < 0.02

        wait_until(settled, 120 + bound * 5, "the exposition to settle", interval=0)
        sampler.stop()
        body = client.get("/metrics")[1]
        client.close()
        start, end = cycle_window(body.decode())
        cpu = sampler.cpu_at(end)
        slowest = background.slowest(start, end)
        result["cold"] = {
            "cycle_s": end - start,
            "ratio_to_bound": (end - start) / bound,
            "cpu_s": cpu,
            "cpu_ms_per_tenant": cpu / n * 1000,
            "slowest_scrape_ms": None if slowest is None else slowest * 1000,
        }
        result["samples"] = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        result["body_kib"] = len(body) / 1024
        # The floor: httpx alone sending the same requests, while the exporter idles (interval 1 h).
        floor = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "floor.py"), f"--config={config}"],
            capture_output=True,
            text=True,
            check=True,
        )
        result["cold"]["floor"] = json.loads(floor.stdout)
        print(f"    cold {result['cold']}", file=sys.stderr, flush=True)

        # 2. Idle: nothing changes (interval 1 h).
        result["exporter"] = {
            "plain": scrapes(exporter, exp_port, args, gzip=False),
            "gzip": scrapes(exporter, exp_port, args, gzip=True),
            "rss_mib": exporter.memory()[0] / MIB,
        }

        # 3. node_exporter serving the same exposition from a file.
        result["node_exporter"] = bench_node_exporter(work, body, node_port, args)

        # 4. Busy: polling at a short interval for a few token lifetimes.
        interval = max(1.0, 2 * bound)
        span = max(args.window, args.lifetimes * args.token_lifetime)
        write_config(config, n, sim_port, interval, args.concurrency)
        requests = RequestTimes(sim_port)
        requests.start()
        background = BackgroundScrapes(exp_port)
        background.start()
        cpu0 = exporter.cpu_seconds()
        reloaded = reload_exporter(exp_port)
        time.sleep(span)
        exporter.check_alive()
        cpu1 = exporter.cpu_seconds()
        background.stop()
        requests.stop()
        polls = requests.totals()["invoice"] - requests.base["invoice"]
        client = Scraper(exp_port)
        up = per_tenant(client.text("/metrics"), "partnercenter_up")
        client.close()
        invoices, tokens = requests.rate("invoice"), requests.rate("token")
        slowest = background.slowest(reloaded, reloaded + span)
        result["busy"] = {
            "interval_s": interval,
            "window_s": span,
            "cpu_ms_per_poll": (cpu1 - cpu0) / polls * 1000 if polls else None,
            "invoices_per_interval": None if invoices is None else [r * interval for r in invoices],
            "tokens_per_lifetime": None if tokens is None else [r * args.token_lifetime for r in tokens],
            "tenants_up": sum(1 for v in up.values() if v == 1),
            "slowest_scrape_ms": None if slowest is None else slowest * 1000,
        }
        result["exporter"]["rss_peak_mib"] = exporter.memory()[1] / MIB
        print(f"    busy {result['busy']}", file=sys.stderr, flush=True)
        return result
    finally:
        for child in reversed(children):
            child.stop()


def bench_node_exporter(work: Path, body: bytes, port: int, args: argparse.Namespace) -> Result:
    """node_exporter's textfile collector serving `body` from a .prom file: the same scrapes, and its RSS."""
    textfiles = work / "textfile"
    textfiles.mkdir(exist_ok=True)
    (textfiles / "partnercenter.prom").write_bytes(body)
    node = Child.spawn(
        "node_exporter",
        [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
            # Its own go_/process_ metrics would clash with the process_* samples in the file.
            "--web.disable-exporter-metrics",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        work / "node_exporter.log",
    )
    try:
        client = Scraper(port)

        def node_up() -> bool:
            node.check_alive()
            return bool(client.get("/"))

        wait_until(node_up, 30, "node_exporter")
        served = client.get("/metrics")[1]
        client.close()
        if b"node_textfile_scrape_error 0" not in served:
            raise RuntimeError(f"node_exporter rejected the exposition file; see {node.log_path}")
        return {
            "plain": scrapes(node, port, args, gzip=False),
            "gzip": scrapes(node, port, args, gzip=True),
            "rss_mib": node.memory()[0] / MIB,
        }
    finally:
        node.stop()


def wait_ready(exporter: Child, client: Scraper, timeout: float) -> None:
    """Wait until /readyz answers 200 (every tenant polled once); raise if the exporter exits meanwhile."""

    def ready() -> bool:
        exporter.check_alive()
        try:
            client.get("/readyz")
        except RuntimeError:  # 503 until every tenant was polled once
            return False
        return True

    wait_until(ready, timeout, "the exporter's first poll cycle")


def reload_exporter(port: int) -> float:
    """POST /-/reload; returns the wall time it was sent."""
    sent = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/-/reload")
    status = conn.getresponse().status
    conn.close()
    if status != 200:
        raise RuntimeError(f"reload answered {status}")
    return sent


# --- the report ---------------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _yes(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "**no**")


def token_target(lifetime: float) -> float:
    """Token requests per tenant per lifetime when each token is renewed the exporter's margin before it expires."""
    return lifetime / (lifetime - min(RENEW_MARGIN_MAX, RENEW_FRACTION * lifetime))


def growth(rows: list[Result], cost: Callable[[Result], float]) -> tuple[float, float] | None:
    """A cost per added tenant over the last step of tenant counts, and over the step before."""
    if len(rows) < 3:
        return None
    a, b, c = rows[-3:]
    return (cost(c) - cost(b)) / (c["tenants"] - b["tenants"]), (cost(b) - cost(a)) / (b["tenants"] - a["tenants"])


def targets(run: Result) -> list[tuple[str, str, str, bool | None]]:
    """(figure, target, measured, met) for each target, at TARGETS_AT tenants (or the largest count run)."""
    rows = sorted(run["tenants"], key=lambda r: r["tenants"])
    at = next((r for r in rows if r["tenants"] == TARGETS_AT), rows[-1])
    e, ne, c, b = at["exporter"], at["node_exporter"], at["cold"], at["busy"]
    out: list[tuple[str, str, str, bool | None]] = []
    for enc in ("plain", "gzip"):
        ratio = e[enc]["p50_ms"] / ne[enc]["p50_ms"]
        measured = f"{ratio:.4f}x ({e[enc]['p50_ms']:.2f} vs {ne[enc]['p50_ms']:.1f} ms)"
        figure = f"/metrics median, {enc}, vs node_exporter's textfile collector serving the same bytes"
        out.append((figure, f"<= {METRICS_TO_NODE}x", measured, ratio <= METRICS_TO_NODE))
    out.append(("idle RSS", f"<= {IDLE_RSS_MIB:g} MiB", f"{e['rss_mib']:.1f} MiB", e["rss_mib"] <= IDLE_RSS_MIB))
    measured = f"{c['ratio_to_bound']:.2f}x ({c['cycle_s']:.2f} s vs {at['bound_s']:.2f} s)"
    figure = "cold cycle vs the bound N x latency / concurrency"
    out.append((figure, f"<= {COLD_TO_BOUND}x", measured, c["ratio_to_bound"] <= COLD_TO_BOUND))
    floor = c["floor"]["cycle_s"]
    measured = f"{floor / at['bound_s']:.2f}x ({floor:.2f} s); the exporter's cycle is {c['cycle_s'] / floor:.2f}x it"
    out.append(("the floor: httpx alone sending the cold cycle's requests, vs the bound", "-", measured, None))
    measured = f"{c['cpu_ms_per_tenant']:.2f} ms ({c['cpu_s']:.2f} s in all)"
    figure = "CPU per tenant, start-up plus the cold cycle"
    out.append((figure, f"<= {CPU_MS_PER_TENANT:g} ms", measured, c["cpu_ms_per_tenant"] <= CPU_MS_PER_TENANT))
    low, high = INVOICES_PER_INTERVAL
    figure = f"invoice requests per tenant per interval ({b['interval_s']:g} s) while polling, at the simulator"
    if (inv := b["invoices_per_interval"]) is None:
        out.append((figure, "1, every tenant up", "-", None))
    else:
        measured = f"{inv[0]:.3f} (highest tenant {inv[1]:.2f}); {b['tenants_up']} of {at['tenants']} up"
        out.append((figure, "1, every tenant up", measured, low <= inv[0] <= high and b["tenants_up"] == at["tenants"]))
    lifetime = run["settings"]["token_lifetime"]
    most = token_target(lifetime)
    figure = f"token requests per tenant per token lifetime ({lifetime:g} s), at the simulator"
    target = f"1, renewed up to 10% early: <= {most:.2f}"
    if (tok := b["tokens_per_lifetime"]) is None:
        out.append((figure, target, "-", None))
    else:
        out.append((figure, target, f"{tok[0]:.3f} (highest tenant {tok[1]:.2f})", tok[0] <= most + 0.01))
    counts = [r["tenants"] for r in rows]
    for name, unit, scale, cost in (
        ("CPU, start-up plus the cold cycle", "ms", 1000, lambda r: r["cold"]["cpu_s"]),
        ("idle RSS", "KiB", 1024, lambda r: r["exporter"]["rss_mib"]),
    ):
        figure = f"cost linear, {counts[0]} to {counts[-1]} tenants: {name}"
        if (steps := growth(rows, cost)) is None:
            out.append((figure, f"per added tenant: <= {LINEAR}x the step before", "- (needs 3 tenant counts)", None))
            continue
        last, before = steps
        ratio = last / before if before > 0 else float("inf")
        measured = f"{ratio:.2f}x ({before * scale:.2f} -> {last * scale:.2f} {unit} per added tenant)"
        target = f"per added tenant, {counts[-2]} -> {counts[-1]}: <= {LINEAR}x {counts[-3]} -> {counts[-2]}"
        out.append((figure, target, measured, ratio <= LINEAR))
    return out


def report(run: Result) -> str:
    """The results as markdown: the targets, then the figures for each tenant count."""
    m, s = run["machine"], run["settings"]
    rows = sorted(run["tenants"], key=lambda r: r["tenants"])
    at = next((r["tenants"] for r in rows if r["tenants"] == TARGETS_AT), rows[-1]["tenants"])
    out = [
        f"Commit {m['commit']}; {m['cpus']} CPUs, Python {m['python']}, {m['node_exporter']}; load average "
        f"{m['loadavg_start']:.2f} at start, {m.get('loadavg_end', float('nan')):.2f} at end; {m['date']}.",
        f"Settings: latency {s['latency'] * 1000:g} ms, concurrency {s['concurrency']}, {s['currencies']} currencies "
        f"per tenant, token lifetime {s['token_lifetime']} s; polling for {s['lifetimes']:g} token lifetimes "
        f"(at least {s['window']:g} s); up to {s['scrapes']} scrapes or {s['budget']:g} s per series.",
        "",
        f"Targets at {at} tenants",
        "",
        "| figure | target | measured | met |",
        "|---|---|---|---|",
    ]
    out += [f"| {figure} | {target} | {measured} | {_yes(met)} |" for figure, target, measured, met in targets(run)]
    out += [
        "",
        'Each tenant count (/metrics: median ms of sequential idle scrapes; "while polling": scrapes every 100 ms'
        " during the cold cycle and the busy polling)",
        "",
        "| tenants | samples | /metrics plain, exporter / node_exporter | gzip | RSS MiB idle / peak (node_exporter) "
        "| slowest scrape while polling, ms | cold cycle s / floor s / bound s | CPU s, start-up + cold cycle "
        "| CPU ms per poll, busy | invoice req. per tenant per interval | token req. per tenant per lifetime |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e, ne, c, b = r["exporter"], r["node_exporter"], r["cold"], r["busy"]
        slowest = [v for v in (c["slowest_scrape_ms"], b["slowest_scrape_ms"]) if v is not None]
        inv, tok = b["invoices_per_interval"], b["tokens_per_lifetime"]
        out.append(
            f"| {r['tenants']} | {r['samples']} "
            f"| {e['plain']['p50_ms']:.2f} / {ne['plain']['p50_ms']:.1f} | {e['gzip']['p50_ms']:.2f} / "
            f"{ne['gzip']['p50_ms']:.1f} | {e['rss_mib']:.1f} / {e['rss_peak_mib']:.1f} ({ne['rss_mib']:.0f}) "
            f"| {_f(max(slowest) if slowest else None, 1)} | {c['cycle_s']:.2f} / {c['floor']['cycle_s']:.2f} / "
            f"{r['bound_s']:.2f} "
            f"| {c['cpu_s']:.2f} | {_f(b['cpu_ms_per_poll'])} | {'-' if inv is None else f'{inv[0]:.3f}'} "
            f"| {'-' if tok is None else f'{tok[0]:.3f}'} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
