"""The simulated Entra ID over real HTTP on 127.0.0.1: grants, scopes per cloud, refresh tokens, access token
claims, certificate and federated client assertions, and the discovery document."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from exporter.simulator import Currency, Federation, Scenario, Simulator, TenantScenario, parse_scenario
from tests.test_simulator_support import (
    APP_CLIENT,
    CHINA_SCOPE,
    JWT_BEARER,
    SCOPE,
    USER_CLIENT,
    Clock,
    api_get,
    assert_entra_error,
    assert_partner_error,
    claims_of,
    federated_token,
    post_token,
    refresh,
    refresh_form,
    rsa_credential,
    start,
    token_form,
)

PUBLIC = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
CERT_APP = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
FED_APP = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"
K8S_ISSUER = "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/"
K8S_SUBJECT = "system:serviceaccount:monitoring:partnercenter-exporter"

SCENARIO = f"""
seed: 7
token_lifetime: 3600
tenants:
  - tenant_id: app.example.com
    client_id: {APP_CLIENT}
    client_secret: app-secret-value
    token_lifetime: 120
    currencies: [{{code: USD, symbol: "$", balance: 1500.25}}]
  - tenant_id: user.example.com
    client_id: {USER_CLIENT}
    client_secret: user-secret-value
    refresh_token: initial-refresh-token
    currencies: [{{code: USD, symbol: "$", balance: 10}}, {{code: EUR, symbol: "€", balance: 20.5}}]
  - tenant_id: public.example.com
    client_id: {PUBLIC}
    refresh_token: public-refresh-token
    mfa: false
    currencies: [{{code: GBP, symbol: "£", balance: 3}}]
