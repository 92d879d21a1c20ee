"""How a long-running command's main thread waits for SIGTERM or SIGINT without a lock its handler could need."""

from __future__ import annotations

import time
from types import FrameType


class StopRequest:
    """Whether SIGTERM or SIGINT has asked the process to stop; `on_signal` is the handler, `wait` the main loop.

    Not a `threading.Event`: the handler runs in the main thread, maybe inside that event's own `wait()` holding
    its lock, and would wait for that lock for good. So the handler sets a plain attribute, polled every 100 ms.
    """

    def __init__(self) -> None:
        self.requested = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def wait(self) -> None:
        while not self.requested:
            time.sleep(0.1)
