"""Poller behaviour against a scripted upstream (httpx.MockTransport): tokens, retries, throttling, schedule."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from exporter.config import Config
from exporter.poller import Poller, RetryPolicy
from exporter.snapshot import SnapshotStore, TenantState
from tests.fakes import SUMMARY_BODY, FakeUpstream, make_config, ok_summary, respond, tenant_yaml, token_response
from tests.support import free_port

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002, default_retry_after=60)


def _poller(config: Config, upstream: FakeUpstream, **kwargs: object) -> tuple[Poller, SnapshotStore]:
    store = SnapshotStore(config, time.time())
    kwargs.setdefault("retry", FAST)
    poller = Poller(config, store, transport_factory=upstream.transport, **kwargs)  # type: ignore[arg-type]
    return poller, store


def _poll_all(poller: Poller, times: int = 1) -> None:
    async def go() -> None:
        try:
            for _ in range(times):
                await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(go())


def _state(store: SnapshotStore, name: str) -> TenantState:
    return store.current.tenants[name]


def test_token_is_reused_across_polls(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller, times=3)
    assert upstream.count("a.onmicrosoft.com", "token") == 1
    assert upstream.count("a.onmicrosoft.com", "summary") == 3
    state = _state(store, "a")
    assert state.up is True
    assert state.requests == {"token": 1, "summary": 3}
    assert state.summaries is not None
    assert state.summaries[0].balance == 751094.39
    assert state.token_expiry is not None
    assert state.token_expiry == pytest.approx(time.time() + 3600, abs=30)


def test_token_request_carries_client_credentials_and_scope(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    poller, _ = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    token_request = next(r for _, _, e, r in upstream.log if e == "token")
    form = dict(x.split("=", 1) for x in token_request.content.decode().split("&"))
    assert form["grant_type"] == "client_credentials"
    assert form["client_secret"] == "secret-of-a"
    assert form["scope"] == "https%3A%2F%2Fapi.partnercenter.microsoft.com%2F.default"
    assert str(token_request.url) == "http://login.test/a.onmicrosoft.com/oauth2/v2.0/token"
    api_request = next(r for _, _, e, r in upstream.log if e == "summary")
    assert api_request.headers["Authorization"].startswith("Bearer a.onmicrosoft.com|")
    assert api_request.headers["Accept"] == "application/json"
    assert api_request.headers["MS-Contract-Version"] == "v1"
    ids = {api_request.headers["MS-RequestId"], api_request.headers["MS-CorrelationId"]}
    assert len(ids) == 2


def test_fresh_request_ids_per_request(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    poller, _ = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller, times=2)
    ids = [r.headers["MS-RequestId"] for _, _, e, r in upstream.log if e == "summary"]
    assert len(set(ids)) == 2


def test_token_renewed_shortly_before_expiry(tmp_path: Path) -> None:
    upstream = FakeUpstream(
        token_scripts={"a.onmicrosoft.com": [lambda r: token_response("a.onmicrosoft.com|x", "100")]}
    )
    now = [1_000_000.0]
    poller, _ = _poller(make_config(tmp_path, tenant_yaml("a")), upstream, clock=lambda: now[0])

    async def go() -> None:
        await poller.poll_all()
        now[0] += 85  # still 15 s left: more than the 10% margin, so reuse
        await poller.poll_all()
        now[0] += 10  # 5 s left: inside the margin, so renew
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    assert upstream.count("a.onmicrosoft.com", "token") == 2
    assert upstream.count("a.onmicrosoft.com", "summary") == 3


def test_401_drops_token_and_retries_once(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(401, '{"code":"401"}'), ok_summary(5)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "token") == 2
    state = _state(store, "a")
    assert state.up is True
    assert state.errors[("summary", "401")] == 1
    assert state.requests == {"token": 2, "summary": 2}


def test_persistent_401_fails_after_one_retry(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(401)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "summary") == 2
    state = _state(store, "a")
    assert state.up is False
    assert state.errors[("summary", "401")] == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_backoff(tmp_path: Path, status: int) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(status)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "summary") == 3
    state = _state(store, "a")
    assert state.up is False
    assert state.errors[("summary", str(status))] == 3
    assert state.last_error is not None
    assert state.last_error.startswith(f"summary: {status}")


def test_retry_succeeds_within_the_same_poll(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(503), ok_summary(7)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    state = _state(store, "a")
    assert state.up is True
    assert state.errors[("summary", "503")] == 1
    assert state.summaries is not None
    assert state.summaries[0].balance == 7


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_never_retried(tmp_path: Path, status: int) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(status)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "summary") == 1
    assert _state(store, "a").errors[("summary", str(status))] == 1


def test_timeouts_and_connection_errors_are_classified_and_retried(tmp_path: Path) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("reset", request=request)

    upstream = FakeUpstream(
        tenants={"a.onmicrosoft.com": [timeout, reset, ok_summary(1)], "b.onmicrosoft.com": [timeout]}
    )
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a") + tenant_yaml("b")), upstream)
    _poll_all(poller)
    a, b = _state(store, "a"), _state(store, "b")
    assert a.up is True
    assert a.errors[("summary", "timeout")] == 1
    assert a.errors[("summary", "connection")] == 1
    assert b.up is False
    assert b.errors[("summary", "timeout")] == 3


def test_a_refused_connection_is_a_connection_error_and_retried(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: the kernel refuses the connection
    config = make_config(tmp_path, tenant_yaml("a"), api_url=closed, login_url=closed)
    store = SnapshotStore(config, time.time())
    _poll_all(Poller(config, store, retry=FAST))  # httpx's own transport: a real TCP connect
    state = _state(store, "a")
    assert state.up is False
    assert state.errors[("token", "connection")] == 3
    assert state.requests == {"token": 3, "summary": 0}
    assert state.last_error is not None
    assert state.last_error.startswith("token: connection: ConnectError")


@pytest.mark.parametrize(
    "body", [b"<html><body>proxy login</body></html>", b"", b'{"balanceAmount": 1', b"<xml/>", b"[1,2]"]
)
def test_bad_200_bodies_are_invalid_responses_not_retried(tmp_path: Path, body: bytes) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(200, body, {"content-type": "text/html"})]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "summary") == 1
    state = _state(store, "a")
    assert state.up is False
    assert state.errors[("summary", "invalid_response")] == 1


def test_huge_body_is_rejected(tmp_path: Path) -> None:
    huge = b'{"currencyCode":"USD","pad":"' + b"x" * (9 * 1024 * 1024) + b'"}'
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(200, huge)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert _state(store, "a").errors[("summary", "invalid_response")] == 1


def test_429_is_not_retried_and_sets_not_before(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(429, "", {"Retry-After": "120"})]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    assert upstream.count("a.onmicrosoft.com", "summary") == 1
    assert _state(store, "a").errors[("summary", "429")] == 1
    tenant = poller._tenants["a"]
    assert tenant.not_before - time.monotonic() == pytest.approx(120, abs=5)


def test_token_failures_count_under_token_endpoint(tmp_path: Path) -> None:
    aadsts = '{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}'
    upstream = FakeUpstream(token_scripts={"a.onmicrosoft.com": [respond(401, aadsts)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    state = _state(store, "a")
    assert state.up is False
    assert state.errors[("token", "401")] == 1
    assert state.requests == {"token": 1, "summary": 0}
    assert state.last_error is not None
    assert "AADSTS7000215" in state.last_error


def test_secret_echoed_by_upstream_is_redacted(tmp_path: Path) -> None:
    echo = '{"error":"invalid_request","error_description":"bad body client_secret=secret-of-a"}'
    upstream = FakeUpstream(token_scripts={"a.onmicrosoft.com": [respond(400, echo)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    last_error = _state(store, "a").last_error
    assert last_error is not None
    assert "secret-of-a" not in last_error
    assert "<redacted>" in last_error


def test_failing_tenant_leaves_others_untouched(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"bad.onmicrosoft.com": [respond(503)]})
    config = make_config(tmp_path, tenant_yaml("good") + tenant_yaml("bad"))
    poller, store = _poller(config, upstream)
    _poll_all(poller)
    good, bad = _state(store, "good"), _state(store, "bad")
    assert good.up is True
    seeded = {("token", "400"): 0} | {(e, s): 0 for e in ("token", "summary") for s in ("401", "403", "429", "500")}
    assert good.errors == seeded
    assert bad.up is False


def test_last_good_values_stay_until_max_staleness(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [ok_summary(42), respond(503)]})
    now = [1_000_000.0]
    config = make_config(tmp_path, tenant_yaml("a"), max_staleness="10m")
    poller, store = _poller(config, upstream, clock=lambda: now[0])

    async def go() -> None:
        await poller.poll_all()
        now[0] += 300
        await poller.poll_all()
        kept = _state(store, "a")
        assert kept.up is False
        assert kept.summaries is not None
        assert kept.summaries[0].balance == 42
        assert kept.last_success == 1_000_000.0
        now[0] += 301
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    dropped = _state(store, "a")
    assert dropped.summaries is None
    assert dropped.last_success == 1_000_000.0


def test_refresh_token_rotation_is_written_back(tmp_path: Path) -> None:
    token_file = tmp_path / "a.token"
    token_file.write_text("initial-refresh\n")
    config = make_config(tmp_path, tenant_yaml("a", endpoint="summaries", extra="refresh_token_file: a.token"))
    upstream = FakeUpstream()
    now = [1_000_000.0]
    poller, store = _poller(config, upstream, clock=lambda: now[0])

    async def go() -> None:
        await poller.poll_all()
        now[0] += 3600  # expired: the next poll needs a new token, with the rotated refresh token
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    forms = [r.content.decode() for _, _, e, r in upstream.log if e == "token"]
    assert "grant_type=refresh_token" in forms[0]
    assert "refresh_token=initial-refresh" in forms[0]
    assert "refresh_token=refresh-1" in forms[1]
    assert token_file.read_text() == "refresh-2\n"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.token")]  # no temp files left
    assert _state(store, "a").up is True


def _run_for(poller: Poller, seconds_until: Callable[[], bool], timeout: float = 10) -> None:
    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        deadline = time.monotonic() + timeout
        while not seconds_until():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(go())


def test_slow_tenant_does_not_delay_others(tmp_path: Path) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    upstream = FakeUpstream()
    upstream.tenants["slow.onmicrosoft.com"] = [hang]  # type: ignore[list-item]
    transport = lambda: httpx.MockTransport(upstream.handler)  # noqa: E731
    # Sub-second intervals are refused in a config file; the poller itself takes any.
    config = replace(make_config(tmp_path, tenant_yaml("slow") + tenant_yaml("fast"), timeout="20s"), interval=0.2)
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=transport, retry=FAST)
    _run_for(poller, lambda: upstream.count("fast.onmicrosoft.com", "summary") >= 4)
    assert upstream.count("slow.onmicrosoft.com", "summary") == 1
    assert store.current.tenants["fast"].up is True


def test_retry_after_is_honoured_by_the_schedule(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(429, "", {"Retry-After": "1"}), ok_summary(3)]})
    config = replace(make_config(tmp_path, tenant_yaml("a")), interval=0.05)
    poller, store = _poller(config, upstream)
    _run_for(poller, lambda: upstream.count("a.onmicrosoft.com", "summary") >= 2)
    times = [t for t, _, e, _ in upstream.log if e == "summary"]
    assert times[1] - times[0] >= 0.95
    assert store.current.tenants["a"].up is True


def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    in_flight = [0]
    peak = [0]

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.05)
        in_flight[0] -= 1
        return httpx.Response(200, json={"currencyCode": "USD", "balanceAmount": 1})

    upstream = FakeUpstream()
    names = [f"t{i}" for i in range(10)]
    for n in names:
        upstream.tenants[f"{n}.onmicrosoft.com"] = [slow]  # type: ignore[list-item]
    config = make_config(tmp_path, "".join(tenant_yaml(n) for n in names), concurrency=3)
    poller, store = _poller(config, upstream)
    _poll_all(poller)
    assert peak[0] == 3
    assert all(store.current.tenants[n].up for n in names)


def test_reload_keeps_unchanged_tenants_tokens(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    config = make_config(tmp_path, tenant_yaml("keep") + tenant_yaml("change") + tenant_yaml("drop"))
    poller, store = _poller(config, upstream)
    changed = make_config(
        tmp_path,
        tenant_yaml("keep", extra="thresholds: {USD: {warning: 1}}")
        + tenant_yaml("change", endpoint="summary", extra="client_id: 22222222-2222-4222-8222-222222222222").replace(
            "  client_id: 11111111-1111-4111-8111-111111111111\n", "", 1
        )
        + tenant_yaml("new"),
    )

    async def go() -> None:
        await poller.poll_all()
        await poller.apply_config(changed)
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    assert upstream.count("keep.onmicrosoft.com", "token") == 1
    assert upstream.count("change.onmicrosoft.com", "token") == 2
    assert upstream.count("new.onmicrosoft.com", "token") == 1
    assert set(store.current.tenants) == {"keep", "change", "new"}
    assert store.current.tenants["keep"].requests["summary"] == 2
    assert store.current.config is changed


def test_no_cookie_set_for_one_tenant_rides_on_another_tenants_request(tmp_path: Path) -> None:
    # Entra's token answers set cookies (fpc, x-ms-gateway-slice); one client serves every tenant of its slot.
    upstream = FakeUpstream()
    for tenant in ("a", "b"):
        body = token_response(f"{tenant}.onmicrosoft.com|1").content
        upstream.token_scripts[f"{tenant}.onmicrosoft.com"] = [
            respond(200, body, {"Set-Cookie": f"fpc={tenant}; path=/", "Content-Type": "application/json"})
        ]
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a") + tenant_yaml("b"), concurrency=1), upstream)
    _poll_all(poller, times=2)
    assert len(upstream.log) == 6  # two tokens and four invoice requests, all on the one client
    assert [r.headers.get("Cookie") for _, _, _, r in upstream.log] == [None] * 6
    assert all(s.up for s in store.current.tenants.values())


def test_a_retry_after_no_answer_keeps_its_request_id_and_one_after_an_answer_gets_a_new_one(tmp_path: Path) -> None:
    # Partner Center's headers page: after a timeout the retry carries the same MS-RequestId; after an answer, not.
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [timeout, respond(503), ok_summary(1.0)]})
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a")), upstream)
    _poll_all(poller)
    sent = [r.headers for _, _, e, r in upstream.log if e == "summary"]
    assert len(sent) == 3
    assert sent[0]["MS-RequestId"] == sent[1]["MS-RequestId"] != sent[2]["MS-RequestId"]
    assert len({h["MS-CorrelationId"] for h in sent}) == 3  # "reset for every call"
    assert _state(store, "a").up is True


def _run_with(poller: Poller, steps: Callable[[], Awaitable[None]]) -> None:
    """Run the poller's schedule while `steps` runs, then stop it."""

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            await steps()
        finally:
            stop.set()
            await task

    asyncio.run(go())


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_a_reload_that_changes_a_tenants_identity_polls_it_at_once(tmp_path: Path) -> None:
    # The runbook's fix for a wrong secret is a new one and a reload: an interval (10m by default) without data
    # would follow otherwise, with /readyz at 503.
    upstream = FakeUpstream()
    config = make_config(tmp_path, tenant_yaml("a"), interval="1h")
    poller, store = _poller(config, upstream)
    fixed = make_config(tmp_path, tenant_yaml("a").replace("secret-of-a", "new-secret"), interval="1h")

    async def steps() -> None:
        await _until(lambda: store.current.tenants["a"].up is True)
        await poller.apply_config(fixed)
        await _until(lambda: upstream.count("a.onmicrosoft.com", "token") == 2)

    _run_with(poller, steps)
    assert upstream.count("a.onmicrosoft.com", "summary") == 2


