"""Property test: whatever one tenant's upstream answers, the poller keeps the project's promise.

"A bad upstream answer marks that tenant down, counts the error, and leaves every other tenant untouched. The
process never dies on upstream input. Secrets never appear in logs, metrics, the landing page or error messages."

Hypothesis scripts hostile token and invoice answers for tenant "bad" (any status, garbage and mutated bodies,
lying headers, broken compression, transport exceptions, echoes of the request's own credentials, odd token
grants); tenant "good" always gets valid answers. `Poller.poll_all()` runs a few rounds through httpx.MockTransport,
and then the store, the exposition, the landing page, the log records and the refresh token file are checked.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import html
import json
import random
import re
import tempfile
import urllib.parse
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import business_registry
from exporter.logs import JsonFormatter, LogfmtFormatter, record_fields
from exporter.poller import Poller, RetryPolicy
from exporter.server.landing import landing_page
from exporter.snapshot import SEEDED_STATUS_CODES, SnapshotStore
from exporter.upstream.model import parse_summaries, parse_summary
from tests.fakes import SUMMARIES_BODY, SUMMARY_BODY, make_config, tenant_yaml
from tests.support import captured_logs
from tests.test_model_fuzz import json_values, mutated_bodies

# Each example is a few polls against an in-memory transport (~50 ms); derandomized so that a run is repeatable.
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TINY = RetryPolicy(attempts=3, base_delay=0.0001, max_delay=0.0002, default_retry_after=60, publish_window=0.001)
START = 1_000_000.0
GOOD_SECRET = "secret-of-good"
BAD_SECRET = "secret-of-bad"
INITIAL_REFRESH = "bad-initial-refresh-7f3a9c"
GOOD_REFRESH = "good-initial-refresh-41d2e8"
FAILURES = ("timeout", "connection", "invalid_response")
EXCEPTIONS = {"connect": httpx.ConnectError, "read_timeout": httpx.ReadTimeout, "protocol": httpx.RemoteProtocolError}
# Token characters: printable ASCII without space, JSON's escapes (" \ /) drawn often.
TOKEN_CHARS = st.sampled_from('"\\/+=.-_~') | st.characters(min_codepoint=0x21, max_codepoint=0x7E)

# --- what one scripted answer is --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fresh:
    """A new, valid token the fake issues: unique, and a secret from then on."""

    suffix: str = ""
    jwt_payload: bytes | None = None  # a JWT-shaped token with this (possibly broken) payload


@dataclass(frozen=True)
class Valid:
    """The endpoint's normal answer: a fresh token grant, or the sample invoice body."""


@dataclass(frozen=True)
class Grant:
    """A token answer with odd fields; Fresh values are issued tokens, anything else a literal JSON value."""

    access_token: object
    expires_in: object
    refresh_token: object  # _ABSENT: no such key


@dataclass(frozen=True)
class Echo:
    """A body quoting credentials of the request it answers."""

    pick: int  # which of the request's credentials
    template: str
    escape: bool  # \\u-escape its first character inside JSON
    cut: int | None  # keep only this many bytes (negative: drop that many from the front)


@dataclass(frozen=True)
class Raw:
    body: bytes


Body = Valid | Grant | Echo | Raw


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Body = Valid()
    headers: tuple[tuple[str, bytes], ...] = ()
    encoding: str | None = None  # Content-Encoding trick
    failure: str | None = None  # raise this transport exception instead of answering
    failure_echo: bool = False  # ...with the request's credentials in its message


_ABSENT = "<absent>"

# --- strategies ---------------------------------------------------------------------------------------------------

