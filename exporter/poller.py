"""Polls every tenant on its own schedule, at most `concurrency` at a time, and publishes each result.

One asyncio task per tenant sleeps until its next due time, then takes a slot (a client with its own transport)
from the pool. A slow or failing tenant only ever holds its own slot, so the others keep their schedule. Each
finished poll replaces that tenant's state in the SnapshotStore in one step: values, up, counters, durations
together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

import httpx

from exporter.auth import TokenCache
from exporter.client import PartnerCenterClient, UpstreamError
from exporter.config import Config, TenantConfig
from exporter.model import InvoiceSummary
from exporter.secret import Secret
from exporter.snapshot import SnapshotStore, TenantState
from exporter.transport import H11Transport

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one poll tries before it gives up until the next interval."""

    attempts: int = 3  # tries for retryable failures (5xx, timeout, connection)
    base_delay: float = 1.0  # first backoff; doubles each try, with full jitter
    max_delay: float = 30.0
    default_retry_after: float = 60.0  # a 429 without a usable Retry-After header
    schedule_jitter: float = 0.05  # each interval is stretched or shrunk by up to this fraction
    # Finished polls are published together at most this long after the first of them: each publication copies
    # the tenant map, and one copy per poll made a cycle quadratic in the number of tenants.
    publish_window: float = 0.05


TransportFactory = Callable[[], httpx.AsyncBaseTransport]


