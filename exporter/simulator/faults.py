"""Canned answers of the faults that replace the normal answer (status, throttle, html, xml, empty).

Partner Center's error codes: "Partner Center REST error codes",
https://learn.microsoft.com/partner-center/developer/error-codes. Its throttling answer comes from the gateway in
front of it: `{"statusCode": 429, "message": "Rate limit is exceeded. Try again in N seconds."}` with
`Retry-After: N`, "API throttling guidance", https://learn.microsoft.com/partner-center/developer/api-throttling-guidance.
Entra's: AADSTS90033 (service unavailable) and AADSTS50196 (client request loop) from the AADSTS reference.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from exporter.simulator.partner import ACCESS_DENIED, FORBIDDEN, INVALID_INPUT, NOT_FOUND, SERVICE_ERROR
from exporter.simulator.responses import JSON, Response, entra_error, gateway_error, partner_error
from exporter.simulator.scenario import Fault

DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_SLOW_BODY: Final = 5.0
DEFAULT_HUGE_MB: Final = 20.0
DEFAULT_RETRY_AFTER: Final = 10

_HTML: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
    b"<body><h1>Access denied by proxy</h1><p>Your session has expired. Please sign in again.</p></body></html>\n"
)
_XML: Final = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b"<Error><Code>ServiceUnavailable</Code><Message>The service is temporarily unavailable.</Message></Error>\n"
)


# Partner Center's code for an error status; other 4xx are "Invalid request input", 5xx "Unexpected service error".
_PARTNER_CODES: Final = {401: ACCESS_DENIED, 403: FORBIDDEN, 404: NOT_FOUND}


def _reason(status: int) -> str:
    """The reason phrase of a status, or a generic one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _default_error(status: int, endpoint: str, retry_after: int | None) -> Response:
    """A realistic error body for this status: Entra's shape for the token endpoint, Partner Center's otherwise."""
    phrase = _reason(status)
    if endpoint == "token":
        if status == 429 or status >= 500:
            return entra_error(
                status, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."
            )
        return entra_error(status, "invalid_request", 90014, f"The request was rejected: {phrase}.")
    if status == 429:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        return gateway_error(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
    code = _PARTNER_CODES.get(status, SERVICE_ERROR if status >= 500 else INVALID_INPUT)
    return partner_error(status, code, f"{phrase}. The request could not be completed; retry later.")


def canned(fault: Fault, endpoint: str) -> Response | None:
    """The answer of a fault that replaces the normal one; None for faults that change how it is sent."""
    if fault.kind == "status":
        assert fault.status is not None
        if fault.body is None and fault.content_type is None:
            answer = _default_error(fault.status, endpoint, fault.retry_after)
        else:
            default = _default_error(fault.status, endpoint, fault.retry_after)
            body = default.body if fault.body is None else fault.body.encode()
            answer = Response(fault.status, body, fault.content_type or JSON, default.headers)
        if fault.retry_after is not None:
            answer = answer.with_headers(("Retry-After", str(fault.retry_after)))
        return answer
    if fault.kind == "throttle":
        seconds = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
        if endpoint == "token":
            answer = entra_error(
                429,
                "temporarily_unavailable",
                50196,
                "The server terminated an operation because it encountered "
                "a client request loop. Please contact your app vendor.",
            )
        else:
            answer = gateway_error(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
        return answer.with_headers(("Retry-After", str(seconds)))
    if fault.kind == "html":
        return Response(200, _HTML, "text/html; charset=utf-8")
    if fault.kind == "xml":
        return Response(200, _XML, "application/xml; charset=utf-8")
    if fault.kind == "empty":
        return Response(200, b"", JSON)
    return None
