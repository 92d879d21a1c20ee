"""Polls every tenant on its own schedule, at most `concurrency` at a time, and publishes each result.

One asyncio task per tenant sleeps until its next due time, then takes a slot (a client) from the
PartnerCenterClient. A slow or failing tenant only ever holds its own slot, so the others keep their schedule.
Each finished poll replaces that tenant's state in the SnapshotStore in one step: values, up, counters, durations
together.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from exporter.config import Config, TenantConfig
from exporter.files import remove_orphans
from exporter.secret import Secret
from exporter.snapshot import SnapshotStore, TenantState
from exporter.upstream.auth import CredentialError, TokenCache, read_refresh_token, token_form
from exporter.upstream.client import PartnerCenterClient, Session, TransportFactory
from exporter.upstream.errors import UpstreamError
from exporter.upstream.model import InvoiceSummary

log = logging.getLogger(__name__)

T = TypeVar("T")
MFA_HELP = (
    "Partner Center refused the App+User token: it has no MFA claim (error 900421). The refresh token was "
    "consented without multi-factor authentication; consent again with MFA and replace refresh_token_file "
    "(docs/runbook.md#partnercentertokenwithoutmfa)"
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one poll tries before it gives up until the next interval."""

    attempts: int = 3  # tries for retryable failures (5xx, timeout, connection)
    base_delay: float = 1.0  # first backoff; doubles each try, with full jitter
    max_delay: float = 30.0
    default_retry_after: float = 60.0  # a 429 without a usable Retry-After header
    schedule_jitter: float = 0.05  # each interval is stretched or shrunk by up to this fraction
    # Finished polls are published together at most this long after the first of them: one copy of the tenant map
    # per poll would make a cycle quadratic in the number of tenants.
    publish_window: float = 0.05


def slots(config: Config) -> int:
    """Clients to open: `concurrency`, but no more than there are tenants to poll at once."""
    return max(1, min(config.concurrency, len(config.tenants)))


class _Tenant:
    """The poller's private, mutable bookkeeping for one tenant (only touched on the event loop)."""

    __slots__ = ("config", "last_started", "not_before", "task", "tokens")

    def __init__(self, config: TenantConfig) -> None:
        self.config = config
        self.tokens = TokenCache(config)
        self.not_before = 0.0  # monotonic time before which Retry-After forbids another poll
        self.last_started: float | None = None  # monotonic
        self.task: asyncio.Task[None] | None = None


