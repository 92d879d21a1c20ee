"""The running simulator's mutable state: per-tenant counters, armed faults and revocations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from exporter.simulator.assertions import Certificate, load_certificate
from exporter.simulator.clouds import FACTS, CloudFacts
from exporter.simulator.ledger import Books
from exporter.simulator.rand import unit
from exporter.simulator.scenario import Fault, Scenario, TenantScenario
from exporter.simulator.tokens import TokenSigner

ENDPOINTS: Final = ("token", "summary", "summaries")
UNKNOWN: Final = "unknown"


class TenantState:
    """One tenant's live state; every mutation happens under its own lock."""

    def __init__(self, tenant: TenantScenario, seed: int, start: float) -> None:
        """Arm the scenario's faults and open the books at `start`."""
        self.scenario = tenant
        self.directory_id = tenant.directory_id
        self.certificates: tuple[Certificate, ...] = tuple(load_certificate(pem) for pem in tenant.certificates)
        self.books = Books(tenant.currencies, tenant.quirks, seed, tenant.tenant_id, start)
        self._lock = threading.Lock()
        # Rolls are numbered per tenant: a tenant's fault sequence does not depend on other tenants' traffic.
        self._salt = (seed, tenant.tenant_id.lower(), "fault")
        self._rolls = 0
        self._faults: list[tuple[Fault, list[int | None]]] = []
        self.set_faults(tenant.faults)
        self._revoked_ns = 0

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the armed faults; counts start afresh."""
        armed = [(fault, [fault.count]) for fault in faults]
        with self._lock:
            self._faults = armed

    def next_fault(self, endpoint: str) -> Fault | None:
        """The first armed fault that matches the endpoint and fires; a counted fault is used up."""
        with self._lock:
            for fault, remaining in self._faults:
                if remaining[0] == 0 or not fault.matches(endpoint):
                    continue
                if fault.probability < 1.0:
                    self._rolls += 1
                    if unit(*self._salt, self._rolls) >= fault.probability:
                        continue
                if remaining[0] is not None:
                    remaining[0] -= 1
                return fault
        return None

    def revoke(self) -> None:
        """Invalidate every token issued so far, the scenario's own refresh token included."""
        with self._lock:
            self._revoked_ns = max(time.time_ns(), self._revoked_ns + 1)

    def issue_ns(self) -> int:
        """A wall-clock stamp for a new token, strictly after the last revocation."""
        with self._lock:
            return max(time.time_ns(), self._revoked_ns + 1)

    def is_revoked(self, issued_ns: int) -> bool:
        """Whether a token stamped `issued_ns` was issued before the last revocation."""
        with self._lock:
            return issued_ns <= self._revoked_ns


class World:
    """Everything a request handler needs: scenario, tenants by id, signer, clock and request counts."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        """Build the tenants' state with time starting now."""
        self.scenario = scenario
        self.cloud: CloudFacts = FACTS[scenario.cloud]
        self.clock = clock
        self.start = clock()
        self.signer = TokenSigner(scenario.seed)
        states = [TenantState(t, scenario.seed, self.start) for t in scenario.tenants]
        # Entra takes a tenant's domain or its GUID in a URL; tokens name it by GUID (`tid`).
        self.tenants = {
            key: state for state in states for key in (state.scenario.tenant_id.lower(), state.directory_id)
        }
        self._counts_lock = threading.Lock()
        self._counts = {t.tenant_id: dict.fromkeys(ENDPOINTS, 0) for t in scenario.tenants}

    def tenant(self, tenant_id: str) -> TenantState | None:
        """The tenant with this domain or GUID (case-insensitive), or None."""
        return self.tenants.get(tenant_id.lower())

    def count(self, tenant: TenantState | None, endpoint: str) -> None:
        """Count one received request."""
        key = tenant.scenario.tenant_id if tenant else UNKNOWN
        with self._counts_lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = dict.fromkeys(ENDPOINTS, 0)
            counts[endpoint] += 1

    def stats(self) -> dict[str, dict[str, int]]:
        """A copy of the request counts per tenant and endpoint."""
        with self._counts_lock:
            return {tenant: dict(counts) for tenant, counts in self._counts.items()}
