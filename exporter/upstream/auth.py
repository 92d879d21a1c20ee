"""Access tokens per tenant: the token request's form for each credential, reuse until shortly before expiry,
and rotated refresh tokens kept on disk.

Not MSAL: it refuses an http:// authority, which the simulator is (docs/architecture.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from exporter.config import AssertionFile, Certificate, TenantConfig
from exporter.config.credentials import ASSERTION_TYPE, read_token_file
from exporter.files import write_atomically
from exporter.secret import Secret

log = logging.getLogger(__name__)

# Renew this long before expiry, so that a token never runs out in the middle of a request.
MAX_RENEW_MARGIN = 300.0
# Entra's certificate-credential format: a short-lived assertion, "at most 5-10 minutes after nbf".
_ASSERTION_LIFETIME = 600


class CredentialError(Exception):
    """The tenant's credential cannot be used right now (a federated token file became unreadable)."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What the token endpoint gave us."""

    access_token: Secret
    expires_in: float
    refresh_token: Secret | None  # a rotated refresh token (App+User), to replace the old one


def token_form(tenant: TenantConfig, scope: str, token_url: str, refresh_token: Secret | None) -> dict[str, str]:
    """The form of a token request: the grant (refresh token, else client credentials) and the app's credential."""
    form = {"client_id": tenant.client_id, "scope": scope}
    if refresh_token is not None:
        # Without `offline_access` the answer has no new refresh token ("only provided if offline_access scope was
        # requested", learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token),
        # and the file's token would die at the end of its lifetime. MSAL adds it to every request for that reason.
        form.update(grant_type="refresh_token", refresh_token=refresh_token.reveal(), scope=f"{scope} offline_access")
    else:
        form["grant_type"] = "client_credentials"
    credential = tenant.credential
    if isinstance(credential, Secret):
        form["client_secret"] = credential.reveal()
    elif isinstance(credential, Certificate):
        form.update(
            client_assertion_type=ASSERTION_TYPE, client_assertion=_signed_assertion(tenant, credential, token_url)
        )
    elif isinstance(credential, AssertionFile):
        try:
            assertion = credential.read()
        except OSError as exc:
            raise CredentialError(f"cannot read client_assertion_file {credential.file}: {exc.strerror}") from None
        if not assertion.reveal():
            raise CredentialError(f"client_assertion_file {credential.file} is empty")
        form.update(client_assertion_type=ASSERTION_TYPE, client_assertion=assertion.reveal())
    return form


def _signed_assertion(tenant: TenantConfig, certificate: Certificate, token_url: str) -> str:
    """A client assertion signed with the certificate's key, in Entra's format (PS256, `x5t#S256`)."""
    import jwt  # noqa: PLC0415 - with cryptography, ~8 MiB of resident memory that only certificate tenants need

    now = int(time.time())
    claims = {
        "aud": token_url,
        "iss": tenant.client_id,
        "sub": tenant.client_id,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + _ASSERTION_LIFETIME,
    }
    return jwt.encode(claims, certificate.key, algorithm="PS256", headers={"x5t#S256": certificate.thumbprint})


def token_has_mfa(access_token: Secret) -> bool | None:
    """Whether the access token's `amr` claim lists `mfa` (Partner Center's 900421 otherwise); None if no JWT.

    The payload is only read, not verified: Partner Center checks the signature.
    """
    parts = access_token.reveal().split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # also UnicodeDecodeError and JSONDecodeError
        return None
    if not isinstance(claims, dict):
        return None
    amr = claims.get("amr")
    return "mfa" in amr if isinstance(amr, list) else False


def read_refresh_token(path: Path) -> Secret | None:
    """The token in a refresh token file now; None when it cannot be read or is empty."""
    try:
        token = read_token_file(path)
    except OSError:
        return None
    return token if token.reveal() else None


class TokenCache:
    """The access token in hand for one tenant and, App+User, its current refresh token."""

    __slots__ = ("_expires_at", "_renew_at", "_tenant", "_token", "mfa", "on_disk", "refresh_token", "write_errors")

    def __init__(self, tenant: TenantConfig) -> None:
        self._tenant = tenant
        self.refresh_token = tenant.refresh_token  # for the next grant; None: client credentials
        self.on_disk = tenant.refresh_token  # what refresh_token_file held when last read or written
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._renew_at = 0.0
        self.mfa: bool | None = None  # App+User: whether the token in hand carries the MFA claim
        self.write_errors = 0  # rotated refresh tokens that could not be written back

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
        if self._tenant.refresh_token_file is not None:
            self.mfa = token_has_mfa(grant.access_token)
        path = self._tenant.refresh_token_file
        if grant.refresh_token is None or grant.refresh_token == self.refresh_token:
            return
        self.refresh_token = grant.refresh_token
        if path is None:
            return
        found = read_refresh_token(path)
        if found is not None and found != self.on_disk:
            # Somebody put another token there (a new consent, the runbook's fix) since the exporter last read or
            # wrote it: it wins over this rotation of the old chain, from the next token request on.
            log.warning("refresh_token_file holds a new refresh token; using it", extra={"tenant": self._tenant.name})
            self.refresh_token = self.on_disk = found
            self._token = None
            return
        try:
            write_atomically(path, grant.refresh_token.reveal() + "\n")
            self.on_disk = grant.refresh_token
        except OSError as exc:
            # Still usable in memory; a restart would fall back to the older token on disk.
            self.write_errors += 1
            fields = {"tenant": self._tenant.name, "path": str(path), "err": exc.strerror or type(exc).__name__}
            log.error("cannot write rotated refresh token; a restart would use the older one", extra=fields)

    def redact(self, text: str) -> str:
        """`text` from upstream with every secret of the tenant masked (a proxy might echo a request back)."""
        credential = self._tenant.credential if isinstance(self._tenant.credential, Secret) else None
        for secret in (credential, self._tenant.refresh_token, self._token, self.refresh_token):
            if secret is not None and len(value := secret.reveal()) >= 4:
                text = text.replace(value, "<redacted>")
        return text

    def new_token_in_file(self, tenant: TenantConfig) -> Secret | None:
        """A token in `tenant`'s refresh_token_file that this cache neither read nor wrote (a new consent), read now.

        Not `tenant.refresh_token`, which a reload read in its own thread: a rotation written since would look new.
        """
        if tenant.refresh_token_file is None or tenant.refresh_token == self.on_disk:
            return None
        found = read_refresh_token(tenant.refresh_token_file)
        return found if found is not None and found != self.on_disk else None

    def invalidate(self) -> None:
        """Forget the access token (after a 401), so that the next request gets a new one."""
        self._token = None
        self._renew_at = 0.0
