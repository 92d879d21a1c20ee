"""Immutable per-tenant poll results, and the store that swaps them in atomically.

The poller is the only writer; the collector, the landing page and readiness read `store.current` without a
lock: a snapshot never changes once published, so a reader always sees one consistent picture.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.config import Config
from exporter.upstream.model import InvoiceSummary

# Status codes whose error counters exist from the first scrape, so that rate() works before the first failure.
SEEDED_STATUS_CODES = ("401", "403", "429", "500")
# The token endpoint's 400 is a dead refresh token or a misconfigured app (invalid_grant, invalid_scope): the auth
# alert's increase() only sees a failure if the series existed before it.
_SEEDED_TOKEN_CODES = ("400", *SEEDED_STATUS_CODES)


@dataclass(frozen=True, slots=True)
class TenantState:
    """Everything known about one tenant after its latest poll."""

    name: str
    summaries: tuple[InvoiceSummary, ...] | None = None  # last good values; None before one, or once stale
    up: bool | None = None  # None until this process finished a poll of the tenant
    last_success: float | None = None  # Unix seconds
    poll_duration: float | None = None
    last_error: str | None = None  # one line, for the landing page; never holds a secret
    token_expiry: float | None = None
    token_mfa: bool | None = None  # App+User: whether the access token in hand has the MFA claim
    refresh_token_write_errors: int = 0
    requests: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # endpoint -> requests sent
    # (endpoint, status) -> failures
    errors: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def fresh(cls, name: str, endpoints: Iterable[str]) -> TenantState:
        """Return the state of a tenant not polled yet, with its counters seeded at zero."""
        codes = {e: _SEEDED_TOKEN_CODES if e == "token" else SEEDED_STATUS_CODES for e in endpoints}
        errors = {(e, s): 0 for e, statuses in codes.items() for s in statuses}
        return cls(name, requests=MappingProxyType(dict.fromkeys(codes, 0)), errors=MappingProxyType(errors))

    def counted(self, endpoint: str, status: str | None) -> TenantState:
        """Return a copy that counts one more request to `endpoint`, failed with `status` unless None."""
        requests = MappingProxyType({**self.requests, endpoint: self.requests.get(endpoint, 0) + 1})
        if status is None:
            return replace(self, requests=requests)
        errors = MappingProxyType({**self.errors, (endpoint, status): self.errors.get((endpoint, status), 0) + 1})
        return replace(self, requests=requests, errors=errors)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The exporter's whole state at one moment; `generation` grows with every change."""

    generation: int
    config: Config
    tenants: Mapping[str, TenantState]
    reload_successful: bool = True
    reload_success_time: float | None = None

    @property
    def ready(self) -> bool:
        """True once every configured tenant has been polled at least once."""
        return all(
            (state := self.tenants.get(t.name)) is not None and state.up is not None for t in self.config.tenants
        )


class SnapshotStore:
    """Holds the current Snapshot; writers swap a new one in under a lock and wake listeners."""

    def __init__(self, config: Config, now: float) -> None:
        tenants = {t.name: TenantState.fresh(t.name, ("token", t.endpoint)) for t in config.tenants}
        self._current = Snapshot(0, config, MappingProxyType(tenants), reload_success_time=now)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def current(self) -> Snapshot:
        """The latest published snapshot (no lock needed: snapshots are immutable)."""
        return self._current

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (cheap, non-blocking) after every published change."""
        self._listeners.append(listener)

    def update_tenant(self, name: str, change: Callable[[TenantState], TenantState]) -> None:
        """Apply `change` to one tenant's state; ignored when the tenant is no longer configured."""
        self.update_tenants([(name, change)])

    def update_tenants(self, changes: Iterable[tuple[str, Callable[[TenantState], TenantState]]]) -> None:
        """Apply several tenants' changes as one new snapshot (one copy of the tenant map, not one each)."""
        with self._lock:
            snap = self._current
            tenants = dict(snap.tenants)
            changed = False
            for name, change in changes:
                if name in tenants:
                    tenants[name] = change(tenants[name])
                    changed = True
            if changed:
                self._publish(replace(snap, tenants=MappingProxyType(tenants)))

    def replace_config(self, config: Config, restarted: Iterable[str], now: float) -> None:
        """Swap in a new config: keep unchanged tenants' state, start the others afresh."""
        restarted = set(restarted)
        with self._lock:
            snap = self._current
            tenants: dict[str, TenantState] = {}
            for t in config.tenants:
                fresh = TenantState.fresh(t.name, ("token", t.endpoint))
                state = snap.tenants.get(t.name, fresh)
                if t.name in restarted:
                    # Counters carry on (same series); values and token belong to the old identity.
                    state = replace(
                        fresh,
                        requests=MappingProxyType({**fresh.requests, **state.requests}),
                        errors=MappingProxyType({**fresh.errors, **state.errors}),
                        refresh_token_write_errors=state.refresh_token_write_errors,
                    )
                tenants[t.name] = state
            self._publish(
                replace(
                    snap,
                    config=config,
                    tenants=MappingProxyType(tenants),
                    reload_successful=True,
                    reload_success_time=now,
                )
            )

    def reload_failed(self) -> None:
        """Record that the last reload was rejected (the old config keeps running)."""
        with self._lock:
            self._publish(replace(self._current, reload_successful=False))

    def _publish(self, snap: Snapshot) -> None:
        self._current = replace(snap, generation=self._current.generation + 1)
        for listener in self._listeners:
            listener()
