"""Scrape latency while polling against idle, pooled over several runs: the busy/idle p99 target, A/B.

    python bench/busy.py                                   # this tree, 1000 tenants, 3 runs
    python bench/busy.py --tree=base=../other-checkout --tree=new=. --runs=4

One run of one tree: the simulator (always this checkout's: N tenants, --latency on every invoice answer) and that
tree's exporter (`python -m exporter` with the tree as working directory, its own process). First idle: after
the first poll cycle (interval 1 h), gzip scrapes every --pace seconds for --seconds. Then a reload to
--interval, and the same scrapes while it keeps polling. The exporter's memory (RSS and PSS, summed over its
process tree) is read at the end of the busy window.

A control is scraped in the same windows, half a pace after each scrape of the exporter, from the same client
thread: `bench/control.py`, the exporter's HTTP stack in a process of its own serving the exporter's first gzip
body and nothing else. What polling costs the machine (the other core busy with the poller and the simulator)
shows on the control as much as on the exporter; what shows on the exporter alone is its own. Each window also
records the CPU time the hypervisor took from this machine's CPUs ("steal", from /proc/stat), which comes and
goes with whatever else runs on the host and moves the tails of both.

Why pooled: bench/run.py's busy and idle p99 each come from one window of ~300 scrapes paced at 100 ms, so each
is the third-worst scrape and moves x1.5-2 between runs of the same code. Several runs at a faster pace give a
p99 over thousands of scrapes; runs of different trees alternate, so drift on the machine falls on all of them
alike. Even so, one batch tells two trees apart only when they differ by more than about a third: an A/A batch
(the same code as two trees) and four batches of one session are in bench/RESULTS.md, seventh round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Child, Scraper, free_port, percentile, wait_until
from run import (
    BENCH,
    ROOT,
    reload_exporter,
    spawn_exporter,
    spawn_simulator,
    wait_ready,
    write_config,
)

QUANTILES = (50, 90, 99, 99.9)
WINDOWS = ("idle", "busy")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """What one window (idle or busy) of one or more runs measured."""

    exporter: list[float] = field(default_factory=list)  # scrape latencies, seconds
    control: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steal: float = 0.0  # CPU seconds the hypervisor took from this machine's CPUs meanwhile

    def add(self, other: Window) -> None:
        """Pool another window's figures into this one."""
        self.exporter += other.exporter
        self.control += other.control
        self.seconds += other.seconds
        self.steal += other.steal

    def steal_share(self) -> float:
        """Stolen CPU time per second of the window, summed over CPUs (0.1: a tenth of one CPU)."""
        return self.steal / self.seconds if self.seconds else 0.0


