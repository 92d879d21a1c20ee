"""glibc's allocator gives freed heap pages back when trimmed."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from exporter import malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_trim_gives_back_freed_blocks_below_live_ones() -> None:
    # 64 MiB of 2 KiB blocks (over Python's small-object limit, far under any mmap threshold, so from malloc's
    # heap), then all but every 64th freed: the survivors pin the heap, so only a trim gives the pages back.
    blocks = [bytes(2048) for _ in range(32 * 1024)]
    survivors = blocks[::64]
    del blocks
    before = _rss()
    malloc.trim()
    after = _rss()
    assert before - after > 32 * 1024 * 1024, (before, after)
    assert len(survivors) == 512
