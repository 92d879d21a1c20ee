"""`UpstreamError`: one failed request, classified; and what the error bodies of Microsoft's services say.

Three shapes are known: Entra ID's token endpoint (`{"error", "error_description": "AADSTS<n>: ...", "error_codes",
"trace_id", "correlation_id"}`, learn.microsoft.com/entra/identity-platform/reference-error-codes), Partner
Center's (`{"code": 2007, "description", "data", "source"}`, learn.microsoft.com/partner-center/developer/
error-codes) and its API gateway's (`{"statusCode": 429, "message": "Rate limit is exceeded. ..."}`). Every text
that reaches a log line is one printable line, cut short, with anything credential-like redacted.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import math
import re
import time
from dataclasses import dataclass

# Partner Center's refusal of an App+User token without an MFA claim (enforced since 2026).
MFA_REQUIRED = "900421"
_SNIPPET_BYTES = 100
_SNIPPET_CHARS = 120
_DESCRIPTION_LIMIT = 300
# A proxy that echoes the request could put credentials into an error body; they must not reach a log line.
_CREDENTIAL = re.compile(
    r"(?i)\b(bearer\s+)\S+"
    r"|\b((?:client_secret|refresh_token|access_token|id_token|assertion)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
    r"|\beyJ[\w-]{8,}(?:\.[\w-]*)*"  # JWTs, also when cut short by a length limit
)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error body says: a one-line description and, when the service sent them, its ids."""

    description: str
    code: str | None = None  # Entra's AADSTS number, or Partner Center's code
    trace_id: str | None = None  # Entra
    correlation_id: str | None = None  # Entra's own correlation id


class UpstreamError(Exception):
    """One failed request, classified by `status`: an HTTP status code, or timeout/connection/invalid_response."""

    def __init__(
        self,
        endpoint: str,
        status: str,
        body: ErrorBody,
        *,
        request_id: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {status}: {body.description}")
        self.endpoint = endpoint
        self.status = status
        self.body = body
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth another try within the same poll: server-side errors and transport failures."""
        return self.status in ("timeout", "connection") or (self.status.isdigit() and self.status[0] == "5")

    @property
    def mfa_required(self) -> bool:
        """Partner Center refused an App+User token that has no MFA claim; a new token cannot fix that."""
        return self.status == "401" and self.body.code == MFA_REQUIRED

    def fields(self) -> dict[str, object]:
        """The log fields of this failure (support cases need the ids)."""
        fields: dict[str, object | None] = {
            "endpoint": self.endpoint,
            # One type per field, for log stores that index them: timeout, connection, ... go to `failure`.
            "status": int(self.status) if self.status.isdigit() else None,
            "failure": None if self.status.isdigit() else self.status,
            "code": self.body.code,
            "detail": self.body.description,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
            "trace_id": self.body.trace_id,
            "entra_correlation_id": self.body.correlation_id,
            "retry_after": self.retry_after,
        }
        return {key: value for key, value in fields.items() if value is not None}


def parse_error_body(body: bytes) -> ErrorBody:
    """Describe an error body of any shape in one short printable line, with the ids it carries."""
    text = body.decode("utf-8-sig", "replace")
    if not text.strip():
        return ErrorBody("empty body")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return ErrorBody(one_line(f"non-JSON body ({len(body)} bytes): {snippet(body)}"))
    if not isinstance(document, dict):
        return ErrorBody(one_line(f"JSON body: {_compact(document)}"))
    error = document.get("error")
    if isinstance(error, str):
        # Entra's description is "AADSTS<n>: <message>\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ...".
        description = str(document.get("error_description") or "").split("\n", 1)[0]
        codes = document.get("error_codes")
        code = _text(codes[0]) if isinstance(codes, list) and codes else None
        return ErrorBody(
            one_line(f"{error}: {description}" if description else error),
            code=f"AADSTS{code}" if code and code.isdigit() else code,
            trace_id=_text(document.get("trace_id")),
            correlation_id=_text(document.get("correlation_id")),
        )
    if "code" in document or "description" in document:
        text = _join(document.get("code"), document.get("description"), "code ")
        if (source := _text(document.get("source"))) is not None:
            text += f" (source {source})"
        if document.get("data") not in (None, [], {}, ""):
            text += f" data: {_compact(document['data'])}"
        return ErrorBody(one_line(text), code=_text(document.get("code")))
    if "statusCode" in document or "message" in document:
        return ErrorBody(one_line(_join(document.get("statusCode"), document.get("message"), "status ")))
    if isinstance(error, dict):  # Azure style: {"error": {"code": "...", "message": "..."}}
        return ErrorBody(one_line(_join(error.get("code"), error.get("message"), "")), code=_text(error.get("code")))
    return ErrorBody(one_line(f"JSON body: {_compact(document)}"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isascii() else math.nan
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


def snippet(body: bytes) -> str:
    """The first 100 bytes of a body as printable, quoted text."""
    # An incremental decoder drops a multi-byte character cut in half by the slice instead of garbling it.
    head = codecs.getincrementaldecoder("utf-8")("backslashreplace").decode(body[:_SNIPPET_BYTES])
    text = _printable(head.removeprefix(chr(0xFEFF)))
    more = "..." if len(body) > _SNIPPET_BYTES or len(text) > _SNIPPET_CHARS else ""
    return f'"{text[:_SNIPPET_CHARS]}{more}"'


def one_line(text: str, limit: int = _DESCRIPTION_LIMIT) -> str:
    """Printable single-line text of at most `limit` characters, credentials redacted."""
    line = _printable(text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _printable(text: str) -> str:
    """Collapse whitespace, escape other unprintable characters and redact anything credential-like."""
    text = " ".join(text.split())
    text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    return _CREDENTIAL.sub(lambda m: f"{m[1] or m[2] or ''}<redacted>", text)


def _join(head_value: object, tail_value: object, prefix: str) -> str:
    """`prefix+head: tail`, leaving out whichever part is empty."""
    head, tail = _text(head_value), _text(tail_value)
    if head and tail:
        return f"{prefix}{head}: {tail}"
    return f"{prefix}{head}" if head else tail or "error body without details"


def _text(value: object) -> str | None:
    """A JSON value as short text (strings as they are), or None."""
    return None if value in (None, "") else one_line(value if isinstance(value, str) else _compact(value), 120)


def _compact(value: object) -> str:
    """Compact JSON text of a parsed value, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return "?"
    return text[: _DESCRIPTION_LIMIT + 1]
