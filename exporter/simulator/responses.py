"""HTTP answers as values, and the error bodies of Entra ID and Partner Center."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Final

JSON: Final = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Response:
    """A complete HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, *extra: tuple[str, str]) -> Response:
        """The same answer with more headers."""
        return Response(self.status, self.body, self.content_type, self.headers + extra)


def json_response(status: int, document: object, *headers: tuple[str, str]) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(document, separators=(",", ":")).encode(), JSON, headers)


def entra_error(status: int, error: str, code: int, message: str) -> Response:
    """An error answer shaped like Microsoft Entra ID's token endpoint."""
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    description = (
        # The error reference's samples end "Timestamp: 2016-01-09 02:02:12Z": whole seconds.
        f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {stamp}"
    )
    document = {
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return json_response(status, document, ("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache"))


def partner_error(status: int, code: int, description: str, *headers: tuple[str, str]) -> Response:
    """An error answer shaped like the Partner Center REST API's: a numeric `code`, `description`, `data`, `source`.

    Shape and codes: "Partner Center REST error codes",
    https://learn.microsoft.com/partner-center/developer/error-codes; `source` and the numeric `code` as in the
    failure example of "Verify a partner MPN ID" (`{"code": 3000, ..., "data": [], "source": "PartnerFD"}`).
    """
    document = {"code": code, "description": description, "data": [], "source": "PartnerFD"}
    return json_response(status, document, *headers)


def gateway_error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """An error from the gateway in front of Partner Center: `{"statusCode": N, "message": "..."}`.

    Its throttling answer is documented in "API throttling guidance for partners calling Partner Center APIs",
    https://learn.microsoft.com/partner-center/developer/api-throttling-guidance ("Error code response").
    """
    return json_response(status, {"statusCode": status, "message": message}, *headers)
