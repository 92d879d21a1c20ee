"""The scrape gate: polling and rendering wait while a request is served, never on a serving thread, never long."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from exporter.gate import ScrapeGate, ScrapesFirstLoop
from tests.support import serving_thread


def _step_aside_in_thread(gate: ScrapeGate) -> threading.Event:
    stepped = threading.Event()

    def step() -> None:
        gate.step_aside()
        stepped.set()

    threading.Thread(target=step, daemon=True).start()
    return stepped


def _seconds_stepping_aside(gate: ScrapeGate) -> float:
    started = time.monotonic()
    gate.step_aside()
    return time.monotonic() - started


def test_step_aside_waits_until_the_serving_thread_ends() -> None:
    gate = ScrapeGate(max_wait=30.0)
    release = serving_thread(gate)
    stepped = _step_aside_in_thread(gate)
    assert not stepped.wait(0.3), "step_aside returned while a request was being served"
    release.set()
    assert stepped.wait(5)
    gate.close()


def test_step_aside_does_not_wait_when_nothing_is_served() -> None:
    gate = ScrapeGate(max_wait=30.0)
    assert _step_aside_in_thread(gate).wait(5)
    gate.close()


def test_a_thread_counts_once_however_often_it_begins() -> None:
    gate = ScrapeGate()
    gate.begin()
    gate.begin()
    assert gate.serving()
    gate.end()
    assert not gate.serving()
    gate.end()  # ending twice does not count below zero
    assert not gate.serving()
    gate.close()


def test_a_serving_thread_never_steps_aside() -> None:
    gate = ScrapeGate(max_wait=30.0)
    release = serving_thread(gate)
    gate.begin()  # this thread serves too: rendering on a scrape's own thread must not wait for other scrapes
    try:
        assert _seconds_stepping_aside(gate) < 5
    finally:
        gate.end()
        release.set()
        gate.close()


def test_a_request_that_does_not_end_holds_polling_back_for_max_wait_then_rests() -> None:
    gate = ScrapeGate(max_wait=0.5, rest=100.0)  # after a wait of 0.5 s, none for 50 s
    release = serving_thread(gate)
    try:
        first = _seconds_stepping_aside(gate)
        second = _seconds_stepping_aside(gate)
    finally:
        release.set()
        gate.close()
    assert 0.5 <= first < 10
    assert second < 0.5  # resting: returned at once


@pytest.mark.parametrize("schedule", ["call_soon", "call_later"])
def test_the_event_loop_runs_no_callback_while_a_request_is_served(schedule: str) -> None:
    """A request arrives while the loop is busy; from the moment its thread has it until it ends, no callback runs."""
    gate = ScrapeGate(max_wait=30.0)
    connection, client = socket.socketpair()
    gate.watch(connection)
    loop = ScrapesFirstLoop(gate)
    callbacks: list[float] = []
    served: list[tuple[float, float]] = []
    done = threading.Event()

    def busy() -> None:
        callbacks.append(time.monotonic())
        if done.is_set():
            loop.stop()
        elif schedule == "call_soon":
            loop.call_soon(busy)
        else:
            loop.call_later(0, busy)

    def handler() -> None:
        # As the server's handler does: wait for the request, then hold it (begin) before reading it.
        select.select([connection], [], [], 30)
        gate.begin()
        began = time.monotonic()
        connection.recv(100)
        deadline = began + 0.2
        while time.monotonic() < deadline:  # Python work: it needs the GIL the loop's thread would take
            sum(range(1000))
        ended = time.monotonic()
        gate.end()
        served.append((began, ended))
        done.set()

    def send_request() -> None:
        threading.Thread(target=handler, daemon=True).start()
        client.send(b"GET /metrics HTTP/1.1\r\n\r\n")

    loop.call_soon(busy)
    loop.call_later(0.2, send_request)
    try:
        loop.run_forever()
    finally:
        loop.close()
        gate.close()
        connection.close()
        client.close()
    [(began, ended)] = served
    assert any(t < began for t in callbacks), "the loop was not busy before the request"
    assert any(t > ended for t in callbacks), "the loop did not go on after the request"
    during = [t for t in callbacks if began < t < ended]
    assert not during, f"{len(during)} callbacks ran while the request was served"


def test_after_a_wait_of_t_none_is_taken_for_rest_times_t() -> None:
    # However often requests come (a tight loop of scrapes), they hold polling back by 1 / (1 + rest) at most.
    gate = ScrapeGate(max_wait=30.0, rest=100.0)
    release = serving_thread(gate)
    stepped = _step_aside_in_thread(gate)
    assert not stepped.wait(0.2), "step_aside returned while a request was being served"
    release.set()
    assert stepped.wait(5)  # it waited 0.2 s at least: no wait for the next 20 s
    release = serving_thread(gate)
    try:
        assert _seconds_stepping_aside(gate) < 5
    finally:
        release.set()
        gate.close()
