"""Client assertions checked as Entra checks them: certificate-signed JWTs and federated (workload identity) tokens.

Sources (docs/simulator.md has the full list):
- Assertion format (header `alg` RS256/PS256 and `x5t#S256`/`x5t`; claims `aud` = the token endpoint, `iss` =
  `sub` = client id, `jti`, `exp`, `nbf`): "Microsoft identity platform application authentication certificate
  credentials", https://learn.microsoft.com/entra/identity-platform/certificate-credentials. It also says Entra
  puts no limit on `exp`, so a long-lived certificate assertion is accepted here too.
- MSAL Python signs with PS256 + `x5t#S256` (or RS256 + `x5t`), sends no `nbf` and reuses one assertion for
  minutes (msal/application.py, msal/oauth2cli/assertion.py): `nbf` is optional and a `jti` may come again.
- Error codes: the AADSTS reference, https://learn.microsoft.com/entra/identity-platform/reference-error-codes
  (50027, 50048, 700024, 700027), the Azure SDK troubleshooting guide for client assertions,
  https://learn.microsoft.com/azure/developer/java/sdk/troubleshooting-authentication-service-principal
  (700021, 700023), and Microsoft.Identity.Web's handling of an expired certificate (1000502,
  https://github.com/AzureAD/microsoft-identity-web/pull/2840).
- Federated credentials: the record is issuer + subject + audience (default `api://AzureADTokenExchange`),
  "federatedIdentityCredential resource type", https://learn.microsoft.com/graph/api/resources/federatedidentitycredential;
  no match is AADSTS70021 (Azure/azure-workload-identity docs/book/src/troubleshooting.md shows the body); an
  external token may live at most 1 day 1 hour (AADSTS70023, MicrosoftDocs/azure-docs issue 86916).
- Clock skew: 300 s, Microsoft.IdentityModel's TokenValidationParameters.DefaultClockSkew.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from exporter.simulator.responses import Response, entra_error

JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW: Final = 300.0
# AADSTS70023: "External OIDC Provider token must have a lifetime of less than or equal to 1.01:00:00".
FEDERATED_MAX_LIFETIME: Final = 25 * 3600.0
_ALGORITHMS: Final = ["RS256", "PS256"]


@dataclass(frozen=True)
class Certificate:
    """A registered certificate: its public key and its thumbprints as they appear in an assertion's header."""

    key: RSAPublicKey
    x5t: str  # base64url SHA-1 of the DER
    x5t_s256: str  # base64url SHA-256 of the DER
    not_before: float
    not_after: float


@dataclass(frozen=True)
class Federation:
    """A federated identity credential: tokens from `issuer` about `subject` addressed to `audience`."""

    issuer: str
    subject: str
    audience: str = "api://AzureADTokenExchange"


