"""Wires config, store, poller, exposition and HTTP server together; owns reload and shutdown.

The poller's asyncio loop, the HTTP server and the renderer each have threads of their own; they meet only at
the SnapshotStore (immutable snapshots) and at `reload()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from dataclasses import fields, replace
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector

from exporter.collector import ExporterCollector, TenantCollector
from exporter.config import Config, ConfigError, load_config
from exporter.config.web import WebConfig
from exporter.exposition import Exposition
from exporter.files import remove_orphans
from exporter.poller import Poller, RetryPolicy
from exporter.server.connections import DEFAULT_LIMITS, Limits, serve_in_thread
from exporter.server.http import ExporterServer, Routes
from exporter.snapshot import SnapshotStore
from exporter.statefile import load_state, save_state
from exporter.upstream.client import TransportFactory

log = logging.getLogger(__name__)


def business_registry(store: SnapshotStore) -> CollectorRegistry:
    """A registry of every partnercenter_* family (no process metrics), for --once."""
    registry = CollectorRegistry()
    registry.register(TenantCollector(lambda: store.current))
    registry.register(ExporterCollector(lambda: store.current))
    return registry


def restore_state(store: SnapshotStore, config: Config) -> None:
    """Seed the store from `config.state_file`, dropping what is already older than max_staleness."""
    if config.state_file is None:
        return
    for orphan in remove_orphans([config.state_file]):
        log.warning("removed a temp file a killed state file write left behind", extra={"path": str(orphan)})
    now = time.time()
    restored = load_state(config.state_file, config)
    store.update_tenants(
        (name, functools.partial(replace, summaries=entry.summaries, last_success=entry.last_success))
        for name, entry in restored.items()
        if now - entry.last_success <= config.max_staleness
    )
    if restored:
        log.info("restored state", extra={"path": str(config.state_file), "tenants": len(restored)})


def config_changes(old: Config, new: Config) -> dict[str, tuple[str, ...]]:
    """What a reload changes, for its log line: tenants `added`, `removed`, `changed`, top-level `settings`."""
    before = {t.name: t for t in old.tenants}
    after = {t.name: t for t in new.tenants}
    changes = {
        "added": tuple(name for name in after if name not in before),
        "removed": tuple(name for name in before if name not in after),
        "changed": tuple(name for name, tenant in after.items() if name in before and before[name] != tenant),
        "settings": tuple(
            f.name for f in fields(Config) if f.name != "tenants" and getattr(old, f.name) != getattr(new, f.name)
        ),
    }
    return {key: names for key, names in changes.items() if names}


class App:
    """A running exporter: start(), reload(), stop()."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None,
        listen: tuple[str, int],
        web_config: WebConfig | None = None,
        retry: RetryPolicy | None = None,
        transport_factory: TransportFactory | None = None,
        render_settle: float = 0.5,
        server_limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._config_path = config_path
        self.store = SnapshotStore(config, time.time())
        restore_state(self.store, config)
        tenants = CollectorRegistry()
        tenants.register(TenantCollector(lambda: self.store.current))
        live = CollectorRegistry()
        live.register(ProcessCollector(registry=None))
        live.register(ExporterCollector(lambda: self.store.current))
        self.exposition = Exposition(tenants, live, lambda: self.store.current.generation, settle=render_settle)
        self.store.on_change(self.exposition.notify)
        self._state_dirty = threading.Event()
        self.poller = Poller(
            config, self.store, retry=retry, transport_factory=transport_factory, on_success=self._state_dirty.set
        )
        routes = Routes(self.exposition, lambda: self.store.current, self.reload, web_config)
        self.server = ExporterServer(listen[0], listen[1], routes, server_limits)
        self._reload_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_polling: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._loop_thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="poller", daemon=True)

    @property
    def url(self) -> str:
        """Where the HTTP server listens."""
        return self.server.url

    def start(self) -> None:
        """Start polling, rendering and serving."""
        self.exposition.start()
        self._loop_thread.start()
        self._loop_ready.wait(timeout=10)
        serve_in_thread(self.server)
        log.info("listening", extra={"url": self.url, "tenants": len(self.store.current.config.tenants)})

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; on any error keep the running config. Returns (ok, message)."""
        with self._reload_lock:
            if self._config_path is None:
                return False, "no config file to reload (demo mode)"
            try:
                config = load_config(self._config_path)
            except ConfigError as exc:
                self.store.reload_failed()
                log.error("config reload rejected; keeping the running config", extra={"err": str(exc)})
                return False, f"config reload rejected: {exc}"
            except Exception as exc:  # a bug in reading: its text (no traceback either) may quote the file
                self.store.reload_failed()
                log.error("config reload failed; keeping the running config", extra={"err": type(exc).__name__})
                return False, "config reload failed: internal error"
            if self._loop is None:
                return False, "not running"
            running = self.store.current.config
            future = asyncio.run_coroutine_threadsafe(self.poller.apply_config(config), self._loop)
            try:
                future.result(timeout=30)
            except Exception:  # a bug here must not take the HTTP thread or the signal thread down with it
                self.store.reload_failed()
                log.exception("applying the new config failed")
                return False, "config reload failed: internal error (see the exporter log)"
            changes = config_changes(running, config)
            log.info(
                "config reloaded" if changes else "config reloaded; nothing changed",
                extra={"tenants": len(config.tenants), **changes},
            )
            return True, "config reloaded"

    def stop(self, timeout: float = 4.0) -> None:
        """Stop serving and polling; in-flight requests are cancelled."""
        deadline = time.monotonic() + timeout
        self.server.shutdown()
        self.server.server_close()
        if self._loop is not None and self._stop_polling is not None:
            self._loop.call_soon_threadsafe(self._stop_polling.set)
        self._loop_thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.exposition.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_polling = asyncio.Event()
        self._loop_ready.set()
        polling = asyncio.create_task(self.poller.run(self._stop_polling), name="poller")
        while not polling.done():
            await asyncio.wait([polling], timeout=1.0)  # between state file writes while polls keep succeeding
            await self._save_state()
        polling.result()

    async def _save_state(self) -> None:
        snap = self.store.current
        path = snap.config.state_file
        if path is None or not self._state_dirty.is_set():
            return
        self._state_dirty.clear()
        try:
            await asyncio.to_thread(save_state, path, snap)
        except OSError as exc:
            log.error("cannot write state file", extra={"path": str(path), "err": exc.strerror})
