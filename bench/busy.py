"""Scrape latency while polling against idle, pooled over several runs: the busy/idle p99 target, A/B.

    python bench/busy.py                                   # this tree, 1000 tenants, 3 runs
    python bench/busy.py --tree=base=../other-checkout --tree=new=. --runs=4

One run of one tree: the simulator (always this checkout's: N tenants, --latency on every invoice answer) and that
tree's exporter (`python -m exporter` with the tree as working directory, its own process). First idle: after
the first poll cycle (interval 1 h), gzip scrapes every --pace seconds for --seconds. Then a reload to
--interval, and the same scrapes while it keeps polling. The exporter's memory (RSS and PSS, summed over its
process tree) is read at the end of the busy window.

Why pooled: bench/run.py's busy and idle p99 each come from one window of ~300 scrapes paced at 100 ms, so each
is the third-worst scrape and moves x1.5-2 between runs of the same code. Several runs at a faster pace give a
p99 over thousands of scrapes; runs of different trees alternate, so drift on the machine falls on all of them
alike. Even so, one batch tells two trees apart only when they differ by more than about a third: an A/A batch
(the same code as two trees) and four batches of one session are in bench/RESULTS.md, seventh round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Scraper, free_port, percentile, wait_until
from run import (
    BENCH,
    ROOT,
    paced_scrapes,
    reload_exporter,
    spawn_exporter,
    spawn_simulator,
    wait_ready,
    write_config,
)

QUANTILES = (50, 90, 99, 99.9)


def main() -> int:
    """Run every tree --runs times, alternating, and print pooled quantiles per tree and window."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a checkout to run (repeat)")
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--interval", type=float, default=4.0, help="poll interval of the busy window (s)")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each window (s)")
    p.add_argument("--pace", type=float, default=0.02, help="seconds between scrapes")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "busy")
    args = p.parse_args()
    trees = dict(_tree(spec) for spec in args.tree) or {"this": ROOT}
    pooled: dict[str, dict[str, list[float]]] = {name: {"idle": [], "busy": []} for name in trees}
    memory: dict[str, list[tuple[int, int]]] = {name: [] for name in trees}
    for run in range(1, args.runs + 1):
        for name, tree in trees.items():
            idle, busy, mem = one_run(tree, args, args.out / f"{name}-{run}")
            pooled[name]["idle"] += idle
            pooled[name]["busy"] += busy
            memory[name].append(mem)
            print(f"run {run} {name}: idle {_quantiles(idle)} | busy {_quantiles(busy)}", flush=True)
    print()
    print("| tree | window | scrapes | " + " | ".join(f"p{q} ms" for q in QUANTILES) + " | busy p99 / idle p99 |")
    print("|---|---|---:|" + "---:|" * len(QUANTILES) + "---:|")
    for name, windows in pooled.items():
        ratio = percentile(windows["busy"], 99) / percentile(windows["idle"], 99)
        for window, latencies in windows.items():
            cells = " | ".join(f"{percentile(latencies, q) * 1000:.2f}" for q in QUANTILES)
            last = f"x{ratio:.2f}" if window == "busy" else ""
            print(f"| {name} | {window} | {len(latencies)} | {cells} | {last} |")
    print()
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


def _quantiles(latencies: list[float]) -> str:
    return " ".join(f"p{q}={percentile(latencies, q) * 1000:.2f}" for q in QUANTILES) + f" (n={len(latencies)})"


def one_run(tree: Path, args: argparse.Namespace, work: Path) -> tuple[list[float], list[float], tuple[int, int]]:
    """(idle latencies, busy latencies, (RSS, PSS) of the exporter's process tree) of one run of `tree`."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "tokens").glob("*.token"):
        stale.unlink()
    sim_port, exp_port = free_port(), free_port()
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
        client.get("/metrics", gzip=True)  # the first scrape renders every tenant: not a latency of either window
        idle = paced_scrapes(exp_port, args.seconds, args.pace)
        write_config(config, args.tenants, sim_port, args.interval, args.concurrency)
        reload_exporter(exp_port)
        busy = paced_scrapes(exp_port, args.seconds, args.pace)
        mem = tree_memory(exporter.proc.pid)
        exporter.check_alive()
        return idle, busy, mem
    finally:
        for child in reversed(children):
            child.stop()


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
