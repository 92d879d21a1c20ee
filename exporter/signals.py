"""How a long-running command's main thread waits for SIGTERM or SIGINT without a lock its handler could need."""

from __future__ import annotations

import time
from types import FrameType


class StopRequest:
    """Whether SIGTERM or SIGINT has asked the process to stop; `on_signal` is the handler, `wait` the main loop.

    The handler sets a plain attribute and takes no lock. A Python signal handler runs in the main thread between
    two bytecodes, maybe while that thread holds a lock: a `threading.Event`'s, around the bytecodes of its own
    `wait()`. A handler that set such an event would wait for its own thread's lock for good, and the process
    would not stop. So the main thread looks at the attribute every 100 ms instead of waiting on an event.
    """

    def __init__(self) -> None:
        self.requested = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def wait(self) -> None:
        while not self.requested:
            time.sleep(0.1)
