"""The simulated Partner Center invoice endpoints: who is asking, the checks Partner Center makes, the answer.

Sources (docs/simulator.md has them all):
- Error body and codes: "Partner Center REST error codes", https://learn.microsoft.com/partner-center/developer/error-codes
  (401 code 400 "Access denied", 401 code 800001 "Partner Token missing in request context", 403 code 2032
  "Access denied", 404 code 1000 "Not found", 400 code 800002 "Invalid request input", 500 code 800003
  "Unexpected service error").
- MFA: since 2026 App+User calls whose token has no MFA claim are refused with 401 and error code 900421
  ("Partner Center authentication", https://learn.microsoft.com/partner-center/developer/partner-center-authentication;
  Microsoft's announcement "CSP technical changes FY26 Q4", https://partner.microsoft.com/blog/article/csp-technical-changes-fy26-q4).
  App-only calls are not affected.
- Headers: "Partner Center REST and response headers", https://learn.microsoft.com/partner-center/developer/headers:
  Authorization is required; MS-RequestId and MS-CorrelationId "should" be sent and come back in the answer. The
  page also calls MS-Contract-Version required (the exporter sends `v1`), but the invoice summary request's own
  sample (get-invoice-summary) and the .NET SDK's request handler send none, so it is not checked.
- The 401 challenge: the error codes page's sample answer, `WWW-Authenticate: OAuth realm=urn:cpsvc:cpid:{cid}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final

from exporter.simulator.responses import JSON, Response, partner_error
from exporter.simulator.state import TenantState, World
from exporter.simulator.tokens import Claims

INVOICE_PATHS: Final = {"/v1/invoices/summary": "summary", "/v1/invoices/summaries": "summaries"}
TRACE_HEADERS: Final = ("MS-RequestId", "MS-CorrelationId")
_CHALLENGE: Final = ("WWW-Authenticate", "OAuth realm=urn:cpsvc:cpid:5e6c6a0a-8a6e-4c44-9d4b-4f1f8d6f8a3d")
# Partner Center REST error codes used here.
ACCESS_DENIED: Final = 400
TOKEN_MISSING: Final = 800001
FORBIDDEN: Final = 2032
NOT_FOUND: Final = 1000
INVALID_INPUT: Final = 800002
SERVICE_ERROR: Final = 800003
MFA_REQUIRED: Final = 900421


def identify(world: World, authorization: str | None) -> tuple[TenantState | None, Claims | None]:
    """The tenant and claims of a correctly signed bearer token (expired or revoked ones included)."""
    if not authorization:
        return None, None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, None
    claims = world.signer.verify_access(token.strip())
    if claims is None:
        return None, None
    return world.tenant(claims.directory_id), claims


def trace_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """MS-RequestId and MS-CorrelationId for the answer: the caller's, or fresh ones when it sent none."""
    return tuple((name, headers.get(name) or str(uuid.uuid4())) for name in TRACE_HEADERS)


def _accepts_json(accept: str | None) -> bool:
    """Whether an Accept header allows application/json (no header allows anything)."""
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media not in ("application/json", "application/*", "*/*"):
            continue
        quality = next((p.partition("=")[2] for p in params if p.startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            continue
    return False


def _unauthorized(code: int, description: str) -> Response:
    """401 with Partner Center's body and a bearer challenge."""
    return partner_error(401, code, description, _CHALLENGE)


def invoice_answer(
    world: World,
    endpoint: str,
    tenant: TenantState | None,
    claims: Claims | None,
    headers: Mapping[str, str],
) -> Response:
    """Answer one GET of `/v1/invoices/summary` or `/v1/invoices/summaries` after the checks Partner Center does."""
    if not headers.get("Authorization"):
        return _unauthorized(TOKEN_MISSING, "Partner Token missing in request context.")
    if claims is None or tenant is None or claims.audience != world.cloud.resource:
        return _unauthorized(ACCESS_DENIED, "Access denied: the bearer token is not valid for this resource.")
    if claims.expires <= world.clock():
        return _unauthorized(ACCESS_DENIED, "Access denied: the access token has expired.")
    if tenant.is_revoked(claims.issued_ns):
        return _unauthorized(ACCESS_DENIED, "Access denied: the access token was revoked.")
    if claims.app_user and "mfa" not in claims.amr:
        return _unauthorized(
            MFA_REQUIRED,
            "Multifactor authentication is required for App+User access: the access token carries no MFA claim. "
            "A new consent with MFA is needed; see https://learn.microsoft.com/partner-center/security/"
            "partner-security-requirements-mandating-mfa.",
        )
    if not _accepts_json(headers.get("Accept")):
        return partner_error(406, INVALID_INPUT, "Invalid request input: Accept must allow application/json.")
    if endpoint == "summaries" and not claims.app_user:
        return partner_error(
            403,
            FORBIDDEN,
            "Access denied: this API requires App+User authentication; app-only access tokens are not supported.",
        )
    return Response(200, tenant.books.body(endpoint, world.clock()), JSON)
