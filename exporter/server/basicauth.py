"""HTTP basic auth against the bcrypt hashes of the web config (`basic_auth_users`), as exporter-toolkit does."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

_CACHE_SIZE = 256


class BasicAuthChecker:
    """Checks `Authorization: Basic ...` headers against bcrypt hashes; thread-safe."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        """Keep the users; an empty mapping means basic auth is off and every request passes."""
        self._users = dict(users)
        self._lock = threading.Lock()
        # bcrypt is CPU-bound; one check at a time keeps a flood of bad passwords to one core,
        # as exporter-toolkit does.
        self._bcrypt_lock = threading.Lock()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        # The decoy has the highest configured cost, so unknown users take as long as known ones.
        cost = max((int(h[4:6]) for h in self._users.values()), default=4)
        self._decoy = bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(rounds=cost)) if self._users else b""

    def check(self, authorization_header: str | None) -> bool:
        """Return True if the header carries a valid user and password (or if no users are configured)."""
        if not self._users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        known = self._users.get(user)
        hashed = known if known is not None else self._decoy
        key = _cache_key(user, password, hashed)
        with self._lock:
            if known is not None and key in self._verified:
                self._verified.move_to_end(key)
                return True
        ok = self._verify(password, hashed) and known is not None
        if ok:
            with self._lock:
                self._verified[key] = None
                if len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        return ok

    def _verify(self, password: bytes, hashed: bytes) -> bool:
        """Run bcrypt; checkpw compares the digests in constant time."""
        if len(password) > 72:
            # bcrypt ignores bytes past 72 (and bcrypt>=5 refuses them); accepting a truncated match
            # would let two different passwords in, so refuse like Go's bcrypt.
            return False
        with self._bcrypt_lock:
            try:
                return bcrypt.checkpw(password, hashed)
            except ValueError:
                return False


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """Split an `Authorization: Basic` header into user and password, or None if malformed."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


def _cache_key(user: str, password: bytes, hashed: bytes) -> bytes:
    """SHA-256 of length-prefixed parts: the cache holds no password, and parts cannot run together."""
    digest = hashlib.sha256()
    for part in (user.encode("utf-8"), password, hashed):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()
