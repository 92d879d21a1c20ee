"""Property tests: whatever upstream sends, parsing yields a clean typed value or a ParseError."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.upstream.errors import parse_error_body
from exporter.upstream.model import (
    InvoiceSummary,
    InvoiceTypeSummary,
    ParseError,
    parse_summaries,
    parse_summary,
    parse_timestamp,
)

BODIES = Path(__file__).parent / "data" / "bodies"
VALID_BODIES = [
    (BODIES / name).read_bytes()
    for name in (
        "invoice_summary.json",
        "invoice_summaries.json",
        "summary-invoice-types.json",
        "summary-offsets.json",
        "summaries-multi-currency.json",
    )
]

# Enough examples to find shallow bugs in a couple of seconds per test; CI runs are not the place to dig deep.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def date_texts(draw: st.DrawFn) -> str:
    """Dates in the spellings upstream uses, and some it might."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    text = moment.isoformat(timespec="seconds")
    fraction = draw(st.sampled_from(["", ".0000000", ".5", ".1234567", f".{moment.microsecond:06d}"]))
    zone = draw(st.sampled_from(["", "Z", "+00:00", "+02:00", "-05:30", "+14:00", "-12:00"]))
    return text + fraction + zone


# The values that break naive code, drawn often: non-finite floats, and sums that overflow.
nasty_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0])
numberish = (
    nasty_numbers
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.from_regex(r"\A[+-]?[0-9]{0,6}(\.[0-9]{0,8})?([eE][+-]?[0-9]{1,4})?\Z")
)
dateish = date_texts() | st.just("0001-01-01T00:00:00") | st.text(max_size=25)
# Lone surrogates included: JSON can escape them, and they cannot be encoded back to UTF-8.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), min_size=1, max_size=8)
# Small sets of spellings, so that duplicate currencies and invoice types are common; blank ones come
# from the wrong-type values mixed in by maybe().
currencies = st.sampled_from(["USD", "usd", " Usd ", "EUR", "eur", "JPY"]) | any_text
invoice_types = st.sampled_from(["Recurring", "recurring", " ONETIME ", "OneTime", "one_time"]) | any_text

# Flat stand-ins for "any JSON" inside generated documents: nesting there buys little and costs time.
odd_values = (
    json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)
)


def maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A field value that is usually plausible and sometimes of a wrong type or shape."""
    # One draw in four: one_of would flatten odd_values' branches and let wrong types dominate, and then
    # too few documents would get past the type checks to exercise merging and de-duplication.
    return st.integers(min_value=0, max_value=3).flatmap(lambda roll: odd_values if roll == 0 else strategy)


summary_fields = {
    "balanceAmount": maybe(numberish),
    "currencySymbol": maybe(any_text),
    "accountingDate": maybe(dateish),
    "firstInvoiceCreationDate": maybe(dateish),
    "lastPaymentDate": maybe(dateish),
    "lastPaymentAmount": maybe(numberish),
    "latestInvoiceDate": maybe(dateish),
}
detail_summaries = st.fixed_dictionaries({}, optional={**summary_fields, "currencyCode": maybe(currencies)})
details = st.fixed_dictionaries(
    {"invoiceType": maybe(invoice_types), "summary": maybe(detail_summaries)}, optional={"extra": odd_values}
)
summary_documents = st.fixed_dictionaries(
    {"currencyCode": maybe(currencies)},
    optional={
        **summary_fields,
        "details": maybe(st.lists(maybe(details), max_size=6)),
        "links": odd_values,
    },
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid sample body with a few bytes deleted, replaced, inserted, or the tail cut off."""
    data = bytearray(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["delete", "replace", "insert", "truncate"]))
        if action == "truncate":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif position < len(data):
            if action == "delete":
                del data[position]
            else:
                data[position] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


def encode(document: object, bom: bool) -> bytes:
    """A JSON body as upstream would send it, optionally behind a byte order mark."""
    return (b"\xef\xbb\xbf" if bom else b"") + json.dumps(document).encode()


# --- what a successful parse promises ---------------------------------------------------------------------


def assert_clean_text(text: str) -> None:
    assert text
    assert text == text.strip()
    text.encode("utf-8")  # raises on lone surrogates, which no exposition could carry


def assert_number(value: float | None) -> None:
    assert value is None or (type(value) is float and math.isfinite(value))


