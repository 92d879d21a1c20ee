"""Benchmark plumbing: child processes, their CPU and memory from /proc, and a keep-alive scrape client.

Linux only (/proc). Nothing here knows what is measured; bench/run.py decides that.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it is truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, http.client.HTTPException) as exc:  # not listening yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last error: {last!r})")


@dataclass
class Child:
    """A child process with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """Start `argv` with stdout and stderr into `log_path`."""
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=None if env is None else dict(env),
            )
        return cls(name, proc, log_path)

    def check_alive(self) -> None:
        """Raise with the log tail when the process has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, all threads."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def memory(self) -> tuple[int, int]:
        """(RSS, peak RSS) in bytes."""
        rss = peak = 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
        return rss, peak

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Scraper:
    """One keep-alive HTTP connection, as Prometheus keeps one per target; times a request to its last byte."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self._port = port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, *, gzip: bool = False, accept: str = "text/plain;version=0.0.4") -> tuple[float, bytes]:
        """(seconds, body as sent on the wire) of one GET; raises on a non-200 answer."""
        headers = {"Accept": accept, "Accept-Encoding": "gzip" if gzip else "identity"}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout)
                self._conn.connect()
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            try:
                self._conn.request("GET", path, headers=headers)
                response = self._conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once, untimed.
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            return elapsed, body
        raise AssertionError("unreachable")

    def text(self, path: str) -> str:
        """The decoded body of a GET (asked gzipped: polling for a condition must not load the exporter)."""
        return gzip.decompress(self.get(path, gzip=True)[1]).decode()

    def json(self, path: str) -> object:
        """The JSON body of a GET."""
        return json.loads(self.get(path, accept="application/json")[1])

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def scrape_series(port: int, count: int, budget: float, *, gzip: bool) -> list[float]:
    """Latencies of up to `count` sequential scrapes of /metrics (at least 10), stopping after `budget` seconds."""
    scraper = Scraper(port)
    try:
        for _ in range(3):  # warm up: the connection, and any cache filled on the first request of a kind
            scraper.get("/metrics", gzip=gzip)
        latencies: list[float] = []
        deadline = time.monotonic() + budget
        while len(latencies) < count and (time.monotonic() < deadline or len(latencies) < 10):
            latencies.append(scraper.get("/metrics", gzip=gzip)[0])
        return latencies
    finally:
        scraper.close()


@dataclass
class Sampler:
    """Samples a child's CPU time every `period` seconds in a thread: (wall time, cpu seconds)."""

    child: Child
    period: float = 0.02
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sampling."""
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def cpu_at(self, when: float) -> float:
        """CPU seconds at wall time `when` (the last sample at or before it)."""
        before = [cpu for t, cpu in self.samples if t <= when]
        return before[-1] if before else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cpu = self.child.cpu_seconds()
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append((time.time(), cpu))
            self._stop.wait(self.period)


@dataclass
class BackgroundScrapes:
    """Scrapes /metrics gzip every `pace` seconds in a thread, like a (busy) Prometheus: (wall start, seconds)."""

    port: int
    pace: float = 0.1
    results: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin scraping."""
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End scraping."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def slowest(self, start: float, end: float) -> float | None:
        """The longest scrape, in seconds, of those started between `start` and `end` (wall time)."""
        during = [s for t, s in self.results if start <= t <= end]
        return max(during) if during else None

    def _run(self) -> None:
        scraper = Scraper(self.port)
        try:
            while not self._stop.is_set():
                started = time.time()
                try:
                    elapsed, _ = scraper.get("/metrics", gzip=True)
                except (OSError, http.client.HTTPException, RuntimeError) as exc:
                    # Before the exporter listens, or while it starts: not a scrape to time.
                    self.errors.append(repr(exc))
                    scraper.close()
                    self._stop.wait(0.01)
                    continue
                self.results.append((started, elapsed))
                self._stop.wait(max(0.0, started + self.pace - time.time()))
        finally:
            scraper.close()
