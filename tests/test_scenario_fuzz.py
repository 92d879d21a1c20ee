"""Property tests: whatever text or structure reaches the scenario loader, it yields a Scenario or a ScenarioError."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import trustme
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.simulator import Scenario, ScenarioError, parse_scenario
from tests.yamlfuzz import PUNCTUATION, replaced, scalars, structures

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EC_CERT = trustme.CA().cert_pem.bytes().decode()  # parses, but holds no RSA key

KEYS = [
    "seed", "token_lifetime", "refresh_token_lifetime", "expires_in_as_string", "latency", "cloud", "tenants",
    "tenant_id", "client_id", "client_secret", "refresh_token", "certificates", "federated", "mfa", "currencies",
    "quirks", "faults", "code", "symbol", "balance", "invoice_types", "last_payment", "latest_invoice_date", "drift",
    "kind", "endpoint", "probability", "count", "status", "body", "content_type", "retry_after", "seconds",
    "size_mb", "amount", "date", "invoice_every", "invoice_amount", "payment_every", "payment_amount", "issuer",
    "subject", "audience", "Recurring",
]  # fmt: skip

# Values that get past the type checks: codes, dates, fault kinds, quirks, clouds, numbers at and past the bounds.
PLAUSIBLE: st.SearchStrategy[object] = st.sampled_from(
    [
        "USD", "usd", "ß", "EURO", "€", "2026-11-01T00:00:00Z", "2026-11-01", "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00", "status", "throttle", "latency", "timeout", "huge", "slow_body", "token",
        "summary", "summaries", "api", "any", "bom", "naive_dates", "null_symbol", "global", "usgov", "china", "mars",
        "contoso.onmicrosoft.com", "CONTOSO.onmicrosoft.com", "11111111-1111-4111-8111-111111111111", "", " ",
        EC_CERT, "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", True, False, None, 0, 1, -1, 0.5,
        200, 599, 600, 10**13, 10.0**13, 315360000, 315360001, 1048576.5, float("nan"), float("inf"), -float("inf"),
        10**400, 2**63, [], {},
    ]
)  # fmt: skip

SCALARS = scalars(PLAUSIBLE)
STRUCTURES = structures(SCALARS, KEYS)

VALID: dict[str, Any] = {
    "seed": 7,
    "token_lifetime": 3600,
    "cloud": "global",
    "tenants": [
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-1111-4111-8111-111111111111",
            "client_secret": "s3cret",
            "quirks": ["bom"],
            "currencies": [
                {
                    "code": "USD",
                    "symbol": "$",
                    "balance": 100,
                    "invoice_types": {"Recurring": 60, "OneTime": 40},
                    "last_payment": {"amount": 10, "date": "2026-01-01T00:00:00Z"},
                    "latest_invoice_date": "2026-02-01T00:00:00Z",
                    "drift": {"invoice_every": 60, "invoice_amount": 5},
                }
            ],
            "faults": [{"kind": "status", "status": 503, "endpoint": "summary", "count": 1, "retry_after": 1}],
        },
        {
            "tenant_id": "fabrikam.onmicrosoft.com",
            "client_id": "22222222-2222-4222-8222-222222222222",
            "refresh_token": "r3fresh",
            "federated": {"issuer": "https://issuer", "subject": "sub"},
            "currencies": [{"code": "EUR", "balance": -5.5}],
        },
    ],
}

CURRENCY = ("tenants", 0, "currencies", 0)
SLOTS = [
    *[(key,) for key in ("seed", "token_lifetime", "refresh_token_lifetime", "expires_in_as_string", "latency",
                         "cloud", "tenants", "bogus")],
    *[("tenants", i, key) for i in (0, 1) for key in ("tenant_id", "client_id", "client_secret", "refresh_token",
                                                       "certificates", "federated", "mfa", "token_lifetime",
                                                       "latency", "currencies", "quirks", "faults", "bogus")],
    *[(*CURRENCY, key) for key in ("code", "symbol", "balance", "invoice_types", "last_payment",
                                   "latest_invoice_date", "drift", "bogus")],
    *[(*CURRENCY, "invoice_types", key) for key in ("Recurring", "OneTime", "Other")],
    *[(*CURRENCY, "last_payment", key) for key in ("amount", "date")],
    *[(*CURRENCY, "drift", key) for key in ("invoice_every", "invoice_amount", "payment_every", "payment_amount")],
    *[("tenants", 0, "faults", 0, key) for key in ("kind", "endpoint", "probability", "count", "status", "body",
                                                   "content_type", "retry_after", "seconds", "size_mb")],
    *[("tenants", 1, "federated", key) for key in ("issuer", "subject", "audience")],
    ("tenants", 0, "quirks", 0), ("tenants", 1, "certificates"),
]  # fmt: skip


def outcome(text: str) -> Scenario | ScenarioError:
    """Parse `text`; return the Scenario or the ScenarioError. Any other exception fails the test."""
    try:
        return parse_scenario(text)
    except ScenarioError as exc:
        return exc


def assert_sane(result: Scenario | ScenarioError) -> None:
    """A ScenarioError is one line naming a key path; a Scenario's tenants each have a currency (none is fine)."""
    if isinstance(result, ScenarioError):
        assert isinstance(result.path, str)
        assert result.message
        assert len(str(result).splitlines()) == 1, str(result)
    else:
        assert all(tenant.currencies for tenant in result.tenants)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    assert_sane(outcome(text))


