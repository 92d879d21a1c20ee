"""The `partnercenter-simulator` command: flags, logging set-up, signals and exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from exporter.config.yamlfile import ConfigError
from exporter.signals import StopRequest
from exporter.simulator.loader import default_scenario, load_scenario
from exporter.simulator.scenario import Scenario
from exporter.simulator.server import Simulator
from exporter.version import version_line

log = logging.getLogger(__name__)

DEFAULT_LISTEN: Final = "127.0.0.1:8089"
_LEVELS: Final = ("debug", "info", "warning", "error")
# Attributes every LogRecord has; anything else was passed through `extra` and is printed as key=value.
_RECORD_FIELDS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _KeyValueFormatter(logging.Formatter):
    """logfmt-style lines: time, level, logger, message and the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per event."""
        fields = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS})
        line = " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info))
        return line


def _quote(value: object) -> str:
    """A logfmt value: quoted when it has spaces, quotes or equals signs."""
    text = str(value)
    if not text or any(c in text for c in ' "=\n\r\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (all interfaces) into host and port; ValueError names the flag.

    As Go's net.SplitHostPort (Prometheus's --web.listen-address) has it: an IPv6 host is in brackets, which
    match, and nothing else has brackets or colons. The port is ASCII digits: str.isdigit() alone also takes
    "²", which int() then refuses.
    """
    host, sep, port_text = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if bracketed:
        host = host[1:-1]
    plain_host = bracketed or not any(c in host for c in "[]:")
    if not (sep and plain_host and port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"--listen: expected HOST:PORT or [IPV6]:PORT, got {value!r}")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - ":PORT" means every interface, as for Prometheus


def _arguments() -> argparse.ArgumentParser:
    """The flag parser."""
    parser = argparse.ArgumentParser(
        prog="partnercenter-simulator",
        description="Simulate the Partner Center invoice API and the Entra ID token endpoint.",
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN})")
    parser.add_argument("--scenario", type=Path, help="scenario YAML file (default: the built-in demo scenario)")
    parser.add_argument("--log.level", dest="log_level", choices=_LEVELS, default="info", help="log level")
    # Not argparse's version action: the version line asks git for the revision, which only --version needs.
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; exit 0 then, 2 for bad flags or an invalid scenario, 1 if it cannot listen."""
    try:
        args = _arguments().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.version:
        print(version_line("partnercenter-simulator"))
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)
    try:
        host, port = parse_listen(args.listen)
        scenario: Scenario = load_scenario(args.scenario) if args.scenario else default_scenario()
    except (ValueError, ConfigError) as exc:
        print(f"partnercenter-simulator: {exc}", file=sys.stderr)
        return 2
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    simulator = Simulator(scenario, host=host, port=port)
    try:
        simulator.start()
    except OSError as exc:
        log.error("cannot listen", extra={"listen": args.listen, "error": str(exc)})
        return 1
    try:
        stop.wait()
    finally:
        simulator.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0
