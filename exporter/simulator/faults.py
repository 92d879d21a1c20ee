"""Canned answers of the faults that replace the normal answer (status, throttle, html, xml, empty)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from exporter.simulator.responses import JSON, Response, entra_error, partner_error
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


def _reason(status: int) -> str:
    """The reason phrase of a status, or a generic one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _default_error(status: int, endpoint: str) -> Response:
    """A realistic error body for this status: Entra's shape for the token endpoint, Partner Center's otherwise."""
    phrase = _reason(status)
    if endpoint == "token":
        if status == 429 or status >= 500:
            return entra_error(
                status, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."
            )
        return entra_error(status, "invalid_request", 90014, f"The request was rejected: {phrase}.")
    code = phrase.replace(" ", "").replace("-", "")
    return partner_error(status, code, f"{phrase}. The request could not be completed; retry later.")


def canned(fault: Fault, endpoint: str) -> Response | None:
    """The answer of a fault that replaces the normal one; None for faults that change how it is sent."""
    if fault.kind == "status":
        assert fault.status is not None
        if fault.body is None and fault.content_type is None:
            answer = _default_error(fault.status, endpoint)
        else:
            default = _default_error(fault.status, endpoint)
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
            answer = partner_error(429, "TooManyRequests", f"Rate limit is exceeded. Try again in {seconds} seconds.")
        return answer.with_headers(("Retry-After", str(seconds)))
    if fault.kind == "html":
        return Response(200, _HTML, "text/html; charset=utf-8")
    if fault.kind == "xml":
        return Response(200, _XML, "application/xml; charset=utf-8")
    if fault.kind == "empty":
        return Response(200, b"", JSON)
    return None