@FUZZ
@given(PUNCTUATION)
def test_yaml_punctuation_soup(text: str) -> None:
    assert_sane(outcome(text))


@FUZZ
@given(STRUCTURES)
def test_arbitrary_yaml_structures(document: object) -> None:
    assert_sane(outcome(yaml.safe_dump(document, allow_unicode=True)))


@FUZZ
@given(st.sampled_from(SLOTS), st.one_of(PLAUSIBLE, STRUCTURES))
def test_one_field_of_a_valid_scenario_replaced(slot: tuple[Any, ...], value: object) -> None:
    result = outcome(replaced(VALID, slot, value))
    assert_sane(result)
    if isinstance(result, ScenarioError):
        # Valid YAML, so the error names a key: the replaced one's tenant (a tenant's values depend on each
        # other, and on the other tenant's id), or the replaced top-level key.
        if slot[0] == "tenants" and len(slot) > 1:
            assert result.path.startswith("tenants["), result
        else:
            assert result.path == slot[0] or result.path.startswith((f"{slot[0]}.", f"{slot[0]}[")), result


def test_the_unmutated_document_is_valid() -> None:
    """Guards the mutation test: without this, it could pass by rejecting everything."""
    result = outcome(yaml.safe_dump(VALID))
    assert isinstance(result, Scenario), result
    assert len(result.tenants) == 2


# Any date-time Python can write, in any zone: the extremes fall outside the years 1 to 9999 in UTC.
DATES = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes() | st.datetimes(max_value=dt.datetime(1, 1, 2)) | st.datetimes(min_value=dt.datetime(9999, 12, 30)),
    st.none() | st.builds(dt.timezone, st.timedeltas(dt.timedelta(hours=-23), dt.timedelta(hours=23))),
)


@FUZZ
@given(st.sampled_from([(*CURRENCY, "last_payment", "date"), (*CURRENCY, "latest_invoice_date")]), DATES)
def test_any_date(slot: tuple[Any, ...], date: str) -> None:
    document = copy.deepcopy(VALID)
    target: Any = document
    for step in slot[:-1]:
        target = target[step]
    target[slot[-1]] = date
    result = outcome(yaml.safe_dump(document))
    assert_sane(result)
    if isinstance(result, ScenarioError):
        assert result.path == ".".join(str(s) for s in slot).replace(".0.", "[0]."), result
