"""Seeded, order-independent randomness: a number in [0, 1) from a tuple of parts."""

from __future__ import annotations

import hashlib


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts; equal parts give equal numbers across runs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