# One in three answers is a 200: a hostile body only gets past the status check with one.
statuses = st.one_of(
    st.just(200),
    st.sampled_from([204, 301, 302, 304, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504]),
    st.integers(min_value=0, max_value=999),  # every value a status line's three digits can carry
)
retry_after = st.one_of(
    st.integers(-(10**6), 10**12).map(lambda n: str(n).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.sampled_from(
        [
            b"",
            b" 5 ",
            b"1e400",
            b"-1",
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"Mon, 01 Jan 2000 00:00:00 +9999",
            b"Tue, 29 Feb 2001 00:00:00 GMT",
            b"1_000",
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")),
)
header_items = st.one_of(
    st.tuples(st.just("retry-after"), retry_after),
    st.tuples(
        st.just("content-type"),
        st.sampled_from([b"text/html", b"application/json; charset=utf-16", b"application/octet-stream", b"", b";;"]),
    ),
    st.tuples(st.just("location"), st.sampled_from([b"http://elsewhere.test/", b"/v1/invoices/summary", b""])),
    st.tuples(st.just("content-length"), st.sampled_from([b"99999999999", b"0", b"-1", b"abc"])),
)
jwt_payloads = st.one_of(
    st.sampled_from(
        [
            b'{"amr":["pwd","mfa"]}',
            b'{"amr":["pwd"]}',
            b'{"amr":"mfa"}',
            b'{"amr":[[],{}]}',
            b"[1,2]",
            b"\xff\xfe not utf-8",
            b"[" * 5000 + b"]" * 5000,
            b'{"amr":' + b"9" * 5000 + b"}",
        ]
    ),
    st.binary(max_size=40),
)
fresh = st.builds(Fresh, st.text(TOKEN_CHARS, max_size=6), st.none() | jwt_payloads)
odd_tokens = st.sampled_from(
    [None, "", " ", 123, 1.5, True, [], {}, "has space", "tab\tx", "\u00fcn\u00efcode", "\u0000x", "x" * 65537]
)
expires = st.one_of(
    st.sampled_from(
        [3600, "3600", " 60 ", 0, -1, 1e-9, 0.5, 7 * 86400, 7 * 86400 + 1, "1e3", "nan", None, True, [], "", 10**30]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
grants = st.builds(Grant, fresh | odd_tokens, expires, st.just(_ABSENT) | fresh | odd_tokens)
echoes = st.builds(
    Echo,
    st.integers(0, 3),
    st.sampled_from(["entra", "partner_center", "gateway", "html", "raw", "symbol", "currency", "token_answer"]),
    st.sampled_from([True, True, False]),  # an escape is what a byte-level scrub misses
    st.one_of(st.none(), st.none(), st.none(), st.integers(-200, 200)),
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_bodies(),
    st.sampled_from([b'{"code": 900421, "description": "MFA required"}', b'{"code": "900421"}']),
).map(Raw)  # mapped, so that its branches count as one next to the others
bodies = st.one_of(st.just(Valid()), grants, echoes, raw_bodies)
tricks = st.sampled_from([None] * 5 + ["gzip", "deflate", "br", "gzip-valid", "gzip-cut", "deflate, gzip"])
answers = st.one_of(
    st.builds(Answer, statuses, bodies),
    st.builds(Answer, st.one_of(st.just(200), statuses), echoes),  # echoes drawn often: each is a chance to leak
    st.builds(  # lying headers, broken compression, the transport failing (with credentials in its message)
        Answer,
        statuses,
        bodies,
        st.lists(header_items, max_size=2).map(tuple),
        tricks,
        st.sampled_from([None, None, *sorted(EXCEPTIONS)]),
        st.booleans(),
    ),
)
scripts = st.lists(answers, max_size=6)  # then valid answers: a tenant can recover

# --- the fake upstream ------------------------------------------------------------------------------------------


@dataclass
class Hostile:
    """Answers tenant "bad" from its scripts (then validly), tenant "good" always validly; remembers what it issued."""

    scripts: dict[str, list[Answer]]  # "token" / "invoice" -> the bad tenant's answers, in order
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, endpoint) -> requests
    failed_with: dict[str, set[str]] = field(default_factory=dict)  # bad's endpoint -> statuses answered, not 200
    issued_access: dict[str, str] = field(default_factory=dict)  # access token -> tenant
    issued_refresh: set[str] = field(default_factory=set)
    good_refresh: list[str] = field(default_factory=list)
    used: list[tuple[str, Answer]] = field(default_factory=list)
    good_tokens: int = 0
    counter: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/oauth2/v2.0/token"):
            tenant, endpoint = path.split("/")[1].split(".")[0], "token"
            form = urllib.parse.parse_qs(request.content.decode())
            credentials = [v[0] for k, v in form.items() if k in ("client_secret", "refresh_token")]
        else:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            tenant = self.issued_access.get(bearer, "bad")
            endpoint = path.rsplit("/", 1)[-1]
            credentials = [bearer]
        self.seen[tenant, endpoint] = self.seen.get((tenant, endpoint), 0) + 1
        if tenant == "good":
            return self._valid(tenant, endpoint, request)
        script = self.scripts["token" if endpoint == "token" else "invoice"]
        answer = script.pop(0) if script else Answer()
        self.used.append((endpoint, answer))
        if answer.failure is not None:
            message = f"upstream went away ({' '.join(credentials)})" if answer.failure_echo else "upstream went away"
            raise EXCEPTIONS[answer.failure](message, request=request)
        if answer.status != 200:
            self.failed_with.setdefault(endpoint, set()).add(str(answer.status))
        body = self._body(answer.body, tenant, endpoint, request, credentials)
        headers = list(answer.headers)
        if answer.encoding is not None:
            body = _encode(body, answer.encoding)
            headers.append(("content-encoding", answer.encoding.removesuffix("-valid").removesuffix("-cut").encode()))
        return httpx.Response(answer.status, content=body, headers=headers)

    def _valid(self, tenant: str, endpoint: str, request: httpx.Request) -> httpx.Response:
        if endpoint == "token":
            if tenant == "good":
                self.good_tokens += 1
            refresh = b"grant_type=refresh_token" in request.content
            grant = Grant(Fresh(), 3600, Fresh() if refresh else _ABSENT)
            return httpx.Response(200, content=self._grant(grant, tenant))
        return httpx.Response(200, content=SUMMARY_BODY if endpoint == "summary" else SUMMARIES_BODY)

    def _fresh(self, token: Fresh, tenant: str, kind: str) -> str:
        self.counter += 1
        marker = f"{tenant}-{kind}{self.counter}-{token.suffix}"
        if token.jwt_payload is None:
            return marker
        payload = base64.urlsafe_b64encode(token.jwt_payload).rstrip(b"=").decode()
        return f"eyJhbGciOiJub25lIn0.{payload}.{marker.replace('.', '_')}"

    def _grant(self, grant: Grant, tenant: str) -> bytes:
        document: dict[str, object] = {"token_type": "Bearer", "expires_in": grant.expires_in}
        if isinstance(grant.access_token, Fresh):
            document["access_token"] = token = self._fresh(grant.access_token, tenant, "at")
            self.issued_access[token] = tenant
        else:
            document["access_token"] = grant.access_token
        if isinstance(grant.refresh_token, Fresh):
            document["refresh_token"] = token = self._fresh(grant.refresh_token, tenant, "rt")
            self.issued_refresh.add(token)
            if tenant == "good":
                self.good_refresh.append(token)
        elif grant.refresh_token != _ABSENT:
            document["refresh_token"] = grant.refresh_token
        return json.dumps(document).encode()

    def _body(self, body: Body, tenant: str, endpoint: str, request: httpx.Request, credentials: list[str]) -> bytes:
        if isinstance(body, Raw):
            return body.body
        if isinstance(body, Grant):
            return self._grant(body, tenant)
        if isinstance(body, Valid):
            return self._valid(tenant, endpoint, request).content
        credential = credentials[body.pick % len(credentials)]
        if body.template in _SUCCESS_SHAPES:  # a successful answer's shape, of the endpoint asked
            body = replace(body, template="token_answer" if endpoint == "token" else _SUCCESS_SHAPES[body.template])
        if body.template == "token_answer":
            # A grant made of the request's own credential is still a grant the fake issued: the exporter cannot
            # tell, and keeps (and writes) it like any other.
            self.issued_access[credential] = self.issued_access.get(credential, tenant)
            self.issued_refresh.add(credential)
        return _echo(body, credential, request)


# Templates shaped like a successful answer: for an invoice request, one of its own shapes, for a token request a grant.
_SUCCESS_SHAPES = {"symbol": "symbol", "currency": "currency", "token_answer": "symbol"}


def _echo(echo: Echo, credential: str, request: httpx.Request) -> bytes:
    def as_json(document: object) -> bytes:
        text = json.dumps(document)
        if echo.escape:
            quoted = json.dumps(credential)[1:-1]
            text = text.replace(quoted, f"\\u{ord(credential[0]):04x}" + json.dumps(credential[1:])[1:-1])
        return text.encode()

    dump = f"{request.method} {request.url}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    dump += request.content.decode()
    documents: dict[str, object] = {
        "entra": {
            "error": "invalid_client",
            "error_description": f"AADSTS7000215: Invalid client secret provided: {credential}\r\nTrace ID: 1",
            "error_codes": [7000215],
            "trace_id": credential,
        },
        "partner_center": {"code": 401, "description": f"token {credential} rejected", "data": [credential]},
        "gateway": {"statusCode": 401, "message": f"Unauthorized: {credential}"},
        "symbol": {
            "items": [{"currencyCode": "USD", "currencySymbol": credential}],
            "currencyCode": "EUR",
            "currencySymbol": credential,
            "details": [{"invoiceType": credential, "summary": {"balanceAmount": 1}}],
        },
        "currency": {"items": [{"currencyCode": credential}, {"currencyCode": "USD"}], "currencyCode": credential},
        "token_answer": {"access_token": credential, "expires_in": 3600, "refresh_token": credential},
    }
    if echo.template == "html":
        body = f"<html><body><h1>Proxy error</h1><pre>{html.escape(dump)}</pre></body></html>".encode()
    elif echo.template == "raw":
        body = dump.encode()
    else:
        body = as_json(documents[echo.template])
    if echo.cut is not None:
        body = body[: echo.cut] if echo.cut >= 0 else body[-echo.cut :]
    return body


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip-valid":
        return gzip.compress(body)
    if encoding == "gzip-cut":
        return gzip.compress(body)[:-5]
    if encoding == "deflate" and body[:1] == b"x":
        return zlib.compress(body)  # sometimes a real deflate stream
    return b"\x1f\x8b\x08garbage" + body[:20]


# --- running one example ----------------------------------------------------------------------------------------


# (endpoint, App+User): `summaries` needs App+User auth.
KINDS = st.sampled_from([("summary", False), ("summary", True), ("summaries", True)])


@FUZZ
@given(
    token_script=scripts,
    invoice_script=scripts,
    # Whose answers are hostile: with the token's, most polls never get to ask for invoices.
    hostile=st.sampled_from(["token", "invoice", "invoice", "both"]),
    bad_kind=KINDS,
    good_kind=KINDS,
    steps=st.lists(st.sampled_from([0.0, 60.0, 3300.0, 7200.0]), min_size=1, max_size=3),
)
def test_one_hostile_tenant_never_hurts_the_others_or_leaks_a_secret(
    token_script: list[Answer],
    invoice_script: list[Answer],
    hostile: str,
    bad_kind: tuple[str, bool],
    good_kind: tuple[str, bool],
    steps: list[float],
) -> None:
    (bad_endpoint, app_user), (good_endpoint, good_app_user) = bad_kind, good_kind
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        token_file, good_file = base / "bad.token", base / "good.token"
        token_file.write_text(INITIAL_REFRESH + "\n")
        good_file.write_text(GOOD_REFRESH + "\n")
        bad_yaml = tenant_yaml("bad", bad_endpoint, "refresh_token_file: bad.token" if app_user else "")
        good_yaml = tenant_yaml("good", good_endpoint, "refresh_token_file: good.token" if good_app_user else "")
        config = make_config(base, good_yaml + bad_yaml, max_staleness="1h")
        upstream = Hostile(
            {
                "token": list(token_script) if hostile != "invoice" else [],
                "invoice": list(invoice_script) if hostile != "token" else [],
            },
        )
        now = [START]
        store = SnapshotStore(config, START)
        poller = Poller(
            config,
            store,
            retry=TINY,
            transport_factory=lambda: httpx.MockTransport(upstream.handler),
            clock=lambda: now[0],
            rng=random.Random(0),
        )
        good_tokens_at: list[float] = []

        async def rounds() -> None:
            try:
                for index, step in enumerate(steps):
                    now[0] += step if index else 0.0
                    if not good_tokens_at or now[0] >= good_tokens_at[-1] + 3600 - 300:
                        good_tokens_at.append(now[0])
                    await poller.poll_all()  # never raises: a raise fails the example
            finally:
                await poller.aclose()

        with captured_logs() as records:
            asyncio.run(rounds())
        file_text = token_file.read_text()
        good_file_text = good_file.read_text()

    snap = store.current
    good, bad = snap.tenants["good"], snap.tenants["bad"]

    # The good tenant: up, with exactly its values and counters, whatever "bad" got.
    expected = (parse_summary(SUMMARY_BODY),) if good_endpoint == "summary" else parse_summaries(SUMMARIES_BODY)
    assert good.up is True
    assert good.last_error is None
    assert good.summaries == expected
    assert good.last_success == now[0]
    assert good.token_expiry == good_tokens_at[-1] + 3600
    assert upstream.good_tokens == len(good_tokens_at)
    assert good.requests == {"token": len(good_tokens_at), good_endpoint: len(steps)}
    seeded = {("token", "400"): 0} | {(e, s): 0 for e in ("token", good_endpoint) for s in SEEDED_STATUS_CODES}
    assert good.errors == seeded
    assert good.refresh_token_write_errors == 0
    assert good.token_mfa is None  # App+User: no JWT, so unknown; app-only: not applicable

    # The bad tenant: polled, every request counted, every failure classified.
    assert bad.up is not None
    assert set(bad.requests) == {"token", bad_endpoint}
    for endpoint, sent in bad.requests.items():
        assert sent == upstream.seen.get(("bad", endpoint), 0)
        failed = sum(n for (e, _), n in bad.errors.items() if e == endpoint)
        assert failed <= sent
    for (endpoint, status), count in bad.errors.items():
        assert endpoint in bad.requests
        assert status in FAILURES or re.fullmatch(r"[0-9]+", status), status
        if count and status not in FAILURES:
            assert status in upstream.failed_with.get(endpoint, set()), (endpoint, status)
    if bad.up:
        assert bad.last_error is None
    else:
        assert bad.last_error
        assert sum(bad.errors.values()) > 0
    for state in (good, bad):
        assert state.last_error is None or (state.last_error.isprintable() and state.last_error.strip())

    for endpoint, answer in upstream.used:
        if isinstance(answer.body, Echo) and answer.status == 200 and answer.failure is None:
            event(f"a 200 echoing a credential at {endpoint}: {answer.body.template}")
    event(f"bad: up={bad.up}, {'some' if bad.requests[bad_endpoint] else 'no'} invoice requests")
    for endpoint, status in sorted(k for k, n in bad.errors.items() if n):
        event(f"bad error: {endpoint} {status if status in FAILURES or status[0] in '2345' else 'odd'}")

    # Everything anyone can see is free of secrets.
    secrets = {GOOD_SECRET, BAD_SECRET, INITIAL_REFRESH, GOOD_REFRESH}
    secrets |= {*upstream.issued_access, *upstream.issued_refresh}
    exposition = generate_latest(business_registry(store)).decode()
    labels = [
        value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        for value in sample.labels.values()
    ]
    page = landing_page(snap)
    seen_texts = {
        "exposition": exposition,
        "labels": "\n".join(labels),
        "landing page": page + html.unescape(page),
        "last_error": f"{good.last_error}\n{bad.last_error}",
    }
    for number, record in enumerate(records):
        seen_texts[f"log record {number} ({record.getMessage()})"] = "\n".join(
            [LogfmtFormatter().format(record), JsonFormatter().format(record)]
            + [str(value) for value in record_fields(record).values()]
        )
    for where, text in seen_texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret!r}) in the {where}"
    # A refresh token file holds the token it was given or one the fake issued since: nothing else, no secret.
    allowed = {INITIAL_REFRESH, *upstream.issued_refresh} if app_user else {INITIAL_REFRESH}
    assert file_text.removesuffix("\n") in allowed
    assert good_file_text.removesuffix("\n") == (upstream.good_refresh[-1] if good_app_user else GOOD_REFRESH)
