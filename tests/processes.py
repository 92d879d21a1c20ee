"""Real processes for end-to-end tests: the simulator and the installed exporter, on free 127.0.0.1 ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, wait_until

Labels = frozenset[tuple[str, str]]


def exporter_command() -> list[str]:
    """The installed console script when it is on PATH (as after `pip install`), else `python -m exporter`."""
    script = shutil.which("partnercenter-exporter")
    return [script] if script else [sys.executable, "-m", "exporter"]


@dataclass
class Process:
    """A child process with its combined output in a file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait for it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


# Every process started here, so that none outlives its test: tests/conftest.py kills what a test left running (a
# fixture whose exporter failed to start has not reached the `finally` that would stop its simulator).
_started: list[Process] = []


def kill_leftovers() -> list[str]:
    """SIGKILL every process started here that still runs; returns their command lines."""
    left = [p for p in _started if p.proc.poll() is None]
    for process in left:
        process.stop(signal.SIGKILL)
    _started.clear()
    return [" ".join(map(str, process.proc.args)) for process in left]


def _spawn(
    argv: Sequence[str], log_path: Path, url: str, ready_path: str, env: dict[str, str] | None = None
) -> Process:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    process = Process(proc, url, log_path)
    _started.append(process)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{argv[0]} exited with {proc.returncode}:\n{process.log()}")
        return httpx.get(url + ready_path, timeout=2).status_code == 200

    try:
        wait_until(up, timeout=20, what=f"{' '.join(argv[:3])} to listen")
    except BaseException:
        process.stop(signal.SIGKILL)
        raise
    return process


def start_simulator(tmp_path: Path, scenario: str) -> Process:
    """Start `python -m exporter.simulator` with `scenario` (YAML text)."""
    path = tmp_path / "scenario.yml"
    path.write_text(scenario)
    port = free_port()
    argv = [sys.executable, "-m", "exporter.simulator", f"--listen=127.0.0.1:{port}", f"--scenario={path}"]
    return _spawn(argv, tmp_path / "simulator.log", f"http://127.0.0.1:{port}", "/_sim/healthz")


def start_exporter(tmp_path: Path, config: Path, *extra: str, env: dict[str, str] | None = None) -> Process:
    """Start the exporter on a free port with `config`; returns once /healthz answers."""
    port = free_port()
    argv = [*exporter_command(), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", *extra]
    merged = None if env is None else {**os.environ, **env}
    return _spawn(argv, tmp_path / "exporter.log", f"http://127.0.0.1:{port}", "/healthz", merged)


def scrape(url: str) -> dict[tuple[str, Labels], float]:
    """All samples of /metrics as {(name, labels): value}."""
    text = httpx.get(url + "/metrics", timeout=5).text
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return samples.get((name, frozenset(labels.items())))


def sim_stats(sim: Process) -> dict[str, dict[str, int]]:
    """Request counts seen by the simulator, per tenant_id and endpoint."""
    return dict(httpx.get(sim.url + "/_sim/stats", timeout=5).json())


def set_faults(sim: Process, tenant_id: str, faults: list[dict[str, object]]) -> None:
    """Replace a tenant's faults on the running simulator."""
    answer = httpx.put(f"{sim.url}/_sim/tenants/{tenant_id}/faults", content=json.dumps(faults), timeout=5)
    assert answer.status_code in (200, 204), answer.text


def eventually(condition: object, timeout: float = 20, what: str = "condition") -> None:
    """wait_until with the longer default that process tests need."""
    wait_until(condition, timeout=timeout, interval=0.1, what=what)  # type: ignore[arg-type]


def monotonic() -> float:
    """time.monotonic, re-exported for tests that measure shutdown."""
    return time.monotonic()