def test_a_payment_terms_change_restarts_nothing(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a", extra="payment_terms: 30d")), upstream)
    changed = make_config(tmp_path, tenant_yaml("a", extra="payment_terms: 45d"))

    async def steps() -> None:
        await poller.poll_all()
        await poller.apply_config(changed)
        await poller.poll_all()

    asyncio.run(steps())
    asyncio.run(poller.aclose())
    assert upstream.count("a.onmicrosoft.com", "token") == 1
    assert store.current.tenants["a"].requests["summary"] == 2
    assert store.current.config.tenants[0].payment_terms == 45 * 86400


def test_a_poll_a_reload_cancelled_is_done_again_at_once(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, content=SUMMARY_BODY)

    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [held]})  # type: ignore[list-item]
    poller, store = _poller(make_config(tmp_path, tenant_yaml("a"), interval="1h"), upstream)
    # Another timeout means new clients: the in-flight poll is cancelled.
    more_slots = make_config(tmp_path, tenant_yaml("a"), interval="1h", timeout="3s")

    async def steps() -> None:
        await _until(lambda: upstream.count("a.onmicrosoft.com", "summary") == 1)
        await poller.apply_config(more_slots)
        release.set()
        await _until(lambda: store.current.tenants["a"].up is True)

    _run_with(poller, steps)
    assert upstream.count("a.onmicrosoft.com", "summary") == 2