def assert_detail(detail: InvoiceTypeSummary) -> None:
    assert type(detail) is InvoiceTypeSummary
    assert_clean_text(detail.invoice_type)
    assert detail.invoice_type == detail.invoice_type.lower()
    for value in (detail.balance, detail.last_payment_amount, detail.latest_invoice_time):
        assert_number(value)


def assert_summary(summary: InvoiceSummary) -> None:
    assert type(summary) is InvoiceSummary
    assert_clean_text(summary.currency)
    assert summary.currency == summary.currency.upper()
    if summary.symbol is not None:
        assert_clean_text(summary.symbol)
    for value in (
        summary.balance,
        summary.last_payment_amount,
        summary.last_payment_time,
        summary.latest_invoice_time,
        summary.first_invoice_time,
        summary.accounting_time,
    ):
        assert_number(value)
    assert type(summary.details) is tuple
    for detail in summary.details:
        assert_detail(detail)
    types = [d.invoice_type for d in summary.details]
    assert len(types) == len(set(types))


def assert_parse_error(error: ParseError) -> None:
    message = str(error)
    assert message.isprintable()
    assert 0 < len(message) <= 250


def check_summary(body: bytes) -> None:
    try:
        summary = parse_summary(body)
    except ParseError as error:
        assert_parse_error(error)
    else:
        assert_summary(summary)


def check_summaries(body: bytes) -> None:
    try:
        summaries = parse_summaries(body)
    except ParseError as error:
        assert_parse_error(error)
    else:
        assert type(summaries) is tuple
        for summary in summaries:
            assert_summary(summary)
        currencies = [s.currency for s in summaries]
        assert len(currencies) == len(set(currencies))


# --- properties -------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    check_summary(body)
    check_summaries(body)


@FUZZ
@given(json_values, st.booleans())
def test_arbitrary_json(document: object, bom: bool) -> None:
    body = encode(document, bom)
    check_summary(body)
    check_summaries(body)


@FUZZ
@given(summary_documents, st.booleans())
def test_summary_shaped_json(document: dict[str, object], bom: bool) -> None:
    check_summary(encode(document, bom))


@FUZZ
@given(st.lists(maybe(summary_documents), max_size=4), maybe(st.integers()))
def test_summaries_shaped_json(items: list[object], total: object) -> None:
    check_summaries(encode({"totalCount": total, "items": items}, bom=False))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Recurring", "recurring", " RECURRING ", "reCurring\t"]),
            st.none() | st.floats(min_value=-1e300, max_value=1e300) | st.integers(-(10**12), 10**12),
            st.none() | date_texts(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_spellings_of_one_invoice_type_merge_into_one(entries: list[tuple[str, float | None, str | None]]) -> None:
    detail_list = [
        {"invoiceType": kind, "summary": {"balanceAmount": amount, "latestInvoiceDate": date}}
        for kind, amount, date in entries
    ]

    (detail,) = parse_summary(encode({"currencyCode": "USD", "details": detail_list}, bom=False)).details

    amounts = [Fraction(amount) for _, amount, _ in entries if amount is not None]
    assert detail.balance == (float(sum(amounts)) if amounts else None)  # exact, in any order
    times = [t for _, _, date in entries if (t := parse_timestamp(date)) is not None]
    assert detail.latest_invoice_time == max(times, default=None)


@FUZZ
@given(mutated_bodies())
def test_mutated_sample_bodies(body: bytes) -> None:
    check_summary(body)
    check_summaries(body)


@FUZZ
@given(json_scalars | date_texts() | st.lists(json_scalars, max_size=2))
def test_parse_timestamp_is_a_finite_float_or_none(value: object) -> None:
    result = parse_timestamp(value)
    assert result is None or (type(result) is float and math.isfinite(result))


@FUZZ
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9999, 12, 31)))
def test_parse_timestamp_agrees_with_datetime(moment: datetime) -> None:
    text = moment.isoformat(timespec="microseconds")
    expected = moment.replace(tzinfo=UTC).timestamp()

    for spelling in (text, text + "Z", text + "+00:00"):
        result = parse_timestamp(spelling)
        assert result is not None
        assert math.isclose(result, expected, rel_tol=0, abs_tol=1e-3)


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: encode(v, bom=False)) | mutated_bodies())
def test_describe_error_body_is_short_printable_single_line(body: bytes) -> None:
    description = parse_error_body(body).description

    assert 0 < len(description) <= 300
    assert description.isprintable()