class ClientPool:
    """One client per concurrency slot, each with its own transport; taking a client is taking a slot.

    A single pool of many connections spends CPU per request on bookkeeping that grows with its size; a small
    transport per slot (all sharing one SSL context) does not. Each slot sends through an H11Transport, about
    half the CPU per request of httpx's own, except to an upstream the environment names a proxy for
    (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY): those requests go through httpx's proxy transport.
    """

    def __init__(self, config: Config, transport_factory: TransportFactory | None = None) -> None:
        # Always pass one shared context: with `verify=True` each transport builds its own (~60 ms, ~1 MiB each),
        # even for http:// upstreams, which cost seconds and tens of MiB at concurrency 50.
        verify = _shared_ssl_context()
        api_proxy, login_proxy = environment_proxy(config.api_url), environment_proxy(config.login_url)
        self._transports: list[httpx.AsyncBaseTransport] = []
        self._free: asyncio.Queue[PartnerCenterClient] = asyncio.Queue()
        for _ in range(config.concurrency):
            own = transport_factory() if transport_factory is not None else H11Transport(verify)
            api = own if transport_factory is not None or api_proxy is None else _proxied(api_proxy, verify)
            login = own if transport_factory is not None or login_proxy is None else _proxied(login_proxy, verify)
            self._transports += {id(t): t for t in (own, api, login)}.values()
            self._free.put_nowait(PartnerCenterClient(api, login, config.api_url, config.login_url, config.timeout))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[PartnerCenterClient]:
        """Wait for a free client, and give it back afterwards."""
        client = await self._free.get()
        try:
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        """Close every transport's connections."""
        await asyncio.gather(*(t.aclose() for t in self._transports), return_exceptions=True)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`: its scheme's *_PROXY or ALL_PROXY, unless NO_PROXY covers it."""
    proxies = urllib.request.getproxies_environment()
    parsed = httpx.URL(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parsed.host):
        return None
    return proxy


def _proxied(proxy: str, verify: ssl.SSLContext) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(
        verify=verify, proxy=proxy, limits=httpx.Limits(max_connections=2, max_keepalive_connections=2)
    )


def _shared_ssl_context() -> ssl.SSLContext:
    # Building an SSL context costs ~20-60 ms and ~1 MiB: build it once per pool, not per client.
    import certifi  # noqa: PLC0415 - httpx's CA bundle, imported where it is used

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


class _Tenant:
    """The poller's private, mutable bookkeeping for one tenant (only touched on the event loop)."""

    __slots__ = ("config", "last_started", "not_before", "task", "tokens")

    def __init__(self, config: TenantConfig) -> None:
        self.config = config
        self.tokens = TokenCache(config)
        self.not_before = 0.0  # monotonic time before which Retry-After forbids another poll
        self.last_started: float | None = None  # monotonic
        self.task: asyncio.Task[None] | None = None


class Poller:
    """Owns the schedule, the HTTP clients, retries and the per-tenant token caches."""

    def __init__(
        self,
        config: Config,
        store: SnapshotStore,
        *,
        retry: RetryPolicy | None = None,
        transport_factory: TransportFactory | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_success: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._retry = retry or RetryPolicy()
        self._transport_factory = transport_factory
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_success = on_success
        self._tenants = {t.name: _Tenant(t) for t in config.tenants}
        self._pool: ClientPool | None = None
        self._pending: list[tuple[str, Callable[[TenantState], TenantState]]] = []
        self._pending_success = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._running = False
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def _clients(self) -> ClientPool:
        if self._pool is None:
            self._pool = ClientPool(self._config, self._transport_factory)
        return self._pool

    async def poll_all(self) -> None:
        """Poll every tenant once, now (for --once and benchmarks)."""
        await asyncio.gather(*(self._poll(t) for t in self._tenants.values()))
        self._flush()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on schedule until `stop` is set, then cancel in-flight requests and close connections."""
        self._running = True
        for t in self._tenants.values():
            self._start(t, first_delay=0.0)
        self._sweeper = asyncio.create_task(self._sweep_stale(), name="staleness-sweeper")
        try:
            await stop.wait()
        finally:
            self._running = False
            tasks = [t.task for t in self._tenants.values() if t.task is not None] + [self._sweeper]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._flush()
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def apply_config(self, config: Config) -> None:
        """Switch to a new config: new tenants start, removed ones stop, unchanged ones keep token and state."""
        self._flush()
        old = self._config
        transport_changed = (old.api_url, old.login_url, old.timeout, old.concurrency) != (
            config.api_url,
            config.login_url,
            config.timeout,
            config.concurrency,
        )
        reschedule = transport_changed or old.interval != config.interval
        restarted: list[str] = []
        new_names = {t.name for t in config.tenants}
        for name in list(self._tenants):
            if name not in new_names:
                self._stop(self._tenants.pop(name))
        for tc in config.tenants:
            current = self._tenants.get(tc.name)
            if current is None:
                self._tenants[tc.name] = _Tenant(tc)
            elif _identity(current.config) != _identity(tc) or transport_changed:
                if _identity(current.config) != _identity(tc):
                    restarted.append(tc.name)
                    current.tokens = TokenCache(tc)
                current.config = tc
                self._stop(current)
            else:
                current.config = tc
                if reschedule:
                    self._stop(current)
        self._config = config
        self._store.replace_config(config, restarted, self._clock())
        if transport_changed and self._pool is not None:
            old_pool, self._pool = self._pool, None
            # In-flight polls were cancelled above; their clients can go.
            await old_pool.aclose()
        if self._running:
            for t in self._tenants.values():
                if t.task is None:
                    self._start(t, first_delay=self._resume_delay(t))

    def _resume_delay(self, t: _Tenant) -> float:
        if t.last_started is None:
            return 0.0
        return max(0.0, t.last_started + self._config.interval - time.monotonic())

    def _start(self, t: _Tenant, first_delay: float) -> None:
        t.task = asyncio.create_task(self._schedule(t, first_delay), name=f"poll-{t.config.name}")

    @staticmethod
    def _stop(t: _Tenant) -> None:
        if t.task is not None:
            t.task.cancel()
            t.task = None

    async def _schedule(self, t: _Tenant, first_delay: float) -> None:
        due = time.monotonic() + first_delay
        while True:
            delay = max(due, t.not_before) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await self._poll(t)
            except Exception:
                # A bug must cost one poll of one tenant, never the tenant's schedule or the process.
                log.exception("poll crashed", extra={"tenant": t.config.name})
                self._store.update_tenant(t.config.name, _crashed)
            jitter = self._retry.schedule_jitter
            due = started + self._config.interval * self._rng.uniform(1 - jitter, 1 + jitter)

    async def _poll(self, t: _Tenant) -> None:
        """One poll of one tenant: token if needed, the invoice request, retries; then publish the outcome."""
        t.last_started = time.monotonic()
        tc = t.config
        sent: list[tuple[str, str | None]] = []  # (endpoint, failure status) of every request sent
        summaries: tuple[InvoiceSummary, ...] | None = None
        failure: UpstreamError | None = None
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._clients.slot() as client:
                    token = t.tokens.valid_token(self._clock())
                    if token is None:
                        token = await self._fetch_token(t, client, sent)
                    summaries = await self._counted(sent, tc.endpoint, client.get_invoice_summaries(tc.endpoint, token))
                failure = None
                break
            except UpstreamError as exc:
                # Its traceback holds this frame, which would hold it: cyclic garbage at every failure otherwise.
                failure = exc.with_traceback(None)
                self._log_failure(t, exc, attempt)
                if exc.status == "401" and exc.endpoint != "token" and not reauthenticated:
                    # The token was revoked or expired early: one more try with a fresh one.
                    t.tokens.invalidate()
                    reauthenticated = True
                    continue
                if exc.status == "429" or (exc.retry_after is not None and exc.status == "503"):
                    wait = exc.retry_after if exc.retry_after is not None else self._retry.default_retry_after
                    t.not_before = time.monotonic() + wait
                    break
                if exc.retryable and attempt < self._retry.attempts:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                break
        duration = time.monotonic() - t.last_started
        self._publish(t, sent, summaries, failure, duration)

    async def _fetch_token(self, t: _Tenant, client: PartnerCenterClient, sent: list[tuple[str, str | None]]) -> Secret:
        grant = await self._counted(sent, "token", client.request_token(t.config, t.tokens.refresh_token))
        # Storing may write the rotated refresh token to disk with two fsyncs (milliseconds each): off the event
        # loop, or a cold start of 1000 App+User tenants stalls every other poll for seconds.
        await asyncio.to_thread(t.tokens.store, grant, self._clock())
        return grant.access_token

    @staticmethod
    async def _counted(sent: list[tuple[str, str | None]], endpoint: str, request: Awaitable[T]) -> T:
        try:
            result = await request
        except UpstreamError as exc:
            sent.append((endpoint, exc.status))
            raise
        sent.append((endpoint, None))
        return result

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._retry.max_delay, self._retry.base_delay * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _publish(
        self,
        t: _Tenant,
        sent: list[tuple[str, str | None]],
        summaries: tuple[InvoiceSummary, ...] | None,
        failure: UpstreamError | None,
        duration: float,
    ) -> None:
        now = self._clock()
        max_staleness = self._config.max_staleness
        secrets = _secrets_of(t)

        def change(state: TenantState) -> TenantState:
            for endpoint, status in sent:
                state = state.counted(endpoint, status)
            state = replace(state, last_attempt=now, poll_duration=duration, token_expiry=t.tokens.expiry)
            if failure is None:
                return replace(state, summaries=summaries, up=True, last_success=now, last_error=None)
            kept = state.summaries
            if state.last_success is None or now - state.last_success > max_staleness:
                kept = None
            error = _redact(f"{failure.endpoint}: {failure.status}: {failure.description}", secrets)
            return replace(state, summaries=kept, up=False, last_error=error)

        self._pending.append((t.config.name, change))
        self._pending_success = self._pending_success or failure is None
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self._retry.publish_window, self._flush)

    def _flush(self) -> None:
        """Publish every finished poll not yet published, as one snapshot."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, []
        success, self._pending_success = self._pending_success, False
        if pending:
            self._store.update_tenants(pending)
        if success and self._on_success is not None:
            self._on_success()

    def _log_failure(self, t: _Tenant, exc: UpstreamError, attempt: int) -> None:
        fields = {
            "tenant": t.config.name,
            "endpoint": exc.endpoint,
            "status": exc.status,
            "attempt": attempt,
            "request_id": exc.request_id,
            "correlation_id": exc.correlation_id,
            "retry_after": exc.retry_after,
            "detail": _redact(exc.description, _secrets_of(t)),
        }
        log.warning("request failed", extra={k: v for k, v in fields.items() if v is not None})

    async def _sweep_stale(self) -> None:
        """Drop values older than max_staleness even when no poll finishes (e.g. a long Retry-After)."""
        while True:
            await asyncio.sleep(min(60.0, max(0.5, self._config.max_staleness / 10)))
            now = self._clock()
            limit = self._config.max_staleness
            for name, state in self._store.current.tenants.items():
                if state.summaries is not None and state.last_success is not None and now - state.last_success > limit:
                    self._store.update_tenant(name, _drop_values(now, limit))


def _drop_values(now: float, limit: float) -> Callable[[TenantState], TenantState]:
    def change(state: TenantState) -> TenantState:
        if state.last_success is not None and now - state.last_success > limit:
            return replace(state, summaries=None)
        return state

    return change


def _crashed(state: TenantState) -> TenantState:
    return replace(state, up=False, last_error="internal error (see the exporter log)")


def _identity(tc: TenantConfig) -> TenantConfig:
    # Thresholds only change what the collector shows; they are no reason to fetch a new token.
    return replace(tc, thresholds=MappingProxyType({}))


def _secrets_of(t: _Tenant) -> tuple[str, ...]:
    candidates = (t.config.client_secret, t.config.refresh_token, *t.tokens.secrets())
    values = [s.reveal() for s in candidates if s is not None]
    return tuple(v for v in values if len(v) >= 4)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    """Mask secret values in upstream-provided text (a proxy might echo a request body back)."""
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text
