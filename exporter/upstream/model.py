"""Partner Center response bodies -> frozen `InvoiceSummary` values; every malformed body is a `ParseError`.

This is the one place that reads upstream JSON. It absorbs the API's quirks (BOM, dates with or without a
zone, "never" dates, numbers as text, free-text invoice types) so that the rest of the exporter only sees
typed values whose strings are printable-safe and whose numbers are finite.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.upstream.errors import one_line, snippet

log = logging.getLogger(__name__)

_TIMESTAMP = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?)?"
    r"(?P<zone>[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
# JSON's number grammar, loosened to allow a leading "+" or "."; no "nan", "inf" or "1_000" as float() would.
_NUMERIC_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# ISO 4217: three letters, checked before upper-casing ("ß".upper() is "SS"). Anything else would become a label
# value of its own series.
_CURRENCY = re.compile(r"[A-Za-z]{3}", re.ASCII)
# A partner bills in a handful of currencies and invoice types; thousands of them, or a label value of kilobytes,
# is a broken or hostile answer, not an account: as series, they would swell every scrape.
MAX_CURRENCIES = 100
MAX_INVOICE_TYPES = 100
MAX_LABEL_CHARS = 256
# The longest date upstream sends is 33 characters (7-digit fraction and offset); a longer one is not cached.
_MAX_DATE_CHARS = 64


class InvalidCurrencyError(Exception):
    """A summary whose currencyCode is not three letters."""


class ParseError(Exception):
    """An upstream body that is not the expected JSON document; the message echoes at most 100 body bytes."""


@dataclass(frozen=True, slots=True)
class InvoiceTypeSummary:
    """The balance of one invoice type (`details[]` of an invoice summary)."""

    invoice_type: str  # upstream text, stripped, lower-cased
    balance: float | None
    last_payment_amount: float | None
    latest_invoice_time: float | None  # Unix seconds; None for missing/null/never
    last_payment_time: float | None = None


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    """One currency's account balance and dates; times are Unix seconds, None when missing or never."""

    currency: str  # currencyCode, upper-case
    symbol: str | None
    balance: float | None
    last_payment_amount: float | None
    last_payment_time: float | None
    latest_invoice_time: float | None
    first_invoice_time: float | None
    accounting_time: float | None
    details: tuple[InvoiceTypeSummary, ...]


def parse_summary(body: bytes) -> InvoiceSummary:
    """Parse the body of `GET /v1/invoices/summary`."""
    try:
        return _summary(_load(body), "")
    except InvalidCurrencyError as exc:
        raise ParseError(str(exc)) from None


def parse_summaries(body: bytes) -> tuple[InvoiceSummary, ...]:
    """Parse the body of `GET /v1/invoices/summaries`: one summary per currency, in upstream order.

    An item whose currency code is not three letters is left out (with a warning), the others stay; an answer
    with items of which none stays is a ParseError.
    """
    document = _load(body)
    if not isinstance(document, dict):
        raise ParseError(f"body: expected a JSON object, got {_kind(document)}")
    if "items" not in document:
        raise ParseError("items: missing")
    items = document["items"]
    if not isinstance(items, list):
        raise ParseError(f"items: expected a list, got {_kind(items)}")
    if len(items) > MAX_CURRENCIES:
        raise ParseError(f"items: {len(items)} summaries, more than the {MAX_CURRENCIES} currencies accepted")
    summaries: dict[str, InvoiceSummary] = {}
    for index, item in enumerate(items):
        try:
            summary = _summary(item, f"items[{index}]")
        except InvalidCurrencyError as exc:
            log.warning("summary left out", extra={"reason": str(exc)})
            continue
        if summary.currency in summaries:
            # Two series with the same labels cannot be exposed; the first one is what upstream listed first.
            log.debug("duplicate currency ignored", extra={"currency": summary.currency, "item": index})
            continue
        summaries[summary.currency] = summary
    if items and not summaries:
        # Publishing nothing as a success would drop every balance without a tenant going down.
        raise ParseError(f"items: none of the {len(items)} summaries has a three-letter currency code")
    return tuple(summaries.values())


def parse_timestamp(value: object) -> float | None:
    """Unix seconds from an upstream date; None when missing, unparseable or "never" (year 1)."""
    return _parse_timestamp_text(value) if isinstance(value, str) and len(value) <= _MAX_DATE_CHARS else None


