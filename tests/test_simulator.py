"""The simulated Partner Center API over real HTTP on 127.0.0.1: bodies, checks, MFA, faults, control API, CLI.

The token endpoint has its own module (test_simulator_entra.py), scenario files theirs (test_simulator_scenario.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.simulator import (
    Currency,
    Drift,
    Fault,
    Scenario,
    ScenarioError,
    Simulator,
    TenantScenario,
    parse_scenario,
)
from exporter.simulator.cli import parse_listen
from exporter.version import version_line
from tests.support import free_port, wait_until
from tests.test_simulator_support import (
    APP_CLIENT,
    USER_CLIENT,
    Clock,
    api_get,
    assert_entra_error,
    assert_partner_error,
    post_token,
    refresh,
    refresh_form,
    start,
    token_form,
)

ROOT = Path(__file__).resolve().parent.parent
NO_MFA_CLIENT = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"

SCENARIO = f"""
seed: 7
token_lifetime: 3600
tenants:
  - tenant_id: app.example.com
    client_id: {APP_CLIENT}
    client_secret: app-secret-value
    token_lifetime: 120
    currencies:
      - code: USD
        symbol: "$"
        balance: 1500.25
        invoice_types: {{Recurring: 1000, OneTime: 500.25}}
        last_payment: {{amount: 100, date: "2026-10-01T00:00:00Z"}}
        latest_invoice_date: "2026-11-01T00:00:00"
  - tenant_id: user.example.com
    client_id: {USER_CLIENT}
    client_secret: user-secret-value
    refresh_token: initial-refresh-token
    currencies:
      - {{code: USD, symbol: "$", balance: 10}}
      - {{code: EUR, symbol: "€", balance: 20.5}}
  - tenant_id: nomfa.example.com
    client_id: {NO_MFA_CLIENT}
    client_secret: nomfa-secret-value
    refresh_token: nomfa-refresh-token
    mfa: false
    currencies:
      - {{code: GBP, symbol: "£", balance: 3}}
