"""Partner Center and Entra ID over HTTP: one request in, one typed result or one classified UpstreamError out.

Requests go through httpx's own client: proxies from the environment as httpx reads them, one SSL context for
all clients, bodies streamed and capped. One small client per concurrency slot, not one large pool: at concurrency
50 a shared pool's bookkeeping cost ~3 ms of CPU per request, a client per slot ~0.8 ms (docs/architecture.md).
Clients keep no cookies: a client serves many tenants, and no tenant's request may carry another's cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal

import httpx

from exporter import __version__
from exporter.config import Config
from exporter.secret import Secret
from exporter.upstream.auth import TokenGrant
from exporter.upstream.errors import ErrorBody, UpstreamError, one_line, parse_error_body, parse_retry_after
from exporter.upstream.model import InvoiceSummary, ParseError, parse_summaries, parse_summary

# A real invoice summary is a few KiB; anything this large is a broken proxy or a runaway response.
MAX_BODY_BYTES = 8 * 1024 * 1024
_HEADERS = {"Accept": "application/json", "User-Agent": f"partnercenter-exporter/{__version__}"}
_PATHS = {"summary": "/v1/invoices/summary", "summaries": "/v1/invoices/summaries"}
# An access token goes into a header: printable ASCII without spaces (RFC 6750's b64token, loosened).
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,65536}")
_EXPIRES_RE = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
# Entra issues tokens for an hour or a day; more than a week is no token lifetime.
_MAX_EXPIRES_IN = 7 * 86400

TransportFactory = Callable[[], httpx.AsyncBaseTransport]
InvoiceEndpoint = Literal["summary", "summaries"]


class PartnerCenterClient:
    """Sends token and invoice requests; taking a client out of the pool (`slot()`) is taking a concurrency slot."""

    def __init__(self, config: Config, transport: TransportFactory | None = None, slots: int | None = None) -> None:
        # Each client would otherwise build its own context (~20 ms and ~1 MiB each); this one is httpx's own
        # (certifi, unless SSL_CERT_FILE or SSL_CERT_DIR name others).
        verify = httpx.create_ssl_context()
        self._clients = [
            slot_client(config.timeout, verify, transport() if transport is not None else None)
            for _ in range(slots or config.concurrency)
        ]
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._free.put_nowait(client)
        self.api_url = config.api_url
        self._login_url = config.login_url
        self.timeout = config.timeout

    def token_url(self, tenant_id: str) -> str:
        """The tenant's Entra ID token endpoint."""
        return f"{self._login_url}/{tenant_id}/oauth2/v2.0/token"

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Session]:
        """Wait for a free client, and give it back afterwards."""
        client = await self._free.get()
        try:
            yield Session(client, self)
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        """Close every client's connections."""
        await asyncio.gather(*(c.aclose() for c in self._clients), return_exceptions=True)