# A tenant's dates rarely change between polls, and each body carries a dozen of them.
@functools.lru_cache(maxsize=8192)
def _parse_timestamp_text(value: str) -> float | None:
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return None
    year = int(match["year"])
    if year == 1:
        # .NET's DateTime.MinValue: upstream's way of saying "never happened".
        return None
    try:
        moment = datetime(
            year,
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    # Parsed apart from datetime because upstream sends 7 fractional digits (.NET ticks); datetime takes 6.
    fraction = float(f"0.{match['fraction']}") if match["fraction"] else 0.0
    offset = _zone_offset(match["zone"])
    if offset is None:
        return None
    return moment.timestamp() + fraction - offset


def _load(body: bytes) -> object:
    """Decode and parse a JSON body, turning every failure into a ParseError."""
    try:
        # utf-8-sig: some Partner Center front ends prefix the JSON with a byte order mark.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"body is not valid UTF-8 (byte {exc.start}): {snippet(body)}") from None
    if not text.strip():
        raise ParseError("empty body")
    try:
        return json.loads(text)
    except RecursionError:
        raise ParseError("body is nested too deeply to parse") from None
    except json.JSONDecodeError as exc:
        raise ParseError(f"body is not JSON ({exc.msg} at char {exc.pos}): {snippet(body)}") from None
    except ValueError as exc:
        # Integer literals longer than Python's digit limit raise a plain ValueError.
        raise ParseError(f"body is not JSON ({one_line(str(exc), 80)})") from None


def _summary(document: object, path: str) -> InvoiceSummary:
    """Build an InvoiceSummary from one JSON object found at `path` ("" for the body itself)."""
    if not isinstance(document, dict):
        raise ParseError(f"{path or 'body'}: expected a JSON object, got {_kind(document)}")
    code = document.get("currencyCode")
    currency = code.strip() if isinstance(code, str) else ""
    if not currency:
        # A summary without a currency cannot be labelled: its amounts have no unit.
        raise ParseError(f"{_at(path, 'currencyCode')}: missing or empty")
    if not _CURRENCY.fullmatch(currency):  # a long code too: one summaries item is left out, not the answer
        shown = snippet(currency.encode("utf-8", "replace"))
        raise InvalidCurrencyError(f"{_at(path, 'currencyCode')}: not a three-letter currency code: {shown}")
    return InvoiceSummary(
        currency=sys.intern(currency.upper()),
        symbol=_text(document.get("currencySymbol"), _at(path, "currencySymbol")),
        balance=_number(document.get("balanceAmount")),
        last_payment_amount=_number(document.get("lastPaymentAmount")),
        last_payment_time=parse_timestamp(document.get("lastPaymentDate")),
        latest_invoice_time=parse_timestamp(document.get("latestInvoiceDate")),
        first_invoice_time=parse_timestamp(document.get("firstInvoiceCreationDate")),
        accounting_time=parse_timestamp(document.get("accountingDate")),
        details=_details(document.get("details"), path),
    )


def _details(value: object, path: str) -> tuple[InvoiceTypeSummary, ...]:
    """Per-invoice-type summaries; unusable entries are skipped, same-type entries merged."""
    if not isinstance(value, list):
        return ()
    if len(value) > MAX_INVOICE_TYPES:
        raise ParseError(f"{_at(path, 'details')}: {len(value)} entries, more than the {MAX_INVOICE_TYPES} accepted")
    # Types that differ only in case or spacing would become one label, so they become one series.
    groups: dict[str, list[dict[str, object]]] = {}
    for index, entry in enumerate(value):
        where = f"{_at(path, 'details')}[{index}]"
        invoice_type = _text(entry.get("invoiceType"), f"{where}.invoiceType") if isinstance(entry, dict) else None
        summary = entry.get("summary") if isinstance(entry, dict) else None
        if invoice_type is None or not isinstance(summary, dict):
            # Without a type there is no label, and without a summary there is nothing to show.
            log.debug("invoice detail skipped", extra={"detail": where})
            continue
        groups.setdefault(invoice_type.lower(), []).append(summary)
    # Currency is deliberately not read: the parent's currency is the unit of its details.
    return tuple(
        InvoiceTypeSummary(
            invoice_type=sys.intern(invoice_type),
            balance=_total(_number(s.get("balanceAmount")) for s in summaries),
            last_payment_amount=_total(_number(s.get("lastPaymentAmount")) for s in summaries),
            latest_invoice_time=_latest(parse_timestamp(s.get("latestInvoiceDate")) for s in summaries),
            last_payment_time=_latest(parse_timestamp(s.get("lastPaymentDate")) for s in summaries),
        )
        for invoice_type, summaries in groups.items()
    )


def _total(amounts: Iterable[float | None]) -> float | None:
    """The exact sum of the known amounts; None when none is known or the sum overflows."""
    known = [amount for amount in amounts if amount is not None]
    if not known:
        return None
    try:
        total = math.fsum(known)
    except OverflowError:
        return None
    return total if math.isfinite(total) else None


def _latest(times: Iterable[float | None]) -> float | None:
    return max((time for time in times if time is not None), default=None)


def _number(value: object) -> float | None:
    """A finite float from a JSON number or numeric text; None otherwise (bool is not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def _text(value: object, path: str) -> str | None:
    """Stripped label text, one shared copy of it (label values repeat across tenants); None if missing or blank."""
    if not isinstance(value, str) or not (text := value.strip()):
        return None
    if len(text) > MAX_LABEL_CHARS:
        raise ParseError(f"{path}: {len(text)} characters, more than the {MAX_LABEL_CHARS} a label value may have")
    # JSON can carry lone surrogates ("\ud800") that cannot be encoded as UTF-8, and label values must be.
    return sys.intern(text.encode("utf-8", "replace").decode("utf-8"))


def _zone_offset(zone: str | None) -> float | None:
    """Seconds east of UTC for a zone suffix; no zone means UTC; None for an impossible offset."""
    if zone is None or zone in "Zz":
        return 0.0
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        return None
    seconds = hours * 3600 + minutes * 60
    return float(-seconds if zone[0] == "-" else seconds)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return kinds.get(type(value), "an object")
