"""Scenario files and values: the strict YAML rules, every key checked with its path, the default scenario."""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from exporter.config.yamlfile import ConfigError
from exporter.simulator import (
    Currency,
    Drift,
    Fault,
    Federation,
    LastPayment,
    Scenario,
    ScenarioError,
    Simulator,
    TenantScenario,
    default_scenario,
    load_scenario,
    parse_scenario,
)
from tests.test_simulator_support import SCOPE, Clock, api_get, assert_partner_error, post_token, rsa_credential

TENANT = "{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1}]}"
USD = (Currency(code="USD", symbol="$", balance=1.0),)


def app_token(client: httpx.Client, tenant: str, client_id: str, secret: str) -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE}
    response = post_token(client, tenant, form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: nope", "tenants: must be a list"),
        ("seed: 1", "tenants: must be a list"),
        ("tenant: []", "tenant: unknown key"),
        ("[1]", "must be a mapping"),
        (  # one summary per currency
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1}, {code: EUR, balance: 2}, {code: USD, balance: 3}]}]",
            "tenants[0].currencies: currency USD is listed twice",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, currencies: [{code: USD, balance: 1}]}]",
            "tenants[0].client_secret: required unless certificates, federated or refresh_token is set",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: []}]",
            "tenants[0].currencies: must list at least one currency",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: DOLLAR, balance: 1}]}]",
            "tenants[0].currencies[0].code: must be a three-letter ISO 4217 code",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: x}]}]",
            "tenants[0].currencies[0].balance: must be a number",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 5, invoice_types: {A: 1}}]}]",
            "tenants[0].currencies[0].invoice_types: amounts must add up to the balance 5.0",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, drift: {invoice_every: 5}}]}]",
            "tenants[0].currencies[0].drift.invoice_amount: required with invoice_every and invoice_amount",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, latest_invoice_date: yesterday}]}]",
            "tenants[0].currencies[0].latest_invoice_date: must be an ISO 8601 date-time like 2026-11-01T00:00:00Z",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "quirks: [odd], currencies: [{code: USD, balance: 1}]}]",
            "tenants[0].quirks[0]: unknown quirk; known: bom, integer_amounts, lowercase_invoice_types, naive_dates, "
            "no_details, null_symbol, seven_digit_fractions",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1}], faults: [{kind: boom}]}]",
            "tenants[0].faults[0].kind: must be one of empty, html, huge, latency, reset, slow_body, status, throttle, "
            "timeout, truncated, xml",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1}], faults: [{kind: status}]}]",
            "tenants[0].faults[0].status: required for kind status: an HTTP status between 200 and 599",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1}], faults: [{kind: reset, count: 0}]}]",
            "tenants[0].faults[0].count: must be at least 1",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1}], faults: [{kind: reset, endpoint: web}]}]",
            "tenants[0].faults[0].endpoint: must be one of any, api, summaries, summary, token",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1}]},"
            " {tenant_id: A, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1}]}]",
            "tenants[1].tenant_id: duplicate of tenants[0].tenant_id",
        ),
        ("token_lifetime: 0\ntenants: []", "token_lifetime: must be at least 1"),
        ("expires_in_as_string: yes please\ntenants: []", "expires_in_as_string: must be true or false"),
        ("refresh_token_lifetime: 0\ntenants: []", "refresh_token_lifetime: must be at least 1"),
        ("cloud: mars\ntenants: []", "cloud: must be one of china, global, usgov"),
        ("cloud: [global]\ntenants: []", "cloud: must be a string"),
        (f"tenants: [{TENANT[:-1]}, mfa: maybe}}]", "tenants[0].mfa: must be true or false"),
        (
            f"tenants: [{TENANT[:-1]}, certificates: [nope]}}]",
            "tenants[0].certificates[0]: not a PEM X.509 certificate",
        ),
        (f"tenants: [{TENANT[:-1]}, certificates: nope}}]", "tenants[0].certificates: must be a list"),
        (
            f"tenants: [{TENANT[:-1]}, federated: {{issuer: i}}}}]",
            "tenants[0].federated.subject: must be a non-empty string",
        ),
        (
            f"tenants: [{TENANT[:-1]}, federated: {{issuer: i, subject: s, aud: x}}}}]",
            "tenants[0].federated.aud: unknown key",
        ),
        # The exporter's strict YAML: duplicate keys, aliases, merge keys and foreign tags are refused.
        ("tenants: []\ntenants: []", "tenants: duplicate key at line 2, column 1 (first at line 1)"),
        (
            "seed: &s 1\nlatency: *s\ntenants: []",
            "latency: at line 1, column 7: anchors and aliases are not supported; write the value out",
        ),
        (
            "tenants: [{<<: {client_id: x}}]",
            "tenants[0]: at line 1, column 12: merge keys (<<) are not supported; write the keys out",
        ),
        # A list or mapping where a name is expected is refused like an unknown name, not with a TypeError.
        (
            f"tenants: [{TENANT[:-1]}, quirks: [{{a: 1}}]}}]",
            "tenants[0].quirks[0]: unknown quirk; known: bom, integer_amounts, lowercase_invoice_types, naive_dates, "
            "no_details, null_symbol, seven_digit_fractions",
        ),
        (
            f"tenants: [{TENANT[:-1]}, faults: [{{kind: [status]}}]}}]",
            "tenants[0].faults[0].kind: must be one of empty, html, huge, latency, reset, slow_body, status, throttle, "
            "timeout, truncated, xml",
        ),
        (
            f"tenants: [{TENANT[:-1]}, faults: [{{kind: reset, endpoint: {{a: 1}}}}]}}]",
            "tenants[0].faults[0].endpoint: must be one of any, api, summaries, summary, token",
        ),
        # Numbers beyond what a request can use are refused at load time (they used to overflow per request).
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1.7e+308}]}]",
            "tenants[0].currencies[0].balance: must be at most 10,000,000,000,000",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1"
            + "0" * 400
            + "}]}]",
            "tenants[0].currencies[0].balance: must be at most 10,000,000,000,000",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: -1.0e+14}]}]",
            "tenants[0].currencies[0].balance: must be at least -10,000,000,000,000",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, last_payment: {amount: 1.0e+300, date: '2026-01-01T00:00:00Z'}}]}]",
            "tenants[0].currencies[0].last_payment.amount: must be at most 10,000,000,000,000",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, drift: {invoice_every: 1, invoice_amount: 1.7e+308}}]}]",
            "tenants[0].currencies[0].drift.invoice_amount: must be at most 10,000,000,000,000",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, drift: {payment_every: 1.0e+12, payment_amount: 1}}]}]",
            "tenants[0].currencies[0].drift.payment_every: must be at most 315,360,000",
        ),
        (  # drift catches up event by event: a thousand a second would stall the first request of a day
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, drift: {invoice_every: 0.001, invoice_amount: 1}}]}]",
            "tenants[0].currencies[0].drift.invoice_every: must be at least 1",
        ),
        ("token_lifetime: 1" + "0" * 400 + "\ntenants: []", "token_lifetime: must be at most 315,360,000"),
        ("refresh_token_lifetime: 315360001\ntenants: []", "refresh_token_lifetime: must be at most 315,360,000"),
        ("latency: 1.0e+12\ntenants: []", "latency: must be at most 315,360,000"),
        (f"tenants: [{TENANT[:-1]}, latency: 1.0e+12}}]", "tenants[0].latency: must be at most 315,360,000"),
        (
            f"tenants: [{TENANT[:-1]}, faults: [{{kind: timeout, seconds: 1.0e+12}}]}}]",
            "tenants[0].faults[0].seconds: must be at most 315,360,000",
        ),
        (
            f"tenants: [{TENANT[:-1]}, faults: [{{kind: throttle, retry_after: 1{'0' * 400}}}]}}]",
            "tenants[0].faults[0].retry_after: must be at most 315,360,000",
        ),
        (
            f"tenants: [{TENANT[:-1]}, faults: [{{kind: huge, size_mb: 1.0e+300}}]}}]",
            "tenants[0].faults[0].size_mb: must be at most 1,048,576",
        ),
        # Dates every body can render: years 1 to 9999 once in UTC.
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, latest_invoice_date: '0001-01-01T00:00:00+01:00'}]}]",
            "tenants[0].currencies[0].latest_invoice_date: must be a date between the years 1 and 9999 in UTC",
        ),
        (
            "tenants: [{tenant_id: a, client_id: b, client_secret: c, "
            "currencies: [{code: USD, balance: 1, last_payment: {amount: 1, date: '9999-12-31T23:59:59-01:00'}}]}]",
            "tenants[0].currencies[0].last_payment.date: must be a date between the years 1 and 9999 in UTC",
        ),
        (
            "seed: !!python/int 1\ntenants: []",
            "seed: at line 1, column 7: tags are not supported; quote a value that starts with !",
        ),
        (
            "tenants: [",
            "invalid YAML at line 2, column 1: did not find expected node content "
            "(while parsing a flow node at line 2, column 1)",
        ),
    ],
)
def test_invalid_scenarios_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ConfigError)
    path, _, rest = message.partition(": ")
    assert (caught.value.path, caught.value.message) in {(path, rest), ("", message)}


