"""Partner Center and Entra ID over HTTP: one request in, one typed result or one classified UpstreamError out."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import httpx

from exporter import __version__
from exporter.config import TenantConfig
from exporter.model import InvoiceSummary, ParseError, describe_error_body, parse_summaries, parse_summary
from exporter.secret import Secret

SCOPE = "https://api.partnercenter.microsoft.com/.default"
# A real invoice summary is a few KiB; anything this large is a broken proxy or a runaway response.
MAX_BODY_BYTES = 8 * 1024 * 1024
USER_AGENT = f"partnercenter-exporter/{__version__}"
_COMMON_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate", "User-Agent": USER_AGENT}

Endpoint = Literal["token", "summary", "summaries"]
_PATHS = {"summary": "/v1/invoices/summary", "summaries": "/v1/invoices/summaries"}


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What the token endpoint gave us."""

    access_token: Secret
    expires_in: float
    refresh_token: Secret | None  # a rotated refresh token (App+User), to replace the old one


class UpstreamError(Exception):
    """One failed request, classified by `status`: an HTTP status code, or timeout/connection/invalid_response."""

    def __init__(
        self,
        endpoint: str,
        status: str,
        description: str,
        *,
        request_id: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {status}: {description}")
        self.endpoint = endpoint
        self.status = status
        self.description = description
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth another try within the same poll: server-side errors and transport failures."""
        return self.status in ("timeout", "connection") or (self.status.isdigit() and self.status[0] == "5")


class PartnerCenterClient:
    """Sends requests straight to an httpx transport per upstream; holds no per-tenant state.

    No httpx.AsyncClient in between: its layers (URL merging, auth and redirect flows, cookie extraction
    through the email package) were a tenth of a poll's CPU and do nothing for these requests.
    """

    def __init__(
        self,
        api: httpx.AsyncBaseTransport,
        login: httpx.AsyncBaseTransport,
        api_url: str,
        login_url: str,
        timeout: float,
    ) -> None:
        self._api = api
        self._login = login
        self._api_urls = {endpoint: httpx.URL(api_url + path) for endpoint, path in _PATHS.items()}
        self._login_url = login_url
        self._timeout = timeout
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}

    async def request_token(self, tenant: TenantConfig, refresh_token: Secret | None) -> TokenGrant:
        """Ask Entra ID for an access token: refresh-token grant when given one, else client credentials."""
        form = {"client_id": tenant.client_id, "scope": SCOPE}
        if refresh_token is not None:
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = refresh_token.reveal()
        else:
            form["grant_type"] = "client_credentials"
        if tenant.client_secret is not None:
            form["client_secret"] = tenant.client_secret.reveal()
        request_id = str(uuid.uuid4())
        url = httpx.URL(f"{self._login_url}/{tenant.tenant_id}/oauth2/v2.0/token")
        headers = {**_COMMON_HEADERS, "client-request-id": request_id}
        status, body, response_headers = await self._send("token", "POST", url, headers, form, request_id, None)
        if status != 200:
            raise _http_error("token", status, body, response_headers, request_id, None)
        try:
            return _parse_token(body)
        except ParseError as exc:
            raise UpstreamError("token", "invalid_response", str(exc), request_id=request_id) from None

    async def get_invoice_summaries(
        self, endpoint: Literal["summary", "summaries"], token: Secret
    ) -> tuple[InvoiceSummary, ...]:
        """GET one invoice endpoint: every currency's summary (one for `summary`)."""
        request_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        headers = {
            **_COMMON_HEADERS,
            "Authorization": f"Bearer {token.reveal()}",
            "MS-RequestId": request_id,
            "MS-CorrelationId": correlation_id,
        }
        status, body, response_headers = await self._send(
            endpoint, "GET", self._api_urls[endpoint], headers, None, request_id, correlation_id
        )
        if status != 200:
            raise _http_error(endpoint, status, body, response_headers, request_id, correlation_id)
        try:
            return (parse_summary(body),) if endpoint == "summary" else parse_summaries(body)
        except ParseError as exc:
            raise UpstreamError(
                endpoint, "invalid_response", str(exc), request_id=request_id, correlation_id=correlation_id
            ) from None

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        form: dict[str, str] | None,
        request_id: str,
        correlation_id: str | None,
    ) -> tuple[int, bytes, httpx.Headers]:
        try:
            # The transport's timeouts bound each socket operation; this bounds the whole exchange (a dribbling
            # body too).
            async with asyncio.timeout(self._timeout):
                request = httpx.Request(method, url, headers=headers, data=form, extensions=self._extensions)
                transport = self._login if endpoint == "token" else self._api
                response = await transport.handle_async_request(request)
                try:
                    body = await _read_limited(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamError(
                endpoint,
                "timeout",
                f"no answer within {self._timeout:g}s",
                request_id=request_id,
                correlation_id=correlation_id,
            ) from None
        except _BodyTooLargeError:
            raise UpstreamError(
                endpoint,
                "invalid_response",
                f"body larger than {MAX_BODY_BYTES} bytes",
                request_id=request_id,
                correlation_id=correlation_id,
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                endpoint, "connection", type(exc).__name__, request_id=request_id, correlation_id=correlation_id
            ) from None
        except httpx.DecodingError:
            raise UpstreamError(
                endpoint,
                "invalid_response",
                "body does not match its Content-Encoding",
                request_id=request_id,
                correlation_id=correlation_id,
            ) from None
        except httpx.HTTPError as exc:  # anything else httpx raises is a failed exchange, not our bug
            raise UpstreamError(
                endpoint, "connection", type(exc).__name__, request_id=request_id, correlation_id=correlation_id
            ) from None
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
    endpoint: str,
    status: int,
    body: bytes,
    headers: httpx.Headers,
    request_id: str,
    correlation_id: str | None,
) -> UpstreamError:
    retry_after = parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
    return UpstreamError(
        endpoint,
        str(status),
        describe_error_body(body),
        request_id=request_id,
        correlation_id=correlation_id,
        retry_after=retry_after,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _parse_token(body: bytes) -> TokenGrant:
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ParseError("token answer is not JSON") from None
    if not isinstance(data, dict):
        raise ParseError("token answer is not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ParseError("token answer has no access_token")
    expires_in = data.get("expires_in")
    # Entra sends expires_in as a number, and sometimes as a string of digits.
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in.strip())
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**7:
        raise ParseError("token answer has no valid expires_in")
    refresh = data.get("refresh_token")
    return TokenGrant(
        access_token=Secret(access_token),
        expires_in=float(expires_in),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
    )
