"""What every test gets: no process started by tests/processes.py outlives the test, whatever failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import kill_leftovers


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()