"""

# Key sets of Microsoft's documented sample bodies (the shape the exporter is written against).
SUMMARY_KEYS = {
    "balanceAmount",
    "currencyCode",
    "currencySymbol",
    "accountingDate",
    "firstInvoiceCreationDate",
    "lastPaymentDate",
    "lastPaymentAmount",
    "latestInvoiceDate",
    "details",
    "links",
    "attributes",
}
DETAIL_SUMMARY_KEYS = SUMMARY_KEYS - {"details", "links"}
COLLECTION_KEYS = {"totalCount", "items", "links", "attributes"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = start(parse_scenario(SCENARIO))
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        yield c


def app_token(client: httpx.Client, tenant: str = "app.example.com", **kw: Any) -> str:
    response = post_token(client, tenant, token_form(**kw))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def get(client: httpx.Client, endpoint: str, token: str | None, **headers: str) -> httpx.Response:
    return api_get(client, endpoint, token, **headers)


# --- invoice endpoints ---


def test_summary_matches_the_documented_shape(client: httpx.Client) -> None:
    response = get(client, "summary", app_token(client))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content.startswith(b"{")  # no BOM: that is the bom quirk's
    body = response.json()
    assert body.keys() == SUMMARY_KEYS
    assert body["balanceAmount"] == 1500.25
    assert body["currencyCode"] == "USD"
    assert body["currencySymbol"] == "$"
    assert body["lastPaymentAmount"] == 100
    assert body["lastPaymentDate"] == "2026-10-01T00:00:00Z"
    assert body["latestInvoiceDate"] == "2026-11-01T00:00:00Z"
    assert body["links"] == {"self": {"uri": "/invoices/summary", "method": "GET", "headers": []}}
    assert body["attributes"] == {"objectType": "InvoiceSummary"}
    assert [(d["invoiceType"], d["summary"]["balanceAmount"]) for d in body["details"]] == [
        ("Recurring", 1000),
        ("OneTime", 500.25),
    ]
    for detail in body["details"]:
        assert detail.keys() == {"invoiceType", "summary"}
        assert detail["summary"].keys() == DETAIL_SUMMARY_KEYS
    # A type that never had a payment says "never" the way Partner Center does.
    assert body["details"][1]["summary"]["lastPaymentDate"] == "0001-01-01T00:00:00"


def test_summaries_needs_app_user_and_lists_every_currency(client: httpx.Client) -> None:
    assert_partner_error(get(client, "summaries", app_token(client)), 403, 2032)
    body = get(client, "summaries", refresh(client, "initial-refresh-token")["access_token"]).json()
    assert body.keys() == COLLECTION_KEYS
    assert body["totalCount"] == 2
    assert [item["currencyCode"] for item in body["items"]] == ["USD", "EUR"]
    assert body["attributes"] == {"objectType": "Collection"}
    assert all(item.keys() == SUMMARY_KEYS for item in body["items"])
    assert body["items"][1]["details"][0]["summary"]["balanceAmount"] == 20.5


def test_summary_with_app_user_token_returns_the_first_currency(client: httpx.Client) -> None:
    token = refresh(client, "initial-refresh-token")["access_token"]
    assert get(client, "summary", token).json()["currencyCode"] == "USD"


def test_api_rejects_missing_bad_and_foreign_tokens(client: httpx.Client) -> None:
    token = app_token(client)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}AA"
    missing = get(client, "summary", None)
    assert_partner_error(missing, 401, 800001)
    assert missing.headers["www-authenticate"].startswith("OAuth realm=urn:cpsvc:cpid:")
    for bad in ("garbage", tampered, token.replace("eyJ", "eyK", 1), f"{header}.{payload}"):
        response = get(client, "summary", bad)
        assert_partner_error(response, 401, 400)
        assert response.headers["www-authenticate"].startswith("OAuth realm=urn:cpsvc:cpid:")
    assert_partner_error(get(client, "summary", None, Authorization=f"Basic {token}"), 401, 400)


def test_access_tokens_expire() -> None:
    clock = Clock()
    with Simulator(parse_scenario(SCENARIO), clock=clock) as s, httpx.Client(base_url=s.url) as c:
        token = app_token(c)
        clock.now += 119
        assert get(c, "summary", token).status_code == 200
        clock.now += 1
        body = assert_partner_error(get(c, "summary", token), 401, 400)
        assert "expired" in body["description"]


def test_app_user_calls_without_mfa_are_refused_with_900421(client: httpx.Client) -> None:
    kw: dict[str, Any] = {"tenant": "nomfa.example.com", "client_id": NO_MFA_CLIENT, "secret": "nomfa-secret-value"}
    answer = refresh(client, "nomfa-refresh-token", **kw)
    for endpoint in ("summary", "summaries"):
        response = get(client, endpoint, answer["access_token"])
        body = assert_partner_error(response, 401, 900421)
        assert isinstance(body["code"], int)
    # The refreshed chain keeps the consent's claims: a new token does not help.
    again = refresh(client, answer["refresh_token"], **kw)
    assert_partner_error(get(client, "summaries", again["access_token"]), 401, 900421)
    # App-only calls are not affected; App+User tokens with MFA pass.
    app_only = app_token(client, "nomfa.example.com", client_id=NO_MFA_CLIENT, secret="nomfa-secret-value")
    assert get(client, "summary", app_only).status_code == 200
    assert get(client, "summaries", refresh(client, "initial-refresh-token")["access_token"]).status_code == 200


def test_accept_header(client: httpx.Client) -> None:
    token = app_token(client)
    assert_partner_error(get(client, "summary", token, Accept="text/html"), 406, 800002)
    assert get(client, "summary", token, Accept="application/json;q=0").status_code == 406
    assert get(client, "summary", token, Accept="text/html, application/*;q=0.5").status_code == 200
    assert client.get("/v1/invoices/summary", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_request_and_correlation_ids_are_optional_and_echoed(client: httpx.Client) -> None:
    token = app_token(client)
    ids = {"MS-RequestId": str(uuid.uuid4()), "MS-CorrelationId": "not even a GUID"}
    response = get(client, "summary", token, **ids)
    assert response.status_code == 200
    assert (response.headers["ms-requestid"], response.headers["ms-correlationid"]) == tuple(ids.values())
    failed = get(client, "summaries", token, **ids)
    assert failed.status_code == 403
    assert failed.headers["ms-requestid"] == ids["MS-RequestId"]
    # Without them the request is served, and the answer carries ids of its own.
    bare = client.get("/v1/invoices/summary", headers={"Authorization": f"Bearer {token}"})
    assert bare.status_code == 200
    assert uuid.UUID(bare.headers["ms-requestid"]) != uuid.UUID(bare.headers["ms-correlationid"])


def test_unknown_path_and_method(client: httpx.Client) -> None:
    assert_partner_error(client.get("/v1/customers"), 404, 1000)
    token = app_token(client)
    response = client.post("/v1/invoices/summary", headers={"Authorization": f"Bearer {token}"})
    assert_partner_error(response, 405, 800002)


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "PROPFIND"])
def test_every_method_reaches_the_routes(client: httpx.Client, method: str) -> None:
    # Not http.server's 501 HTML page: the token endpoint's AADSTS900561, the API's and control API's 405.
    body = assert_entra_error(
        client.request(method, "/app.example.com/oauth2/v2.0/token"), 400, "invalid_request", 900561
    )
    assert f"Received a {method} request" in body["error_description"]
    response = client.request(method, "/v1/invoices/summary", headers={"Authorization": f"Bearer {app_token(client)}"})
    assert_partner_error(response, 405, 800002)
    control = client.request(method, "/_sim/tenants/app.example.com/faults")
    assert (control.status_code, control.json()) == (405, {"error": f"method {method} not allowed here"})


@pytest.mark.parametrize("request_line", [b" /v1/invoices/summary HTTP/1.1", b"GET / HTTP/2.0", b"GET / HTTP/1.1x"])
def test_a_garbled_request_line_gets_a_status_line(sim: Simulator, request_line: bytes) -> None:
    # http.server answers a request line it cannot read as HTTP/0.9 would, a bare HTML page without a status line.
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(request_line + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 505 ")), received[:100]
    assert b"Connection: close" in head.split(b"\r\n")
    assert body == b""


def test_keep_alive_serves_many_requests_on_one_connection(client: httpx.Client) -> None:
    token = app_token(client)
    ports = set()
    for _ in range(20):
        response = get(client, "summary", token)
        assert response.status_code == 200
        stream = response.extensions["network_stream"]
        ports.add(stream.get_extra_info("client_addr"))
    assert len(ports) == 1


# --- faults ---


def set_faults(sim: Simulator, tenant: str, *faults: Fault) -> None:
    sim.set_faults(tenant, list(faults))


def test_status_fault_default_bodies(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="status", status=503, endpoint="any"))
    assert_partner_error(get(client, "summary", token), 503, 800003)
    assert_entra_error(post_token(client, "app.example.com", token_form()), 503, "temporarily_unavailable", 90033)


def test_status_fault_with_body_content_type_and_retry_after(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(
        sim,
        "app.example.com",
        Fault(kind="status", status=500, body='{"statusCode":500,"message":"boom"}', retry_after=7),
        Fault(kind="status", status=502, body="", content_type="text/plain", endpoint="summaries"),
    )
    response = get(client, "summary", token)
    assert response.status_code == 500
    assert response.json() == {"statusCode": 500, "message": "boom"}
    assert response.headers["retry-after"] == "7"
    # First match wins: the summary fault above matches every API request, also summaries.
    assert get(client, "summaries", token).status_code == 500
    set_faults(sim, "app.example.com", Fault(kind="status", status=502, body="", content_type="text/plain"))
    response = get(client, "summary", token)
    assert (response.status_code, response.content, response.headers["content-type"]) == (502, b"", "text/plain")


@pytest.mark.parametrize(("retry_after", "expected"), [(None, "10"), (30, "30")])
def test_throttle_fault(sim: Simulator, client: httpx.Client, retry_after: int | None, expected: str) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="throttle", retry_after=retry_after))
    response = get(client, "summary", token)
    assert response.status_code == 429
    # The gateway's body, not Partner Center's.
    assert response.json() == {
        "statusCode": 429,
        "message": f"Rate limit is exceeded. Try again in {expected} seconds.",
    }
    assert response.headers["retry-after"] == expected
    assert post_token(client, "app.example.com", token_form()).status_code == 200  # api only by default


def test_latency_fault_and_scenario_latency(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="latency", seconds=0.3))
    began = time.monotonic()
    assert get(client, "summary", token).status_code == 200
    assert time.monotonic() - began >= 0.3
    slow = SCENARIO.replace("token_lifetime: 3600", "token_lifetime: 3600\nlatency: 0.25")
    with Simulator(parse_scenario(slow)) as s, httpx.Client(base_url=s.url) as c:
        began = time.monotonic()
        token = app_token(c)
        assert time.monotonic() - began < 0.25  # tokens are not delayed
        began = time.monotonic()
        assert get(c, "summary", token).status_code == 200
        assert time.monotonic() - began >= 0.25


def test_timeout_fault_hangs_without_blocking_others_or_stop() -> None:
    s = start(parse_scenario(SCENARIO))
    try:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            app, user = app_token(c), refresh(c, "initial-refresh-token")["access_token"]
            s.set_faults("app.example.com", [Fault(kind="timeout")])
            with httpx.Client(base_url=s.url, timeout=0.5) as hanging, pytest.raises(httpx.ReadTimeout):
                get(hanging, "summary", app)
            began = time.monotonic()
            assert get(c, "summary", user).status_code == 200
            assert time.monotonic() - began < 0.4
            # Leave one request hanging in the server while it stops.
            raw = socket.create_connection(("127.0.0.1", s.port))
            headers = "".join(f"{k}: {v}\r\n" for k, v in {"Authorization": f"Bearer {app}"}.items())
            raw.sendall(f"GET /v1/invoices/summary HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            wait_until(lambda: s.stats()["app.example.com"]["summary"] == 2, what="hanging request")
    finally:
        began = time.monotonic()
        s.stop()
        assert time.monotonic() - began < 3
    raw.settimeout(5)
    assert raw.recv(100) == b""  # closed without an answer
    raw.close()


def test_reset_fault_sends_a_tcp_reset(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="reset"))
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw:
        headers = "".join(f"{k}: {v}\r\n" for k, v in {"Authorization": f"Bearer {token}"}.items())
        raw.sendall(f"GET /v1/invoices/summary HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        with pytest.raises(ConnectionResetError):
            raw.recv(100)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        get(client, "summary", token)


def test_request_log_keeps_the_status_a_number_and_names_a_failure_apart(
    sim: Simulator, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.simulator.handler")
    token = app_token(client)
    assert get(client, "summary", token).status_code == 200
    set_faults(sim, "app.example.com", Fault(kind="reset"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        get(client, "summary", token)

    def logged() -> list[dict[str, object]]:
        records = [r for r in caplog.records if r.getMessage() == "request" and r.__dict__["path"].endswith("summary")]
        return [{k: r.__dict__[k] for k in ("status", "failure") if k in r.__dict__} for r in records]

    wait_until(lambda: len(logged()) >= 2, timeout=5, what="both requests logged")
    assert logged() == [{"status": 200}, {"failure": "reset"}]


@pytest.mark.parametrize(
    ("kind", "content_type", "check"),
    [
        ("html", "text/html", lambda body: body.startswith(b"<!DOCTYPE html>")),
        ("xml", "application/xml", lambda body: body.startswith(b"<?xml")),
        ("empty", "application/json", lambda body: body == b""),
    ],
)
def test_200_with_a_body_that_is_not_json(
    sim: Simulator, client: httpx.Client, kind: str, content_type: str, check: Callable[[bytes], bool]
) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind=kind, endpoint="any"))  # type: ignore[arg-type]
    for response in (get(client, "summary", token), post_token(client, "app.example.com", token_form())):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(content_type)
        assert check(response.content)


def test_truncated_fault(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    whole = get(client, "summary", token).content
    set_faults(sim, "app.example.com", Fault(kind="truncated"))
    response = get(client, "summary", token)
    assert response.status_code == 200
    assert whole.startswith(response.content)
    assert 0 < len(response.content) < len(whole)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_huge_fault_is_valid_json_of_the_given_size(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="huge", size_mb=1.5))
    response = get(client, "summary", token)
    assert response.status_code == 200
    assert len(response.content) == int(1.5 * 1024 * 1024)
    assert response.json()["balanceAmount"] == 1500.25


def test_slow_body_fault_dribbles_the_normal_body(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    whole = get(client, "summary", token).content
    set_faults(sim, "app.example.com", Fault(kind="slow_body", seconds=0.5))
    began = time.monotonic()
    response = get(client, "summary", token)
    assert time.monotonic() - began >= 0.45
    assert response.content == whole


@pytest.mark.parametrize("status", [204, 304])
def test_status_fault_without_content_keeps_the_connection_usable(
    sim: Simulator, client: httpx.Client, status: int
) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="status", status=status, count=1))
    response = get(client, "summary", token)
    assert (response.status_code, response.content) == (status, b"")
    assert "content-length" not in response.headers
    # The next answer on the same connection is read as an answer, not after a stray body.
    again = get(client, "summary", token)
    assert again.status_code == 200
    assert again.json()["balanceAmount"] == 1500.25
    addresses = {r.extensions["network_stream"].get_extra_info("client_addr") for r in (response, again)}
    assert len(addresses) == 1


@pytest.mark.parametrize("fault", [Fault(kind="huge", size_mb=0.01), Fault(kind="slow_body", seconds=0.2)])
def test_head_gets_no_body_from_body_faults(sim: Simulator, client: httpx.Client, fault: Fault) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", dataclasses.replace(fault, count=1))
    head = client.head("/v1/invoices/summary", headers={"Authorization": f"Bearer {token}"})
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) > 0  # the length the GET's body would have
    again = get(client, "summary", token)
    assert again.status_code == 200
    assert again.json()["balanceAmount"] == 1500.25


def test_count_limits_a_fault_and_endpoint_selects_requests(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    set_faults(sim, "app.example.com", Fault(kind="status", status=500, endpoint="token", count=2))
    assert get(client, "summary", token).status_code == 200
    statuses = [post_token(client, "app.example.com", token_form()).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_probability_is_respected_and_reproducible() -> None:
    def pattern() -> list[int]:
        with Simulator(parse_scenario(SCENARIO)) as s, httpx.Client(base_url=s.url) as c:
            token = app_token(c)
            s.set_faults("app.example.com", [Fault(kind="status", status=503, probability=0.3)])
            return [get(c, "summary", token).status_code for _ in range(150)]

    first = pattern()
    assert 0.15 < first.count(503) / len(first) < 0.45
    assert set(first) == {200, 503}
    assert pattern() == first


def test_faults_are_per_tenant(sim: Simulator, client: httpx.Client) -> None:
    set_faults(sim, "user.example.com", Fault(kind="status", status=503, endpoint="any"))
    assert get(client, "summary", app_token(client)).status_code == 200
    assert post_token(client, "user.example.com", refresh_form("initial-refresh-token")).status_code == 503


def test_fault_values_are_validated() -> None:
    with pytest.raises(ScenarioError, match=r"^status: required"):
        Fault(kind="status")
    with pytest.raises(ScenarioError, match=r"^probability: "):
        Fault(kind="reset", probability=1.5)


# --- control API ---


def test_control_api_faults(sim: Simulator, client: httpx.Client) -> None:
    token = app_token(client)
    response = client.put("/_sim/tenants/app.example.com/faults", json=[{"kind": "status", "status": 502, "count": 1}])
    assert response.status_code == 200
    assert get(client, "summary", token).status_code == 502
    assert get(client, "summary", token).status_code == 200
    bad = client.put("/_sim/tenants/app.example.com/faults", json=[{"kind": "throttle", "status": 1}])
    assert bad.status_code == 400
    assert bad.json()["error"] == "[0].status: unknown key for kind throttle"
    assert client.put("/_sim/tenants/app.example.com/faults", content=b"{nope").status_code == 400
    assert client.put("/_sim/tenants/nope/faults", json=[]).status_code == 404
    client.put("/_sim/tenants/app.example.com/faults", json=[{"kind": "status", "status": 500}])
    assert client.put("/_sim/tenants/app.example.com/faults", json=[]).status_code == 200
    assert get(client, "summary", token).status_code == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        # A list where a name belongs, a number beyond what a wait can take, JSON nested beyond the recursion limit:
        # each used to drop the connection.
        (b'[{"kind": []}]', "[0].kind: must be one of "),
        (b'[{"kind": "reset", "endpoint": {}}]', "[0].endpoint: must be one of "),
        (b'[{"kind": "timeout", "seconds": 1e12}]', "[0].seconds: must be at most 315,360,000"),
        (b'[{"kind": "latency", "seconds": 1e300}]', "[0].seconds: must be at most 315,360,000"),
        (b"[" * 200_000 + b"]" * 200_000, "invalid JSON: "),
    ],
)
def test_control_api_refuses_bad_fault_lists_with_400(client: httpx.Client, body: bytes, error: str) -> None:
    response = client.put("/_sim/tenants/app.example.com/faults", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error)
    assert client.get("/_sim/healthz").status_code == 200  # on the same connection: it was kept


def test_control_api_revoke(client: httpx.Client) -> None:
    app = app_token(client)
    answer = refresh(client, "initial-refresh-token")
    user_app_only = app_token(client, "user.example.com", client_id=USER_CLIENT, secret="user-secret-value")
    assert client.post("/_sim/tenants/user.example.com/revoke").status_code == 200
    assert get(client, "summary", app).status_code == 200  # other tenants keep their tokens
    # Unlike Entra (which revokes refresh tokens only), access tokens issued before are refused too, app-only ones
    # included: docs/simulator.md, "Revocation departs from Entra on purpose".
    assert_partner_error(get(client, "summaries", answer["access_token"]), 401, 400)
    assert_partner_error(get(client, "summary", user_app_only), 401, 400)
    for token in (answer["refresh_token"], "initial-refresh-token"):
        assert_entra_error(post_token(client, "user.example.com", refresh_form(token)), 400, "invalid_grant", 50173)
    # New app-only tokens still work after a revocation.
    fresh = app_token(client, "user.example.com", client_id=USER_CLIENT, secret="user-secret-value")
    assert get(client, "summary", fresh).status_code == 200
    assert client.post("/_sim/tenants/nope/revoke").status_code == 404


def test_control_api_stats_and_health(sim: Simulator, client: httpx.Client) -> None:
    assert client.head("/_sim/healthz").status_code == 200  # probes may ask with HEAD
    assert client.get("/_sim/healthz").status_code == 200
    token = app_token(client)
    get(client, "summary", token)
    get(client, "summaries", token)
    get(client, "summary", None)
    post_token(client, "nope.example.com", token_form())
    post_token(client, "app.example.com", token_form(secret="wrong"))
    stats = client.get("/_sim/stats").json()
    assert stats == sim.stats()
    assert stats["app.example.com"] == {"token": 2, "summary": 1, "summaries": 1}
    assert stats["user.example.com"] == {"token": 0, "summary": 0, "summaries": 0}
    assert stats["unknown"] == {"token": 1, "summary": 1, "summaries": 0}


# --- drift and quirks ---

DRIFT_SCENARIO = Scenario(
    seed=3,
    tenants=(
        TenantScenario(
            tenant_id="drift.example.com",
            client_id=APP_CLIENT,
            client_secret="drift-secret-value",
            currencies=(
                Currency(
                    code="USD",
                    symbol="$",
                    balance=1000.0,
                    invoice_types=(("Recurring", 600.0), ("OneTime", 400.0)),
                    drift=Drift(invoice_every=10, invoice_amount=100, payment_every=25, payment_amount=500),
                ),
            ),
        ),
    ),
)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_drift_moves_balances_deterministically() -> None:
    def bodies() -> list[dict[str, Any]]:
        clock = Clock()
        start_time = clock.now
        seen = []
        with Simulator(DRIFT_SCENARIO, clock=clock) as s, httpx.Client(base_url=s.url) as c:
            token = app_token(c, "drift.example.com", secret="drift-secret-value")
            for offset in (0, 9, 10, 20, 25, 600):
                clock.now = start_time + offset
                seen.append(get(c, "summary", token).json())
        return seen

    at0, at9, at10, at20, at25, at600 = seen = bodies()
    assert at0 == at9
    assert at0["balanceAmount"] == 1000
    assert at0["latestInvoiceDate"] == "0001-01-01T00:00:00"
    assert at0["lastPaymentDate"] == "0001-01-01T00:00:00"
    assert 1080 <= at10["balanceAmount"] <= 1120  # one invoice of 100 +- 20%
    assert at10["latestInvoiceDate"] == iso(1_800_000_010)
    assert at20["balanceAmount"] > at10["balanceAmount"]
    assert at25["balanceAmount"] < at20["balanceAmount"]
    assert at25["lastPaymentDate"] == iso(1_800_000_025)
    assert 400 <= at25["lastPaymentAmount"] <= 600
    for body in seen:
        parts = sum(d["summary"]["balanceAmount"] for d in body["details"])
        assert parts == pytest.approx(body["balanceAmount"], abs=0.001)
        assert body["balanceAmount"] >= 0
    assert at600["balanceAmount"] != at25["balanceAmount"]
    assert bodies() == seen


def test_dates_at_the_ends_of_the_range_render() -> None:
    edges = SCENARIO.replace(
        'last_payment: {amount: 100, date: "2026-10-01T00:00:00Z"}',
        'last_payment: {amount: 100, date: "0001-01-01T00:00:00Z"}',
    ).replace('latest_invoice_date: "2026-11-01T00:00:00"', 'latest_invoice_date: "9999-12-31T23:59:59+00:00"')
    with Simulator(parse_scenario(edges)) as s, httpx.Client(base_url=s.url) as c:
        body = get(c, "summary", app_token(c)).json()
    assert (body["lastPaymentDate"], body["latestInvoiceDate"]) == ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")


QUIRK_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "bom": lambda raw: raw.startswith(b"\xef\xbb\xbf{"),
    "naive_dates": lambda raw: json.loads(raw)["latestInvoiceDate"] == "2026-11-01T00:00:00",
    # 1500.25 and its OneTime part 500.25 are not whole: only the quirk makes them integers.
    "integer_amounts": lambda raw: (
        isinstance(json.loads(raw)["balanceAmount"], int)
        and all(isinstance(d["summary"]["balanceAmount"], int) for d in json.loads(raw)["details"])
    ),
    "lowercase_invoice_types": lambda raw: (
        [d["invoiceType"] for d in json.loads(raw).get("details", [])] == ["recurring", "onetime"]
    ),
    "null_symbol": lambda raw: json.loads(raw)["currencySymbol"] is None,
    "no_details": lambda raw: "details" not in json.loads(raw),
    "seven_digit_fractions": lambda raw: json.loads(raw)["latestInvoiceDate"] == "2026-11-01T00:00:00.0000000Z",
}


@pytest.fixture(scope="module")
def quirky() -> Iterator[Simulator]:
    tenants = "".join(
        f"""
  - tenant_id: {quirk}.example.com
    client_id: {APP_CLIENT}
    client_secret: app-secret-value
    quirks: [{quirk}]
    currencies:
      - {{code: USD, symbol: "$", balance: 1500.25, invoice_types: {{Recurring: 1000, OneTime: 500.25}},
          latest_invoice_date: "2026-11-01T00:00:00Z"}}"""
        for quirk in QUIRK_CHECKS
    )
    s = start(parse_scenario("tenants:" + tenants))
    yield s
    s.stop()


@pytest.mark.parametrize("quirk", sorted(QUIRK_CHECKS))
def test_quirks(quirky: Simulator, quirk: str) -> None:
    with httpx.Client(base_url=quirky.url) as c:
        raw = get(c, "summary", app_token(c, f"{quirk}.example.com")).content
    assert QUIRK_CHECKS[quirk](raw)
    # Every other quirk is absent, the BOM too: each check fails on the body (the bom tenant's without its BOM).
    plain = raw.removeprefix(b"\xef\xbb\xbf") if quirk == "bom" else raw
    assert [name for name, check in QUIRK_CHECKS.items() if name != quirk and check(plain)] == []


# --- command line ---


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill the process if it still runs and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def run_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_a_scenario_and_stops_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    port = free_port()
    proc = run_cli(f"--listen=127.0.0.1:{port}", f"--scenario={path}", "--log.level=debug")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/_sim/healthz").status_code == 200, what="simulator up")
        with httpx.Client(base_url=url) as c:
            assert get(c, "summary", app_token(c)).status_code == 200
        proc.send_signal(stop_signal)
        began = time.monotonic()
        _, stderr = proc.communicate(timeout=5)
        assert time.monotonic() - began < 5
        assert proc.returncode == 0
    finally:
        reap(proc)
    request_lines = [line for line in stderr.splitlines() if "msg=request" in line]
    assert any("path=/v1/invoices/summary" in line and "status=200" in line for line in request_lines)
    assert "app-secret-value" not in stderr


def test_cli_without_scenario_serves_the_default_one() -> None:
    port = free_port()
    proc = run_cli(f"--listen=127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/_sim/healthz").status_code == 200, what="simulator up")
        form = token_form("11111111-1111-4111-8111-111111111111", "demo-contoso-secret")
        assert httpx.post(f"{url}/contoso.onmicrosoft.com/oauth2/v2.0/token", data=form).status_code == 200
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        reap(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario=BAD"], "tenants[0].client_id: must be a non-empty string"),
        (["--scenario=MISSING"], "cannot read "),
        (["--scenario=DUPLICATE"], "tenants[0].tenant_id: duplicate key at line 1"),
        (["--scenario=QUIRK"], "tenants[0].quirks[0]: unknown quirk"),
        (["--listen=nowhere"], "--listen: expected HOST:PORT"),
        # Unmatched brackets, an unbracketed IPv6 address, a port of non-ASCII digits: bad flags, not "cannot listen".
        (["--listen=[::1"], "--listen: expected HOST:PORT"),
        (["--listen=::1]:8089"], "--listen: expected HOST:PORT"),
        (["--listen=::1:8089"], "--listen: expected HOST:PORT"),
        (["--listen=[]:8089"], "--listen: expected HOST:PORT"),
        (["--listen=:\u00b2"], "--listen: expected HOST:PORT"),
        (["--listen=:65536"], "--listen: expected HOST:PORT"),
        (["--log.level=loud"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [{tenant_id: a, client_secret: c, currencies: [{code: USD, balance: 1}]}]\n")
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text("tenants: [{tenant_id: a, tenant_id: b}]\n")
    quirk = tmp_path / "quirk.yaml"
    quirk.write_text(
        "tenants: [{tenant_id: a, client_id: b, client_secret: c, currencies: [{code: USD, balance: 1}], "
        "quirks: [{a: 1}]}]\n"
    )
    paths = {"BAD": bad, "MISSING": tmp_path / "missing.yaml", "DUPLICATE": duplicate, "QUIRK": quirk}
    for name, path in paths.items():
        args = [a.replace(name, str(path)) for a in args]
    proc = run_cli(*args)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8089", ("127.0.0.1", 8089)), ("[::1]:0", ("::1", 0)), (":8089", ("0.0.0.0", 8089))],
)
def test_cli_listen_forms(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


def test_cli_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter.simulator", "--version"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, version_line("partnercenter-simulator") + "\n", "")
