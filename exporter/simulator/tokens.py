"""Access and refresh tokens: HMAC-signed with a key derived from the scenario seed, so they outlive restarts."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Final

_JWT_HEADER: Final = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"HS256"}').rstrip(b"=").decode()
# Entra refresh tokens are opaque strings starting like this; clients must not look inside.
_REFRESH_PREFIX: Final = "0.A"
# Verified access tokens remembered; plenty for thousands of tenants, bounded against token floods.
_VERIFIED_MAX: Final = 50_000


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    directory_id: str  # the tenant's GUID (`tid`)
    client_id: str
    issued_ns: int  # wall-clock ns at issue; revocation compares against it
    issued_at: float = 0.0  # simulator clock at issue; refresh tokens expire from it
    app_user: bool = False
    expires: float = float("inf")  # access tokens: Unix time
    amr: tuple[str, ...] = ()  # how the user signed in at consent; App+User only
    audience: str = ""  # access tokens: the resource they are for


def _b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(value: object) -> int:
    """An integer claim, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def _strings(value: object) -> tuple[str, ...]:
    """A list-of-strings claim, or ValueError."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("not a list of strings")
    return tuple(value)


def _float(value: object) -> float:
    """A numeric claim, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


class TokenSigner:
    """Issues and verifies the simulator's tokens."""

    def __init__(self, seed: int) -> None:
        """Derive the signing key from the seed: same scenario, same key, tokens survive a restart."""
        self._key = hashlib.sha256(f"partnercenter-simulator:{seed}".encode()).digest()
        self._verified: dict[str, Claims] = {}

    def _sign(self, message: str) -> str:
        """HMAC-SHA256 of the message."""
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def _valid(self, body: str, signature: str) -> bool:
        """Constant-time signature check; any text is accepted as input (headers may carry non-ASCII)."""
        return hmac.compare_digest(signature.encode(errors="replace"), self._sign(body).encode())

    def access_token(self, claims: Claims, *, issuer: str, client_auth: str) -> str:
        """A v1.0-style access token (Partner Center's resource takes v1.0 tokens) with Entra's claims.

        Claims as in "Access token claims reference",
        https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference: `appidacr` says how
        the client authenticated ("0" public, "1" secret, "2" certificate or assertion); App+User tokens carry
        `amr` and `scp`. `xns` is the simulator's own opaque claim, as Entra has `aio` and `rh`.
        """
        issued = int(claims.issued_at)
        payload: dict[str, object] = {
            "aud": claims.audience,
            "iss": issuer,
            "iat": issued,
            "nbf": issued,
            "exp": int(claims.expires),
            "appid": claims.client_id,
            "appidacr": client_auth,
            "idtyp": "user" if claims.app_user else "app",
            "tid": claims.directory_id,
            "ver": "1.0",
            "uti": secrets.token_urlsafe(16),
            "xns": claims.issued_ns,
        }
        if claims.app_user:
            payload["amr"] = list(claims.amr)
            payload["scp"] = "user_impersonation"
        body = f"{_JWT_HEADER}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{body}.{self._sign(body)}"

    def refresh_token(self, claims: Claims) -> str:
        """An opaque-looking refresh token carrying its issue time and the consent's `amr`."""
        payload = {
            "tid": claims.directory_id,
            "appid": claims.client_id,
            "iat": claims.issued_at,
            "amr": list(claims.amr),
            "xns": claims.issued_ns,
            "jti": secrets.token_urlsafe(9),
        }
        body = _REFRESH_PREFIX + _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def verify_access(self, token: str) -> Claims | None:
        """Claims of a well-formed, correctly signed access token (expiry and revocation not checked)."""
        # Clients reuse a token for its lifetime: remembering verified ones saves decoding on every request.
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims = self._verify_access(token)
        if claims is not None:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def _verify_access(self, token: str) -> Claims | None:
        """Verify without the cache."""
        body, _, signature = token.rpartition(".")
        if not body.startswith(_JWT_HEADER + ".") or not self._valid(body, signature):
            return None
        payload = self._payload(body[len(_JWT_HEADER) + 1 :])
        if payload is None:
            return None
        try:
            return Claims(
                directory_id=str(payload["tid"]),
                client_id=str(payload["appid"]),
                issued_ns=_int(payload["xns"]),
                issued_at=_float(payload["iat"]),
                app_user=payload["idtyp"] == "user",
                expires=_float(payload["exp"]),
                amr=_strings(payload.get("amr", [])),
                audience=str(payload["aud"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def verify_refresh(self, token: str) -> Claims | None:
        """Claims of a well-formed, correctly signed refresh token (expiry and revocation not checked)."""
        body, _, signature = token.rpartition(".")
        if not body.startswith(_REFRESH_PREFIX) or not self._valid(body, signature):
            return None
        payload = self._payload(body[len(_REFRESH_PREFIX) :])
        if payload is None:
            return None
        try:
            return Claims(
                directory_id=str(payload["tid"]),
                client_id=str(payload["appid"]),
                issued_ns=_int(payload["xns"]),
                issued_at=_float(payload["iat"]),
                app_user=True,
                amr=_strings(payload["amr"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def _payload(text: str) -> dict[str, object] | None:
        """Decode a base64url JSON object, or None."""
        try:
            payload = json.loads(_unb64(text))
        except (binascii.Error, ValueError):
            return None
        return payload if isinstance(payload, dict) else None