def main() -> int:
    """Run every tree --runs times, alternating, and print pooled quantiles per tree and window."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a checkout to run (repeat)")
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--interval", type=float, default=4.0, help="poll interval of the busy window (s)")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each window (s)")
    p.add_argument("--pace", type=float, default=0.02, help="seconds between scrapes of the exporter")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "busy")
    args = p.parse_args()
    trees = dict(_tree(spec) for spec in args.tree) or {"this": ROOT}
    pooled = {name: {w: Window() for w in WINDOWS} for name in trees}
    memory: dict[str, list[tuple[int, int]]] = {name: [] for name in trees}
    for run in range(1, args.runs + 1):
        for name, tree in trees.items():
            windows, mem = one_run(tree, args, args.out / f"{name}-{run}")
            for w in WINDOWS:
                pooled[name][w].add(windows[w])
            memory[name].append(mem)
            print(f"run {run} {name}: " + " | ".join(f"{w} {_summary(windows[w])}" for w in WINDOWS), flush=True)
    print()
    quantiles = " | ".join(f"p{q} ms" for q in QUANTILES)
    print(f"| tree | window | scrapes | {quantiles} | busy p99 / idle p99 | steal |")
    print("|---|---|---:|" + "---:|" * len(QUANTILES) + "---:|---:|")
    for name, windows in pooled.items():
        for server in ("exporter", "control"):
            series = {w: getattr(windows[w], server) for w in WINDOWS}
            ratio = percentile(series["busy"], 99) / percentile(series["idle"], 99)
            for w in WINDOWS:
                cells = " | ".join(f"{percentile(series[w], q) * 1000:.2f}" for q in QUANTILES)
                last = f"x{ratio:.2f}" if w == "busy" else ""
                label = name if server == "exporter" else f"{name}: control"
                print(f"| {label} | {w} | {len(series[w])} | {cells} | {last} | {windows[w].steal_share():.3f} |")
    print()
    print("steal: CPU seconds per second that the hypervisor gave to others, summed over this machine's CPUs.")
    print("control: bench/control.py, a Python server with one fixed body, scraped in the same windows.")
    for name, mems in memory.items():
        rss = max(r for r, _ in mems) / 2**20
        pss = max(p for _, p in mems) / 2**20
        print(f"{name}: exporter process tree after the busy window, max over runs: RSS {rss:.0f}, PSS {pss:.0f} MiB")
    return 0


def _tree(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not (Path(path) / "exporter" / "__main__.py").is_file():
        raise SystemExit(f"--tree wants NAME=PATH of a checkout holding exporter/, got {spec!r}")
    return name, Path(path).resolve()


def _summary(window: Window) -> str:
    def quantiles(latencies: list[float]) -> str:
        return " ".join(f"p{q}={percentile(latencies, q) * 1000:.2f}" for q in QUANTILES) + f" (n={len(latencies)})"

    return f"{quantiles(window.exporter)}, control {quantiles(window.control)}, steal {window.steal_share():.3f}"


def one_run(tree: Path, args: argparse.Namespace, work: Path) -> tuple[dict[str, Window], tuple[int, int]]:
    """The idle and busy windows of one run of `tree`, and (RSS, PSS) of the exporter's process tree."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "tokens").glob("*.token"):
        stale.unlink()
    sim_port, exp_port, control_port = free_port(), free_port(), free_port()
    children = [spawn_simulator(sim_port, args.tenants, args.latency, work / "simulator.log")]
    try:
        sim = Scraper(sim_port)
        wait_until(lambda: sim.get("/_sim/healthz"), 60, "the simulator")
        config = work / "config.yml"
        write_config(config, args.tenants, sim_port, 3600, args.concurrency)
        exporter = spawn_exporter(config, exp_port, work / "exporter.log", tree)
        children.append(exporter)
        client = Scraper(exp_port)
        wait_ready(exporter, client, 300)
        # The first scrape renders every tenant: not a latency of either window. Its body is the control's.
        (work / "metrics.gz").write_bytes(client.get("/metrics", gzip=True)[1])
        client.close()
        children.append(spawn_control(control_port, work / "metrics.gz", work / "control.log"))
        control = Scraper(control_port)
        wait_until(lambda: control.get("/metrics", gzip=True), 30, "the control server")
        control.close()
        idle = paired_scrapes(exp_port, control_port, args.seconds, args.pace)
        write_config(config, args.tenants, sim_port, args.interval, args.concurrency)
        reload_exporter(exp_port)
        busy = paired_scrapes(exp_port, control_port, args.seconds, args.pace)
        mem = tree_memory(exporter.proc.pid)
        for child in children:
            child.check_alive()
        return {"idle": idle, "busy": busy}, mem
    finally:
        for child in reversed(children):
            child.stop()


def spawn_control(port: int, body: Path, log_path: Path) -> Child:
    """bench/control.py serving `body` (gzip) on 127.0.0.1:port."""
    argv = [sys.executable, str(BENCH / "control.py"), f"--port={port}", f"--body={body}", "--encoding=gzip"]
    return Child.spawn("control", argv, log_path)


def paired_scrapes(exporter_port: int, control_port: int, seconds: float, pace: float) -> Window:
    """Gzip scrapes of the exporter every `pace` seconds for `seconds`, each followed half a pace later by one of
    the control; one thread, so that neither scrape's client waits on the other's. Raises if a scrape failed."""
    exporter, control = Scraper(exporter_port), Scraper(control_port)
    window = Window()
    steal0, started = _steal(), time.monotonic()
    due = started
    try:
        while due < started + seconds:
            for scraper, series in ((exporter, window.exporter), (control, window.control)):
                time.sleep(max(0.0, due - time.monotonic()))
                series.append(scraper.get("/metrics", gzip=True)[0])
                due += pace / 2
    finally:
        exporter.close()
        control.close()
    window.seconds = time.monotonic() - started
    window.steal = _steal() - steal0
    return window


def _steal() -> float:
    """CPU seconds stolen by the hypervisor so far, summed over CPUs (/proc/stat's eighth field)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / _TICKS


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of `pid` and its descendants, from /proc/PID/smaps_rollup."""
    totals = {"Rss": 0, "Pss": 0}
    for member in (pid, *_descendants(pid)):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in totals:
                totals[key] += int(rest.split()[0]) * 1024  # kB
    return totals["Rss"], totals["Pss"]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from the parent each process names in /proc/N/stat (no procps needed)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces; the state and the parent's PID follow it.
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


if __name__ == "__main__":
    sys.exit(main())
