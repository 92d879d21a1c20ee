"""`GET /{tenant}/v2.0/.well-known/openid-configuration`: Entra's OpenID Connect discovery document.

Shape: "OpenID Connect on the Microsoft identity platform", "Find your app's OpenID configuration document
URI", https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc, and the answers Entra gives (for
example the recorded ones in Azure SDK test fixtures). Entra writes every endpoint with the tenant's GUID, even
when asked by domain; MSAL posts to the `token_endpoint` it reads here and uses it as the `aud` of its
client assertions, so the simulator builds the URLs from the Host the client used to reach it. An unknown
tenant is `invalid_tenant` with AADSTS90002.

Not modelled: `jwks_uri` is listed but not served (the simulator's tokens are HMAC-signed and only it can check
them), and `client_secret_basic` is left out of `token_endpoint_auth_methods_supported` because the simulated
token endpoint takes the credential in the form body only.
"""

from __future__ import annotations

from exporter.simulator.responses import Response, entra_error, json_response
from exporter.simulator.state import TenantState, World


def discovery_answer(world: World, tenant: TenantState | None, tenant_id: str, base: str) -> Response:
    """The discovery document of a tenant, with endpoints under `base` (`http://host:port`)."""
    if tenant is None:
        return entra_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant_id[:100]}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud.",
        )
    root = f"{base}/{tenant.directory_id}"
    cloud = world.cloud
    document = {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{root}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"https://{cloud.msgraph_host}/oidc/userinfo",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{root}/kerberos",
        "tenant_region_scope": cloud.region_scope,
        "cloud_instance_name": cloud.cloud_instance_name,
        "cloud_graph_host_name": cloud.graph_host,
        "msgraph_host": cloud.msgraph_host,
        "rbac_url": "https://pas.windows.net",
    }
    return json_response(
        200, document, ("Cache-Control", "max-age=86400, private"), ("Access-Control-Allow-Origin", "*")
    )
