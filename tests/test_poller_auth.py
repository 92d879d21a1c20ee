"""The poller's tokens and hostile answers (httpx.MockTransport): MFA, clouds, credentials, Retry-After, files."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client import generate_latest

from exporter.app import business_registry
from exporter.config import Config
from exporter.logs import LogfmtFormatter
from exporter.poller import MFA_HELP, Poller, RetryPolicy
from exporter.snapshot import SnapshotStore, TenantState
from tests.fakes import SUMMARIES_BODY, FakeUpstream, make_config, respond, tenant_yaml, token_response

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002, default_retry_after=60)
MFA_401 = '{"code": 900421, "description": "Multi-factor authentication is required.", "data": [], "source": "PCAuth"}'


def _run(config: Config, handler: httpx.MockTransport | FakeUpstream, polls: int = 1) -> tuple[Poller, SnapshotStore]:
    store = SnapshotStore(config, time.time())
    transport = handler.transport if isinstance(handler, FakeUpstream) else (lambda: handler)
    poller = Poller(config, store, transport_factory=transport, retry=FAST)

    async def go() -> None:
        try:
            for _ in range(polls):
                await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(go())
    return poller, store


def _state(store: SnapshotStore, name: str = "a") -> TenantState:
    return store.current.tenants[name]


def _jwt(**claims: object) -> str:
    return jwt.encode(claims, "k" * 32, algorithm="HS256")


def _app_user(tmp_path: Path, name: str = "a") -> str:
    (tmp_path / f"{name}.token").write_text("refresh-0\n")
    return tenant_yaml(name, endpoint="summaries", extra=f"refresh_token_file: {name}.token")


class _Script:
    """A MockTransport handler: a token from `tokens` per token request, `invoice` for every invoice request."""

    def __init__(self, tokens: list[httpx.Response], invoice: httpx.Response | None = None) -> None:
        self.tokens = tokens
        self.invoice = invoice or httpx.Response(200, content=SUMMARIES_BODY)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/token"):
            return self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        return self.invoice

    def count(self, token: bool) -> int:
        return sum(r.url.path.endswith("/token") == token for r in self.requests)


def test_scope_follows_the_cloud_even_when_the_hosts_are_overridden(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    _run(make_config(tmp_path, tenant_yaml("a"), cloud="china"), upstream)  # api_url/login_url point at fakes
    form = urllib.parse.parse_qs(next(r for _, _, e, r in upstream.log if e == "token").content.decode())
    assert form["scope"] == ["https://partner.partnercenterapi.microsoftonline.cn/.default"]


@pytest.mark.parametrize(("amr", "expected"), [(["pwd", "mfa"], True), (["pwd"], False), (None, None)])
def test_app_user_token_mfa_claim_is_published(tmp_path: Path, amr: list[str] | None, expected: bool | None) -> None:
    token = _jwt(amr=amr, scp="user_impersonation") if amr is not None else "opaque-access-token"
    script = _Script([token_response(token, refresh="refresh-1")])
    _, store = _run(make_config(tmp_path, _app_user(tmp_path)), httpx.MockTransport(script))
    assert _state(store).token_mfa is expected
    assert _state(store).up is True


def test_app_only_tenant_has_no_mfa_state(tmp_path: Path) -> None:
    script = _Script([token_response(_jwt(roles=["x"]))], httpx.Response(200, json={"currencyCode": "USD"}))
    _, store = _run(make_config(tmp_path, tenant_yaml("a")), httpx.MockTransport(script))
    assert _state(store).token_mfa is None


def test_the_900421_refusal_fetches_no_new_token_and_says_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = _Script([token_response(_jwt(amr=["pwd"]), refresh="refresh-1")], httpx.Response(401, text=MFA_401))
    _, store = _run(make_config(tmp_path, _app_user(tmp_path)), httpx.MockTransport(script), polls=2)
    state = _state(store)
    assert state.up is False
    assert state.token_mfa is False
    assert state.errors[("summaries", "401")] == 2
    assert script.count(token=True) == 1  # a new token from the same consent cannot add MFA: none is asked for
    assert script.count(token=False) == 2  # one call per poll, no retry
    assert state.last_error == MFA_HELP
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR and "MFA" in r.getMessage()]
    assert len(refusals) == 2
    assert refusals[0].code == "900421"  # type: ignore[attr-defined]


def test_a_plain_401_still_gets_one_new_token(tmp_path: Path) -> None:
    refused = httpx.Response(401, text='{"code": 3000}')
    script = _Script([token_response(_jwt(amr=["pwd", "mfa"]), refresh="r")], refused)
    _, store = _run(make_config(tmp_path, _app_user(tmp_path)), httpx.MockTransport(script))
    assert script.count(token=True) == 2
    assert _state(store).errors[("summaries", "401")] == 2


@pytest.mark.parametrize(
    "answer",
    [
        '{"access_token": "t", "expires_in": "\u00b2\u00b3"}',
        '{"access_token": "t", "expires_in": ' + "9" * 5000 + "}",
        '{"access_token": "t\u00f6ken", "expires_in": 3600}',
        '{"access_token": "two words", "expires_in": 3600}',
        '{"access_token": 12345, "expires_in": 3600}',
        '{"access_token": "", "expires_in": 3600}',
        '{"expires_in": 3600}',
        '{"access_token": "t"}',
        '{"access_token": "t", "expires_in": -1}',
        '{"access_token": "t", "expires_in": 1e300}',
        '{"access_token": "t", "expires_in": "NaN"}',
        '{"access_token": "t", "expires_in": true}',
        '{"access_token": "t", "expires_in": 3600, "refresh_token": ["x"]}',
        '{"access_token": "t", "expires_in": 3600, "refresh_token": "new\\nline"}',
        "[]",
        "<html>sign in</html>",
    ],
)
def test_a_malformed_token_answer_is_an_invalid_response(
    tmp_path: Path, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = FakeUpstream(token_scripts={"a.onmicrosoft.com": [respond(200, answer)]})
    _, store = _run(make_config(tmp_path, tenant_yaml("a")), upstream, polls=2)
    state = _state(store)
    assert state.up is False
    assert state.errors[("token", "invalid_response")] == 2  # counted, and the next poll tried again
    assert state.requests["summary"] == 0
    assert state.last_error is not None
    assert state.last_error.startswith("token: invalid_response: token answer")
    assert len([r for r in caplog.records if r.getMessage() == "request failed"]) == 2
    assert not [r for r in caplog.records if r.exc_info]  # no traceback


def test_retry_after_is_capped_at_max_staleness(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(429, "", {"Retry-After": "99999999"})]})
    poller, _ = _run(make_config(tmp_path, tenant_yaml("a"), max_staleness="2h"), upstream)
    assert poller._tenants["a"].not_before - time.monotonic() == pytest.approx(7200, abs=30)
    (capped,) = [r for r in caplog.records if "Retry-After longer than max_staleness" in r.getMessage()]
    assert capped.retry_after == 99999999  # type: ignore[attr-defined]


def test_entra_error_ids_reach_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = (Path(__file__).parent / "data" / "bodies" / "error-entra.json").read_text()
    upstream = FakeUpstream(token_scripts={"a.onmicrosoft.com": [respond(400, body)]})
    _, store = _run(make_config(tmp_path, _app_user(tmp_path)), upstream)
    (failure,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert failure.code == "AADSTS700082"  # type: ignore[attr-defined]
    assert failure.trace_id == "6a0d5e1b-3c5f-4b7a-9f0e-2d3c4b5a6f70"  # type: ignore[attr-defined]
    assert failure.entra_correlation_id == "0c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f"  # type: ignore[attr-defined]
    assert failure.status == 400  # type: ignore[attr-defined]
    assert _state(store).errors[("token", "400")] == 1


def test_a_refresh_token_that_cannot_be_saved_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "a.token").write_text("refresh-0\n")
    config = make_config(tmp_path, tenant_yaml("a", endpoint="summaries", extra="refresh_token_file: tokens/a.token"))
    (tokens / "a.token").unlink()
    tokens.rmdir()  # the directory went away after start-up: the rotated token cannot be written
    upstream = FakeUpstream()
    now = [1_000_000.0]
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST, clock=lambda: now[0])

    async def go() -> None:
        await poller.poll_all()
        now[0] += 3600  # the next poll needs a new token, and rotates the refresh token again
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    state = _state(store)
    assert state.refresh_token_write_errors == 2
    assert state.up is True  # the rotated token is still used from memory
    assert len([r for r in caplog.records if "cannot write rotated refresh token" in r.getMessage()]) == 2


def test_temp_files_of_a_killed_token_write_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "a.token").write_text("refresh-0\n")
    orphan = tmp_path / ".a.token.k1ll3d.tmp"
    orphan.write_text("refresh-that-was-being-written\n")
    other = tmp_path / ".b.token.x.tmp"
    other.write_text("not ours")
    config = make_config(tmp_path, tenant_yaml("a", endpoint="summaries", extra="refresh_token_file: a.token"))
    Poller(config, SnapshotStore(config, time.time()))
    assert not orphan.exists()
    assert other.exists()


def test_clients_are_opened_for_at_most_as_many_tenants_as_there_are(tmp_path: Path) -> None:
    opened: list[httpx.MockTransport] = []
    upstream = FakeUpstream()

    def transport() -> httpx.MockTransport:
        opened.append(upstream.transport())
        return opened[-1]

    config = make_config(tmp_path, tenant_yaml("a") + tenant_yaml("b"), concurrency=1000)
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=transport, retry=FAST)

    async def go() -> None:
        await poller.poll_all()
        await poller.aclose()

    asyncio.run(go())
    assert len(opened) == 2
    assert all(s.up for s in store.current.tenants.values())


def test_an_unreadable_assertion_file_fails_the_poll_without_a_request(tmp_path: Path) -> None:
    assertion = tmp_path / "federated-token"
    assertion.write_text("header.payload.signature\n")
    credential = "client_assertion_file: federated-token"
    config = make_config(tmp_path, tenant_yaml("a").replace("client_secret: secret-of-a", credential.strip()))
    assertion.unlink()
    upstream = FakeUpstream()
    _, store = _run(config, upstream)
    state = _state(store)
    assert state.up is False
    assert state.requests == {"token": 0, "summary": 0}
    assert state.last_error == f"cannot read client_assertion_file {assertion}: No such file or directory"


def test_a_reload_shortens_a_pending_wait_to_the_new_max_staleness(tmp_path: Path) -> None:
    upstream = FakeUpstream(tenants={"a.onmicrosoft.com": [respond(429, "", {"Retry-After": "99999999"})]})
    config = make_config(tmp_path, tenant_yaml("a"), max_staleness="2h")
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST)

    async def go() -> None:
        await poller.poll_all()
        await poller.apply_config(make_config(tmp_path, tenant_yaml("a"), max_staleness="1m"))
        await poller.aclose()

    asyncio.run(go())
    assert poller._tenants["a"].not_before - time.monotonic() == pytest.approx(60, abs=10)


def test_an_access_token_whose_claims_nest_too_deep_costs_only_its_mfa_state(tmp_path: Path) -> None:
    # A payload nested past the JSON parser's recursion limit once crashed the poll, losing the rotated token.
    payload = base64.urlsafe_b64encode(b'{"amr":' + b"[" * 20_000 + b"]" * 20_000 + b"}").rstrip(b"=").decode()
    script = _Script([token_response(f"eyJhbGciOiJub25lIn0.{payload}.sig", refresh="refresh-1")])
    _, store = _run(make_config(tmp_path, _app_user(tmp_path)), httpx.MockTransport(script))
    assert _state(store).up is True
    assert _state(store).token_mfa is None
    assert (tmp_path / "a.token").read_text() == "refresh-1\n"


def test_a_crashing_poll_of_one_tenant_leaves_the_others_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    poll = Poller._poll

    async def crash_for_a(self: Poller, t: Any) -> None:
        if t.config.name == "a":
            raise RuntimeError("a bug")
        await poll(self, t)

    monkeypatch.setattr(Poller, "_poll", crash_for_a)
    _, store = _run(make_config(tmp_path, tenant_yaml("a") + tenant_yaml("b")), FakeUpstream())
    assert _state(store).up is False
    assert _state(store).last_error == "internal error (see the exporter log)"
    assert _state(store, "b").up is True
    assert [r.tenant for r in caplog.records if r.getMessage() == "poll crashed"] == ["a"]  # type: ignore[attr-defined]


SECRET = "Xq58Q~AbCdEfGhIjKlMnOpQrStUvWxYz0123456z"  # the shape of an Entra client secret


@pytest.mark.parametrize(
    ("endpoint", "answer"),
    [
        # Cut by the 300 characters a description may have, in the middle of the secret it echoes.
        ("token", '{"error": "invalid_client", "error_description": "AADSTS7000215: ' + "x" * 230 + f' {SECRET}"}}'),
        # Cut by the 100 bytes of a body that an error message quotes, in the middle of the token it echoes.
        ("summary", "<html><body>" + "x" * 60 + " Authorization: Bearer opaque-access-token-of-a-proxy-echo</body>"),
    ],
)
def test_a_credential_echoed_where_a_length_limit_cuts_it_is_still_redacted(
    tmp_path: Path, endpoint: str, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = token_response("opaque-access-token-of-a-proxy-echo")
    status = 401 if endpoint == "token" else 200
    script = _Script([httpx.Response(status, text=answer) if endpoint == "token" else token])
    if endpoint == "summary":
        script.invoice = httpx.Response(status, text=answer.replace("Bearer ", ""))
    config = make_config(tmp_path, tenant_yaml("a").replace("secret-of-a", SECRET))
    _, store = _run(config, httpx.MockTransport(script))
    last_error = _state(store).last_error
    assert last_error is not None
    assert "<redacted>" in last_error
    for secret in (SECRET, "opaque-access-token-of-a-proxy-echo"):
        assert secret[:8] not in last_error
        assert secret[:8] not in caplog.text


@pytest.mark.parametrize(
    ("endpoint", "template"),
    [
        # A label value: the currency symbol, and an invoice type (lower-cased, as the token already is).
        ("summary", '{"currencyCode": "USD", "currencySymbol": "@", "details": [{"invoiceType": "@", "summary": {}}]}'),
        # The warning about a summaries item left out quotes its currency code.
        ("summaries", '{"items": [{"currencyCode": "@"}, {"currencyCode": "USD"}]}'),
    ],
)
def test_a_bearer_token_echoed_in_json_escapes_reaches_no_label_and_no_log(
    tmp_path: Path, endpoint: str, template: str, caplog: pytest.LogCaptureFixture
) -> None:
    # JSON may spell any character as an escape: the body's bytes then do not hold the token, its parsed text does.
    token = "opaque-access-token-of-a-proxy-echo"
    spelled = f"\\u{ord(token[0]):04x}{token[1:]}"
    script = _Script([token_response(token, refresh="rotated-refresh-token")])
    script.invoice = httpx.Response(200, text=template.replace("@", spelled))
    config = make_config(tmp_path, _app_user(tmp_path) if endpoint == "summaries" else tenant_yaml("a"))
    caplog.set_level(logging.DEBUG)
    _, store = _run(config, httpx.MockTransport(script))
    exposition = generate_latest(business_registry(store)).decode()
    assert token not in exposition
    assert token not in "\n".join(LogfmtFormatter().format(record) for record in caplog.records)  # extra= fields too
    assert token not in str(_state(store).last_error)


def test_every_text_of_an_error_body_is_redacted_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An invoice answer echoing the client secret, which that request did not carry, in its code.
    upstream = FakeUpstream(
        tenants={"a.onmicrosoft.com": [respond(400, '{"code": "secret-of-a", "description": "no"}')]}
    )
    _run(make_config(tmp_path, tenant_yaml("a")), upstream)
    (failure,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert failure.code == "<redacted>"  # type: ignore[attr-defined]
    assert "secret-of-a" not in caplog.text


def test_a_refresh_token_file_replaced_before_a_reload_is_used_and_not_overwritten(tmp_path: Path) -> None:
    # The runbook's fix for a dead or MFA-less chain: a new consent's token into the file, then a reload.
    upstream = FakeUpstream()
    same = _app_user(tmp_path)
    config = make_config(tmp_path, same)
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST)

    def sent_refresh_tokens() -> list[str]:
        forms = [urllib.parse.parse_qs(r.content.decode()) for _, _, e, r in upstream.log if e == "token"]
        return [form["refresh_token"][0] for form in forms]

    async def go() -> None:
        try:
            await poller.poll_all()  # refresh-0 -> refresh-1, written back
            # A reload that reads the exporter's own write is no new consent: the token in hand is kept.
            await poller.apply_config(make_config(tmp_path, same))
            await poller.poll_all()
            assert sent_refresh_tokens() == ["refresh-0"]
            (tmp_path / "a.token").write_text("new-consent\n")
            await poller.apply_config(make_config(tmp_path, same))
            await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(go())
    assert sent_refresh_tokens() == ["refresh-0", "new-consent"]
    assert (tmp_path / "a.token").read_text() == "refresh-2\n"  # rotated from the new consent's chain
    assert _state(store).up is True


def test_a_refresh_token_file_replaced_without_a_reload_is_not_overwritten_by_the_next_rotation(
    tmp_path: Path,
) -> None:
    # Between the operator's new token and the reload, a rotation of the old chain must not write over it.
    upstream = FakeUpstream()
    config = make_config(tmp_path, _app_user(tmp_path))
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST)

    async def go() -> None:
        try:
            await poller.poll_all()  # refresh-0 -> refresh-1, written back
            (tmp_path / "a.token").write_text("new-consent\n")
            poller._tenants["a"].tokens.invalidate()  # the access token ran out: the next poll rotates again
            await poller.poll_all()  # refresh-1 -> refresh-2, which must not replace the new consent
            await poller.poll_all()  # and the new consent's token is the next one used
        finally:
            await poller.aclose()

    asyncio.run(go())
    forms = [urllib.parse.parse_qs(r.content.decode()) for _, _, e, r in upstream.log if e == "token"]
    assert [form["refresh_token"][0] for form in forms] == ["refresh-0", "refresh-1", "new-consent"]
    assert (tmp_path / "a.token").read_text() == "refresh-3\n"  # rotated from the new consent's chain
    assert _state(store).refresh_token_write_errors == 0


def test_a_reload_that_read_the_file_before_a_rotation_is_no_new_consent(tmp_path: Path) -> None:
    # A reload reads the file in its own thread; a rotation written before it is applied must not look new.
    upstream = FakeUpstream()
    config = make_config(tmp_path, _app_user(tmp_path))  # read while the file held refresh-0
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST)

    async def go() -> None:
        try:
            await poller.poll_all()  # refresh-0 -> refresh-1, written back
            await poller.apply_config(config)  # a reload whose read came before that write
            await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(go())
    assert upstream.count("a.onmicrosoft.com", "token") == 1  # the token in hand was kept
    assert (tmp_path / "a.token").read_text() == "refresh-1\n"


def test_an_identity_change_read_before_a_rotation_was_written_keeps_the_newer_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A reload reads the file in its own thread; a poll may rotate the token before an identity change is applied.
    upstream = FakeUpstream()
    entry = _app_user(tmp_path)
    config = make_config(tmp_path, entry)
    new_secret = make_config(tmp_path, entry.replace("secret-of-a", "new-secret"))  # read while the file held refresh-0
    store = SnapshotStore(config, time.time())
    poller = Poller(config, store, transport_factory=upstream.transport, retry=FAST)

    async def go() -> None:
        try:
            await poller.poll_all()  # refresh-0 -> refresh-1, written back
            await poller.apply_config(new_secret)
            await poller.poll_all()
        finally:
            await poller.aclose()

    asyncio.run(go())
    forms = [urllib.parse.parse_qs(r.content.decode()) for _, _, e, r in upstream.log if e == "token"]
    assert [form["refresh_token"][0] for form in forms] == ["refresh-0", "refresh-1"]  # the chain's newest token
    assert "holds a new refresh token" not in caplog.text  # the exporter's own write is no new consent
    assert (tmp_path / "a.token").read_text() == "refresh-2\n"
