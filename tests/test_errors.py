"""What Microsoft's error bodies say: description, codes and ids; Retry-After; UpstreamError's classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.upstream.errors import UpstreamError, parse_error_body, parse_retry_after

BODIES = Path(__file__).parent / "data" / "bodies"


def body(name: str) -> bytes:
    """A stored upstream body."""
    return (BODIES / name).read_bytes()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            body("error-partnercenter.json"),
            "code 600039: Authorization failed: the partner is not authorized to access this resource."
            " (source PartnerFD)",
        ),
        (
            b'{"code": "2000", "description": "Bad input", "data": ["field x", "field y"], "source": "PFD"}',
            'code 2000: Bad input (source PFD) data: ["field x","field y"]',
        ),
        (b'{"code": 404}', "code 404"),
        (body("error-gateway.json"), "status 429: Rate limit is exceeded. Try again in 2 seconds."),
        (b'{"statusCode": 401, "message": "Unauthorized"}', "status 401: Unauthorized"),
        (b'{"message": "Internal server error"}', "Internal server error"),
        (
            b'{"error": "invalid_client", "error_description": "AADSTS7000215: bad"}',
            "invalid_client: AADSTS7000215: bad",
        ),
        (b'{"error": {"code": "Forbidden", "message": "No access"}}', "Forbidden: No access"),
        (b'\xef\xbb\xbf{"statusCode": 503}', "status 503"),
        (b"", "empty body"),
        (b"  \r\n", "empty body"),
        (
            b"<html><body>Bad Gateway</body></html>",
            'non-JSON body (37 bytes): "<html><body>Bad Gateway</body></html>"',
        ),
        (b"\xff\xfe", 'non-JSON body (2 bytes): "\\xff\\xfe"'),
        (b'["unexpected"]', 'JSON body: ["unexpected"]'),
        (b'{"unknown": true}', 'JSON body: {"unknown":true}'),
        (b'{"code": null, "description": null}', "error body without details"),
    ],
)
def test_error_body_description(raw: bytes, expected: str) -> None:
    assert parse_error_body(raw).description == expected


def test_entra_error_gives_its_code_trace_and_correlation_ids() -> None:
    error = parse_error_body(body("error-entra.json"))

    assert error.description == (
        "invalid_grant: AADSTS700082: The refresh token has expired due to inactivity. The token was issued on "
        "2024-01-02T10:00:00.0000000Z and was inactive for 90.00:00:00."
    )
    assert error.code == "AADSTS700082"
    assert error.trace_id == "6a0d5e1b-3c5f-4b7a-9f0e-2d3c4b5a6f70"
    assert error.correlation_id == "0c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"code": 900421, "description": "MFA required", "data": [], "source": "PartnerApiAuth"}', "900421"),
        (b'{"code": "2007", "description": "x"}', "2007"),
        (b'{"error": {"code": "Forbidden", "message": "No access"}}', "Forbidden"),
        (b'{"statusCode": 429, "message": "Rate limit is exceeded."}', None),
        (b"<html></html>", None),
    ],
)
def test_error_body_code(raw: bytes, code: str | None) -> None:
    assert parse_error_body(raw).code == code


def test_mfa_refusal_is_recognised_only_on_a_401() -> None:
    body_900421 = parse_error_body(b'{"code": 900421, "description": "MFA required"}')
    assert UpstreamError("summaries", "401", body_900421).mfa_required
    assert not UpstreamError("summaries", "403", body_900421).mfa_required
    assert not UpstreamError("summaries", "401", parse_error_body(b'{"code": 600039}')).mfa_required


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 2.5 ", 2.5),
        ("-5", 0.0),
        ("\u00b2\u00b3", None),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=2_000_000_000.0) == seconds


@pytest.mark.parametrize(
    "raw",
    [
        b'{"code": 1, "description": "' + b"x" * 5000 + b'"}',
        b'{"statusCode": 500, "message": "\\u0000\\u001b[2J\\n\\n' + b"y" * 300 + b'"}',
        b"<html>" + b"\x00" * 500 + b"</html>",
        b'{"error": "e", "error_description": "' + "\u2028é€".encode() * 200 + b'"}',
        b"[" * 100_000,
        b'{"a": [' + b"1," * 1000 + b"1]}",
    ],
)
def test_error_body_description_is_short_printable_single_line(raw: bytes) -> None:
    description = parse_error_body(raw).description

    assert 0 < len(description) <= 300
    assert description.isprintable()


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (b'{"message": "echo: Authorization: Bearer abc.def-ghi"}', "abc.def-ghi"),
        (b"<pre>client_secret=s3cr3t&grant_type=client_credentials</pre>", "s3cr3t"),
        (b'{"error": "x", "error_description": "refresh_token: 0.AXoAtoken"}', "0.AXoAtoken"),
        (b'{"message": "token eyJ0eXAiOiJKV1QiLCJhbGciOiJ.eyJhdWQiOiJodHRwczov.c2lnbmF0dXJl"}', "eyJhdWQ"),
        (b'{"message": "cut short: eyJ0eXAiOiJKV1QiLCJhbGciOiJ.eyJhdWQiOi"}', "eyJhdWQiOi"),
    ],
)
def test_error_body_description_redacts_echoed_credentials(raw: bytes, secret: str) -> None:
    description = parse_error_body(raw).description

    assert secret not in description
    assert "<redacted>" in description


def test_log_fields_keep_one_type_per_field() -> None:
    http = UpstreamError("summary", "503", parse_error_body(b""), request_id="r", correlation_id="c")
    timeout = UpstreamError("token", "timeout", parse_error_body(b""), request_id="r")
    assert http.fields() == {
        "endpoint": "summary", "status": 503, "detail": "empty body", "request_id": "r", "correlation_id": "c"
    }  # fmt: skip
    assert timeout.fields() == {"endpoint": "token", "failure": "timeout", "detail": "empty body", "request_id": "r"}