def slot_client(
    timeout: float, verify: ssl.SSLContext, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One concurrency slot's client (bench/floor.py measures httpx through the same): two connections, no cookies."""
    return httpx.AsyncClient(
        verify=verify,
        transport=transport,
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        timeout=timeout,
        headers=_HEADERS,
        # Entra's answers set cookies (`fpc`, "used for tracking requests and throttling": learn.microsoft.com/
        # entra/identity/authentication/concept-authentication-web-browser-cookies); a jar for no domain keeps
        # none, so no tenant's request carries another's.
        cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
    )


class Session:
    """The requests of one poll, on the client of its slot."""

    def __init__(self, client: httpx.AsyncClient, owner: PartnerCenterClient) -> None:
        self._client = client
        self._owner = owner

    async def request_token(self, tenant_id: str, form: dict[str, str]) -> TokenGrant:
        """POST the token request; Entra ID answers with an access token (and, App+User, a new refresh token)."""
        request_id = str(uuid.uuid4())
        request = self._client.build_request(
            "POST", self._owner.token_url(tenant_id), data=form, headers={"client-request-id": request_id}
        )
        status, body, headers = await self._send("token", request, request_id, None)
        if status != 200:
            sent = (form[key] for key in ("client_secret", "refresh_token", "client_assertion") if key in form)
            raise _http_error("token", status, _scrub(body, sent), headers, request_id, None)
        try:
            return parse_token(body)
        except ParseError as exc:
            raise UpstreamError("token", "invalid_response", ErrorBody(str(exc)), request_id=request_id) from None

    async def invoices(
        self, endpoint: InvoiceEndpoint, token: Secret, request_id: str | None = None
    ) -> tuple[InvoiceSummary, ...]:
        """GET one invoice endpoint: every currency's summary (one for `summary`); a new MS-RequestId unless given."""
        request_id, correlation_id = request_id or str(uuid.uuid4()), str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "MS-RequestId": request_id,
            "MS-CorrelationId": correlation_id,
            # "Required" (learn.microsoft.com/partner-center/developer/headers), though the SDK sends none.
            "MS-Contract-Version": "v1",
        }
        request = self._client.build_request("GET", self._owner.api_url + _PATHS[endpoint], headers=headers)
        status, body, response_headers = await self._send(endpoint, request, request_id, correlation_id)
        body = _scrub(body, (token.reveal(),))  # an invoice answer holds no token; an echo of a proxy's might
        if status != 200:
            raise _http_error(endpoint, status, body, response_headers, request_id, correlation_id)
        try:
            return (parse_summary(body),) if endpoint == "summary" else parse_summaries(body)
        except ParseError as exc:
            raise UpstreamError(
                endpoint, "invalid_response", ErrorBody(str(exc)), request_id=request_id, correlation_id=correlation_id
            ) from None

    async def _send(
        self, endpoint: str, request: httpx.Request, request_id: str, correlation_id: str | None
    ) -> tuple[int, bytes, httpx.Headers]:
        def failed(status: str, description: str) -> UpstreamError:
            return UpstreamError(
                endpoint, status, ErrorBody(description), request_id=request_id, correlation_id=correlation_id
            )

        try:
            # httpx's timeouts bound each socket operation; this bounds the whole exchange (a dribbling body too).
            async with asyncio.timeout(self._owner.timeout):
                response = await self._client.send(request, stream=True)
                try:
                    body = await _read_limited(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise failed("timeout", f"no answer within {self._owner.timeout:g}s") from None
        except _BodyTooLargeError:
            raise failed("invalid_response", f"body larger than {MAX_BODY_BYTES} bytes") from None
        except httpx.DecodingError:
            raise failed("invalid_response", "body does not match its Content-Encoding") from None
        except httpx.HTTPError as exc:  # connection refused or reset, TLS, protocol errors: a failed exchange
            raise failed("connection", one_line(f"{type(exc).__name__}: {exc}", 200)) from None
        return response.status_code, body, response.headers


class _BodyTooLargeError(Exception):
    pass


async def _read_limited(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes: the limit also stops a small compressed body that inflates without end.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _http_error(
    endpoint: str, status: int, body: bytes, headers: httpx.Headers, request_id: str, correlation_id: str | None
) -> UpstreamError:
    retry_after = parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
    return UpstreamError(
        endpoint,
        str(status),
        parse_error_body(body),
        request_id=request_id,
        correlation_id=correlation_id,
        retry_after=retry_after,
    )


def _scrub(body: bytes, secrets: Iterable[str]) -> bytes:
    """`body` without the request's own credentials, replaced before any of it is cut short for a message: a copy
    cut in half would no longer match the exact values that the poller redacts."""
    secrets = [secret for secret in secrets if secret]
    for secret in secrets:
        if (value := secret.encode()) in body:
            body = body.replace(value, b"<redacted>")
    if b"\\" not in body:
        return body
    # JSON may spell any character as an escape ("\u0061" for "a"), and the text parsed from it becomes label values
    # (currencySymbol) and log lines. So the credentials are looked for again in one spelling, json.dumps's, which
    # escapes character by character: a string holding a credential holds its spelling.
    try:
        canonical = json.dumps(json.loads(body.decode("utf-8-sig"))).encode()
    except (UnicodeDecodeError, ValueError, RecursionError):
        return body  # not JSON: nothing decodes its escapes
    spelled = [json.dumps(secret)[1:-1].encode() for secret in secrets]
    if not any(value in canonical for value in spelled):
        return body
    for value in spelled:
        canonical = canonical.replace(value, b"<redacted>")
    return canonical


def parse_token(body: bytes) -> TokenGrant:
    """A token answer -> TokenGrant; anything unusable (also for a header or a file) is a ParseError."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also integers past Python's digit limit
        raise ParseError("token answer is not JSON") from None
    if not isinstance(data, dict):
        raise ParseError("token answer is not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not _TOKEN_RE.fullmatch(access_token):
        raise ParseError("token answer has no usable access_token (a non-empty printable ASCII string)")
    expires_in = data.get("expires_in")
    # Entra sends expires_in as a number, and sometimes as a string of digits.
    if isinstance(expires_in, str) and _EXPIRES_RE.fullmatch(expires_in.strip()):
        expires_in = float(expires_in.strip())
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in <= _MAX_EXPIRES_IN:
        raise ParseError(f"token answer has no valid expires_in (seconds, at most {_MAX_EXPIRES_IN})")
    refresh = data.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not _TOKEN_RE.fullmatch(refresh)):
        raise ParseError("token answer has an unusable refresh_token (a non-empty printable ASCII string)")
    return TokenGrant(
        access_token=Secret(access_token),
        expires_in=float(expires_in),
        refresh_token=Secret(refresh) if refresh else None,
    )