def _documented_scenario() -> str:
    """The scenario example of docs/simulator.md, its placeholder certificate replaced by a real one."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "simulator.md").read_text(encoding="utf-8")
    match = re.search(r"^## Scenario file\n.*?^```yaml\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert match, "docs/simulator.md lost its scenario file example"
    certificate = r"^( *)-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n"
    placeholder = re.search(certificate, match.group(1), re.DOTALL | re.MULTILINE)
    assert placeholder, "the example's certificate placeholder moved: update this test"
    pem = "".join(f"{placeholder.group(1)}{line}\n" for line in rsa_credential("a").pem.strip().splitlines())
    return match.group(1).replace(placeholder.group(0), pem)


def test_the_documented_scenario_example_parses(tmp_path: Path) -> None:
    documented = _documented_scenario()
    # An unquoted date-time arrives as text (the strict loader keeps dates as written) and still parses.
    quoted = 'latest_invoice_date: "2026-11-01T00:00:00"'
    assert quoted in documented
    path = tmp_path / "scenario.yaml"
    path.write_text(documented.replace(quoted, quoted.replace('"', "")), encoding="utf-8")
    scenario = load_scenario(path)
    assert load_scenario(path) == parse_scenario(_documented_scenario())  # quoted or not, the same date
    tenant, cert, aks = scenario.tenants
    assert tenant.token_lifetime == 60
    assert cert.certificates == (rsa_credential("a").pem,)
    assert tenant.currencies[0].latest_invoice_date == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert tenant.faults[1] == Fault(kind="throttle", retry_after=30, probability=0.1)
    assert aks.federated == Federation(
        issuer="https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/",
        subject="system:serviceaccount:monitoring:partnercenter-exporter",
        audience="api://AzureADTokenExchange",
    )
    assert "demo-contoso-secret" not in repr(scenario)
    assert "demo-contoso-refresh-token" not in repr(scenario)
    with pytest.raises(ScenarioError, match=r"^cannot read .*missing\.yaml: No such file or directory$"):
        load_scenario(tmp_path / "missing.yaml")


def test_scenario_values_built_in_python_are_checked() -> None:
    with pytest.raises(ScenarioError) as caught:
        TenantScenario(tenant_id="x", client_id="y", certificates=("garbage",), currencies=USD)
    assert str(caught.value) == "certificates[0]: not a PEM X.509 certificate"
    with pytest.raises(ScenarioError, match=r"^client_secret: required unless certificates, federated or "):
        TenantScenario(tenant_id="x", client_id="y", currencies=USD)
    with pytest.raises(ScenarioError, match=r"^currencies: must list at least one currency$"):
        TenantScenario(tenant_id="x", client_id="y", client_secret="z")
    with pytest.raises(ScenarioError, match=r"^code: must be a three-letter ISO 4217 code$"):
        Currency(code="usd", symbol=None, balance=1.0)
    with pytest.raises(ScenarioError, match=r"^cloud: must be one of "):
        Scenario(tenants=(), cloud="moon")  # type: ignore[arg-type]
    # The bounds of the file hold for values built in Python, with the key path relative to the value.
    with pytest.raises(ScenarioError, match=r"^cloud: must be one of "):
        Scenario(tenants=(), cloud=["global"])  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match=r"^token_lifetime: must be at most 315,360,000$"):
        Scenario(tenants=(), token_lifetime=10**400)
    with pytest.raises(ScenarioError, match=r"^latency: must be at most 315,360,000$"):
        TenantScenario(tenant_id="x", client_id="y", client_secret="z", currencies=USD, latency=1e12)
    with pytest.raises(ScenarioError, match=r"^balance: must be at most 10,000,000,000,000$"):
        Currency(code="USD", symbol=None, balance=1.7e308)
    with pytest.raises(ScenarioError, match=r"^balance: must be a number$"):
        Currency(code="USD", symbol=None, balance=math.nan)
    with pytest.raises(ScenarioError, match=r"^invoice_types\.Recurring: must be at most 10,000,000,000,000$"):
        Currency(code="USD", symbol=None, balance=1.0, invoice_types=(("Recurring", 1e300), ("OneTime", -1e300)))
    with pytest.raises(ScenarioError, match=r"^drift\.invoice_amount: must be at most 10,000,000,000,000$"):
        Currency(code="USD", symbol=None, balance=1.0, drift=Drift(invoice_every=1.0, invoice_amount=1e300))
    with pytest.raises(ScenarioError, match=r"^last_payment\.date: must be a date between the years 1 and 9999"):
        Currency(code="USD", symbol=None, balance=1.0, last_payment=LastPayment(1.0, 1e15))
    with pytest.raises(ScenarioError, match=r"^latest_invoice_date: must be a date between the years 1 and 9999"):
        Currency(code="USD", symbol=None, balance=1.0, latest_invoice_date=-1e15)
    with pytest.raises(ScenarioError, match=r"^seconds: must be at most 315,360,000$"):
        Fault(kind="timeout", seconds=1e12)
    with pytest.raises(ScenarioError, match=r"^kind: must be one of "):
        Fault(kind=["status"])  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match=r"^endpoint: must be one of "):
        Fault(kind="reset", endpoint={"a": 1})  # type: ignore[arg-type]
    base = default_scenario()
    twin = dataclasses.replace(base.tenants[0], client_id="z")
    with pytest.raises(ScenarioError) as duplicate:
        dataclasses.replace(base, tenants=(*base.tenants, twin))
    assert str(duplicate.value) == "tenants[5].tenant_id: duplicate of tenants[0].tenant_id"
    # The same tenant named by its GUID is still the same tenant.
    by_guid = dataclasses.replace(twin, tenant_id=base.tenants[0].directory_id)
    with pytest.raises(ScenarioError, match=r"^tenants\[5\]\.tenant_id: duplicate of tenants\[0\]"):
        dataclasses.replace(base, tenants=(*base.tenants, by_guid))


def test_the_demo_can_add_a_certificate_tenant_to_the_default_scenario() -> None:
    base = default_scenario()
    cred = rsa_credential("a")
    tenant = TenantScenario(
        tenant_id="tailspin.onmicrosoft.com",
        client_id="77777777-7777-4777-8777-777777777777",
        certificates=(cred.pem,),
        currencies=USD,
    )
    scenario = dataclasses.replace(base, tenants=(*base.tenants, tenant))
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        url = f"{s.url}/tailspin.onmicrosoft.com/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": tenant.client_id,
            "scope": SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": cred.assertion(client_id=tenant.client_id, audience=url),
        }
        response = post_token(c, "tailspin.onmicrosoft.com", form)
        assert response.status_code == 200, response.text
        assert api_get(c, "summary", response.json()["access_token"]).json()["balanceAmount"] == 1


def test_default_scenario_has_the_documented_tenants() -> None:
    scenario = default_scenario()
    ids = [(t.tenant_id, t.client_id, t.client_secret, t.refresh_token, t.mfa) for t in scenario.tenants]
    assert ids == [
        ("contoso.onmicrosoft.com", "11111111-1111-4111-8111-111111111111", "demo-contoso-secret", None, True),
        (
            "fabrikam.onmicrosoft.com",
            "22222222-2222-4222-8222-222222222222",
            "demo-fabrikam-secret",
            "demo-fabrikam-refresh-token",
            True,
        ),
        ("northwind.onmicrosoft.com", "33333333-3333-4333-8333-333333333333", "demo-northwind-secret", None, True),
        ("adatum.onmicrosoft.com", "44444444-4444-4444-8444-444444444444", "demo-adatum-secret", None, True),
        (
            "woodgrove.onmicrosoft.com",
            "55555555-5555-4555-8555-555555555555",
            "demo-woodgrove-secret",
            "demo-woodgrove-refresh-token",
            False,
        ),
    ]
    contoso, fabrikam, northwind, adatum, woodgrove = scenario.tenants
    assert (scenario.seed, scenario.cloud, scenario.token_lifetime) == (1, "global", 3600)
    assert [c.code for c in fabrikam.currencies] == ["USD", "EUR", "GBP"]
    assert [c.balance for c in fabrikam.currencies] == [18250.75, 9400.0, 3120.4]
    assert northwind.currencies[0].code == "EUR"
    assert northwind.currencies[0].balance > 100_000
    assert contoso.currencies[0].balance == 42000.5
    assert contoso.currencies[0].last_payment is not None
    assert contoso.currencies[0].last_payment.date == datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    assert contoso.currencies[0].drift is not None
    assert [(f.kind, f.status, f.retry_after, f.probability) for f in adatum.faults] == [
        ("status", 503, None, 0.25),
        ("throttle", None, 30, 0.05),
    ]
    assert [c.code for c in woodgrove.currencies] == ["USD"]
    assert woodgrove.currencies[0].balance > 0


def test_woodgrove_gets_tokens_but_partner_center_refuses_them() -> None:
    woodgrove = default_scenario().tenants[4]
    with Simulator(default_scenario()) as s, httpx.Client(base_url=s.url) as c:
        form = {
            "grant_type": "refresh_token",
            "client_id": woodgrove.client_id,
            "client_secret": "demo-woodgrove-secret",
            "refresh_token": "demo-woodgrove-refresh-token",
            "scope": f"{SCOPE} offline_access",
        }
        answer = post_token(c, woodgrove.tenant_id, form)
        assert answer.status_code == 200, answer.text
        assert_partner_error(api_get(c, "summaries", answer.json()["access_token"]), 401, 900421)
        token = app_token(c, woodgrove.tenant_id, woodgrove.client_id, "demo-woodgrove-secret")
        assert api_get(c, "summary", token).json()["balanceAmount"] == woodgrove.currencies[0].balance


def test_default_balances_stay_near_their_start_for_days() -> None:
    """Payments match invoices, so the demo's balances neither climb nor drain: the docs' figures hold for days."""
    scenario = dataclasses.replace(default_scenario(), token_lifetime=8 * 86400)  # one token for the whole week
    contoso, fabrikam, northwind = scenario.tenants[:3]
    start = {(t.tenant_id, c.code): c for t in (contoso, fabrikam, northwind) for c in t.currencies}
    clock = Clock()
    began = clock.now
    seen: dict[tuple[str, str], list[float]] = {key: [] for key in start}
    with Simulator(scenario, clock=clock) as s, httpx.Client(base_url=s.url) as c:
        tokens = {
            contoso.tenant_id: app_token(c, contoso.tenant_id, contoso.client_id, "demo-contoso-secret"),
            northwind.tenant_id: app_token(c, northwind.tenant_id, northwind.client_id, "demo-northwind-secret"),
        }
        form = {
            "grant_type": "refresh_token",
            "client_id": fabrikam.client_id,
            "client_secret": "demo-fabrikam-secret",
            "refresh_token": "demo-fabrikam-refresh-token",
            "scope": SCOPE,
        }
        tokens[fabrikam.tenant_id] = post_token(c, fabrikam.tenant_id, form).json()["access_token"]
        # Every 997 s (prime, so the samples fall at every phase of the invoice and payment periods) for 7 days.
        for offset in range(0, 7 * 86400, 997):
            clock.now = began + offset
            for tenant_id, token in tokens.items():
                endpoint = "summaries" if tenant_id == fabrikam.tenant_id else "summary"
                body = api_get(c, endpoint, token).json()
                for item in body.get("items", [body]):
                    seen[(tenant_id, item["currencyCode"])].append(item["balanceAmount"])
    for key, currency in start.items():
        low, high = min(seen[key]), max(seen[key])
        if currency.drift is None:
            assert low == high == currency.balance, key
            continue
        # Within two payments of the start, every day of the week; and moving, or the test would prove nothing.
        band = 2 * currency.drift.payment_amount
        assert currency.balance - band <= low, (key, low)
        assert high <= currency.balance + band, (key, high)
        assert high - low > currency.drift.invoice_amount, key
    # As docs/deploy.md says of the compose stack: northwind above critical, no one else even at warning.
    assert min(seen[(northwind.tenant_id, "EUR")]) > 100_000
    assert all(max(values) < 50_000 for key, values in seen.items() if key[0] != northwind.tenant_id)


def test_adatum_fails_its_first_poll_and_then_at_the_documented_rates() -> None:
    adatum = default_scenario().tenants[3]
    with Simulator(default_scenario()) as s, httpx.Client(base_url=s.url) as c:
        token = app_token(c, adatum.tenant_id, adatum.client_id, "demo-adatum-secret")
        statuses = [api_get(c, "summary", token).status_code for _ in range(1000)]
    # The demo's story: the exporter's first poll (three attempts) fails, its next succeeds.
    assert statuses[:4] == [503, 503, 503, 200]
    # First match wins: the throttle is drawn only for calls the 503 spared, 0.75 * 0.05 = 3.75%.
    assert statuses.count(503) / len(statuses) == pytest.approx(0.25, abs=0.02)
    assert statuses.count(429) / len(statuses) == pytest.approx(0.0375, abs=0.01)
    assert set(statuses) == {200, 429, 503}


def test_generated_scenario() -> None:
    scenario = Scenario.generated(12, currencies=2, latency=0.01)
    assert len(scenario.tenants) == 12
    assert scenario.latency == 0.01
    first = scenario.tenants[0]
    assert first.tenant_id == "tenant-0001.onmicrosoft.com"
    assert first.client_id == str(uuid.uuid5(uuid.NAMESPACE_DNS, "tenant-0001.onmicrosoft.com"))
    assert first.client_secret == "secret-0001"
    assert scenario.tenants[11].tenant_id == "tenant-0012.onmicrosoft.com"
    assert all(len(t.currencies) == 2 for t in scenario.tenants)
    assert {len(c.invoice_types) for t in scenario.tenants for c in t.currencies} == {2, 3}
    assert Scenario.generated(12, currencies=2, latency=0.01) == scenario
    with Simulator(scenario) as s, httpx.Client(base_url=s.url) as c:
        token = app_token(c, "tenant-0012.onmicrosoft.com", scenario.tenants[11].client_id, "secret-0012")
        body = api_get(c, "summary", token).json()
    assert body["balanceAmount"] == pytest.approx(scenario.tenants[11].currencies[0].balance)
