"""Reading typed values out of a parsed YAML mapping, each error naming its key path (config and web config).

`${VAR}` expansion happens here, and so does the rule that keeps expanded values out of error messages: a value
that came from the environment may be a secret, so an error names the variable, never its value.
"""

from __future__ import annotations

import difflib
import math
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from exporter.config.yamlfile import ConfigError, join

# `$$`, `${NAME}`, or a `${` that starts no valid reference.
_VAR_RE: Final = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")
_DURATION_RE: Final = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ms|s|m|h|d))+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SECONDS_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")  # as text: a number of seconds from `${VAR}`
# Secret, key and token files are small; the cap keeps a mistaken path (a log, a disk image) from being slurped.
MAX_SECRET_FILE_BYTES: Final = 64 * 1024

Mapping_ = dict[object, object]


class Text(str):
    """A string read from the config; `shown` is how an error may quote it (never an expanded `${VAR}`)."""

    shown: str
    expanded: bool  # whether any of it came from the environment


def check_keys(mapping: Mapping[Any, object], known: Sequence[str], path: str) -> None:
    """Reject non-string and unknown keys, suggesting the closest known key."""
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {type_name(key)}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(key.lower(), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of {', '.join(known)}"
            raise ConfigError(join(path, key), f"unknown key{hint}")


def present(mapping: Mapping_, key: str) -> bool:
    """Whether an optional key is set; YAML null counts as unset, like a commented-out value."""
    return mapping.get(key) is not None


def mapping(value: object, path: str, what: str = "a mapping") -> Mapping_:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be {what}, got {type_name(value)}")
    return value


def type_name(value: object) -> str:
    """Name a YAML value's type the way a config author thinks of it."""
    names = {bool: "boolean", int: "integer", float: "number", list: "list", dict: "mapping", type(None): "null"}
    return "string" if isinstance(value, str) else names.get(type(value), type(value).__name__)


def quote(value: str) -> str:
    """Quote a user value for a message, shortened so a stray blob cannot flood it."""
    if len(value) > 40:
        value = value[:40] + "..."
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(value: object, path: str) -> float:
    """Seconds from a positive number or a Go-style duration string (`500ms`, `30s`, `1h30m`, `1d`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(path, f"must be a duration like 30s or a number of seconds, got {type_name(value)}")
    if isinstance(value, str) and _SECONDS_RE.fullmatch(value):
        seconds = float(value)
    elif isinstance(value, str):
        if not _DURATION_RE.fullmatch(value):
            shown = value.shown if isinstance(value, Text) else quote(value)
            raise ConfigError(path, f"invalid duration {shown}: use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds")
        seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART_RE.findall(value))
    else:
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigError(path, "must be a positive duration")
    # Longer than any sensible poll interval or staleness, and well inside what timers and sleeps accept.
    if seconds > 365 * 86400:  # also catches inf
        raise ConfigError(path, "must be at most 365d")
    return seconds


def number_text(value: float) -> str:
    """A number as a config author writes it: no spurious `.0`."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def optional_number(entry: Mapping_, key: str, path: str) -> float | None:
    if not present(entry, key):
        return None
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(join(path, key), f"must be a number, got {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(join(path, key), "must be a finite number")
    return number


@dataclass(frozen=True)
class Reader:
    """Reads strings (with `${VAR}` expanded), durations and files, for one config file."""

    base_dir: Path  # where relative paths start
    environ: Mapping[str, str]  # where `${VAR}` values come from

    def text(self, value: object, path: str) -> Text:
        """A string with `${VAR}` expanded (`$$` is a literal `$`, a lone `$` stays); errors name only its type."""
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {type_name(value)}")
        names: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            dollar, name, broken = match.groups()
            if broken:
                raise ConfigError(path, "invalid variable reference: use ${NAME}, or $$ for a literal $")
            if dollar:
                return "$"
            if name not in self.environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            names.append(name)
            return self.environ[name]

        text = Text(_VAR_RE.sub(substitute, value))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # an environment value that is not UTF-8, or a lone surrogate escaped in YAML
            raise ConfigError(path, "must be valid UTF-8 text") from None
        text.expanded = bool(names)
        text.shown = f"(the value of {', '.join('${' + n + '}' for n in names)})" if names else quote(text)
        return text

    def required(self, item: Mapping_, key: str, path: str) -> Text:
        if not present(item, key):
            raise ConfigError(join(path, key), "required key is missing")
        return self.text(item[key], join(path, key))

    def duration(self, doc: Mapping_, key: str, default: float | None, path: str = "") -> float | None:
        """An optional duration in seconds (see `parse_duration`)."""
        if not present(doc, key):
            return default
        value = doc[key]
        return parse_duration(self.text(value, join(path, key)) if isinstance(value, str) else value, join(path, key))

    def integer(self, doc: Mapping_, key: str, default: int, low: int, high: int) -> int:
        if not present(doc, key):
            return default
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {type_name(value)}")
        if not low <= value <= high:
            raise ConfigError(key, f"must be between {low} and {high}")
        return value

    def choice(self, item: Mapping_, key: str, path: str, choices: Sequence[str]) -> str | None:
        if not present(item, key):
            return None
        value = self.text(item[key], join(path, key))
        if value not in choices:
            listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
            raise ConfigError(join(path, key), f"unknown {key} {value.shown}: use {listed}")
        return str(value)

    def path(self, item: Mapping_, key: str, path: str) -> tuple[Path, str] | None:
        """An optional file path resolved against the config's directory, with the text it was written as."""
        if not present(item, key):
            return None
        where = join(path, key)
        raw = self.text(item[key], where)
        if not raw:
            raise ConfigError(where, "must not be empty")
        if "\0" in raw:
            raise ConfigError(where, "must not contain NUL characters")
        return self.base_dir / raw, raw.shown if raw.expanded else str(raw)

    def small_text_file(self, file: Path, shown: str, path: str) -> str:
        try:
            return small_file(file, shown, path).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path, f"cannot read {shown}: not valid UTF-8") from None


def small_file(file: Path, shown: str, path: str, limit: int = MAX_SECRET_FILE_BYTES) -> bytes:
    """A small regular file's bytes; errors name the path as written in the config."""
    try:
        # Opening a FIFO or a device could block start-up forever.
        if not (stat.S_ISREG(mode := file.stat().st_mode) or stat.S_ISDIR(mode)):
            raise ConfigError(path, f"cannot read {shown}: not a regular file")
        with file.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(path, f"cannot read {shown}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise ConfigError(path, f"cannot read {shown}: larger than {limit // 1024} KiB")
    return data
