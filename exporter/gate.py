"""Scrapes first: the poller and the renderer step aside while a request is being answered.

One thread at a time runs Python (the GIL). A thread that wakes up wanting it asks the holder to let go only after
a switch interval with no hand-over, and the poller hands the GIL over and takes it straight back at every socket
call, so a scrape used to wait out the poller's whole run between two blocking waits: several milliseconds at p99
(bench/RESULTS.md, tenth round). So a request announces itself where the poller can see it without the GIL: a
connection waiting for its next request is in the gate's epoll set, which turns readable when the request arrives,
and once a thread has read the request's first bytes it counts as serving until its answer is written. While
either holds, the poller's event loop (`ScrapesFirstLoop`) waits before each callback and the renderer before each
tenant and each part it compresses, so that the server's thread runs alone.

Waiting is bounded: a wait ends after `max_wait` at most, and after a wait of t none is taken for `rest` x t, so
requests hold polling and rendering back by a fifth at most (`rest` 4), whatever clients do: a slow one, one whose
request never ends, or one that scrapes in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import select
import socket
import threading
import time
from collections.abc import Callable


class ScrapeGate:
    """Requests arriving and being served; `step_aside()` waits for them (not on a serving thread)."""

    def __init__(self, max_wait: float = 0.01, rest: float = 4.0) -> None:
        self.max_wait = max_wait
        self.rest = rest
        # Connections between requests, readable once their next request arrives; Linux only, like /proc.
        self._arrivals = select.epoll() if hasattr(select, "epoll") else None
        self._serving = 0
        self._done = threading.Condition()
        self._local = threading.local()
        self._resting_until = 0.0

    def watch(self, sock: socket.socket) -> None:
        """Count a request arriving on `sock` (an accepted connection) as waiting to be served."""
        if self._arrivals is not None:
            self._arrivals.register(sock.fileno(), select.EPOLLIN)

    def unwatch(self, sock: socket.socket) -> None:
        """Forget `sock` (before it closes)."""
        if self._arrivals is not None:
            with contextlib.suppress(OSError, ValueError):  # never watched, or already closed
                self._arrivals.unregister(sock.fileno())

    def begin(self) -> None:
        """This thread holds a request and serves it until `end()`. Calling it again changes nothing."""
        if getattr(self._local, "serving", False):
            return
        self._local.serving = True
        with self._done:
            self._serving += 1

    def end(self) -> None:
        """This thread is done with its request, or waits on something the others must go on for."""
        if not getattr(self._local, "serving", False):
            return
        self._local.serving = False
        with self._done:
            self._serving -= 1
            if not self._serving:
                self._done.notify_all()

    def serving(self) -> bool:
        """Whether any thread is serving a request (no system call)."""
        return self._serving > 0

    def step_aside(self, watch_arrivals: bool = False) -> None:
        """Wait while requests are served or, with `watch_arrivals` (one system call), have arrived.

        Never on a thread that serves a request itself: a scrape that renders on its own thread goes on.
        """
        if getattr(self._local, "serving", False):
            return
        if not (self._serving or (watch_arrivals and self._arrived())):
            return
        started = time.monotonic()
        if started < self._resting_until:
            return
        with self._done:
            self._done.wait_for(self._idle, self.max_wait)
        ended = time.monotonic()
        self._resting_until = ended + self.rest * (ended - started)

    def close(self) -> None:
        """Release the epoll descriptor."""
        if self._arrivals is not None:
            self._arrivals.close()

    def _arrived(self) -> bool:
        return self._arrivals is not None and bool(self._arrivals.poll(0))

    def _idle(self) -> bool:
        return not self._serving and not self._arrived()


class ScrapesFirstLoop(asyncio.SelectorEventLoop):
    """An event loop whose callbacks step aside for requests first.

    Every task step and every future's callback is scheduled through `call_soon`, and every timer through
    `call_at`; one poll is a few steps of up to a millisecond each. Only the callbacks of ready sockets are not:
    they hand the bytes received on, in microseconds.
    """

    def __init__(self, gate: ScrapeGate) -> None:
        super().__init__()
        self._gate = gate

    def call_soon(
        self, callback: Callable[..., object], *args: object, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        """Schedule `callback(*args)` to run, after stepping aside for requests, at the next loop iteration."""
        return super().call_soon(_after_requests, self._gate, callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: object, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        """Schedule `callback(*args)` to run, after stepping aside for requests, at `when` (`call_later` too)."""
        return super().call_at(when, _after_requests, self._gate, callback, *args, context=context)


def _after_requests(gate: ScrapeGate, callback: Callable[..., object], *args: object) -> None:
    gate.step_aside(watch_arrivals=True)
    callback(*args)
