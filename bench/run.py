"""The benchmark: exporter vs node_exporter's textfile collector, poll cycle vs its bound, cost; one command.

    python bench/run.py                          # 10, 100, 1000, 5000 tenants; ~20 minutes on 2 cores
    python bench/run.py --tenants=1000 --latency=0.1 --concurrency=50

For each tenant count N: a simulator process (N generated App+User tenants, 3 currencies, 2-3 invoice types
each, `--latency` on every invoice answer) and the real exporter CLI against it (its own process; endpoint
`summaries`, so every currency), then:

1. cold cycle: the first poll cycle after start (one token + one invoice request per tenant), timed inside the
   exporter from its own samples (first poll start = min(last_success - poll_duration), end = max(last_success))
   against the bound N x latency / concurrency; its CPU from /proc; /metrics scraped back to back throughout.
2. idle: /metrics plain and gzip, sequentially over one keep-alive connection; CPU per scrape; then gzip
   every 100 ms for --window seconds, the baseline of the busy p99.
3. node_exporter (`--collector.disable-defaults --collector.textfile`) serving a file holding the exporter's
   own exposition; same scrapes.
4. busy: a reload sets interval = max(1 s, 2 x bound), which re-polls every tenant at once and then keeps
   polling; /metrics scraped gzip every 100 ms for at least --window seconds, in whole intervals; invoice and
   token requests counted at the simulator (expected: one invoice request per tenant per interval, no token).

Prints markdown tables and writes bench/out/results.json; `--plot` draws the PNG from that file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BackgroundScrapes,
    Child,
    Sampler,
    Scraper,
    free_port,
    gunzip,
    percentile,
    scrape_series,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_EXPORTER = "prometheus-node-exporter"
MIB = 1024 * 1024
_SAMPLE = re.compile(r'^(\w+)\{tenant="([^"]+)"\} (\S+)$')

Result = dict[str, Any]


def main() -> int:
    """Run the benchmark for every tenant count and print the tables."""
    p = argparse.ArgumentParser(description="partnercenter-exporter benchmark", usage=__doc__)
    p.add_argument("--tenants", default="10,100,1000,5000", help="comma-separated tenant counts")
    p.add_argument("--latency", type=float, default=0.1, help="simulated invoice latency, seconds")
    p.add_argument("--concurrency", type=int, default=50, help="exporter concurrency")
    p.add_argument("--currencies", type=int, default=3, help="currencies per tenant")
    p.add_argument("--scrapes", type=int, default=300, help="scrapes per series (fewer if --budget runs out)")
    p.add_argument("--budget", type=float, default=15.0, help="seconds per scrape series at most")
    p.add_argument(
        "--window", type=float, default=30.0, help="seconds of paced scrapes, idle and busy (busy: whole intervals)"
    )
    p.add_argument("--out", type=Path, default=BENCH / "out", help="work directory (logs, configs, results.json)")
    p.add_argument("--plot", type=Path, nargs="?", const=BENCH / "scrape_latency.png", help="also write the PNG")
    p.add_argument("--profile", action="store_true", help="sample the exporter with py-spy (collapsed stacks)")
    p.add_argument("--plot-only", action="store_true", help="only draw the plot from results.json")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    if args.plot_only:
        plot(json.loads(results_path.read_text()), args.plot or BENCH / "scrape_latency.png")
        return 0
    run: Result = {"machine": machine(), "settings": settings(args), "tenants": []}
    for n in [int(x) for x in args.tenants.split(",")]:
        print(f"--- {n} tenants", file=sys.stderr, flush=True)
        run["tenants"].append(bench_one(n, args))
        results_path.write_text(json.dumps(run, indent=1))
    run["machine"]["loadavg_end"] = os.getloadavg()
    results_path.write_text(json.dumps(run, indent=1))
    print(tables(run))
    if args.plot:
        plot(run, args.plot)
    return 0


def machine() -> Result:
    """What the numbers were measured on."""
    version = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node_exporter": (version.stdout or version.stderr).split("\n", 1)[0],
        "loadavg_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def settings(args: argparse.Namespace) -> Result:
    """The knobs of this run."""
    return {k: getattr(args, k) for k in ("latency", "concurrency", "currencies", "scrapes", "budget")}


def spawn_simulator(port: int, tenants: int, latency: float, log_path: Path, currencies: int = 3) -> Child:
    """The benchmark's simulator (bench/simulator.py) in its own process on 127.0.0.1:port."""
    argv = [
        sys.executable,
        str(BENCH / "simulator.py"),
        f"--port={port}",
        f"--tenants={tenants}",
        f"--currencies={currencies}",
        f"--latency={latency}",
    ]
    return Child.spawn("simulator", argv, log_path)


