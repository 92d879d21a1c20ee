"""Log output: logfmt and JSON formatters, one event per line, and `configure_logging` for the CLI.

Library code only calls `logging.getLogger(__name__)` and passes fields as `extra={...}`; this module turns
those records into lines. Numbers stay numbers in JSON, lists and tuples become arrays (comma-separated in
logfmt). Only the CLI calls `configure_logging`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TextIO

LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "warn": logging.WARNING,  # what Go exporters call it; accepted so muscle memory works
        "error": logging.ERROR,
    }
)
FORMATS = ("logfmt", "json")

# Every attribute a LogRecord has on its own; anything else on a record came in through `extra=`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Below warning, only the exporter's own loggers speak: other libraries' debug and info lines (asyncio's "Using
# selector", httpx's line per request, httpcore's per connection step) are noise to an operator.
_OWN_LOGGER = "exporter"


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (stderr by default) at `level`, formatted as logfmt or json."""
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; expected one of debug, info, warn, error")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of logfmt, json")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(_worth_showing)
    root = logging.getLogger()
    # Replace only our own handler, so a second call (tests, reload) does not double every line and
    # handlers installed by others (pytest's capture) keep working.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def _worth_showing(record: logging.LogRecord) -> bool:
    """Warnings and errors from anywhere; anything from the exporter's own loggers."""
    name = record.name
    return record.levelno >= logging.WARNING or name == _OWN_LOGGER or name.startswith(_OWN_LOGGER + ".")


class _Handler(logging.StreamHandler[TextIO]):
    """The stream handler `configure_logging` installs (a subclass so it can find and replace it)."""


def record_fields(record: logging.LogRecord) -> Iterator[tuple[str, object]]:
    """Yield the fields of one event in output order: ts, level, logger, msg, extras, err, stack."""
    yield "ts", _timestamp(record.created)
    yield "level", record.levelname.lower()
    yield "logger", record.name
    yield "msg", record.getMessage()
    exc = record.exc_info[1] if record.exc_info else None
    taken = {"ts", "level", "logger", "msg"}
    if exc is not None:
        taken |= {"err", "stack"}
    if record.stack_info:
        taken.add("stack_info")
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        # An extra named like a field this line already has would make it ambiguous (duplicate JSON keys);
        # `extra={"err": ...}` on a record without an exception is the err field itself.
        yield (f"{key}_" if key in taken else key), value
    if exc is not None:
        yield "err", _one_line(f"{type(exc).__name__}: {exc}")
        yield "stack", "".join(traceback.format_exception(exc)).rstrip("\n")
    if record.stack_info:
        yield "stack_info", record.stack_info


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=... msg="..." key=value`, quoted and escaped so an event is one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a logfmt line."""
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in record_fields(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON object on one line."""
        obj = {key: _json_value(value) for key, value in record_fields(record)}
        # ensure_ascii: U+2028 and friends would otherwise split the line for some readers.
        return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _timestamp(created: float) -> str:
    """UTC RFC 3339 with milliseconds, like Go exporters: 2026-11-25T21:57:55.123Z."""
    # Whole milliseconds first: splitting the float would turn .123 into .122 through rounding error.
    seconds, millis = divmod(round(created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _logfmt_key(key: str) -> str:
    """Keys cannot be quoted in logfmt, so characters that would break parsing become '_'."""
    cleaned = "".join("_" if c in ' ="\\' or not c.isprintable() else c for c in key)
    return cleaned or "_"


def _logfmt_value(value: object) -> str:
    """Render a value bare when safe, else quoted with escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if text and not any(c in ' ="\\' or not c.isprintable() for c in text):
        return text
    return '"' + _escape(text) + '"'


def _escape(text: str) -> str:
    """Escape backslash, quote and every non-printable character (newlines included)."""
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif not c.isprintable() and c != " ":
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return "".join(out)


def _one_line(text: str) -> str:
    """Collapse line breaks so a summary stays readable even where values are not escaped."""
    return " ".join(text.split("\n")).strip()


def _json_value(value: object) -> object:
    """Keep JSON-native values (lists and tuples as arrays); render anything else (and non-finite floats) as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)
