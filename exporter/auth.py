"""Access tokens per tenant: reuse until shortly before expiry, and keep rotated refresh tokens on disk."""

from __future__ import annotations

import logging
from pathlib import Path

from exporter.client import TokenGrant
from exporter.config import TenantConfig
from exporter.files import write_atomically
from exporter.secret import Secret

log = logging.getLogger(__name__)

# Renew this long before expiry, so that a token never runs out in the middle of a request.
MAX_RENEW_MARGIN = 300.0


class TokenCache:
    """The access token in hand for one tenant, and (App+User) its current refresh token."""

    __slots__ = ("_expires_at", "_refresh_token", "_renew_at", "_tenant", "_token")

    def __init__(self, tenant: TenantConfig) -> None:
        self._tenant = tenant
        self._refresh_token = tenant.refresh_token
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._renew_at = 0.0

    @property
    def refresh_token(self) -> Secret | None:
        """The refresh token to use for the next grant (None: client credentials)."""
        return self._refresh_token

    @property
    def expiry(self) -> float | None:
        """Unix time at which the token in hand expires; None without one."""
        return self._expires_at if self._token is not None else None

    def valid_token(self, now: float) -> Secret | None:
        """The token in hand, unless it is missing or due for renewal."""
        if self._token is None or now >= self._renew_at:
            return None
        return self._token

    def store(self, grant: TokenGrant, now: float) -> None:
        """Keep a fresh grant; a rotated refresh token replaces the old one in memory and on disk."""
        self._token = grant.access_token
        self._expires_at = now + grant.expires_in
        self._renew_at = self._expires_at - min(MAX_RENEW_MARGIN, grant.expires_in * 0.1)
        if grant.refresh_token is not None and grant.refresh_token != self._refresh_token:
            self._refresh_token = grant.refresh_token
            if self._tenant.refresh_token_file is not None:
                try:
                    write_secret_file(self._tenant.refresh_token_file, grant.refresh_token)
                except OSError as exc:
                    # Still usable in memory; a restart would fall back to the older token on disk.
                    log.error(
                        "cannot write rotated refresh token",
                        extra={
                            "tenant": self._tenant.name,
                            "path": str(self._tenant.refresh_token_file),
                            "err": exc.strerror or type(exc).__name__,
                        },
                    )

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret this cache holds, so that error texts can be scrubbed of them."""
        return tuple(s for s in (self._token, self._refresh_token) if s is not None)

    def invalidate(self) -> None:
        """Forget the access token (after a 401), so that the next request gets a new one."""
        self._token = None
        self._renew_at = 0.0


def write_secret_file(path: Path, secret: Secret) -> None:
    """Replace `path` atomically with `secret` (mode 0600)."""
    write_atomically(path, secret.reveal() + "\n")