"""
USD = (Currency(code="USD", symbol="$", balance=1.0),)


def with_credential_tenants(scenario: Scenario) -> Scenario:
    """The scenario plus a certificate tenant (also App+User) and a federated one, added the way --demo does."""
    cert = TenantScenario(
        tenant_id="cert.example.com",
        client_id=CERT_APP,
        refresh_token="cert-refresh-token",
        certificates=(rsa_credential("a").pem, rsa_credential("b").pem),
        currencies=USD,
    )
    fed = TenantScenario(
        tenant_id="fed.example.com",
        client_id=FED_APP,
        federated=Federation(issuer=K8S_ISSUER, subject=K8S_SUBJECT),
        currencies=USD,
    )
    return dataclasses.replace(scenario, tenants=(*scenario.tenants, cert, fed))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = start(with_credential_tenants(parse_scenario(SCENARIO)))
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        yield c


def endpoint(sim: Simulator, tenant: str) -> str:
    """The token URL a client reaches the simulator by: the `aud` of its assertions."""
    return f"{sim.url}/{tenant}/oauth2/v2.0/token"


def assertion_form(assertion: str, client_id: str = CERT_APP, **extra: str) -> dict[str, str]:
    return token_form(client_id, None, **{"client_assertion_type": JWT_BEARER, "client_assertion": assertion, **extra})


# --- grants and scopes ---


def test_client_credentials_answer_is_shaped_like_entra(client: httpx.Client) -> None:
    response = post_token(client, "app.example.com", token_form())
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("no-store")
    assert [c.split("=", 1)[0] for c in response.headers.get_list("set-cookie")] == ["fpc", "x-ms-gateway-slice"]
    body = response.json()
    assert body.keys() == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (body["token_type"], body["expires_in"], body["ext_expires_in"]) == ("Bearer", 120, 120)


def test_the_token_url_takes_the_domain_in_any_case_or_the_tenant_guid(client: httpx.Client) -> None:
    token = post_token(client, "APP.Example.com", token_form()).json()["access_token"]
    tid = claims_of(token)["tid"]
    assert str(uuid.UUID(tid)) == tid
    assert post_token(client, tid, token_form()).status_code == 200
    assert post_token(client, tid.upper(), token_form()).status_code == 200


@pytest.mark.parametrize(
    ("tenant", "sent", "status", "error", "code"),
    [
        ("nope.example.com", token_form(), 400, "invalid_request", 90002),
        ("app.example.com", token_form(client_id=USER_CLIENT), 400, "unauthorized_client", 700016),
        ("app.example.com", token_form(secret="wrong"), 401, "invalid_client", 7000215),
        ("app.example.com", token_form(secret=None), 401, "invalid_client", 7000218),
        ("app.example.com", token_form(secret=""), 401, "invalid_client", 7000218),
        ("app.example.com", {k: v for k, v in token_form().items() if k != "scope"}, 400, "invalid_request", 900144),
        (
            "app.example.com",
            {k: v for k, v in token_form().items() if k != "grant_type"},
            400,
            "invalid_request",
            900144,
        ),
        (
            "app.example.com",
            {k: v for k, v in token_form().items() if k != "client_id"},
            400,
            "invalid_request",
            900144,
        ),
        ("app.example.com", token_form(grant_type="password"), 400, "unsupported_grant_type", 70003),
        # Another resource is one Entra cannot find in the tenant; a bad scope shape is invalid_scope.
        ("app.example.com", token_form(scope="https://graph.microsoft.com/.default"), 400, "invalid_resource", 500011),
        ("app.example.com", token_form(scope=CHINA_SCOPE), 400, "invalid_resource", 500011),
        ("app.example.com", token_form(scope="openid profile"), 400, "invalid_scope", 70011),
        ("app.example.com", token_form(scope="https://api.partnercenter.microsoft.com"), 400, "invalid_scope", 70011),
        (
            "app.example.com",
            token_form(scope="https://api.partnercenter.microsoft.com/user_impersonation"),
            400,
            "invalid_scope",
            70011,
        ),
        (
            "app.example.com",
            token_form(scope=f"{SCOPE} https://graph.microsoft.com/.default"),
            400,
            "invalid_scope",
            700022,
        ),
        ("user.example.com", refresh_form("not-a-token"), 400, "invalid_grant", 70000),
        ("user.example.com", refresh_form(""), 400, "invalid_request", 900144),
        ("user.example.com", refresh_form("initial-refresh-token", secret="wrong"), 401, "invalid_client", 7000215),
        ("user.example.com", refresh_form("initial-refresh-token", secret=None), 401, "invalid_client", 7000218),
        # The scenario refresh token of another tenant is not a grant here.
        ("user.example.com", refresh_form("public-refresh-token"), 400, "invalid_grant", 70000),
        # A public client has no credential of its own: none on the refresh grant, and no client credentials.
        ("public.example.com", refresh_form("public-refresh-token", PUBLIC, "x"), 401, "invalid_client", 700025),
        ("public.example.com", token_form(PUBLIC, secret="anything"), 401, "invalid_client", 7000215),
        ("public.example.com", token_form(PUBLIC, secret=None), 401, "invalid_client", 7000218),
    ],
)
def test_token_rejections_are_shaped_like_entra(
    client: httpx.Client, tenant: str, sent: dict[str, str], status: int, error: str, code: int
) -> None:
    body = assert_entra_error(post_token(client, tenant, sent), status, error, code)
    assert "secret-value" not in str(body)


def test_token_endpoint_wants_a_form_post(client: httpx.Client) -> None:
    assert_entra_error(
        client.post("/app.example.com/oauth2/v2.0/token", json=token_form()), 400, "invalid_request", 900144
    )
    assert_entra_error(client.get("/app.example.com/oauth2/v2.0/token"), 400, "invalid_request", 900561)


def test_scope_may_carry_openid_scopes_and_user_impersonation_on_the_refresh_grant(client: httpx.Client) -> None:
    assert (
        post_token(client, "app.example.com", token_form(scope=f"{SCOPE} openid profile offline_access")).status_code
        == 200
    )
    scope = "https://api.partnercenter.microsoft.com/user_impersonation offline_access"
    body = refresh(client, "initial-refresh-token", scope=scope)
    assert body["scope"] == "https://api.partnercenter.microsoft.com/user_impersonation"


@pytest.mark.parametrize(("scope", "rotated"), [(f"{SCOPE} offline_access", True), (SCOPE, False), (None, False)])
def test_refresh_grant_rotates_the_refresh_token_only_when_asked_for_offline_access(
    client: httpx.Client, scope: str | None, rotated: bool
) -> None:
    # The refresh grant's scope is optional; its answer's refresh_token is "only provided if offline_access scope
    # was requested".
    form = refresh_form("initial-refresh-token", scope=scope or "")
    if scope is None:
        del form["scope"]
    response = post_token(client, "user.example.com", form)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]
    assert ("refresh_token" in response.json()) is rotated


@pytest.mark.parametrize(
    ("cloud", "good", "bad"),
    [("china", CHINA_SCOPE, SCOPE), ("usgov", SCOPE, CHINA_SCOPE), ("global", SCOPE, CHINA_SCOPE)],
)
def test_each_cloud_issues_tokens_for_its_own_partner_center_resource(cloud: str, good: str, bad: str) -> None:
    scenario = parse_scenario(f"cloud: {cloud}\n{SCENARIO}")
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        response = post_token(c, "app.example.com", token_form(scope=good))
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert claims_of(token)["aud"] == good.removesuffix("/.default")
        assert api_get(c, "summary", token).status_code == 200
        assert_entra_error(post_token(c, "app.example.com", token_form(scope=bad)), 400, "invalid_resource", 500011)
        answer = refresh(c, "initial-refresh-token", scope=f"{good} offline_access")
        assert answer["scope"] == good.replace(".default", "user_impersonation")


# --- access tokens ---


def test_app_only_access_token_claims(client: httpx.Client) -> None:
    before = int(time.time())
    claims = claims_of(post_token(client, "app.example.com", token_form()).json()["access_token"])
    assert claims["aud"] == "https://api.partnercenter.microsoft.com"
    assert claims["appid"] == APP_CLIENT
    assert claims["appidacr"] == "1"
    assert claims["idtyp"] == "app"
    assert claims["iss"] == f"https://sts.windows.net/{claims['tid']}/"
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 120
    assert "amr" not in claims
    assert "scp" not in claims


def test_app_user_access_token_carries_amr_and_scp(client: httpx.Client) -> None:
    claims = claims_of(refresh(client, "initial-refresh-token")["access_token"])
    assert (claims["idtyp"], claims["amr"], claims["scp"], claims["appidacr"]) == (
        "user",
        ["pwd", "mfa"],
        "user_impersonation",
        "1",
    )
    public = refresh(client, "public-refresh-token", tenant="public.example.com", client_id=PUBLIC, secret=None)
    public_claims = claims_of(public["access_token"])
    # A tenant whose consent had no MFA: every token of the chain lacks it, a refreshed one too.
    assert (public_claims["amr"], public_claims["appidacr"]) == (["pwd"], "0")
    again = refresh(client, public["refresh_token"], tenant="public.example.com", client_id=PUBLIC, secret=None)
    assert claims_of(again["access_token"])["amr"] == ["pwd"]


# --- refresh tokens ---


def test_refresh_tokens_rotate_and_older_ones_keep_working(client: httpx.Client) -> None:
    first = refresh(client, "initial-refresh-token")
    assert first["refresh_token"] != "initial-refresh-token"
    second = refresh(client, first["refresh_token"])
    third = refresh(client, second["refresh_token"])
    # Entra does not revoke a refresh token when it is used: every earlier one still works.
    for older in ("initial-refresh-token", first["refresh_token"], second["refresh_token"]):
        assert refresh(client, older)["refresh_token"] not in (older, third["refresh_token"])
    assert api_get(client, "summaries", third["access_token"]).status_code == 200


def test_refresh_tokens_expire_after_their_lifetime() -> None:
    clock = Clock()
    scenario = dataclasses.replace(parse_scenario(SCENARIO), refresh_token_lifetime=1000)
    with Simulator(scenario, clock=clock) as s, httpx.Client(base_url=s.url) as c:
        clock.now += 600
        rotated = refresh(c, "initial-refresh-token")["refresh_token"]
        clock.now += 399
        assert refresh(c, "initial-refresh-token")
        clock.now += 1
        # The scenario's own token was issued when the simulator started: 1000 s ago now.
        body = assert_entra_error(
            post_token(c, "user.example.com", refresh_form("initial-refresh-token")), 400, "invalid_grant", 700082
        )
        assert "inactive for 0.00:16:40" in body["error_description"]
        # One issued later lives its own 1000 s.
        clock.now += 599
        assert refresh(c, rotated)
        clock.now += 1
        assert_entra_error(post_token(c, "user.example.com", refresh_form(rotated)), 400, "invalid_grant", 700082)


def test_default_refresh_token_lifetime_is_ninety_days() -> None:
    clock = Clock()
    with Simulator(parse_scenario(SCENARIO), clock=clock) as s, httpx.Client(base_url=s.url) as c:
        clock.now += 90 * 86400 - 1
        assert refresh(c, "initial-refresh-token")
        clock.now += 1
        form_ = refresh_form("initial-refresh-token")
        assert_entra_error(post_token(c, "user.example.com", form_), 400, "invalid_grant", 700082)


def test_revocation_kills_every_refresh_token_issued_before_it(sim: Simulator, client: httpx.Client) -> None:
    first = refresh(client, "initial-refresh-token")
    second = refresh(client, first["refresh_token"])
    sim.revoke("user.example.com")
    for token in ("initial-refresh-token", first["refresh_token"], second["refresh_token"]):
        assert_entra_error(post_token(client, "user.example.com", refresh_form(token)), 400, "invalid_grant", 50173)
    assert_partner_error(api_get(client, "summaries", second["access_token"]), 401, 400)


def test_refresh_tokens_survive_a_restart_with_the_same_seed_only() -> None:
    scenario = parse_scenario(SCENARIO)
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        answer = refresh(c, refresh(c, "initial-refresh-token")["refresh_token"])
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        assert api_get(c, "summaries", answer["access_token"]).status_code == 200
        assert refresh(c, answer["refresh_token"])
    with Simulator(parse_scenario(SCENARIO.replace("seed: 7", "seed: 8"))) as s, httpx.Client(base_url=s.url) as c:
        sent = refresh_form(answer["refresh_token"])
        assert_entra_error(post_token(c, "user.example.com", sent), 400, "invalid_grant", 70000)
        assert_partner_error(api_get(c, "summaries", answer["access_token"]), 401, 400)


def test_expires_in_as_string_and_scenario_lifetime() -> None:
    text = SCENARIO.replace("token_lifetime: 3600", "token_lifetime: 99\nexpires_in_as_string: true")
    with Simulator(parse_scenario(text)) as s, httpx.Client(base_url=s.url) as c:
        body = refresh(c, "initial-refresh-token")
        assert (body["expires_in"], body["ext_expires_in"]) == ("99", "99")


# --- certificate credentials ---


@pytest.mark.parametrize(("algorithm", "thumbprint"), [("PS256", "x5t#S256"), ("RS256", "x5t"), ("RS256", "x5t#S256")])
def test_a_certificate_assertion_authenticates_both_grants(
    sim: Simulator, client: httpx.Client, algorithm: str, thumbprint: str
) -> None:
    cred = rsa_credential("b")  # the tenant's second certificate: any registered one will do

    def assertion() -> str:
        url = endpoint(sim, "cert.example.com")
        return cred.assertion(client_id=CERT_APP, audience=url, algorithm=algorithm, thumbprint=thumbprint)

    response = post_token(client, "cert.example.com", assertion_form(assertion()))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["appidacr"] == "2"
    sent = assertion_form(assertion(), grant_type="refresh_token", refresh_token="cert-refresh-token")
    answer = post_token(client, "cert.example.com", sent)
    assert answer.status_code == 200, answer.text
    assert claims_of(answer.json()["access_token"])["idtyp"] == "user"


@pytest.mark.parametrize("thumbprint", ["x5t#S256", "x5t"])
def test_a_certificate_assertion_as_msal_sends_it(sim: Simulator, client: httpx.Client, thumbprint: str) -> None:
    """MSAL Python sends no `nbf`, keeps the thumbprint's base64 padding and reuses one assertion."""
    cred = rsa_credential("a")
    url = endpoint(sim, "cert.example.com")
    assertion = cred.assertion(client_id=CERT_APP, audience=url, drop=("nbf",), thumbprint=thumbprint, padded=True)
    assert jwt.get_unverified_header(assertion)[thumbprint].endswith("=")
    for _ in range(2):
        assert post_token(client, "cert.example.com", assertion_form(assertion)).status_code == 200


