"""What a thread that wakes up meets when another thread is running Python: the GIL hand-over, on its own.

    python bench/gil.py

A "busy" thread runs Python for --run ms, then sleeps --rest ms, over and over. A "waker" thread sleeps 1 ms at
a time and notes how late it woke: each wake needs the GIL back, as a scrape's thread does when its request
arrives. Variants of the busy thread:

- never releases the GIL during a run: the waker asks for it after one switch interval and gets it;
- releases it every --every us for a moment (a system call; the poller does that at every socket call and every
  `uuid4()`, which reads /dev/urandom): each release and re-take counts as a switch, so the waker's request is
  never made, and it waits until the run ends unless it wins one of the races;
- the same, and sleeps 50 us after each ms of its run: a real pause, long enough for the waker to take the GIL.

With no busy thread at all, the waker's lateness is the machine's: the timer and the scheduler (and on a virtual
machine, the hypervisor).

Where the threads run matters as much (bench/RESULTS.md, ninth round): `taskset -c 0 python bench/gil.py` keeps
both on one CPU, and --idle runs the busy thread under SCHED_IDLE, so that the waker's wake-up always preempts it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import percentile


def main() -> int:
    """Print the waker's lateness for each variant."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=float, default=20.0, help="ms of Python per busy run")
    p.add_argument("--rest", type=float, default=10.0, help="ms of sleep between busy runs")
    p.add_argument("--every", type=float, default=100.0, help="us between GIL releases, where a variant has them")
    p.add_argument("--switch", type=float, default=0.2, help="switch interval, ms (the exporter's is 0.2)")
    p.add_argument("--wakes", type=int, default=3000)
    p.add_argument("--idle", action="store_true", help="run the busy thread under SCHED_IDLE (Linux)")
    args = p.parse_args()
    sys.setswitchinterval(args.switch / 1000)
    run, rest, every = args.run / 1000, args.rest / 1000, args.every / 1e6
    variants: dict[str, Callable[[threading.Event], None] | None] = {
        "no busy thread": None,
        "busy, never releases": lambda stop: _busy(stop, run, rest, 0.0, 0.0, args.idle),
        f"busy, releases every {args.every:g} us": lambda stop: _busy(stop, run, rest, every, 0.0, args.idle),
        "busy, releases, and pauses 50 us per ms": lambda stop: _busy(stop, run, rest, every, 0.001, args.idle),
    }
    cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    policy = "SCHED_IDLE" if args.idle else "SCHED_OTHER"
    print(f"busy runs of {args.run:g} ms, {args.rest:g} ms apart; switch interval {args.switch:g} ms")
    print(f"CPUs {cpus}; the busy thread's policy {policy}")
    print("| busy thread | waker late p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, busy in variants.items():
        late = _measure(busy, args.wakes)
        cells = " | ".join(f"{percentile(late, q) * 1000:.2f}" for q in (50, 90, 99, 100))
        print(f"| {name} | {cells} |", flush=True)
    return 0


def _busy(stop: threading.Event, run: float, rest: float, release_every: float, pause_every: float, idle: bool) -> None:
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
    while not stop.is_set():
        started = released = paused = time.perf_counter()
        x = 0
        while (now := time.perf_counter()) - started < run:
            for i in range(30):
                x += i
            if release_every and now - released >= release_every:
                os.urandom(16)  # getrandom(2), called with the GIL released
                released = now
            if pause_every and now - paused >= pause_every:
                time.sleep(0.00005)
                paused = time.perf_counter()
        time.sleep(rest)


def _measure(busy: Callable[[threading.Event], None] | None, wakes: int) -> list[float]:
    stop = threading.Event()
    thread = threading.Thread(target=busy, args=(stop,), daemon=True) if busy else None
    if thread:
        thread.start()
    late = []
    for _ in range(wakes):
        started = time.perf_counter()
        time.sleep(0.001)
        late.append(time.perf_counter() - started - 0.001)
    stop.set()
    if thread:
        thread.join()
    return late


if __name__ == "__main__":
    sys.exit(main())
