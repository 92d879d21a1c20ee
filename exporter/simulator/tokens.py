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

API_AUDIENCE: Final = "https://api.partnercenter.microsoft.com"
_JWT_HEADER: Final = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"HS256"}').rstrip(b"=").decode()
# Entra refresh tokens are opaque strings starting like this; clients must not look inside.
_REFRESH_PREFIX: Final = "0.A"
# Verified access tokens remembered; plenty for thousands of tenants, bounded against token floods.
_VERIFIED_MAX: Final = 50_000


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    tenant: str  # the scenario tenant_id, lower-case
    client_id: str
    issued_ns: int  # wall-clock ns at issue; revocation compares against it
    app_user: bool = False
    expires: float = float("inf")  # access tokens: Unix time
    seq: int = 0  # refresh tokens: position in the rotation chain (the scenario's own token is 0)


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

    def access_token(self, claims: Claims, issued_at: float) -> str:
        """A JWT-looking access token for the Partner Center API."""
        payload = {
            "aud": API_AUDIENCE,
            "iss": f"https://sts.windows.net/{claims.tenant}/",
            "tid": claims.tenant,
            "appid": claims.client_id,
            "idtyp": "user" if claims.app_user else "app",
            "iat": int(issued_at),
            "exp": claims.expires,
            "xns": claims.issued_ns,
            "jti": secrets.token_urlsafe(9),
        }
        body = f"{_JWT_HEADER}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{body}.{self._sign(body)}"

    def refresh_token(self, claims: Claims) -> str:
        """An opaque-looking refresh token carrying its chain position."""
        payload = {
            "tid": claims.tenant,
            "appid": claims.client_id,
            "seq": claims.seq,
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
                tenant=str(payload["tid"]),
                client_id=str(payload["appid"]),
                issued_ns=_int(payload["xns"]),
                app_user=payload["idtyp"] == "user",
                expires=_float(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def verify_refresh(self, token: str) -> Claims | None:
        """Claims of a well-formed, correctly signed refresh token (rotation and revocation not checked)."""
        body, _, signature = token.rpartition(".")
        if not body.startswith(_REFRESH_PREFIX) or not self._valid(body, signature):
            return None
        payload = self._payload(body[len(_REFRESH_PREFIX) :])
        if payload is None:
            return None
        try:
            return Claims(
                tenant=str(payload["tid"]),
                client_id=str(payload["appid"]),
                issued_ns=_int(payload["xns"]),
                app_user=True,
                seq=_int(payload["seq"]),
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
