"""The command line: Prometheus-style flags, signals, exit codes (0 ok, 1 runtime failure, 2 bad input)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client import generate_latest

from exporter import __version__
from exporter.app import App, business_registry, restore_state
from exporter.config import Config, ConfigError, describe_config, load_config
from exporter.config.web import WebConfig, WebConfigError, load_web_config
from exporter.logs import configure_logging
from exporter.poller import Poller
from exporter.signals import StopRequest
from exporter.snapshot import SnapshotStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 9089
DEFAULT_LISTEN = f":{DEFAULT_PORT}"
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The flags, named like every Prometheus exporter's."""
    p = argparse.ArgumentParser(
        prog="partnercenter-exporter",
        description="Prometheus exporter for Microsoft Partner Center invoice summaries.",
    )
    p.add_argument("--config.file", dest="config_file", type=Path, help="YAML configuration file")
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print a summary and exit (0 valid, 2 invalid)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every tenant once, print the exposition and exit (1 if any tenant failed)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in simulator with sample tenants; needs no credentials",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help=f"[HOST]:PORT to serve on (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--web.config.file", dest="web_config", type=Path, help="exporter-toolkit web configuration (TLS, basic auth)"
    )
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--version", action="version", version=f"partnercenter-exporter {__version__}")
    return p


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split `[HOST]:PORT` (IPv6 hosts in brackets); raises ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address: {value!r} is not [HOST]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--web.listen-address: put IPv6 addresses in brackets: [{host}]:{port}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the process exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        listen = parse_listen_address(args.listen)
        web_config = load_web_config(args.web_config) if args.web_config else None
    except (ValueError, WebConfigError) as exc:
        return _usage_error(str(exc))
    if args.demo:
        from exporter.demo import demo_config  # noqa: PLC0415 - only the demo imports the simulator

        with demo_config() as config:
            return _run(args, config, None, listen, web_config)
    if args.config_file is None:
        return _usage_error("--config.file is required (or --demo to try the exporter without credentials)")
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        return _usage_error(f"invalid config {args.config_file}: {exc}")
    return _run(args, config, args.config_file, listen, web_config)


def _run(
    args: argparse.Namespace, config: Config, path: Path | None, listen: tuple[str, int], web: WebConfig | None
) -> int:
    if args.config_check:
        print(describe_config(config))
        return 0
    if args.once:
        return _once(config)
    return _serve(config, path, listen, web, demo=args.demo)


def _usage_error(message: str) -> int:
    print(f"partnercenter-exporter: error: {message}", file=sys.stderr)
    log.error("cannot start", extra={"err": message})
    return EXIT_USAGE


def _once(config: Config) -> int:
    store = SnapshotStore(config, time.time())
    restore_state(store, config)

    async def poll() -> None:
        poller = Poller(config, store)
        try:
            await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(poll())
    sys.stdout.buffer.write(generate_latest(business_registry(store)))
    sys.stdout.flush()
    return 0 if all(s.up for s in store.current.tenants.values()) else 1


def _serve(config: Config, path: Path | None, listen: tuple[str, int], web: WebConfig | None, demo: bool) -> int:
    try:
        app = App(config, config_path=path, listen=listen, web_config=web)
    except OSError as exc:
        log.error("cannot listen", extra={"address": f"{listen[0]}:{listen[1]}", "err": exc.strerror})
        print(
            f"partnercenter-exporter: error: cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}", file=sys.stderr
        )
        return 1
    stop = StopRequest()
    with _signals(app, stop):
        app.start()
        if demo:
            print(
                f"Demo running: metrics at {app.url}/metrics, tenants at {app.url}/ (Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
        stop.wait()
    log.info("shutting down")
    app.stop()
    return 0


@contextlib.contextmanager
def _signals(app: App, stop: StopRequest) -> Iterator[None]:
    def on_hup(signum: int, frame: FrameType | None) -> None:
        # Reload off the signal handler: it does file I/O and waits on the poller loop.
        threading.Thread(target=app.reload, name="sighup-reload", daemon=True).start()

    previous = {
        s: signal.signal(s, h)
        for s, h in ((signal.SIGTERM, stop.on_signal), (signal.SIGINT, stop.on_signal), (signal.SIGHUP, on_hup))
    }
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