def test_the_assertion_audience_is_the_token_url_the_client_used(sim: Simulator, client: httpx.Client) -> None:
    cred = rsa_credential("a")
    aud = "http://login.example.test/cert.example.com/oauth2/v2.0/token"
    sent = assertion_form(cred.assertion(client_id=CERT_APP, audience=aud))
    answer = post_token(client, "cert.example.com", sent, headers={"Host": "login.example.test"})
    assert answer.status_code == 200, answer.text
    assert_entra_error(post_token(client, "cert.example.com", sent), 401, "invalid_client", 700023)
    # By GUID, the URL (and so the audience) carries the GUID.
    tid = claims_of(answer.json()["access_token"])["tid"]
    by_guid = cred.assertion(client_id=CERT_APP, audience=endpoint(sim, tid))
    assert post_token(client, tid, assertion_form(by_guid)).status_code == 200
    assert_entra_error(post_token(client, "cert.example.com", assertion_form(by_guid)), 401, "invalid_client", 700023)


def test_certificate_assertion_rejections(sim: Simulator, client: httpx.Client) -> None:
    cred = rsa_credential("a")
    url = endpoint(sim, "cert.example.com")
    now = time.time()
    unregistered = rsa_credential("unregistered")
    cases: list[tuple[str, int, str, int]] = [
        (unregistered.assertion(client_id=CERT_APP, audience=url), 401, "invalid_client", 700027),
        # Names a registered certificate but is signed by another key.
        (cred.assertion(client_id=CERT_APP, audience=url, signer=unregistered.key), 401, "invalid_client", 700027),
        (
            cred.assertion(client_id=CERT_APP, audience="https://login.microsoftonline.com/x/oauth2/v2.0/token"),
            401,
            "invalid_client",
            700023,
        ),
        (cred.assertion(client_id=CERT_APP, audience=url, iss=APP_CLIENT), 401, "invalid_client", 50048),
        (
            cred.assertion(client_id=CERT_APP, audience=url, iss=APP_CLIENT, sub=APP_CLIENT),
            401,
            "invalid_client",
            700021,
        ),
        (cred.assertion(client_id=CERT_APP, audience=url, drop=("jti",)), 400, "invalid_request", 50027),
        (cred.assertion(client_id=CERT_APP, audience=url, drop=("exp",)), 400, "invalid_request", 50027),
        # Entra allows 5 minutes of clock skew either way, no more.
        (
            cred.assertion(client_id=CERT_APP, audience=url, now=now - 1000, exp=int(now) - 301),
            401,
            "invalid_client",
            700024,
        ),
        (cred.assertion(client_id=CERT_APP, audience=url, nbf=int(now) + 400), 401, "invalid_client", 700024),
        ("not.a.jwt", 400, "invalid_request", 50027),
    ]
    for assertion, status, error, code in cases:
        assert_entra_error(post_token(client, "cert.example.com", assertion_form(assertion)), status, error, code)
    hs256 = jwt.encode({"aud": url, "iss": CERT_APP, "sub": CERT_APP}, "k" * 32, headers={"x5t": cred.x5t})
    assert_entra_error(post_token(client, "cert.example.com", assertion_form(hs256)), 401, "invalid_client", 700027)
    for skewed in (
        cred.assertion(client_id=CERT_APP, audience=url, now=now - 1000, exp=int(now) - 200),
        cred.assertion(client_id=CERT_APP, audience=url, nbf=int(now) + 200),
        # Entra puts no limit on how long a certificate assertion lives.
        cred.assertion(client_id=CERT_APP, audience=url, exp=int(now) + 365 * 86400),
    ):
        assert post_token(client, "cert.example.com", assertion_form(skewed)).status_code == 200


