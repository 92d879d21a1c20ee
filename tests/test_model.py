"""Upstream body parsing: the Microsoft samples, every known quirk, and what a bad body turns into."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pytest

from exporter.upstream.model import (
    InvoiceSummary,
    InvoiceTypeSummary,
    ParseError,
    parse_summaries,
    parse_summary,
    parse_timestamp,
)

BODIES = Path(__file__).parent / "data" / "bodies"


def body(name: str) -> bytes:
    """The bytes of one sample body."""
    return (BODIES / name).read_bytes()


def ts(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    tz: timezone = UTC,
) -> float:
    """Unix seconds of a wall-clock time in `tz`, computed by the standard library."""
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz).timestamp()


def summary_json(**fields: object) -> bytes:
    """A summary body with currencyCode USD and the given fields."""
    return json.dumps({"currencyCode": "USD", **fields}).encode()


MARCH_16_2018 = ts(2018, 3, 16)

SAMPLE = InvoiceSummary(
    currency="USD",
    symbol="$",
    balance=751094.39,
    last_payment_amount=1000.0,
    last_payment_time=ts(2017, 1, 1, 12),
    latest_invoice_time=MARCH_16_2018,
    first_invoice_time=ts(2017, 1, 21),
    accounting_time=MARCH_16_2018,
    details=(
        InvoiceTypeSummary("recurring", 202955.87, 1000.0, None, last_payment_time=ts(2017, 1, 1, 12)),
        InvoiceTypeSummary("onetime", 548138.52, 0.0, MARCH_16_2018),
    ),
)


# --- the documentation samples -------------------------------------------------------------------------


def test_documentation_summary_sample() -> None:
    assert parse_summary(body("invoice_summary.json")) == SAMPLE


def test_documentation_summaries_sample() -> None:
    summaries = parse_summaries(body("invoice_summaries.json"))

    assert [s.currency for s in summaries] == ["GBP", "CHF", "EUR"]
    assert summaries[0] == dataclasses.replace(SAMPLE, currency="GBP", symbol="£")
    assert summaries[1] == InvoiceSummary(
        currency="CHF",
        symbol="CHF",
        balance=1230.33,
        last_payment_amount=0.0,
        last_payment_time=None,
        latest_invoice_time=MARCH_16_2018,
        first_invoice_time=MARCH_16_2018,
        accounting_time=MARCH_16_2018,
        details=(InvoiceTypeSummary("onetime", 1230.33, 0.0, MARCH_16_2018),),
    )
    assert summaries[2].symbol == "€"
    assert summaries[2].balance == 1001.12


def test_values_are_frozen() -> None:
    summary = parse_summary(body("invoice_summary.json"))

    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.balance = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.details[0].balance = 0.0  # type: ignore[misc]


# --- the quirks, one sample body each --------------------------------------------------------------------


def test_byte_order_mark_is_ignored() -> None:
    raw = body("summary-bom.json")
    assert raw.startswith(b"\xef\xbb\xbf")

    assert parse_summary(raw) == SAMPLE


def test_nulls_become_none_and_unusable_details_are_skipped() -> None:
    assert parse_summary(body("summary-nulls.json")) == InvoiceSummary(
        currency="USD",
        symbol=None,
        balance=None,
        last_payment_amount=None,
        last_payment_time=None,
        latest_invoice_time=None,
        first_invoice_time=None,
        accounting_time=None,
        details=(InvoiceTypeSummary("onetime", None, None, None),),
    )


def test_never_dates_give_none_but_amounts_stay() -> None:
    summary = parse_summary(body("summary-never-dates.json"))

    assert summary.accounting_time is None
    assert summary.first_invoice_time is None
    assert summary.last_payment_time is None
    assert summary.latest_invoice_time is None
    assert summary.balance == 0.0
    assert summary.last_payment_amount == 0.0
    assert summary.details == (InvoiceTypeSummary("recurring", 0.0, 0.0, None),)


def test_invoice_types_are_lower_cased_merged_and_kept_in_first_seen_order() -> None:
    summary = parse_summary(body("summary-invoice-types.json"))

    assert summary.currency == "USD"  # " usd " in the body
    assert summary.details == (
        # "Recurring" + "recurring": amounts summed, the later date kept
        InvoiceTypeSummary("recurring", 100.25 + 300.5, 50.5 + 25.25, ts(2024, 5, 1)),
        # "OneTime" + " ONETIME ": the null payment adds nothing, the "never" date does not win
        InvoiceTypeSummary("onetime", 200.5 + 1.25, 0.0, ts(2024, 4, 1)),
        # a different spelling is a different label: free text, never an enum
        InvoiceTypeSummary("one_time", 7.75, 7.75, ts(2024, 2, 1)),
        # new types pass through; the detail's own currencyCode (EUR) is not used
        InvoiceTypeSummary("marketplace", 390.0, None, ts(2024, 4, 20, 12)),
    )


def test_integers_become_floats() -> None:
    summary = parse_summary(body("summary-integers.json"))

    assert summary.currency == "JPY"
    assert summary.balance == 751094.0
    assert summary.last_payment_amount == 1000.0
    assert summary.details == (
        InvoiceTypeSummary("recurring", 202956.0, 1000.0, ts(2018, 2, 16)),
        InvoiceTypeSummary("onetime", -548138.0, 0.0, MARCH_16_2018),
    )
    amounts: list[float | None] = [summary.balance, summary.last_payment_amount]
    amounts += [d.balance for d in summary.details] + [d.last_payment_amount for d in summary.details]
    assert all(type(a) is float for a in amounts)


def test_numeric_strings_are_numbers_but_other_text_is_not() -> None:
    summary = parse_summary(body("summary-numeric-strings.json"))

    assert summary.balance == 751094.39
    assert summary.last_payment_amount == 1000.0
    assert summary.details == (
        InvoiceTypeSummary("recurring", -1500.0, None, None),  # "1,000.00" is not a number
        InvoiceTypeSummary("onetime", None, None, None),  # "NaN", "Infinity"
    )


def test_non_finite_numbers_and_booleans_become_none() -> None:
    summary = parse_summary(body("summary-non-finite.json"))

    assert summary.balance is None
    assert summary.last_payment_amount is None
    assert summary.latest_invoice_time == MARCH_16_2018
    assert summary.details == (
        InvoiceTypeSummary("recurring", None, None, None),
        InvoiceTypeSummary("onetime", None, None, None),
    )


def test_missing_fields_and_details() -> None:
    assert parse_summary(body("summary-missing-details.json")) == InvoiceSummary(
        currency="GBP",
        symbol=None,
        balance=12.5,
        last_payment_amount=None,
        last_payment_time=None,
        latest_invoice_time=MARCH_16_2018,
        first_invoice_time=None,
        accounting_time=MARCH_16_2018,
        details=(),
    )


def test_offsets_and_seven_digit_fractions() -> None:
    summary = parse_summary(body("summary-offsets.json"))

    assert summary.accounting_time == pytest.approx(ts(2024, 5, 1, 10, 20, 30) + 0.1234567, abs=1e-6)
    assert summary.first_invoice_time == ts(2023, 11, 5, 21, 30)  # +02:00
    assert summary.last_payment_time == ts(2024, 4, 30, 23, 0, 0, 500000)  # .5-05:00
    assert summary.latest_invoice_time == ts(2024, 5, 1)  # 7 zero digits, no zone
    recurring, onetime = summary.details
    assert recurring.latest_invoice_time == pytest.approx(ts(2024, 4, 1, 3, 45) + 0.1234567, abs=1e-6)
    assert onetime.latest_invoice_time is None  # "not a date"


def test_summaries_upper_case_and_keep_the_first_of_duplicate_currencies() -> None:
    summaries = parse_summaries(body("summaries-multi-currency.json"))

    assert [s.currency for s in summaries] == ["USD", "EUR", "JPY", "GBP"]
    usd, eur, jpy, gbp = summaries
    assert (usd.balance, usd.symbol) == (1500.5, "$")  # not the later USD item's 99999 / "US$"
    assert usd.details == (
        InvoiceTypeSummary("recurring", 1000.5, None, ts(2024, 5, 1)),
        InvoiceTypeSummary("onetime", 500.0, None, ts(2024, 4, 1)),
    )
    assert eur.last_payment_time is None
    assert eur.details == (InvoiceTypeSummary("one_time", 980.25, None, ts(2024, 5, 1)),)
    assert jpy.latest_invoice_time == ts(2024, 4, 30, 15)  # 2024-05-01T00:00:00+09:00
    assert jpy.details == ()
    assert (gbp.balance, gbp.first_invoice_time, gbp.latest_invoice_time) == (0.0, None, None)


def test_summaries_with_no_items() -> None:
    assert parse_summaries(body("summaries-empty.json")) == ()


# --- parse_timestamp -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-03-16T00:00:00", ts(2018, 3, 16)),  # no zone: UTC
        ("2017-01-21T00:00:00Z", ts(2017, 1, 21)),
        ("2017-01-01T12:00:00z", ts(2017, 1, 1, 12)),
        ("2017-01-01T12:00:00+00:00", ts(2017, 1, 1, 12)),
        ("2024-05-01T10:20:30+02:00", ts(2024, 5, 1, 8, 20, 30)),
        ("2024-05-01T10:20:30-07:30", ts(2024, 5, 1, 17, 50, 30)),
        ("2024-05-01T10:20:30+0200", ts(2024, 5, 1, 8, 20, 30)),
        ("2024-05-01T10:20:30+05:30", ts(2024, 5, 1, 10, 20, 30, tz=timezone(timedelta(hours=5, minutes=30)))),
        ("2024-05-01T10:20:30.5Z", ts(2024, 5, 1, 10, 20, 30, 500000)),
        ("2024-05-01T10:20:30.0000000Z", ts(2024, 5, 1, 10, 20, 30)),
        ("2024-05-01 10:20:30", ts(2024, 5, 1, 10, 20, 30)),
        ("2024-05-01T10:20", ts(2024, 5, 1, 10, 20)),
        ("2024-05-01", ts(2024, 5, 1)),
        ("  2024-05-01T00:00:00Z\n", ts(2024, 5, 1)),
        ("1969-12-31T23:59:59Z", -1.0),
        ("1970-01-01T00:00:00Z", 0.0),
        ("9999-12-31T23:59:59", ts(9999, 12, 31, 23, 59, 59)),
        ("0002-01-01T00:00:00", ts(2, 1, 1)),
    ],
)
def test_parse_timestamp(text: str, expected: float) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "whole_seconds", "fraction"),
    [
        ("2024-05-01T10:20:30.1234567Z", ts(2024, 5, 1, 10, 20, 30), "0.1234567"),
        ("2024-05-01T10:20:30.9999999+01:00", ts(2024, 5, 1, 9, 20, 30), "0.9999999"),
        ("2024-05-01T10:20:30.123456789", ts(2024, 5, 1, 10, 20, 30), "0.123456789"),
    ],
)
def test_parse_timestamp_keeps_more_than_six_fraction_digits(text: str, whole_seconds: float, fraction: str) -> None:
    # In 2024 a float's step is 2.4e-7 s: a tolerance of 4e-7 allows two roundings, but not the 7e-7 or more that
    # dropping the digits after the sixth would cost (1e-6 did allow that).
    expected = float(Fraction(int(whole_seconds)) + Fraction(fraction))
    assert parse_timestamp(text) == pytest.approx(expected, abs=4e-7)


def test_parse_timestamp_seventh_fraction_digit_counts() -> None:
    # Near the epoch a float resolves 1e-7 s; in 2024 it does not, so only here can the 7th digit show.
    assert parse_timestamp("1970-01-01T00:00:01.1234567Z") == pytest.approx(1.1234567, abs=1e-9)
    assert parse_timestamp("1970-01-01T01:00:00.0000001+01:00") == pytest.approx(1e-7, abs=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00.0000000Z",
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00-05:00",
        "0001-06-15T12:34:56",
        "0001-12-31T23:59:59.9999999",
    ],
)
def test_parse_timestamp_year_one_means_never(text: str) -> None:
    assert parse_timestamp(text) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "yesterday",
        "2024-13-01T00:00:00",
        "2024-02-30T00:00:00",
        "2024-05-01T24:00:00",
        "2024-05-01T23:59:60Z",
        "2024-05-01T10:20:30+25:00",
        "2024-05-01T10:20:30+02:75",
        "2024-05-01T10:20:30 UTC",
        "0000-01-01T00:00:00",
        "24-05-01T00:00:00",
        "2024-05-01T10:20:30.Z",
        "\u0662\u0660\u0662\u0664-05-01T00:00:00",  # Arabic-Indic digits
        1714521600,
        1714521600.0,
        True,
        ["2024-05-01T00:00:00Z"],
        {"date": "2024-05-01T00:00:00Z"},
    ],
)
def test_parse_timestamp_unparseable_is_none(value: object) -> None:
    assert parse_timestamp(value) is None


# --- fields -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (-12, -12.0),
        (12.5, 12.5),
        ("12.5", 12.5),
        ("-3", -3.0),
        ("+3", 3.0),
        (" 1e3 ", 1000.0),
        (".5", 0.5),
        (10**400, None),  # too large for a float
        ("1e400", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("12,5", None),
        ("", None),
        (True, None),
        (False, None),
        (None, None),
        ([1], None),
        ({"amount": 1}, None),
    ],
)
def test_amounts(value: object, expected: float | None) -> None:
    assert parse_summary(summary_json(balanceAmount=value)).balance == expected


def test_currency_is_stripped_and_upper_cased_symbol_is_stripped() -> None:
    summary = parse_summary(json.dumps({"currencyCode": " eur\t", "currencySymbol": " € "}).encode())

    assert (summary.currency, summary.symbol) == ("EUR", "€")


@pytest.mark.parametrize("symbol", [None, "", "  ", 36, ["$"]])
def test_unusable_symbol_is_none(symbol: object) -> None:
    assert parse_summary(summary_json(currencySymbol=symbol)).symbol is None


def test_unknown_fields_are_ignored() -> None:
    raw = summary_json(balanceAmount=1, futureField={"a": [1, 2, {"b": None}]}, details=[], links=[1])

    assert parse_summary(raw).balance == 1.0


@pytest.mark.parametrize("details", [None, {}, "Recurring", 0, [], [None, 1, "x", []]])
def test_details_that_are_not_a_list_of_objects_give_no_details(details: object) -> None:
    assert parse_summary(summary_json(details=details)).details == ()


def test_details_use_the_parent_currency() -> None:
    raw = summary_json(details=[{"invoiceType": "Recurring", "summary": {"currencyCode": "EUR", "balanceAmount": 1}}])

    summary = parse_summary(raw)
    assert summary.currency == "USD"
    assert summary.details == (InvoiceTypeSummary("recurring", 1.0, None, None),)


def test_detail_without_currency_is_kept() -> None:
    raw = summary_json(details=[{"invoiceType": "OneTime", "summary": {"balanceAmount": 2}}])

    assert parse_summary(raw).details == (InvoiceTypeSummary("onetime", 2.0, None, None),)


def test_merged_amounts_that_overflow_become_none() -> None:
    detail = {"invoiceType": "Recurring", "summary": {"balanceAmount": 1e308, "lastPaymentAmount": 1}}

    summary = parse_summary(summary_json(details=[detail, detail]))
    assert summary.details == (InvoiceTypeSummary("recurring", None, 2.0, None),)


def test_lone_surrogates_cannot_reach_a_label() -> None:
    raw = b'{"currencyCode": "USD", "currencySymbol": "\\udfff", "details": ' + (
        b'[{"invoiceType": "Re\\udc00curring", "summary": {}}]}'
    )

    summary = parse_summary(raw)
    assert summary.symbol == "?"
    assert summary.details[0].invoice_type == "re?curring"


def test_escaped_surrogate_pairs_are_kept() -> None:
    summary = parse_summary(b'{"currencyCode": "XTS", "currencySymbol": "\\ud83d\\udcb0"}')

    assert summary.symbol == "\U0001f4b0"


# --- bodies that are errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty body"),
        (b" \r\n\t", "empty body"),
        (b"\xef\xbb\xbf", "empty body"),
        (b"null", "body: expected a JSON object, got null"),
        (b"[]", "body: expected a JSON object, got an array"),
        (b'"USD"', "body: expected a JSON object, got a string"),
        (b"42", "body: expected a JSON object, got a number"),
        (b"true", "body: expected a JSON object, got a boolean"),
        (b"{}", "currencyCode: missing or empty"),
        (b'{"currencyCode": null}', "currencyCode: missing or empty"),
        (b'{"currencyCode": ""}', "currencyCode: missing or empty"),
        (b'{"currencyCode": "  "}', "currencyCode: missing or empty"),
        (b'{"currencyCode": 840}', "currencyCode: missing or empty"),
        (b'{"currencyCode": ["USD"]}', "currencyCode: missing or empty"),
        (b"<html></html>", 'body is not JSON (Expecting value at char 0): "<html></html>"'),
        (b'{"a": 1', 'body is not JSON (Expecting \',\' delimiter at char 7): "{"a": 1"'),
        (b'{"currencyCode": "GBP", "currencySymbol": "\xa3"}', "body is not valid UTF-8 (byte 43): "),
    ],
)
def test_parse_summary_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_summary(raw)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("invalid-empty.json", "empty body"),
        (
            "invalid-html-200.html",
            'body is not JSON (Expecting value at char 0): "<!DOCTYPE html> <html> <head>',
        ),
        ("invalid-xml.xml", 'body is not JSON (Expecting value at char 0): "<?xml version="1.0"'),
        (
            "invalid-truncated.json",
            "body is not JSON (Expecting property name enclosed in double quotes at char 600",
        ),
        ("invalid-no-currency.json", "currencyCode: missing or empty"),
        ("invalid-utf8.json", "body is not valid UTF-8 (byte 66): "),
        ("error-partnercenter.json", "currencyCode: missing or empty"),
    ],
)
def test_invalid_sample_bodies(name: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_summary(body(name))
    assert str(caught.value).startswith(message)
    with pytest.raises(ParseError):
        parse_summaries(body(name))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "body: expected a JSON object, got an array"),
        (b"{}", "items: missing"),
        (b'{"totalCount": 0}', "items: missing"),
        (b'{"items": null}', "items: expected a list, got null"),
        (b'{"items": {"currencyCode": "USD"}}', "items: expected a list, got an object"),
        (b'{"items": [{"currencyCode": "USD"}, 7]}', "items[1]: expected a JSON object, got a number"),
        (
            b'{"items": [{"currencyCode": "USD"}, {"balanceAmount": 1}]}',
            "items[1].currencyCode: missing or empty",
        ),
        (body("invoice_summary.json"), "items: missing"),
        (body("invalid-html-200.html"), "body is not JSON"),
    ],
)
def test_parse_summaries_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_summaries(raw)
    assert str(caught.value).startswith(message)


def test_deep_nesting_is_a_parse_error() -> None:
    deep = b'{"currencyCode": "USD", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

    with pytest.raises(ParseError, match="nested too deeply"):
        parse_summary(deep)
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_summaries(deep)


def test_oversized_integer_literal_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="not JSON"):
        parse_summary(b'{"currencyCode": "USD", "balanceAmount": ' + b"9" * 5000 + b"}")


def test_error_echoes_at_most_100_bytes_of_the_body() -> None:
    raw = b"<html>" + b"A" * 94 + b"BBBB" + b"C" * 10_000

    with pytest.raises(ParseError) as caught:
        parse_summary(raw)
    message = str(caught.value)
    assert "A" * 94 + '..."' in message
    assert "B" not in message
    assert len(message) < 200


def test_error_message_is_printable_single_line() -> None:
    raw = b"\x00\x1b[31m<html>\r\n\tproxy\x7f error\xe2\x80\xa8</html>"

    with pytest.raises(ParseError) as caught:
        parse_summary(raw)
    message = str(caught.value)
    assert message.isprintable()
    assert "\\x00\\x1b[31m<html> proxy\\x7f error </html>" in message


def test_error_message_stays_short_when_every_byte_needs_escaping() -> None:
    with pytest.raises(ParseError) as caught:
        parse_summary(b"\x01" * 100)
    message = str(caught.value)
    assert message.startswith('body is not JSON (Expecting value at char 0): "\\x01\\x01')
    assert message.endswith('..."')
    assert len(message) < 200


def test_error_message_does_not_cut_a_character_in_half() -> None:
    raw = b"x" * 99 + "€".encode() + b"tail"  # the euro sign straddles byte 100

    with pytest.raises(ParseError) as caught:
        parse_summary(raw)
    assert '"' + "x" * 99 + '..."' in str(caught.value)


def test_parse_error_redacts_echoed_credentials() -> None:
    with pytest.raises(ParseError) as caught:
        parse_summary(b"<html>Authorization: Bearer abc.def-ghi</html>")
    assert "abc.def-ghi" not in str(caught.value)
    assert "Bearer <redacted>" in str(caught.value)


def test_every_sample_body_is_described_in_the_readme() -> None:
    readme = (BODIES / "README.md").read_text()

    missing = [p.name for p in sorted(BODIES.iterdir()) if p.name != "README.md" and f"`{p.name}`" not in readme]
    assert missing == []


# --- currency codes and the number of currencies ------------------------------------------------------------


def _items(*codes: str) -> bytes:
    items = [{"currencyCode": code, "balanceAmount": 1} for code in codes]
    return json.dumps({"totalCount": len(codes), "items": items}).encode()


def test_an_item_without_a_three_letter_currency_is_left_out_and_the_others_stay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    summaries = parse_summaries(_items("usd", "EURO", "€", "12A", "GBP", "U S"))

    assert [s.currency for s in summaries] == ["USD", "GBP"]
    assert sum("summary left out" in r.getMessage() for r in caplog.records) == 4


def test_an_item_with_a_currency_code_of_kilobytes_is_left_out_like_any_other_bad_code() -> None:
    # The label length limit is for label values; a code that long is no code, and its item alone goes.
    assert [s.currency for s in parse_summaries(_items("USD", "U" * 5000))] == ["USD"]


def test_summaries_of_which_none_has_a_currency_code_are_a_parse_error() -> None:
    # An empty success would drop every balance of the tenant without it going down.
    with pytest.raises(ParseError) as caught:
        parse_summaries(_items("EURO", "12A"))
    assert str(caught.value) == "items: none of the 2 summaries has a three-letter currency code"


@pytest.mark.parametrize("code", ["\u0131US", "\u00dfD", "\ufb00E"])
def test_currency_code_is_checked_before_it_is_upper_cased(code: str) -> None:
    assert code.upper().isascii()  # IUS, SSD, FFE: three ASCII letters only once upper-cased
    with pytest.raises(ParseError, match="not a three-letter currency code"):
        parse_summary(summary_json(currencyCode=code))


def test_summary_with_an_invalid_currency_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        parse_summary(summary_json(currencyCode="DOLLARS"))
    assert str(caught.value) == 'currencyCode: not a three-letter currency code: "DOLLARS"'


def test_more_than_a_hundred_currencies_is_a_parse_error() -> None:
    codes = [f"{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}X" for i in range(101)]
    assert len(parse_summaries(_items(*codes[:100]))) == 100
    with pytest.raises(ParseError) as caught:
        parse_summaries(_items(*codes))
    assert str(caught.value) == "items: 101 summaries, more than the 100 currencies accepted"


def test_more_than_a_hundred_invoice_types_is_a_parse_error() -> None:
    details = [{"invoiceType": f"type{i}", "summary": {"balanceAmount": i}} for i in range(101)]
    assert len(parse_summary(summary_json(details=details[:100])).details) == 100
    with pytest.raises(ParseError) as caught:
        parse_summary(summary_json(details=details))
    assert str(caught.value) == "details: 101 entries, more than the 100 accepted"


def _with_symbol(text: str) -> bytes:
    return summary_json(currencySymbol=text)


def _with_invoice_type(text: str) -> bytes:
    return summary_json(details=[{"invoiceType": text, "summary": {"balanceAmount": 1}}])


@pytest.mark.parametrize(
    ("build", "path"), [(_with_symbol, "currencySymbol"), (_with_invoice_type, "details[0].invoiceType")]
)
def test_a_label_value_longer_than_256_characters_is_a_parse_error(build: Callable[[str], bytes], path: str) -> None:
    parse_summary(build("x" * 256))
    with pytest.raises(ParseError) as caught:
        parse_summary(build("x" * 257))
    assert str(caught.value) == f"{path}: 257 characters, more than the 256 a label value may have"


def test_a_date_longer_than_64_characters_is_no_date() -> None:
    # A date of kilobytes in a hostile answer must not reach the parse cache, where every poll's would stay.
    at_limit = "2024-05-01T10:20:30.5".ljust(63, "0") + "Z"
    assert len(at_limit) == 64
    assert parse_timestamp(at_limit) == ts(2024, 5, 1, 10, 20, 30, 500000)
    assert parse_timestamp(at_limit[:-1] + "0Z") is None


def test_invoice_type_last_payment_date_is_the_latest_of_its_entries() -> None:
    detail = {"invoiceType": "Recurring", "summary": {"lastPaymentDate": "2024-01-02T00:00:00Z"}}
    later = {"invoiceType": "recurring", "summary": {"lastPaymentDate": "2024-03-04T00:00:00"}}
    never = {"invoiceType": "OneTime", "summary": {"lastPaymentDate": "0001-01-01T00:00:00"}}
    summary = parse_summary(summary_json(details=[detail, later, never]))
    assert [(d.invoice_type, d.last_payment_time) for d in summary.details] == [
        ("recurring", ts(2024, 3, 4)),
        ("onetime", None),
    ]
