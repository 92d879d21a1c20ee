"""The simulated Entra ID token endpoint: validation like the real one, token issue and refresh-token rotation."""

from __future__ import annotations

import hmac
import json
from typing import Final
from urllib.parse import parse_qs

from exporter.simulator.responses import JSON, Response, entra_error
from exporter.simulator.state import TenantState, World
from exporter.simulator.tokens import Claims

SCOPE: Final = "https://api.partnercenter.microsoft.com/.default"
# Scopes Entra accepts next to a resource's .default on the refresh grant.
_OIDC_SCOPES: Final = frozenset({"openid", "profile", "offline_access", "email"})
_FORM: Final = "application/x-www-form-urlencoded"
# The scenario's own refresh token counts as issued at the dawn of time: any revocation covers it.
_SCENARIO_TOKEN_NS: Final = 1


def _clip(value: str) -> str:
    """User input echoed in an error message, kept short."""
    return value if len(value) <= 100 else value[:100] + "..."


def _missing(name: str) -> Response:
    """AADSTS900144: a required form parameter is absent."""
    return entra_error(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def token_answer(
    world: World, tenant: TenantState | None, tenant_id: str, method: str, content_type: str, body: bytes
) -> Response:
    """Answer one request to `/{tenant_id}/oauth2/v2.0/token`."""
    if method != "POST":
        return entra_error(
            400, "invalid_request", 900561, f"The endpoint only accepts POST requests. Received a {method} request."
        )
    if tenant is None:
        return entra_error(
            400,
            "invalid_request",
            90002,
            f"Tenant '{_clip(tenant_id)}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud.",
        )
    if content_type.split(";", 1)[0].strip().lower() != _FORM:
        return _missing("grant_type")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    grant_type = form.get("grant_type", "")
    if not grant_type:
        return _missing("grant_type")
    if grant_type not in ("client_credentials", "refresh_token"):
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{_clip(grant_type)}'.",
        )
    client_id = form.get("client_id", "")
    if not client_id:
        return _missing("client_id")
    scenario = tenant.scenario
    if client_id.lower() != scenario.client_id.lower():
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{_clip(client_id)}' was not found in the directory "
            f"'{scenario.tenant_id}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
            "authentication request to the wrong tenant.",
        )
    scope = form.get("scope", "")
    if not scope:
        return _missing("scope")
    scopes = scope.split()
    if SCOPE not in scopes or any(s != SCOPE and s not in _OIDC_SCOPES for s in scopes):
        return entra_error(
            400,
            "invalid_scope",
            70011,
            f"The provided request must include a 'scope' input parameter. The provided value for the input "
            f"parameter 'scope' is not valid. The scope {_clip(scope)} is not valid.",
        )
    secret = form.get("client_secret")
    if scenario.client_secret is not None or grant_type == "client_credentials":
        if not secret:
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        expected = (scenario.client_secret or "").encode()
        if not scenario.client_secret or not hmac.compare_digest(secret.encode(), expected):
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{scenario.client_id}'.",
            )
    if grant_type == "client_credentials":
        return _grant(world, tenant, app_user=False, refresh_seq=None)
    refresh = form.get("refresh_token", "")
    if not refresh:
        return _missing("refresh_token")
    claims = _refresh_claims(world, tenant, refresh)
    if claims is None or claims.client_id.lower() != scenario.client_id.lower():
        return entra_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
    verdict = tenant.use_refresh(claims.seq, claims.issued_ns)
    if verdict == "revoked":
        return entra_error(
            400,
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
            "might have changed or reset their password.",
        )
    if verdict == "superseded":
        return entra_error(
            400,
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on a date that precedes "
            "the rotation of its successor.",
        )
    return _grant(world, tenant, app_user=True, refresh_seq=claims.seq + 1)


def _refresh_claims(world: World, tenant: TenantState, token: str) -> Claims | None:
    """Claims of a refresh token presented for this tenant: the scenario's own or one the simulator issued."""
    scenario = tenant.scenario
    if scenario.refresh_token is not None and hmac.compare_digest(
        token.encode(errors="replace"), scenario.refresh_token.encode()
    ):
        return Claims(tenant=scenario.tenant_id.lower(), client_id=scenario.client_id, issued_ns=_SCENARIO_TOKEN_NS)
    claims = world.signer.verify_refresh(token)
    if claims is None or claims.tenant != scenario.tenant_id.lower():
        return None
    return claims


def _grant(world: World, tenant: TenantState, *, app_user: bool, refresh_seq: int | None) -> Response:
    """A successful token answer; the refresh grant also carries the next refresh token."""
    scenario = tenant.scenario
    lifetime = scenario.token_lifetime or world.scenario.token_lifetime
    now = world.clock()
    issued_ns = tenant.issue_ns()
    claims = Claims(
        tenant=scenario.tenant_id.lower(),
        client_id=scenario.client_id,
        issued_ns=issued_ns,
        app_user=app_user,
        expires=now + lifetime,
    )
    expires_in: int | str = str(lifetime) if world.scenario.expires_in_as_string else lifetime
    document: dict[str, object] = {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": world.signer.access_token(claims, now),
    }
    if refresh_seq is not None:
        document["scope"] = "https://api.partnercenter.microsoft.com/user_impersonation"
        document["refresh_token"] = world.signer.refresh_token(
            Claims(tenant=claims.tenant, client_id=claims.client_id, issued_ns=issued_ns, seq=refresh_seq)
        )
    body = json.dumps(document, separators=(",", ":")).encode()
    return Response(200, body, JSON, (("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")))