def with_header(token: str, **fields: object) -> str:
    """The JWT with fields added to its header (the signature no longer matches, which no test here reaches)."""
    header, rest = token.split(".", 1)
    values = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    encoded = base64.urlsafe_b64encode(json.dumps({**values, **fields}).encode()).rstrip(b"=").decode()
    return f"{encoded}.{rest}"


def test_an_assertion_header_pyjwt_refuses_is_a_malformed_assertion(sim: Simulator, client: httpx.Client) -> None:
    # PyJWT decodes this header but refuses a `kid` that is not a string, with InvalidTokenError (not DecodeError).
    cert = with_header(
        rsa_credential("a").assertion(client_id=CERT_APP, audience=endpoint(sim, "cert.example.com")), kid=5
    )
    assert_entra_error(post_token(client, "cert.example.com", assertion_form(cert)), 400, "invalid_request", 50027)
    federated = with_header(federated_token(issuer=K8S_ISSUER, subject=K8S_SUBJECT), kid=["k8s-key"])
    assert_entra_error(
        post_token(client, "fed.example.com", assertion_form(federated, FED_APP)), 400, "invalid_request", 50027
    )


def test_a_certificate_outside_its_validity_window_is_refused_with_1000502() -> None:
    cred = rsa_credential("a")
    not_before = cred.cert.not_valid_before_utc.timestamp()
    not_after = cred.cert.not_valid_after_utc.timestamp()
    clock = Clock(time.time())
    with (
        Simulator(with_credential_tenants(parse_scenario(SCENARIO)), clock=clock) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        for now, status in ((not_before - 1, 401), (not_before, 200), (not_after, 200), (not_after + 1, 401)):
            clock.now = now
            # The assertion itself is fresh at that time: only the certificate is out of its window.
            assertion = cred.assertion(client_id=CERT_APP, audience=endpoint(s, "cert.example.com"), now=now)
            response = post_token(c, "cert.example.com", assertion_form(assertion))
            if status == 200:
                assert response.status_code == 200, response.text
            else:
                body = assert_entra_error(response, 401, "invalid_client", 1000502)
                assert "not within its specified validity window" in body["error_description"]


def test_client_assertion_parameters_and_credential_kinds(sim: Simulator, client: httpx.Client) -> None:
    cred = rsa_credential("a")
    assertion = cred.assertion(client_id=CERT_APP, audience=endpoint(sim, "cert.example.com"))
    missing_type = token_form(CERT_APP, None, client_assertion=assertion)
    assert_entra_error(post_token(client, "cert.example.com", missing_type), 400, "invalid_request", 900144)
    missing_value = token_form(CERT_APP, None, client_assertion_type=JWT_BEARER)
    assert_entra_error(post_token(client, "cert.example.com", missing_value), 400, "invalid_request", 900144)
    wrong_type = assertion_form(assertion, client_assertion_type="urn:example:saml")
    assert_entra_error(post_token(client, "cert.example.com", wrong_type), 400, "invalid_request", 9002313)
    # A certificate tenant has no secret, and needs a credential on the refresh grant too.
    assert_entra_error(
        post_token(client, "cert.example.com", token_form(CERT_APP, "guess")), 401, "invalid_client", 7000215
    )
    refresh_only = refresh_form("cert-refresh-token", CERT_APP, None)
    assert_entra_error(post_token(client, "cert.example.com", refresh_only), 401, "invalid_client", 7000218)
    # A secret-only tenant knows no certificate.
    app_assertion = cred.assertion(client_id=APP_CLIENT, audience=endpoint(sim, "app.example.com"))
    assert_entra_error(
        post_token(client, "app.example.com", assertion_form(app_assertion, APP_CLIENT)), 401, "invalid_client", 700027
    )


def test_certificates_in_a_scenario_file(tmp_path: Any) -> None:
    pem = rsa_credential("a").pem
    block = "".join(f"\n          {line}" for line in pem.strip().splitlines())
    text = (
        SCENARIO
        + f"""
  - tenant_id: cert.example.com
    client_id: {CERT_APP}
    client_secret: also-a-secret
    certificates:
      - |{block}
    currencies: [{{code: USD, symbol: "$", balance: 1}}]
"""
    )
    scenario = parse_scenario(text)
    assert scenario.tenants[-1].certificates == (pem,)
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        assertion = rsa_credential("a").assertion(client_id=CERT_APP, audience=endpoint(s, "cert.example.com"))
        assert post_token(c, "cert.example.com", assertion_form(assertion)).status_code == 200
        # With a secret and certificates, either credential will do.
        assert post_token(c, "cert.example.com", token_form(CERT_APP, "also-a-secret")).status_code == 200


# --- federated credentials ---


def test_a_federated_token_authenticates(client: httpx.Client) -> None:
    token = federated_token(issuer=K8S_ISSUER, subject=K8S_SUBJECT)
    response = post_token(client, "fed.example.com", assertion_form(token, FED_APP))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["appidacr"] == "2"
    # `aud` may be a list; the signature is not checked (Entra would fetch the issuer's keys).
    listed = federated_token(issuer=K8S_ISSUER, subject=K8S_SUBJECT, audience=["other", "api://AzureADTokenExchange"])
    assert post_token(client, "fed.example.com", assertion_form(listed, FED_APP)).status_code == 200


@pytest.mark.parametrize(
    ("token_kw", "status", "error", "code"),
    [
        ({"issuer": "https://evil.example/", "subject": K8S_SUBJECT}, 400, "invalid_request", 70021),
        ({"issuer": K8S_ISSUER, "subject": "system:serviceaccount:default:other"}, 400, "invalid_request", 70021),
        ({"issuer": K8S_ISSUER, "subject": K8S_SUBJECT, "audience": "api://other"}, 400, "invalid_request", 70021),
        ({"issuer": K8S_ISSUER, "subject": K8S_SUBJECT, "lifetime": 25 * 3600 + 1}, 400, "invalid_request", 70023),
        ({"issuer": K8S_ISSUER, "subject": K8S_SUBJECT, "exp": int(time.time()) - 400}, 401, "invalid_client", 700024),
    ],
)
def test_federated_token_rejections(
    client: httpx.Client, token_kw: dict[str, Any], status: int, error: str, code: int
) -> None:
    token = federated_token(**token_kw)
    body = assert_entra_error(
        post_token(client, "fed.example.com", assertion_form(token, FED_APP)), status, error, code
    )
    if code == 70021:
        assert f"Assertion Issuer: '{token_kw['issuer']}'" in body["error_description"]


@pytest.mark.parametrize(
    "times",
    [{"nbf": math.inf}, {"exp": math.nan}, {"exp": -1e20}, {"exp": 10**400}, {"exp": 1e20, "iat": 0}],
    ids=["nbf-inf", "exp-nan", "exp-before-year-1", "exp-past-double", "exp-past-year-9999"],
)
def test_an_assertion_time_no_date_can_show_is_malformed(
    client: httpx.Client, sim: Simulator, times: dict[str, Any]
) -> None:
    # JSON's Infinity and NaN, and numbers past the years 1 to 9999, once crashed the handler (no answer at all)
    # rendering them into AADSTS700024's message, or let a NaN `exp` through.
    token = federated_token(issuer=K8S_ISSUER, subject=K8S_SUBJECT, **times)
    response = post_token(client, "fed.example.com", assertion_form(token, FED_APP))
    assert_entra_error(response, 400, "invalid_request", 50027)
    cert = rsa_credential("a").assertion(client_id=CERT_APP, audience=endpoint(sim, "cert.example.com"), **times)
    assert_entra_error(post_token(client, "cert.example.com", assertion_form(cert)), 400, "invalid_request", 50027)


def test_a_federated_token_for_a_tenant_without_federation(client: httpx.Client) -> None:
    token = federated_token(issuer=K8S_ISSUER, subject=K8S_SUBJECT)
    assert_entra_error(post_token(client, "cert.example.com", assertion_form(token)), 400, "invalid_request", 70021)


# --- discovery ---


def test_discovery_document_is_shaped_like_entra(client: httpx.Client) -> None:
    response = client.get("/app.example.com/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.json()
    tid = claims_of(post_token(client, "app.example.com", token_form()).json()["access_token"])["tid"]
    root = f"{client.base_url}".rstrip("/") + f"/{tid}"
    assert doc["issuer"] == f"{root}/v2.0"
    assert doc["token_endpoint"] == f"{root}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{root}/oauth2/v2.0/authorize"
    assert doc["jwks_uri"] == f"{root}/discovery/v2.0/keys"
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
    assert (doc["cloud_instance_name"], doc["msgraph_host"]) == ("microsoftonline.com", "graph.microsoft.com")
    # The endpoint it names is the one that answers.
    assert client.post(doc["token_endpoint"], data=token_form()).status_code == 200
    other_host = client.get("/app.example.com/v2.0/.well-known/openid-configuration", headers={"Host": "sts.test:443"})
    assert other_host.json()["token_endpoint"] == f"http://sts.test:443/{tid}/oauth2/v2.0/token"


def test_discovery_of_an_unknown_tenant_and_per_cloud_values(client: httpx.Client) -> None:
    assert_entra_error(client.get("/nope.example/v2.0/.well-known/openid-configuration"), 400, "invalid_tenant", 90002)
    with Simulator(parse_scenario(f"cloud: usgov\n{SCENARIO}")) as s:
        doc = httpx.get(f"{s.url}/app.example.com/v2.0/.well-known/openid-configuration").json()
    assert (doc["cloud_instance_name"], doc["msgraph_host"]) == ("microsoftonline.us", "graph.microsoft.us")
