"""The `Secret` type: a string that never shows its value in repr, str, logs or tracebacks."""

from __future__ import annotations

import hmac
from typing import final

_REDACTED = "********"


@final
class Secret:
    """A secret string; `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            # Saying only the type keeps a mistyped secret out of the traceback.
            raise TypeError(f"Secret value must be a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call it only where the value is sent to its destination."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_REDACTED}')"

    def __str__(self) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        """Compare values in constant time, so that comparisons leak nothing through timing."""
        if not isinstance(other, Secret):
            return NotImplemented
        # surrogatepass: YAML escapes can produce lone surrogates, which must not crash a comparison.
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        return hash(self._value)
