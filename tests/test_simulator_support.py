"""Helpers shared by the simulator's test modules (no tests here): clients, forms, certificates, assertions."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from exporter.simulator import Scenario, Simulator

SCOPE = "https://api.partnercenter.microsoft.com/.default"
CHINA_SCOPE = "https://partner.partnercenterapi.microsoftonline.cn/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ENTRA_ERROR_KEYS = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}
PARTNER_ERROR_KEYS = {"code", "description", "data", "source"}
APP_CLIENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"  # the scenarios' app-only client
USER_CLIENT = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"  # the scenarios' App+User client


class Clock:
    """A settable clock for drift and token expiry."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start(scenario: Scenario, clock: Callable[[], float] = time.time) -> Simulator:
    """A started simulator on a free port."""
    sim = Simulator(scenario, host="127.0.0.1", port=0, clock=clock)
    sim.start()
    return sim


def token_url(tenant: str) -> str:
    return f"/{tenant}/oauth2/v2.0/token"


def post_token(client: httpx.Client, tenant: str, form: dict[str, str], **kw: Any) -> httpx.Response:
    return client.post(token_url(tenant), data=form, **kw)


def token_form(client_id: str = APP_CLIENT, secret: str | None = "app-secret-value", **extra: str) -> dict[str, str]:
    """A client-credentials form, with overrides."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "scope": SCOPE}
    if secret is not None:
        form["client_secret"] = secret
    form.update(extra)
    return form


def refresh_form(
    refresh_token: str, client_id: str = USER_CLIENT, secret: str | None = "user-secret-value", **extra: str
) -> dict[str, str]:
    """A refresh-token form asking for a rotated refresh token (`offline_access`), as the exporter's does."""
    extra = {"scope": f"{SCOPE} offline_access", **extra}
    return token_form(client_id, secret, grant_type="refresh_token", refresh_token=refresh_token, **extra)


def refresh(client: httpx.Client, refresh_token: str, tenant: str = "user.example.com", **kw: Any) -> dict[str, Any]:
    """Redeem a refresh token; the answer must be a 200."""
    response = post_token(client, tenant, refresh_form(refresh_token, **kw))
    assert response.status_code == 200, response.text
    return dict(response.json())


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, read the way the exporter reads `amr`: base64url JSON, no signature check."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def api_get(client: httpx.Client, endpoint: str, token: str | None, **headers: str) -> httpx.Response:
    """GET an invoice endpoint with the exporter's headers (fresh request and correlation ids)."""
    sent = {"Accept": "application/json", "MS-RequestId": str(uuid.uuid4()), "MS-CorrelationId": str(uuid.uuid4())}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers)
    return client.get(f"/v1/invoices/{endpoint}", headers=sent)


def assert_entra_error(response: httpx.Response, status: int, error: str, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert body.keys() >= ENTRA_ERROR_KEYS
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    return body


def assert_partner_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert body.keys() == PARTNER_ERROR_KEYS
    assert body["code"] == code, body
    assert body["source"] == "PartnerFD"
    return body


class Credential:
    """A key and a self-signed certificate for it, as an app registration holds one."""

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, days: int = 365) -> None:
        self.key = key
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partnercenter-exporter test")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        der = self.cert.public_bytes(serialization.Encoding.DER)
        self.x5t_s256 = _b64url(hashlib.sha256(der).digest())
        self.x5t = _b64url(hashlib.sha1(der).digest())

    def assertion(
        self,
        *,
        client_id: str,
        audience: str,
        algorithm: str = "PS256",
        thumbprint: str = "x5t#S256",
        signer: rsa.RSAPrivateKey | None = None,
        now: float | None = None,
        drop: tuple[str, ...] = (),
        padded: bool = False,
        **claims: object,
    ) -> str:
        """A client assertion as MSAL builds one; `claims` override, `drop` removes, `signer` signs instead.

        `padded` keeps base64's "=" on the thumbprint, as MSAL Python does (oauth2cli/assertion.py).
        """
        issued = time.time() if now is None else now
        payload: dict[str, object] = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(issued) + 600,
        }
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        value = self.x5t_s256 if thumbprint == "x5t#S256" else self.x5t
        header = {thumbprint: value + "=" * (-len(value) % 4) if padded else value}
        return jwt.encode(payload, signer or self.key, algorithm=algorithm, headers=header)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@functools.cache
def rsa_credential(label: str = "a") -> Credential:
    """An RSA key and certificate per label, made once per test process (key generation is slow)."""
    return Credential(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def federated_token(
    *, issuer: str, subject: str, audience: object = "api://AzureADTokenExchange", lifetime: int = 3600, **claims: Any
) -> str:
    """A Kubernetes-style projected service account token, signed with a key Entra would fetch from the issuer."""
    now = int(time.time())
    payload: dict[str, object] = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now}
    payload["exp"] = now + lifetime
    payload.update(claims)
    return jwt.encode(payload, rsa_credential("issuer").key, algorithm="RS256", headers={"kid": "k8s-key"})
