"""Log output: records with `extra={...}` fields as logfmt or JSON lines, and `configure_logging` for the CLI.

Numbers stay numbers in JSON; lists and tuples become arrays (comma-separated in logfmt).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Mapping
from types import MappingProxyType
from typing import TextIO

# "warn" is what Go exporters call it; accepted so muscle memory works.
LEVELS: Mapping[str, int] = MappingProxyType(
    {name: logging.getLevelNamesMapping()[name.upper()] for name in ("debug", "info", "warning", "warn", "error")}
)
FORMATS = ("logfmt", "json")

# Every attribute a LogRecord has on its own; anything else on a record came in through `extra=`.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Below warning, only the exporter's own loggers speak: other libraries' debug and info lines (asyncio's "Using
# selector", httpx's line per request, httpcore's per connection step) are noise to an operator.
_OWN_LOGGERS = logging.Filter("exporter")
_ESCAPES: Mapping[str, str] = MappingProxyType({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (stderr by default) at `level`, formatted as logfmt or json."""
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; expected one of debug, info, warn, error")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of logfmt, json")
    handler = logging.StreamHandler(stream)
    handler.set_name(__name__)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or _OWN_LOGGERS.filter(record))
    root = logging.getLogger()
    # Replace only our own handler (by its name), so a second call (tests, reload) does not double every line and
    # handlers installed by others (pytest's capture) keep working.
    for old in [h for h in root.handlers if h.name == __name__]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields of one event in output order: ts, level, logger, msg, extras, err, stack, stack_info."""
    head = {
        "ts": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    tail: dict[str, object] = {}
    if record.exc_info and (exc := record.exc_info[1]) is not None:
        tail["err"] = " ".join(f"{type(exc).__name__}: {exc}".split("\n")).strip()
        tail["stack"] = "".join(traceback.format_exception(exc)).rstrip("\n")
    if record.stack_info:
        tail["stack_info"] = record.stack_info
    # An extra named like a field this line already has would make it ambiguous (duplicate JSON keys);
    # `extra={"err": ...}` on a record without an exception is the err field itself.
    extras = {
        (f"{key}_" if key in head or key in tail else key): value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }
    return head | extras | tail


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=... msg="..." key=value`, quoted and escaped so an event is one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in record_fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {key: _json_value(value) for key, value in record_fields(record).items()}
        # ensure_ascii: U+2028 and friends would otherwise split the line for some readers.
        return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _timestamp(created: float) -> str:
    """UTC RFC 3339 with milliseconds, like Go exporters: 2026-11-25T21:57:55.123Z."""
    # Whole milliseconds first: splitting the float would turn .123 into .122 through rounding error.
    seconds, millis = divmod(round(created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _bare(c: str) -> bool:
    """Whether a logfmt key or unquoted value can hold `c` as it is."""
    return c.isprintable() and c not in ' ="\\'


def _logfmt_key(key: str) -> str:
    # Keys cannot be quoted in logfmt, so characters that would break parsing become '_'.
    return "".join(c if _bare(c) else "_" for c in key) or "_"


def _logfmt_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if text and all(map(_bare, text)):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def _escape(c: str) -> str:
    """One character of a quoted value: backslash, quote and non-printables (newlines included) escaped."""
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c.isprintable():
        return c
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def _json_value(value: object) -> object:
    """Keep JSON-native values (lists and tuples as arrays); render anything else (and non-finite floats) as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)
