"""The simulated Entra ID token endpoint: request checks, client authentication, grants and refresh tokens.

Sources (docs/simulator.md has them all): the client credentials and refresh token grants of the v2.0
endpoint, https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow and
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token; error
codes from the AADSTS reference, https://learn.microsoft.com/entra/identity-platform/reference-error-codes;
refresh token lifetime and rotation from https://learn.microsoft.com/entra/identity-platform/refresh-tokens
("The Microsoft identity platform doesn't revoke old refresh tokens when used to fetch new access tokens").
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from exporter.simulator.assertions import JWT_BEARER, check_assertion
from exporter.simulator.responses import JSON, Response, entra_error
from exporter.simulator.state import TenantState, World
from exporter.simulator.tokens import Claims

# Scopes Entra accepts next to a resource's scope.
_OIDC_SCOPES: Final = frozenset({"openid", "profile", "offline_access", "email"})
_FORM: Final = "application/x-www-form-urlencoded"
# The scenario's own refresh token counts as issued at the dawn of time: any revocation covers it.
_SCENARIO_TOKEN_NS: Final = 1
# Entra's token answers also set browser cookies, which a client must not carry from one tenant to the next: `fpc`
# is "used for tracking requests and throttling" (learn.microsoft.com/entra/identity/authentication/
# concept-authentication-web-browser-cookies).
_TOKEN_HEADERS: Final = (
    ("Cache-Control", "no-store, no-cache"),
    ("Pragma", "no-cache"),
    ("Set-Cookie", "fpc=AkSimulated; path=/; secure; HttpOnly; SameSite=None"),
    ("Set-Cookie", "x-ms-gateway-slice=estsfd; path=/; secure; samesite=none; httponly"),
)
# `appidacr`: how the client authenticated (access token claims reference).
_PUBLIC, _SECRET, _ASSERTION = "0", "1", "2"


@dataclass(frozen=True)
class TokenRequest:
    """One request to `/{tenant}/oauth2/v2.0/token`; `endpoint` is the URL it was sent to (assertions' `aud`)."""

    method: str
    content_type: str
    body: bytes
    endpoint: str


def _clip(value: str) -> str:
    """User input echoed in an error message, kept short."""
    return value if len(value) <= 100 else value[:100] + "..."


def _missing(name: str) -> Response:
    """AADSTS900144: a required form parameter is absent."""
    return entra_error(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def token_answer(world: World, tenant: TenantState | None, tenant_id: str, request: TokenRequest) -> Response:
    """Answer one request to the token endpoint."""
    if request.method != "POST":
        return entra_error(
            400,
            "invalid_request",
            900561,
            f"The endpoint only accepts POST requests. Received a {request.method} request.",
        )
    if tenant is None:
        return entra_error(
            400,
            "invalid_request",
            90002,
            f"Tenant '{_clip(tenant_id)}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud.",
        )
    if request.content_type.split(";", 1)[0].strip().lower() != _FORM:
        return _missing("grant_type")
    form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    grant_type = form.get("grant_type", "")
    if not grant_type:
        return _missing("grant_type")
    if grant_type not in ("client_credentials", "refresh_token"):
        return entra_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{_clip(grant_type)}'."
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
    refused = _scope(world, tenant, scope, grant_type)
    if refused is not None:
        return refused
    client_auth = _authenticate(world, tenant, form, grant_type, request.endpoint)
    if isinstance(client_auth, Response):
        return client_auth
    if grant_type == "client_credentials":
        return _grant(world, tenant, client_auth, None)
    return _refresh(world, tenant, form, client_auth, offline="offline_access" in scope.split())


def _scope(world: World, tenant: TenantState, scope: str, grant_type: str) -> Response | None:
    """The cloud's Partner Center resource, `.default` (or `user_impersonation` for App+User), plus OIDC scopes.

    The refresh grant may leave the scope out ("optional"), and is then answered for the consent's own.
    """
    if not scope:
        return None if grant_type == "refresh_token" else _missing("scope")
    resources = [s for s in scope.split() if s not in _OIDC_SCOPES]
    invalid = entra_error(
        400,
        "invalid_scope",
        70011,
        "The provided request must include a 'scope' input parameter. The provided value for the input parameter "
        f"'scope' is not valid. The scope {_clip(scope)} is not valid.",
    )
    if not resources:
        return invalid
    if len(resources) > 1:
        return entra_error(
            400,
            "invalid_scope",
            700022,
            f"The provided value for the input parameter scope is not valid because it contains more than one "
            f"resource. Scope {_clip(scope)} is not valid.",
        )
    resource, _, permission = resources[0].rpartition("/")
    # Client credentials only take `.default`; a user token may name the one delegated permission.
    allowed = (".default",) if grant_type == "client_credentials" else (".default", "user_impersonation")
    if not resource or permission not in allowed:
        return invalid
    if resource.rstrip("/").lower() != world.cloud.resource:
        return entra_error(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {_clip(resource)} was not found in the tenant named "
            f"{tenant.scenario.tenant_id}. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You might have sent your "
            "authentication request to the wrong tenant.",
        )
    return None


def _authenticate(
    world: World, tenant: TenantState, form: dict[str, str], grant_type: str, endpoint: str
) -> str | Response:
    """How the client proved who it is (`appidacr`), or Entra's refusal.

    A confidential client (secret, certificate or federated credential) must authenticate on every grant; a
    public client may use the refresh grant only, and must not send a credential then (AADSTS700025).
    """
    scenario = tenant.scenario
    secret = form.get("client_secret") or None
    assertion_type, assertion = form.get("client_assertion_type"), form.get("client_assertion")
    sent = secret is not None or bool(assertion_type) or bool(assertion)
    if grant_type == "refresh_token" and not scenario.confidential:
        if sent:
            return entra_error(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            )
        return _PUBLIC
    if not sent:
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if assertion_type or assertion:
        if not assertion:
            return _missing("client_assertion")
        if not assertion_type:
            return _missing("client_assertion_type")
        if assertion_type != JWT_BEARER:
            return entra_error(
                400,
                "invalid_request",
                9002313,
                f"Invalid request. Request is malformed or invalid: client_assertion_type "
                f"'{_clip(assertion_type)}' is not supported.",
            )
        refused = check_assertion(
            assertion,
            client_id=scenario.client_id,
            endpoint=endpoint.rstrip("/"),
            certificates=tenant.certificates,
            federation=scenario.federated,
            now=world.clock(),
        )
        return _ASSERTION if refused is None else refused
    expected = (scenario.client_secret or "").encode()
    if not scenario.client_secret or not hmac.compare_digest((secret or "").encode(), expected):
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client "
            f"secret value, not the client secret ID, for a secret added to app '{scenario.client_id}'.",
        )
    return _SECRET


def _refresh(world: World, tenant: TenantState, form: dict[str, str], client_auth: str, *, offline: bool) -> Response:
    """The refresh grant: any refresh token of this chain that is neither expired nor revoked."""
    refresh = form.get("refresh_token", "")
    if not refresh:
        return _missing("refresh_token")
    claims = _refresh_claims(world, tenant, refresh)
    if claims is None or claims.client_id.lower() != tenant.scenario.client_id.lower():
        return entra_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
    if tenant.is_revoked(claims.issued_ns):
        return entra_error(
            400,
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
            "might have changed or reset their password.",
        )
    lifetime = world.scenario.refresh_token_lifetime
    now = world.clock()
    if claims.issued_at + lifetime <= now:
        issued = dt.datetime.fromtimestamp(claims.issued_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        days, rest = divmod(int(now - claims.issued_at), 86400)
        hours, rest = divmod(rest, 3600)
        return entra_error(
            400,
            "invalid_grant",
            700082,
            f"The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive "
            f"for {days}.{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.",
        )
    return _grant(world, tenant, client_auth, claims.amr, rotate=offline)


def _refresh_claims(world: World, tenant: TenantState, token: str) -> Claims | None:
    """Claims of a refresh token presented for this tenant: the scenario's own or one the simulator issued."""
    scenario = tenant.scenario
    if scenario.refresh_token is not None and hmac.compare_digest(
        token.encode(errors="replace"), scenario.refresh_token.encode()
    ):
        # The scenario's own token stands for a consent made when the simulator started.
        return Claims(
            directory_id=tenant.directory_id,
            client_id=scenario.client_id,
            issued_ns=_SCENARIO_TOKEN_NS,
            issued_at=world.start,
            app_user=True,
            amr=("pwd", "mfa") if scenario.mfa else ("pwd",),
        )
    claims = world.signer.verify_refresh(token)
    if claims is None or claims.directory_id != tenant.directory_id:
        return None
    return claims


def _grant(
    world: World, tenant: TenantState, client_auth: str, amr: tuple[str, ...] | None, *, rotate: bool = False
) -> Response:
    """A successful answer: an app-only token, or (with the consent's `amr`) an App+User one.

    A new refresh token comes with it only when the request's scope named `offline_access`: the refresh grant's
    answer has `refresh_token` "only provided if offline_access scope was requested" (v2-oauth2-auth-code-flow).
    """
    scenario = tenant.scenario
    lifetime = scenario.token_lifetime or world.scenario.token_lifetime
    now = world.clock()
    issued_ns = tenant.issue_ns()
    claims = Claims(
        directory_id=tenant.directory_id,
        client_id=scenario.client_id,
        issued_ns=issued_ns,
        issued_at=now,
        app_user=amr is not None,
        expires=now + lifetime,
        amr=amr or (),
        audience=world.cloud.resource,
    )
    expires_in: int | str = str(lifetime) if world.scenario.expires_in_as_string else lifetime
    issuer = f"https://{world.cloud.sts}/{tenant.directory_id}/"
    document: dict[str, object] = {"token_type": "Bearer"}
    if amr is not None:
        document["scope"] = f"{world.cloud.resource}/user_impersonation"
    document |= {
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": world.signer.access_token(claims, issuer=issuer, client_auth=client_auth),
    }
    if rotate:
        document["refresh_token"] = world.signer.refresh_token(claims)
    body = json.dumps(document, separators=(",", ":")).encode()
    return Response(200, body, JSON, _TOKEN_HEADERS)
