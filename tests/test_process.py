"""The process_* metrics: the same families and values as prometheus_client's collector, from fewer calls."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector as ReferenceCollector

from exporter.process import ProcessCollector

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _values(metrics: list[Metric]) -> dict[str, tuple[str, str, float]]:
    return {m.samples[0].name: (m.type, m.documentation, m.samples[0].value) for m in metrics}


def test_same_families_and_values_as_prometheus_client() -> None:
    collector = ProcessCollector()
    try:
        ours = list(collector.collect())
        reference = list(ReferenceCollector(registry=None).collect())
    finally:
        collector.close()
    assert [m.name for m in ours] == [m.name for m in reference]
    assert [(m.type, m.documentation) for m in ours] == [(m.type, m.documentation) for m in reference]
    mine, theirs = _values(ours), _values(reference)
    assert mine["process_start_time_seconds"][2] == pytest.approx(theirs["process_start_time_seconds"][2], abs=0.02)
    assert mine["process_max_fds"][2] == theirs["process_max_fds"][2]
    assert mine["process_virtual_memory_bytes"][2] == pytest.approx(theirs["process_virtual_memory_bytes"][2], rel=0.1)
    assert mine["process_resident_memory_bytes"][2] == pytest.approx(
        theirs["process_resident_memory_bytes"][2], rel=0.1
    )
    assert mine["process_cpu_seconds_total"][2] == pytest.approx(theirs["process_cpu_seconds_total"][2], abs=0.05)
    # prometheus_client counts the descriptor of its own listing; ours counts the two it keeps open.
    assert abs(mine["process_open_fds"][2] - theirs["process_open_fds"][2]) <= 2


def test_open_fds_follow_the_process() -> None:
    collector = ProcessCollector()
    r, w = os.pipe()
    try:
        before = _values(list(collector.collect()))["process_open_fds"][2]
        os.close(r)
        os.close(w)
        after = _values(list(collector.collect()))["process_open_fds"][2]
    finally:
        collector.close()
    assert before - after == 2


def test_cpu_seconds_grow_with_work() -> None:
    collector = ProcessCollector()
    try:
        before = _values(list(collector.collect()))["process_cpu_seconds_total"][2]
        start = resource.getrusage(resource.RUSAGE_SELF)
        spent = 0.0
        while spent < 0.1:
            sum(range(10_000))
            now = resource.getrusage(resource.RUSAGE_SELF)
            spent = now.ru_utime + now.ru_stime - start.ru_utime - start.ru_stime
        after = _values(list(collector.collect()))["process_cpu_seconds_total"][2]
    finally:
        collector.close()
    assert after - before >= 0.05


def test_directory_whose_size_is_not_a_count_falls_back_to_listing(tmp_path: Path) -> None:
    # Kernels before 6.2 give /proc/self/fd no meaningful size; a plain directory stands in for one.
    proc = tmp_path / "proc"
    (proc / "fd").mkdir(parents=True)
    shutil.copyfile("/proc/self/stat", proc / "stat")
    for n in range(5):
        (proc / "fd" / str(n)).touch()
    collector = ProcessCollector(proc=str(proc))
    try:
        assert _values(list(collector.collect()))["process_open_fds"][2] == 5
        (proc / "fd" / "5").touch()
        assert _values(list(collector.collect()))["process_open_fds"][2] == 6
    finally:
        collector.close()


def test_without_proc_it_yields_nothing(tmp_path: Path) -> None:
    collector = ProcessCollector(proc=str(tmp_path / "missing"))
    assert list(collector.collect()) == []
    collector.close()
