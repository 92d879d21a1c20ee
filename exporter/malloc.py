"""glibc malloc settings for a process that replaces megabytes of text at a time.

Other C libraries have no `mallopt`/`malloc_trim` (or ignore them); there both functions do nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


_mallopt = _libc_function("mallopt")
_malloc_trim = _libc_function("malloc_trim")


def fix_mmap_threshold() -> None:
    """Make glibc's malloc serve every block over 256 KiB from its own mapping, given back when freed.

    Each render replaces text of megabytes. glibc raises its mmap threshold to the size of the largest block
    freed (up to 32 MiB), so after the first body every later one came from the heap, which kept the freed
    space: at 1000 tenants the process sat ~13 MiB higher. A fixed threshold turns that adjustment off.
    """
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, 256 * 1024)


def trim() -> None:
    """Give the heap's free pages back to the system.

    glibc returns heap memory only from the top of the heap; after a render or a reload freed megabytes of
    small blocks below live ones, the pages stayed resident. `malloc_trim` releases every whole free page (it
    runs without the GIL, ~1 ms).
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