def spawn_exporter(config: Path, port: int, log_path: Path, tree: Path = ROOT) -> Child:
    """The exporter CLI of the checkout `tree` in its own process on 127.0.0.1:port, logging warnings and worse."""
    argv = [
        sys.executable,
        "-m",
        "exporter",
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warning",
    ]
    return Child.spawn("exporter", argv, log_path, cwd=tree)


def write_config(path: Path, n: int, sim_port: int, interval: float, concurrency: int) -> None:
    """An exporter config for the simulator's generated tenants (App+User, endpoint summaries)."""
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
            f"    refresh_token_file: tokens/{label}.token",
            "    endpoint: summaries",
        ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def sim_counts(sim: Scraper) -> tuple[int, int]:
    """(token requests, invoice requests) the simulator has seen, over all tenants."""
    stats = sim.json("/_sim/stats")
    assert isinstance(stats, dict)
    tokens = sum(int(v.get("token", 0)) for v in stats.values())
    invoices = sum(int(v.get("summary", 0)) + int(v.get("summaries", 0)) for v in stats.values())
    return tokens, invoices


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


def series_stats(latencies: list[float]) -> Result:
    """Median, p99 and count, in milliseconds."""
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "n": len(latencies),
    }


def measure_scrapes(child: Child, port: int, args: argparse.Namespace, *, gzip: bool) -> Result:
    """A scrape series plus the serving process's CPU per scrape."""
    scrape_series(port, 3, 10, gzip=gzip, warmup=0)  # warm up caches (e.g. the gzip rendering)
    cpu = child.cpu_seconds()
    latencies = scrape_series(port, args.scrapes, args.budget, gzip=gzip, warmup=0)
    result = series_stats(latencies)
    result["cpu_ms_per_scrape"] = (child.cpu_seconds() - cpu) / len(latencies) * 1000
    return result


