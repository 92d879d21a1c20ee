"""The process_* metrics, read with as few system calls as a scrape can get away with.

prometheus_client's ProcessCollector opens, reads and closes /proc/self/stat and /proc/self/limits and lists
/proc/self/fd on every scrape: about twenty system calls, and `os.listdir` gives up the GIL once per entry. Each
time the scrape thread gives up the GIL while a poll cycle keeps the poller busy, it may wait a whole switch
interval to get it back, so those calls were most of a scrape's latency during polling. This collector writes
the same families (names, help, types and values) from two calls: a `pread` of /proc/self/stat on a descriptor
opened once, and an `fstat` of /proc/self/fd, whose size is the number of open descriptors on Linux 6.2 and
later (checked against a listing at start; older kernels get the listing). The soft limit on open files comes
from `getrlimit`, which keeps the GIL.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_PROC = "/proc/self"


class ProcessCollector(Collector):
    """process_virtual_memory_bytes, _resident_memory_bytes, _start_time_seconds, _cpu_seconds_total,
    _open_fds and _max_fds, like prometheus_client's collector of the same name. Yields nothing without /proc.
    """

    def __init__(self, proc: str = _PROC) -> None:
        self._fd_dir = os.path.join(proc, "fd")
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._pagesize = resource.getpagesize()
        self._stat_fd: int | None = None
        self._fd_dir_fd: int | None = None
        try:
            self._stat_fd = os.open(os.path.join(proc, "stat"), os.O_RDONLY | os.O_CLOEXEC)
            with open("/proc/stat", "rb") as stat:
                boot_time = next(float(line.split()[1]) for line in stat if line.startswith(b"btime "))
            self._start_time = boot_time + float(self._stat_fields()[19]) / self._ticks
        except (OSError, StopIteration, IndexError, ValueError):
            self.close()
            return
        try:
            self._fd_dir_fd = self._open_counting_fd_dir()
        except OSError:  # counting falls back to listing, which reports its own failure per scrape
            self._fd_dir_fd = None

    def _open_counting_fd_dir(self) -> int | None:
        """A descriptor of the fd directory if its size counts open descriptors here, else None."""
        fd = os.open(self._fd_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Both see `fd`; the listing also sees its own descriptor. Agreeing twice rules out another thread's race.
        for _ in range(2):
            if os.fstat(fd).st_size + 1 != len(os.listdir(self._fd_dir)):
                os.close(fd)
                return None
        return fd

    def _stat_fields(self) -> list[bytes]:
        assert self._stat_fd is not None
        # Fields after the command name, which is in parentheses and may hold spaces.
        return os.pread(self._stat_fd, 4096, 0).rpartition(b")")[2].split()

    def _open_fds(self) -> int:
        if self._fd_dir_fd is not None:
            return os.fstat(self._fd_dir_fd).st_size
        return len(os.listdir(self._fd_dir))

    def collect(self) -> Iterable[Metric]:
        """The six families; none if /proc cannot be read."""
        if self._stat_fd is None:
            return []
        try:
            fields = self._stat_fields()
            open_fds = self._open_fds()
        except OSError:
            return []
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return [
            GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.", value=float(fields[20])),
            GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=float(fields[21]) * self._pagesize,
            ),
            GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=self._start_time,
            ),
            CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=(float(fields[11]) + float(fields[12])) / self._ticks,
            ),
            GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=float(open_fds)),
            GaugeMetricFamily(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                value=float("inf") if soft_limit == resource.RLIM_INFINITY else float(soft_limit),
            ),
        ]

    def close(self) -> None:
        """Close the descriptors held open (after which the collector yields nothing)."""
        for fd in (self._stat_fd, self._fd_dir_fd):
            if fd is not None:
                os.close(fd)
        self._stat_fd = self._fd_dir_fd = None