def _remove_orphans(tenants: Iterable[TenantConfig]) -> None:
    """Delete what killed refresh-token writes left behind: a temp file holding a valid token."""
    for orphan in remove_orphans(t.refresh_token_file for t in tenants if t.refresh_token_file is not None):
        log.warning("removed a temp file a killed token write left behind", extra={"path": str(orphan)})


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
        _remove_orphans(config.tenants)
        self._tenants = {t.name: _Tenant(t) for t in config.tenants}
        self._client: PartnerCenterClient | None = None
        self._pending: list[tuple[str, Callable[[TenantState], TenantState]]] = []
        self._pending_success = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._running = False
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def _clients(self) -> PartnerCenterClient:
        if self._client is None:
            self._client = PartnerCenterClient(self._config, self._transport_factory, slots(self._config))
        return self._client

    async def poll_all(self) -> None:
        """Poll every tenant once, now (for --once and benchmarks)."""
        await asyncio.gather(*(self._poll_once(t) for t in self._tenants.values()))
        self._flush()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on schedule until `stop` is set, then cancel in-flight requests and close connections."""
        self._running = True
        for t in self._tenants.values():
            self._start(t)
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
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def apply_config(self, config: Config) -> None:
        """Switch to a new config: new tenants start, removed ones stop, unchanged ones keep token and state."""
        self._flush()
        old, self._config = self._config, config
        transport_changed = _transport(old) != _transport(config)
        reschedule = transport_changed or old.interval != config.interval
        restarted: list[str] = []
        latest = time.monotonic() + config.max_staleness
        tenants: dict[str, _Tenant] = {}
        for tc in config.tenants:
            t = self._tenants.pop(tc.name, None)
            if t is None:
                _remove_orphans([tc])
                t = _Tenant(tc)
            elif _identity(t.config) != _identity(tc):
                restarted.append(tc.name)
                # The file now, not as the reload read it: a rotation written since is the chain's newer token.
                found = read_refresh_token(tc.refresh_token_file) if tc.refresh_token_file is not None else None
                self._new_tokens(t, replace(tc, refresh_token=found or tc.refresh_token))
            elif (found := t.tokens.new_token_in_file(tc)) is not None:
                # The file holds a token the exporter neither read nor wrote: a new consent, used at once (and
                # never overwritten by a rotation of the old chain).
                log.info("refresh_token_file holds a new refresh token; polling with it", extra={"tenant": tc.name})
                self._new_tokens(t, replace(tc, refresh_token=found))
            elif reschedule:
                self._stop(t)
            t.config = tc
            t.not_before = min(t.not_before, latest)  # a Retry-After never outlasts the new max_staleness either
            tenants[tc.name] = t
        for removed in self._tenants.values():
            self._stop(removed)
        self._tenants = tenants
        self._store.replace_config(config, restarted, self._clock())
        if transport_changed and self._client is not None:
            old_pool, self._client = self._client, None
            # In-flight polls were cancelled above; their clients can go.
            await old_pool.aclose()
        if self._running:
            for t in self._tenants.values():
                if t.task is None:
                    self._start(t)

    def _new_tokens(self, t: _Tenant, tc: TenantConfig) -> None:
        """Start the tenant's tokens afresh from `tc`, and poll it at once."""
        write_errors = t.tokens.write_errors  # a counter: it carries on
        t.tokens = TokenCache(tc)
        t.tokens.write_errors = write_errors
        t.last_started = None
        self._stop(t)

    def _start(self, t: _Tenant) -> None:
        """Schedule a tenant's polls: the first at once, or one interval after its last poll."""
        last = t.last_started
        delay = 0.0 if last is None else max(0.0, last + self._config.interval - time.monotonic())
        t.task = asyncio.create_task(self._schedule(t, delay), name=f"poll-{t.config.name}")

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
            await self._poll_once(t)
            jitter = self._retry.schedule_jitter
            due = started + self._config.interval * self._rng.uniform(1 - jitter, 1 + jitter)

    async def _poll_once(self, t: _Tenant) -> None:
        try:
            await self._poll(t)
        except Exception:
            # A bug must cost one poll of one tenant, never the other tenants, the tenant's schedule or the process.
            log.exception("poll crashed", extra={"tenant": t.config.name})
            self._store.update_tenant(t.config.name, _crashed)

    async def _poll(self, t: _Tenant) -> None:
        """One poll of one tenant: token if needed, the invoice request, retries; then publish the outcome."""
        started = time.monotonic()
        tc = t.config
        sent: list[tuple[str, str | None]] = []  # (endpoint, failure status) of every request sent
        summaries: tuple[InvoiceSummary, ...] | None = None
        error: str | None = None  # why the poll failed, for the landing page
        reauthenticated = False
        request_id: str | None = None  # the MS-RequestId of an invoice request that got no answer, for its retry
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._clients.slot() as session:
                    token = t.tokens.valid_token(self._clock())
                    if token is None:
                        token = await self._fetch_token(t, session, sent)
                    invoices = session.invoices(tc.endpoint, token, request_id)
                    summaries = await self._counted(sent, tc.endpoint, invoices)
                error = None
                break
            except CredentialError as exc:
                error = str(exc)
                log.error("cannot request a token", extra={"tenant": tc.name, "err": error})
                break
            except UpstreamError as exc:
                self._log_failure(t, exc, attempt)
                # Partner Center: "If there's a timeout, the retry call should include the same value"; after an
                # answer, a new one (learn.microsoft.com/partner-center/developer/headers).
                no_answer = exc.endpoint != "token" and exc.status in ("timeout", "connection")
                request_id = exc.request_id if no_answer else None
                if exc.mfa_required:
                    # A token refreshed from the same consent has the same claims: no retry, no new token.
                    error = MFA_HELP
                    break
                error = t.tokens.redact(f"{exc.endpoint}: {exc.status}: {exc.body.description}")
                if exc.status == "401" and exc.endpoint != "token" and not reauthenticated:
                    # The token was revoked or expired early: one more try with a fresh one.
                    t.tokens.invalidate()
                    reauthenticated = True
                    continue
                if exc.status == "429" or (exc.retry_after is not None and exc.status == "503"):
                    self._hold_off(t, exc.retry_after)
                    break
                if exc.retryable and attempt < self._retry.attempts:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                break
        # Only a finished poll counts for the schedule: one a reload cancelled is done again at once.
        t.last_started = started
        self._publish(t, sent, summaries, error, time.monotonic() - started)

    def _hold_off(self, t: _Tenant, retry_after: float | None) -> None:
        """No poll of this tenant before Retry-After; never longer than max_staleness, whatever the header says."""
        wait = self._retry.default_retry_after if retry_after is None else retry_after
        if wait > self._config.max_staleness:
            log.warning(
                "Retry-After longer than max_staleness; waiting max_staleness instead",
                extra={"tenant": t.config.name, "retry_after": wait, "max_staleness": self._config.max_staleness},
            )
            wait = self._config.max_staleness
        t.not_before = time.monotonic() + wait

    async def _fetch_token(self, t: _Tenant, session: Session, sent: list[tuple[str, str | None]]) -> Secret:
        tc = t.config
        client = self._clients
        form = token_form(tc, self._config.scope, client.token_url(tc.tenant_id), t.tokens.refresh_token)
        grant = await self._counted(sent, "token", session.request_token(tc.tenant_id, form))
        # Writes a rotated refresh token (one fsync) on the event loop: awaited in threads, 1000 such writes at a cold
        # start made the cycle longer (bench/RESULTS.md). A slow disk holds polling up.
        t.tokens.store(grant, self._clock())
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
        error: str | None,
        duration: float,
    ) -> None:
        now = self._clock()
        max_staleness = self._config.max_staleness
        tokens = t.tokens

        def change(state: TenantState) -> TenantState:
            for endpoint, status in sent:
                state = state.counted(endpoint, status)
            state = replace(
                state,
                poll_duration=duration,
                token_expiry=tokens.expiry,
                token_mfa=tokens.mfa,
                refresh_token_write_errors=tokens.write_errors,
            )
            if error is None:
                return replace(state, summaries=summaries, up=True, last_success=now, last_error=None)
            kept = state.summaries
            if state.last_success is None or now - state.last_success > max_staleness:
                kept = None
            return replace(state, summaries=kept, up=False, last_error=error)

        self._pending.append((t.config.name, change))
        self._pending_success = self._pending_success or error is None
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
        # Every text an error body gave (its code and ids too) could echo a credential.
        fields = {k: t.tokens.redact(v) if isinstance(v, str) else v for k, v in exc.fields().items()}
        fields |= {"tenant": t.config.name, "attempt": attempt}
        if exc.mfa_required:
            log.error("request refused: the App+User token has no MFA claim; consent again with MFA", extra=fields)
        else:
            log.warning("request failed", extra=fields)

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


def _transport(config: Config) -> tuple[object, ...]:
    """What the HTTP clients are built from: a change means new clients and a fresh start of every schedule."""
    return (config.api_url, config.login_url, config.cloud, config.timeout, slots(config))


def _identity(tc: TenantConfig) -> TenantConfig:
    # Thresholds and payment terms only change what the collector shows; they are no reason to fetch a new token.
    return replace(tc, thresholds=MappingProxyType({}), payment_terms=None, credential_source=("", ""))