def bench_one(n: int, args: argparse.Namespace) -> Result:
    """Every measurement for N tenants."""
    work = args.out / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "tokens").glob("*.token"):
        stale.unlink()
    bound = n * args.latency / args.concurrency
    result: Result = {"tenants": n, "bound_s": bound}
    sim_port, exp_port, node_port = free_port(), free_port(), free_port()
    sim = spawn_simulator(sim_port, n, args.latency, work / "simulator.log", currencies=args.currencies)
    children = [sim]
    try:
        sim_client = Scraper(sim_port)
        wait_until(lambda: sim_client.get("/_sim/healthz"), 60, "the simulator")
        config = work / "config.yml"
        write_config(config, n, sim_port, 3600, args.concurrency)

        # 1. Cold cycle: start the exporter, scrape back to back while it polls every tenant once.
        exporter = spawn_exporter(config, exp_port, work / "exporter.log")
        children.append(exporter)
        if args.profile:
            # Sampled for the whole run; the flat profile shows where the CPU of polling, rendering and serving goes.
            profiler = Child.spawn(
                "py-spy",
                [
                    "py-spy",
                    "record",
                    f"--pid={exporter.proc.pid}",
                    "--rate=100",
                    "--gil",  # only the thread holding the GIL: where the one usable core goes
                    "--format=raw",
                    f"--output={work / 'exporter.profile.txt'}",
                ],
                work / "py-spy.log",
                stop_signal=signal.SIGINT,
            )
            children.append(profiler)
        sampler = Sampler(exporter)
        sampler.start()
        background = BackgroundScrapes(exp_port)
        background.start()
        client = Scraper(exp_port)
        wait_ready(exporter, client, 120 + bound * 10)
        background.stop()

        def settled() -> bool:
            # Every tenant's success is in the served exposition, and the renderer has gone quiet.
            text = client.text("/metrics")
            cpu = exporter.cpu_seconds()
            time.sleep(0.5)
            up = per_tenant(text, "partnercenter_up")
            return len(up) == n and all(v == 1 for v in up.values()) and exporter.cpu_seconds() - cpu < 0.02

        wait_until(settled, 120 + bound * 5, "the exposition to settle", interval=0)
        sampler.stop()
        body = client.get("/metrics")[1]
        text = body.decode()
        start, end = cycle_window(text)
        tokens, invoices = sim_counts(sim_client)
        during = [s for t, s in background.results if start <= t <= end]
        result["cold"] = {
            "cycle_s": end - start,
            "ratio_to_bound": (end - start) / bound,
            "cpu_s": sampler.samples[-1][1] - sampler.cpu_at(start),
            "token_requests_per_tenant": tokens / n,
            "invoice_requests_per_tenant": invoices / n,
            "scrapes_during": series_stats(during) if during else None,
        }
        result["samples"] = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        result["body_bytes"] = len(body)
        print(f"    cold cycle {result['cold']}", file=sys.stderr, flush=True)

        # 2. Idle: nothing changes (interval 1 h), so every scrape should serve cached bytes.
        result["exporter"] = {
            "plain": measure_scrapes(exporter, exp_port, args, gzip=False),
            "gzip": measure_scrapes(exporter, exp_port, args, gzip=True),
        }
        # The busy figures are gzip scrapes every 100 ms; their idle baseline is taken the same way, over as many
        # scrapes, so that the p99s compare like with like (back-to-back scrapes keep caches and clocks warm).
        result["exporter"]["gzip_paced"] = series_stats(paced_scrapes(exp_port, args.window))
        gz = client.get("/metrics", gzip=True)[1]
        result["gzip_bytes"] = len(gz)
        assert gunzip(gz).split(b"\n# HELP process_")[0] == body.split(b"\n# HELP process_")[0]
        result["exporter"]["rss_mib"], _ = (m / MIB for m in exporter.memory())

        # 3. node_exporter serving the same exposition from a file.
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
                f"--web.listen-address=127.0.0.1:{node_port}",
            ],
            work / "node_exporter.log",
        )
        children.append(node)
        node_client = Scraper(node_port)

        def node_up() -> bool:
            node.check_alive()
            return bool(node_client.get("/"))

        wait_until(node_up, 30, "node_exporter")
        node_body = node_client.get("/metrics")[1]
        assert b"node_textfile_scrape_error 0" in node_body, "node_exporter rejected the file"
        result["node_exporter"] = {
            "plain": measure_scrapes(node, node_port, args, gzip=False),
            "gzip": measure_scrapes(node, node_port, args, gzip=True),
            "samples": sum(1 for line in node_body.decode().splitlines() if line and not line.startswith("#")),
        }
        result["node_exporter"]["rss_mib"], _ = (m / MIB for m in node.memory())
        node_client.close()
        node.stop()

        # 4. Warm cycle: a reload to an interval shorter than the time since the cold cycle makes every tenant
        # due at once, with its token in hand (one invoice request each); the next poll is that interval away.
        interval = max(30.0, time.time() - end - 1)
        time.sleep(max(0.0, interval + 1 - (time.time() - end)))
        write_config(config, n, sim_port, interval, args.concurrency)
        result["warm"] = timed_reload_cycle(exporter, exp_port, sim_client, n, bound)
        print(f"    warm cycle {result['warm']}", file=sys.stderr, flush=True)

        # 5. Busy: a reload to a short interval re-polls every tenant at once, then polling goes on. The window
        # is whole intervals: each tenant's polls start one interval apart (+-5% jitter) from its first, which
        # falls somewhere in the reload's cycle, so in `rounds` intervals from the reload every tenant is polled
        # `rounds` times. A window of any other length would count some tenants once more than others.
        interval = max(1.0, 2 * bound)
        rounds = max(2, math.ceil(args.window / interval))
        write_config(config, n, sim_port, interval, args.concurrency)
        tokens0, invoices0 = sim_counts(sim_client)
        cpu0 = exporter.cpu_seconds()
        background = BackgroundScrapes(exp_port)
        background.start()
        client.close()
        reloaded = reload_exporter(exp_port)
        time.sleep(max(0.0, reloaded + rounds * interval - time.time()))
        tokens1, invoices1 = sim_counts(sim_client)
        background.stop()
        elapsed = time.time() - reloaded
        busy = [s for t, s in background.results if t >= reloaded]
        result["busy"] = {
            "interval_s": interval,
            "window_s": elapsed,
            "scrapes": series_stats(busy),
            "cpu_s_per_s": (exporter.cpu_seconds() - cpu0) / elapsed,
            "token_requests": tokens1 - tokens0,
            "invoice_requests_per_tenant_interval": (invoices1 - invoices0) / (n * rounds),
        }
        result["exporter"]["rss_peak_mib"] = exporter.memory()[1] / MIB
        print(f"    busy {result['busy']}", file=sys.stderr, flush=True)
        sim_client.close()
        return result
    finally:
        for child in reversed(children):
            child.stop()


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


