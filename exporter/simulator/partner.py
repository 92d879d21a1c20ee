"""The simulated Partner Center invoice endpoints: who is asking, header checks and the answer."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final

from exporter.simulator.responses import JSON, Response, partner_error
from exporter.simulator.state import TenantState, World
from exporter.simulator.tokens import Claims

INVOICE_PATHS: Final = {"/v1/invoices/summary": "summary", "/v1/invoices/summaries": "summaries"}
_CHALLENGE: Final = ("WWW-Authenticate", 'Bearer realm="partnercenter", error="invalid_token"')


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
    return world.tenant(claims.tenant), claims


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


def _is_uuid(value: str | None) -> bool:
    """Whether a header value is a UUID."""
    if not value:
        return False
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return False
    return True


def invoice_answer(
    world: World,
    endpoint: str,
    tenant: TenantState | None,
    claims: Claims | None,
    headers: Mapping[str, str],
) -> Response:
    """Answer one GET of `/v1/invoices/summary` or `/v1/invoices/summaries` after the checks Partner Center does."""
    if claims is None or tenant is None:
        return partner_error(401, "Unauthorized", "Authorization failed: missing or invalid bearer token.", _CHALLENGE)
    if claims.expires <= world.clock():
        return partner_error(401, "Unauthorized", "Authorization failed: the access token has expired.", _CHALLENGE)
    if tenant.is_revoked(claims.issued_ns):
        return partner_error(401, "Unauthorized", "Authorization failed: the access token was revoked.", _CHALLENGE)
    if not _accepts_json(headers.get("Accept")):
        return partner_error(406, "NotAcceptable", "The Accept header must allow application/json.")
    for name in ("MS-RequestId", "MS-CorrelationId"):
        if not _is_uuid(headers.get(name)):
            return partner_error(400, "BadRequest", f"The {name} header is required and must be a GUID.")
    if endpoint == "summaries" and not claims.app_user:
        return partner_error(
            403,
            "Forbidden",
            "This API requires App+User authentication; app-only access tokens are not supported.",
        )
    return Response(200, tenant.books.body(endpoint, world.clock()), JSON)
