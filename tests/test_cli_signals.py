"""Signals in-process: SIGTERM and SIGINT end the exporter's wait, SIGHUP reloads, wherever the signal lands.

The end-to-end tests (test_e2e) send the same signals to a real exporter process. These pin down what a process
test cannot hit on purpose: a Python signal handler runs in the main thread between two bytecodes, whatever that
thread holds at the time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.cli import _signals
from exporter.signals import StopRequest

ROOT = Path(__file__).resolve().parent.parent


class _App:
    """What _signals needs of the App: reload()."""

    def __init__(self) -> None:
        self.reloaded_on: list[str] = []

    def reload(self) -> tuple[bool, str]:
        self.reloaded_on.append(threading.current_thread().name)
        return True, "config reloaded"


def _until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_wait(sig: int) -> None:
    stop = StopRequest()
    with _signals(stop, _App().reload):
        waiting = threading.Thread(target=stop.wait, daemon=True)
        waiting.start()
        os.kill(os.getpid(), sig)  # handled by this, the main, thread
        assert _until(lambda: not waiting.is_alive()), "the wait went on after the signal"
    assert signal.getsignal(sig) != stop.on_signal  # the handlers from before are back


def test_sighup_reloads_in_a_thread_of_its_own() -> None:
    app, stop = _App(), StopRequest()
    with _signals(stop, app.reload):
        os.kill(os.getpid(), signal.SIGHUP)
        assert _until(lambda: app.reloaded_on), "no reload after SIGHUP"
    assert app.reloaded_on == ["sighup-reload"]
    assert not stop.requested


def test_sighup_after_a_stop_request_reloads_nothing() -> None:
    # The app is being stopped: its poller loop may be gone.
    app, stop = _App(), StopRequest()
    with _signals(stop, app.reload):
        os.kill(os.getpid(), signal.SIGTERM)
        assert _until(lambda: stop.requested)
        os.kill(os.getpid(), signal.SIGHUP)  # its handler runs in this thread before the next line does
        assert not [t for t in threading.enumerate() if t.name == "sighup-reload"]
    assert app.reloaded_on == []


# Python that both scripts below start with: after sigterm_at_line(N, code), the N-th line the calling thread runs
# in the frames it calls next that run `code` sends the process SIGTERM, so that the handler runs right there,
# whatever the thread holds at that line.
_SIGTERM_AT_LINE = """
import os, signal, sys, time


def sigterm_at_line(target, code):
    seen = 0

    def local(frame, event, arg):
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == target:
                os.kill(os.getpid(), signal.SIGTERM)
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code is code else None)
"""

# A SIGTERM at the N-th line the main thread runs inside stop.wait(); says whether the wait ended.
_AT_LINE = (
    _SIGTERM_AT_LINE
    + """
from exporter.signals import StopRequest

stop = StopRequest()
signal.signal(signal.SIGTERM, stop.on_signal)
sigterm_at_line(int(sys.argv[1]), StopRequest.wait.__code__)
stop.wait()
sys.settrace(None)
print("stopped")
"""
)


@pytest.mark.parametrize("line", range(1, 13))
def test_a_sigterm_at_any_line_of_the_wait_ends_it(line: int) -> None:
    # Once the wait was a threading.Event's and the handler set it: at the lines where Event.wait() holds the
    # event's lock, the handler waited for that lock, held by its own thread, and the exporter never stopped.
    try:
        argv = [sys.executable, "-c", _AT_LINE, str(line)]
        done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a SIGTERM at line {line} of the wait did not end it")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped\n"


# The same for a whole command: its main() runs in forked children, and child N sends itself SIGTERM from a trace
# function at the N-th line its main thread runs in the command's wait for a signal, however long start-up was.
# Prints the lines at which a child did not exit 0 within 20 s of the first fork, as (line, exit status or "hung");
# 70 if main() raised.
_IN_COMMAND = (
    _SIGTERM_AT_LINE
    + """
from exporter.signals import StopRequest

command, last = sys.argv[1], int(sys.argv[2])
if command == "exporter":
    from exporter.cli import main
    argv = ["--demo", "--web.listen-address=127.0.0.1:0", "--log.level=error"]
else:
    from exporter.simulator.cli import main
    argv = ["--listen=127.0.0.1:0", "--log.level=error"]

children = {}
for line in range(1, last + 1):
    child = os.fork()
    if child == 0:
        code = 70  # main() raised; and the child must not go on to run this loop
        try:
            sys.stderr = open(os.devnull, "w")
            sigterm_at_line(line, StopRequest.wait.__code__)
            code = main(argv)
        finally:
            os._exit(code)
    children[child] = line
failed, deadline = [], time.monotonic() + 20
while children and time.monotonic() < deadline:
    for child, line in list(children.items()):
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            del children[child]
            if code := os.waitstatus_to_exitcode(status):
                failed.append((line, code))
    time.sleep(0.05)
for child, line in children.items():
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    failed.append((line, "hung"))
print(sorted(failed))
"""
)


@pytest.mark.parametrize("command", ["exporter", "simulator"])
def test_a_sigterm_at_any_line_of_a_commands_wait_stops_it(command: str) -> None:
    # Both commands once waited on a threading.Event that their handler set, and hung when the signal landed
    # while the wait held the event's lock. Their wait is StopRequest.wait: every line of three rounds of it.
    argv = [sys.executable, "-c", _IN_COMMAND, command, "6"]
    # Its own session, so that no child it forked can outlive the test, hung or not, if the script itself dies.
    script = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = script.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        script.wait()
    assert script.returncode == 0, stderr
    assert stdout == "[]\n", f"{command}: (line, exit status) where a SIGTERM did not stop it: {stdout}"