def _b64url(data: bytes) -> str:
    """Unpadded base64url, the form of `x5t` and `x5t#S256`."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_certificate(pem: str) -> Certificate:
    """Parse a PEM X.509 certificate holding an RSA key; ValueError says what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise ValueError("not a PEM X.509 certificate") from None
    key = cert.public_key()
    # Entra's certificate credentials sign with RS256 or PS256: RSA keys only.
    if not isinstance(key, RSAPublicKey):
        raise ValueError("must hold an RSA public key")
    der = cert.public_bytes(serialization.Encoding.DER)
    return Certificate(
        key=key,
        x5t=_b64url(hashlib.sha1(der).digest()),  # noqa: S324 - x5t is defined as SHA-1 (RFC 7515 4.1.7)
        x5t_s256=_b64url(hashlib.sha256(der).digest()),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def _invalid_client(code: int, message: str) -> Response:
    """401 invalid_client, Entra's answer when client authentication fails."""
    return entra_error(401, "invalid_client", code, message)


def _malformed(detail: str) -> Response:
    """AADSTS50027: the assertion is not a well-formed JWT."""
    return entra_error(400, "invalid_request", 50027, f"JWT token is invalid or malformed. {detail}")


def _iso(when: float) -> str:
    """An instant the way Entra writes it in AADSTS700024."""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


# NumericDate claims the answers can write as dates: the years 1 to 9999, as datetime renders them.
_EARLIEST: Final = dt.datetime(1, 1, 2, tzinfo=dt.UTC).timestamp()
_LATEST: Final = dt.datetime(9999, 12, 30, tzinfo=dt.UTC).timestamp()


def _number(value: object) -> float | None:
    """A NumericDate claim, or None for anything else: JSON's Infinity and NaN, and times no date can show."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # float() of an int past a double's range raises; NaN fails the comparison.
    if not -(10**15) < value < 10**15 or not _EARLIEST <= float(value) <= _LATEST:
        return None
    return float(value)


def _time_range(payload: dict[str, object], now: float) -> Response | None:
    """`exp` present and not past, `nbf` (when sent) not ahead: AADSTS700024 otherwise, with Entra's skew."""
    expires = _number(payload.get("exp"))
    if expires is None:
        return _malformed("The 'exp' claim is missing or not a valid time.")
    not_before = _number(payload.get("nbf")) if "nbf" in payload else 0.0
    if not_before is None:
        return _malformed("The 'nbf' claim is not a valid time.")
    if expires + CLOCK_SKEW <= now or not_before - CLOCK_SKEW > now:
        return _invalid_client(
            700024,
            f"Client assertion is not within its valid time range. Current time: {_iso(now)}, assertion valid "
            f"from {_iso(not_before)}, expiry time of assertion {_iso(expires)}. Review the documentation at "
            "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        )
    return None


def _payload(raw: bytes) -> dict[str, object] | None:
    """The claims object of a JWT, or None."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def check_assertion(
    assertion: str,
    *,
    client_id: str,
    endpoint: str,
    certificates: tuple[Certificate, ...],
    federation: Federation | None,
    now: float,
) -> Response | None:
    """None when the assertion authenticates `client_id` at `endpoint`, else Entra's rejection."""
    # InvalidTokenError, not only its DecodeError: PyJWT also refuses a header it can decode, such as one whose
    # `kid` is not a string, and Entra's answer to any unreadable assertion is the same AADSTS50027.
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        return _malformed("The token is not a JWT.")
    s256, sha1 = header.get("x5t#S256"), header.get("x5t")
    # A thumbprint names a certificate credential; a token without one can only be a federated one.
    if isinstance(s256, str):
        return _certificate(assertion, s256, True, client_id, endpoint, certificates, now)
    if isinstance(sha1, str):
        return _certificate(assertion, sha1, False, client_id, endpoint, certificates, now)
    return _federated(assertion, federation, now)


def _certificate(
    assertion: str,
    thumbprint: str,
    sha256: bool,
    client_id: str,
    endpoint: str,
    certificates: tuple[Certificate, ...],
    now: float,
) -> Response | None:
    """A certificate-signed assertion: signature by the named registered certificate, then the claims."""
    # MSAL Python keeps base64's "=" padding (oauth2cli/assertion.py: urlsafe_b64encode), and Entra takes it.
    match = next((c for c in certificates if (c.x5t_s256 if sha256 else c.x5t) == thumbprint.rstrip("=")), None)
    if match is None:
        return _invalid_client(
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application. "
            f"[Reason - The key was not found., Thumbprint of key used by client: '{thumbprint[:64]}', "
            f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for "
            f"app Id '{client_id}'.]",
        )
    # Entra refuses a registered certificate outside its validity window (before notBefore or after notAfter),
    # however good the assertion: AADSTS1000502, "The provided certificate is not within its specified validity
    # window" (AzureAD/microsoft-identity-web issue 2834 and PR 2840 "Process error AADSTS1000502 - expired
    # certificate"; that SDK lists it as CertificateIsOutsideValidityWindow among its certificate errors).
    if not match.not_before <= now <= match.not_after:
        return _invalid_client(
            1000502,
            "The provided certificate is not within its specified validity window. Current time: "
            f"{_iso(now)}, certificate valid from {_iso(match.not_before)} to {_iso(match.not_after)}, "
            f"thumbprint of key used by client: '{thumbprint[:64]}'.",
        )
    try:
        raw = jwt.PyJWS().decode(assertion, key=match.key, algorithms=_ALGORITHMS)
    except jwt.InvalidAlgorithmError:
        return _invalid_client(700027, "Client assertion failed signature validation.")
    except jwt.InvalidSignatureError:
        return _invalid_client(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was found but use of the key to "
            "verify the signature failed.]",
        )
    except jwt.InvalidTokenError:
        return _malformed("The token could not be decoded.")
    payload = _payload(raw)
    if payload is None:
        return _malformed("The claims are not a JSON object.")
    audience = payload.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not any(isinstance(a, str) and a.rstrip("/").lower() == endpoint.lower() for a in audiences):
        return _invalid_client(
            700023,
            "Client assertion audience claim does not match Realm issuer. Review the documentation at "
            "https://learn.microsoft.com/entra/identity-platform/certificate-credentials.",
        )
    if payload.get("iss") != payload.get("sub"):
        return _invalid_client(50048, "Subject mismatches Issuer claim in the client assertion.")
    if not isinstance(payload.get("sub"), str) or str(payload["sub"]).lower() != client_id.lower():
        return _invalid_client(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
    if not isinstance(payload.get("jti"), str) or not payload["jti"]:
        return _malformed("The 'jti' claim is missing.")
    return _time_range(payload, now)


def _federated(assertion: str, federation: Federation | None, now: float) -> Response | None:
    """A token from an external identity provider, matched against the app's federated credential.

    Entra fetches the issuer's signing keys (its OIDC discovery document) to check the signature; the simulator
    has no way to reach a real issuer, so it matches issuer, subject and audience and checks the time claims.
    """
    try:
        raw = jwt.PyJWS().decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return _malformed("The token could not be decoded.")
    payload = _payload(raw)
    if payload is None:
        return _malformed("The claims are not a JSON object.")
    issuer, subject, audience = payload.get("iss"), payload.get("sub"), payload.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if (
        federation is None
        or issuer != federation.issuer
        or subject != federation.subject
        or not any(a == federation.audience for a in audiences)
    ):
        shown = ",".join(str(a) for a in audiences)
        return entra_error(
            400,
            "invalid_request",
            70021,
            f"No matching federated identity record found for presented assertion. Assertion Issuer: "
            f"'{str(issuer)[:200]}'. Assertion Subject: '{str(subject)[:200]}'. Assertion Audience: "
            f"'{shown[:200]}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
        )
    expires, issued = _number(payload.get("exp")), _number(payload.get("iat", payload.get("nbf")))
    if expires is not None and issued is not None and expires - issued > FEDERATED_MAX_LIFETIME:
        return entra_error(
            400,
            "invalid_request",
            70023,
            "External OIDC Provider token must have a lifetime of less than or equal to 1.01:00:00. Token issued "
            f"at {int(issued)}. Token expires on {int(expires)}.",
        )
    return _time_range(payload, now)
