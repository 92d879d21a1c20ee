"""The command line: Prometheus-style flags, signals, exit codes (0 ok, 1 runtime failure, 2 invalid input).

Bad flags are one line on stderr, as argparse says them; an invalid file is one log line, or under --config.check
one plain line, since a person or a CI job reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client import generate_latest

from exporter.app import App, business_registry, restore_state
from exporter.config import Config, ConfigError, describe_config, load_config
from exporter.config.web import WebConfig, load_web_config
from exporter.logs import FORMATS, LEVELS, configure_logging
from exporter.poller import Poller
from exporter.signals import StopRequest
from exporter.snapshot import SnapshotStore
from exporter.version import version_line

log = logging.getLogger(__name__)

PROGRAM = "partnercenter-exporter"
DEFAULT_PORT = 9089
DEFAULT_LISTEN = f":{DEFAULT_PORT}"
EXIT_USAGE = 2  # invalid flags, config or web config


def build_parser() -> argparse.ArgumentParser:
    """The flags, named like every Prometheus exporter's."""
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Prometheus exporter for Microsoft Partner Center invoice summaries.",
    )
    p.add_argument("--config.file", dest="config_file", type=Path, metavar="PATH", help="YAML configuration file")
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration (and --web.config.file, if given), print a summary and exit "
        "(0 valid, 2 invalid)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every tenant once, print the exposition and exit (1 if any tenant failed); "
        "the --web.* flags are ignored",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in simulator with sample tenants; needs no credentials and no --config.file",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        type=listen_address,
        metavar="[HOST]:PORT",
        help=f"where to serve; no HOST means every address, IPv4 and IPv6 (default: {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        type=Path,
        metavar="PATH",
        help="exporter-toolkit web configuration (TLS, basic auth)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        type=str.lower,
        choices=list(LEVELS),
        metavar="LEVEL",
        help="log events at this level and above: debug, info, warn (or warning), error (default: info)",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=FORMATS,
        metavar="FORMAT",
        help="log line format: logfmt or json (default: logfmt)",
    )
    p.add_argument("--version", action="store_true", help="print the version, git revision and Python version")
    return p


def listen_address(value: str) -> tuple[str, int]:
    """`[HOST]:PORT` as (host, port), IPv6 hosts in brackets; the type of --web.listen-address."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not [HOST]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"put IPv6 addresses in brackets: [{host}]:{port}")
    return host, int(port)


def conflict(args: argparse.Namespace) -> str | None:
    """Why these flags cannot be used together, or None; ones a mode does not use are ignored (scripts pass one set)."""
    if args.demo and args.config_file is not None:
        return "--demo runs its own sample config; leave out --config.file (or --demo)"
    if args.demo and args.config_check:
        return "--config.check checks a --config.file; the --demo config is built in"
    if args.config_check and args.once:
        return "--config.check only validates and --once polls: use one of them"
    if not args.demo and args.config_file is None:
        return "--config.file is required (or --demo to try the exporter without credentials)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the process exit status (0 ok, 1 runtime failure, 2 invalid input)."""
    args = build_parser().parse_args(argv)
    if args.version:
        print(version_line(PROGRAM))
        return 0
    if (reason := conflict(args)) is not None:
        print(f"{PROGRAM}: error: {reason}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    if args.config_check:
        return _check(args.config_file, args.web_config)
    try:
        web_config = None if args.web_config is None or args.once else load_web_config(args.web_config)
    except ConfigError as exc:
        return _invalid("web config", args.web_config, exc)
    if args.demo:
        from exporter.demo import demo_config  # noqa: PLC0415 - only the demo imports the simulator

        with demo_config() as config:
            return _once(config) if args.once else _serve(config, None, args.listen, web_config)
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        return _invalid("config", args.config_file, exc)
    return _once(config) if args.once else _serve(config, args.config_file, args.listen, web_config)


def _invalid(kind: str, path: Path, exc: ConfigError) -> int:
    """An invalid input file when starting: one log line, in the format the operator chose."""
    log.error(f"invalid {kind}", extra={"file": str(path), "err": str(exc)})
    return EXIT_USAGE


def _check(config_file: Path, web_config_file: Path | None) -> int:
    """`--config.check`: a summary on stdout, or the first thing wrong on stderr."""
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        return _check_failed("config", config_file, exc)
    try:
        web_config = None if web_config_file is None else load_web_config(web_config_file)
    except ConfigError as exc:
        return _check_failed("web config", web_config_file, exc)
    print(describe_config(config))
    if web_config is not None:
        users = len(web_config.basic_auth_users)
        tls = "on" if web_config.tls else "off"
        print(f"web_config={json.dumps(str(web_config_file))} tls={tls} basic_auth_users={users}")
    return 0


def _check_failed(kind: str, path: Path | None, exc: ConfigError) -> int:
    """`invalid web config web.yml: basic_auth_users.alice: ...`, naming the file once even when the error does."""
    text = str(exc)
    print(f"invalid {kind}: {text}" if str(path) in text else f"invalid {kind} {path}: {text}", file=sys.stderr)
    return EXIT_USAGE


def _once(config: Config) -> int:
    """`--once`: poll every tenant, print the exposition; 1 if any tenant failed."""
    store = SnapshotStore(config, time.time())
    restore_state(store, config)

    async def poll() -> None:
        async with contextlib.aclosing(Poller(config, store)) as poller:
            await poller.poll_all()

    asyncio.run(poll())
    sys.stdout.buffer.write(generate_latest(business_registry(store)))
    sys.stdout.flush()
    return 0 if all(s.up for s in store.current.tenants.values()) else 1


def _serve(config: Config, path: Path | None, listen: tuple[str, int], web: WebConfig | None) -> int:
    """Serve until SIGTERM or SIGINT; no config `path` is the demo.

    The handlers are in place from before the state is restored until the process has stopped: a signal during
    start-up, or a second one during shutdown, must not end it with a signal's status.
    """
    stop = StopRequest()
    app: App | None = None

    def reload() -> None:
        if app is not None:  # a SIGHUP before the app exists has nothing to reload
            app.reload()

    with _signals(stop, reload):
        try:
            app = App(config, config_path=path, listen=listen, web_config=web)
        except OSError as exc:
            address = f"{listen[0]}:{listen[1]}"
            log.error("cannot listen", extra={"address": address, "err": exc.strerror or type(exc).__name__})
            return 1
        app.start()
        if path is None:
            log.info("demo running; Ctrl-C stops it", extra={"metrics": f"{app.url}/metrics", "tenants": f"{app.url}/"})
        stop.wait()
        log.info("shutting down")
        app.stop()
    return 0


@contextlib.contextmanager
def _signals(stop: StopRequest, reload: Callable[[], object]) -> Iterator[None]:
    """SIGTERM and SIGINT request the stop; SIGHUP reloads, unless a stop was requested."""

    def on_hup(signum: int, frame: FrameType | None) -> None:
        if not stop.requested:
            # Reload off the signal handler: it does file I/O and waits on the poller loop.
            threading.Thread(target=reload, name="sighup-reload", daemon=True).start()

    previous = {
        s: signal.signal(s, h)
        for s, h in ((signal.SIGTERM, stop.on_signal), (signal.SIGINT, stop.on_signal), (signal.SIGHUP, on_hup))
    }
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