def paced_scrapes(port: int, seconds: float, pace: float = 0.1) -> list[float]:
    """Latencies of gzip scrapes every `pace` seconds for `seconds`; raises if any scrape failed."""
    background = BackgroundScrapes(port, pace=pace)
    background.start()
    time.sleep(seconds)
    background.stop()
    if background.errors:  # a failed scrape has no latency: a series without it would look better than it was
        raise RuntimeError(f"scrapes failed: {background.errors[:3]}")
    return [s for _, s in background.results]


def reload_exporter(port: int) -> float:
    """POST /-/reload; returns the wall time it was sent."""
    sent = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/-/reload")
    status = conn.getresponse().status
    conn.close()
    assert status == 200, f"reload answered {status}"
    return sent


def timed_reload_cycle(exporter: Child, port: int, sim: Scraper, n: int, bound: float) -> Result:
    """Reload (the config must make every tenant due now) and time the cycle that follows, as for the cold one."""
    client = Scraper(port)
    tokens0, invoices0 = sim_counts(sim)
    background = BackgroundScrapes(port)
    background.start()
    cpu0 = exporter.cpu_seconds()
    reloaded = reload_exporter(port)

    def done() -> bool:
        # Asked of the simulator: parsing the exporter's 5 MiB exposition four times a second took the harness
        # a good part of a core, on the machine whose cores the cycle needs.
        return sim_counts(sim)[1] - invoices0 >= n

    wait_until(done, 60 + bound * 10, "every tenant to be polled after the reload", interval=0.25)
    background.stop()
    cpu = exporter.cpu_seconds() - cpu0

    def published() -> str | None:
        text = client.text("/metrics")
        success = per_tenant(text, "partnercenter_last_success_timestamp_seconds")
        return text if len(success) == n and min(success.values()) > reloaded else None

    # Requests counted are not polls finished (a retried request counts twice); give them the cycle's budget.
    wait_until(lambda: published() is not None, 60 + bound * 10, "the last polls in the exposition", interval=1)
    text = published() or ""
    client.close()
    start, end = cycle_window(text)
    tokens1, invoices1 = sim_counts(sim)
    during = [s for t, s in background.results if start <= t <= end]
    return {
        "cycle_s": end - start,
        "ratio_to_bound": (end - start) / bound,
        "cpu_s": cpu,
        "token_requests_per_tenant": (tokens1 - tokens0) / n,
        "invoice_requests_per_tenant": (invoices1 - invoices0) / n,
        "scrapes_during": series_stats(during) if during else None,
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def tables(run: Result) -> str:
    """The results as markdown tables."""
    m, s = run["machine"], run["settings"]
    out = [
        f"Machine: {m['cpus']} CPUs, Python {m['python']}, {m['node_exporter']}; load average at start "
        f"{m['loadavg_start'][0]:.2f}, at end {m.get('loadavg_end', [float('nan')])[0]:.2f}; {m['date']}.",
        f"Settings: latency {s['latency'] * 1000:g} ms, concurrency {s['concurrency']}, "
        f"{s['currencies']} currencies per tenant; up to {s['scrapes']} scrapes or {s['budget']:g} s per series.",
        "",
        "Scrape latency, ms (median / p99), one keep-alive connection; sequential scrapes, and paced ones (gzip,"
        " every 100 ms) idle and while polling",
        "",
        "| tenants | samples | body plain / gzip | exporter plain | node_exporter plain | ratio p50 | "
        "exporter gzip | node_exporter gzip | ratio p50 | exporter idle, paced (gzip) | exporter busy, paced (gzip) "
        "| busy p99 / idle paced p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run["tenants"]:
        e, ne, b = r["exporter"], r["node_exporter"], r["busy"]["scrapes"]
        paced = e["gzip_paced"]
        out.append(
            f"| {r['tenants']} | {r['samples']} | {r['body_bytes'] / 1024:.0f} / {r['gzip_bytes'] / 1024:.0f} KiB "
            f"| {e['plain']['p50_ms']:.2f} / {e['plain']['p99_ms']:.2f} "
            f"| {ne['plain']['p50_ms']:.2f} / {ne['plain']['p99_ms']:.2f} "
            f"| {_ratio(e['plain']['p50_ms'], ne['plain']['p50_ms'])} "
            f"| {e['gzip']['p50_ms']:.2f} / {e['gzip']['p99_ms']:.2f} "
            f"| {ne['gzip']['p50_ms']:.2f} / {ne['gzip']['p99_ms']:.2f} "
            f"| {_ratio(e['gzip']['p50_ms'], ne['gzip']['p50_ms'])} "
            f"| {paced['p50_ms']:.2f} / {paced['p99_ms']:.2f} (n={paced['n']}) "
            f"| {b['p50_ms']:.2f} / {b['p99_ms']:.2f} (n={b['n']}) "
            f"| {_ratio(b['p99_ms'], paced['p99_ms'])} |"
        )
    out += [
        "",
        "Polling and cost",
        "",
        "| tenants | cold cycle s | warm cycle s | bound s | cold, warm cycle / bound | "
        "scrapes during cold, warm cycle p50 / p99 ms | "
        "CPU s per cold, warm cycle | busy CPU s/s | CPU ms per scrape plain / gzip (node_exporter) | "
        "RSS MiB idle / peak (node_exporter) | token, invoice req. per tenant, cold; warm | "
        "busy: invoice req. per tenant per interval, token req. |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run["tenants"]:
        c, w, e, ne, b = r["cold"], r["warm"], r["exporter"], r["node_exporter"], r["busy"]
        during_text = ", ".join(
            f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} (n={d['n']})" if d else "-"
            for d in (c["scrapes_during"], w["scrapes_during"])
        )
        out.append(
            f"| {r['tenants']} | {c['cycle_s']:.2f} | {w['cycle_s']:.2f} | {r['bound_s']:.2f} "
            f"| {c['ratio_to_bound']:.2f}, {w['ratio_to_bound']:.2f} "
            f"| {during_text} | {c['cpu_s']:.2f}, {w['cpu_s']:.2f} | {b['cpu_s_per_s']:.2f} "
            f"| {e['plain']['cpu_ms_per_scrape']:.2f} / {e['gzip']['cpu_ms_per_scrape']:.2f} "
            f"({ne['plain']['cpu_ms_per_scrape']:.1f} / {ne['gzip']['cpu_ms_per_scrape']:.1f}) "
            f"| {e['rss_mib']:.0f} / {e['rss_peak_mib']:.0f} ({ne['rss_mib']:.0f}) "
            f"| {c['token_requests_per_tenant']:.2f}, {c['invoice_requests_per_tenant']:.2f}; "
            f"{w['token_requests_per_tenant']:.2f}, {w['invoice_requests_per_tenant']:.2f} "
            f"| {b['invoice_requests_per_tenant_interval']:.2f}, {b['token_requests']} |"
        )
    return "\n".join(out)


def plot(run: Result, path: Path) -> None:
    """Scrape latency and RSS against tenant count, exporter vs node_exporter."""
    import matplotlib as mpl  # noqa: PLC0415 - only the plot needs it (pip install '.[bench]')

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = run["tenants"]
    n = [r["tenants"] for r in rows]
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for who, label, color in (
        ("exporter", "partnercenter-exporter", "tab:blue"),
        ("node_exporter", "node_exporter textfile", "tab:orange"),
    ):
        for enc, style in (("plain", "-"), ("gzip", "--")):
            lat.plot(n, [r[who][enc]["p50_ms"] for r in rows], style, marker="o", color=color, label=f"{label}, {enc}")
    lat.plot(
        n,
        [r["busy"]["scrapes"]["p99_ms"] for r in rows],
        ":",
        marker="x",
        color="tab:blue",
        label="partnercenter-exporter, p99 while polling",
    )
    lat.set(
        xscale="log", yscale="log", xlabel="tenants", ylabel="/metrics latency, ms (median)", title="Scrape latency"
    )
    lat.legend(fontsize=7)
    lat.grid(True, which="both", alpha=0.3)
    mem.plot(
        n, [r["exporter"]["rss_mib"] for r in rows], "-", marker="o", color="tab:blue", label="partnercenter-exporter"
    )
    mem.plot(
        n,
        [r["exporter"]["rss_peak_mib"] for r in rows],
        ":",
        marker="x",
        color="tab:blue",
        label="partnercenter-exporter, peak",
    )
    mem.plot(
        n, [r["node_exporter"]["rss_mib"] for r in rows], "-", marker="o", color="tab:orange", label="node_exporter"
    )
    mem.set(xscale="log", xlabel="tenants", ylabel="RSS, MiB", title="Memory")
    mem.legend(fontsize=7)
    mem.grid(True, which="both", alpha=0.3)
    s = run["settings"]
    fig.suptitle(
        f"{s['currencies']} currencies per tenant, latency {s['latency'] * 1000:g} ms, "
        f"concurrency {s['concurrency']}; {run['machine']['cpus']} CPUs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
