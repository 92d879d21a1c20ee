"""Balances that move over time (drift) and their rendering as Partner Center InvoiceSummary bodies."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from exporter.simulator.rand import unit
from exporter.simulator.scenario import Currency, Quirk

NEVER: Final = "0001-01-01T00:00:00"
BOM: Final = b"\xef\xbb\xbf"
# Scenario currencies carry no first-invoice date; a fixed one keeps bodies deterministic.
_FIRST_INVOICE: Final = dt.datetime(2017, 1, 21, tzinfo=dt.UTC).timestamp()


@dataclass
class _TypeState:
    """Mutable per-invoice-type figures, in cents."""

    name: str
    balance: int
    last_payment_amount: int
    last_payment_date: float | None
    latest_invoice_date: float | None


@dataclass(frozen=True)
class TypeFigures:
    """One invoice type's figures at a moment, in currency units."""

    name: str
    balance: float
    last_payment_amount: float
    last_payment_date: float | None
    latest_invoice_date: float | None


@dataclass(frozen=True)
class Figures:
    """One currency's figures at a moment, in currency units."""

    balance: float
    last_payment_amount: float
    last_payment_date: float | None
    latest_invoice_date: float | None
    types: tuple[TypeFigures, ...]


class Ledger:
    """One currency of one tenant: its balance advanced by drift events up to the time asked for."""

    def __init__(self, currency: Currency, seed: int, tenant_id: str, start: float) -> None:
        """Start from the scenario's figures at Unix time `start`."""
        self.currency = currency
        self._salt = (seed, tenant_id.lower(), currency.code)
        self._start = start
        self._lock = threading.Lock()
        self._invoices = 0
        self._payments = 0
        paid = currency.last_payment
        self._last_payment_amount = round(paid.amount * 100) if paid else 0
        self._last_payment_date = paid.date if paid else None
        self._latest_invoice_date = currency.latest_invoice_date
        self._types = [
            _TypeState(
                name=name,
                balance=round(amount * 100),
                last_payment_amount=self._last_payment_amount if i == 0 else 0,
                last_payment_date=self._last_payment_date if i == 0 else None,
                latest_invoice_date=currency.latest_invoice_date,
            )
            for i, (name, amount) in enumerate(currency.split)
        ]
        # The balance is the sum of the types so that details always add up, also after rounding to cents.
        self._balance_rest = round(currency.balance * 100) - sum(t.balance for t in self._types)

    def version(self, now: float) -> tuple[int, int]:
        """Advance to `now` and return (invoices, payments) so far: equal versions render equal bodies."""
        with self._lock:
            self._advance(now)
            return self._invoices, self._payments

    def _advance(self, now: float) -> None:
        """Apply every drift event due by `now`, in time order."""
        drift = self.currency.drift
        if drift is None:
            return
        while True:
            next_invoice = self._start + (self._invoices + 1) * drift.invoice_every if drift.invoice_every else None
            next_payment = self._start + (self._payments + 1) * drift.payment_every if drift.payment_every else None
            due = [t for t in (next_invoice, next_payment) if t is not None and t <= now]
            if not due:
                return
            if next_invoice is not None and next_invoice == min(due):
                self._invoices += 1
                self._invoice(next_invoice, drift.invoice_amount, self._invoices)
            else:
                assert next_payment is not None
                self._payments += 1
                self._payment(next_payment, drift.payment_amount, self._payments)

    def _factor(self, event: str, number: int) -> float:
        """Event `number`'s amount relative to the nominal one: 0.8 to 1.2, drawn in pairs that add up to 2.

        Events 2k-1 and 2k share one draw u and take 0.8 + 0.4u and 1.2 - 0.4u. Independent draws would make the
        balance a random walk that wanders further every day even when payments match invoices on average; in
        pairs, such a balance stays within a few payments of where it started, for as long as the simulator runs.
        """
        u = unit(*self._salt, event, (number + 1) // 2)
        return 0.8 + 0.4 * (u if number % 2 else 1.0 - u)

    def _invoice(self, when: float, amount: float, number: int) -> None:
        """An invoice of about `amount` (plus or minus 20%) raises one invoice type's balance."""
        cents = round(amount * 100 * self._factor("invoice", number))
        target = self._types[int(unit(*self._salt, "type", number) * len(self._types))]
        target.balance += cents
        target.latest_invoice_date = when
        self._latest_invoice_date = when

    def _payment(self, when: float, amount: float, number: int) -> None:
        """A payment of about `amount`, never more than is owed, lowers the types in proportion."""
        owed = sum(t.balance for t in self._types if t.balance > 0)
        cents = min(owed, round(amount * 100 * self._factor("payment", number)))
        if cents <= 0:
            return
        # Each type pays its floor share; the few cents left over go to types that still owe money.
        shares = [cents * t.balance // owed if t.balance > 0 else 0 for t in self._types]
        left = cents - sum(shares)
        for i, state in enumerate(self._types):
            extra = min(left, max(state.balance - shares[i], 0))
            shares[i] += extra
            left -= extra
        for state, share in zip(self._types, shares, strict=True):
            if share:
                state.balance -= share
                state.last_payment_amount = share
                state.last_payment_date = when
        self._last_payment_amount = cents
        self._last_payment_date = when

    def figures(self, now: float) -> Figures:
        """The figures at `now`, in currency units."""
        with self._lock:
            self._advance(now)
            types = tuple(
                TypeFigures(
                    name=t.name,
                    balance=t.balance / 100,
                    last_payment_amount=t.last_payment_amount / 100,
                    last_payment_date=t.last_payment_date,
                    latest_invoice_date=t.latest_invoice_date,
                )
                for t in self._types
            )
            return Figures(
                balance=(sum(t.balance for t in self._types) + self._balance_rest) / 100,
                last_payment_amount=self._last_payment_amount / 100,
                last_payment_date=self._last_payment_date,
                latest_invoice_date=self._latest_invoice_date,
                types=types,
            )


class Renderer:
    """Turns ledger snapshots into InvoiceSummary JSON, applying a tenant's quirks."""

    def __init__(self, quirks: frozenset[Quirk]) -> None:
        """Remember the quirks; they are fixed per tenant."""
        self.quirks = quirks

    def date(self, when: float | None) -> str:
        """Render a date the way this tenant's API does; None is Partner Center's "never"."""
        if when is None:
            return NEVER
        moment = dt.datetime.fromtimestamp(when, dt.UTC)
        # isoformat, not strftime: glibc's %Y writes the year 1 as "1", not "0001".
        text = moment.replace(tzinfo=None, microsecond=0).isoformat()
        if "seven_digit_fractions" in self.quirks:
            text += f".{moment.microsecond:06d}0"
        return text if "naive_dates" in self.quirks else text + "Z"

    def amount(self, value: float) -> float | int:
        """Render an amount: integers when the quirk says so or when the value is whole."""
        if "integer_amounts" in self.quirks or value == int(value):
            return round(value)
        return round(value, 2)

    def summary(self, currency: Currency, figures: Figures) -> dict[str, object]:
        """One InvoiceSummary object."""
        symbol = None if "null_symbol" in self.quirks else currency.symbol
        latest = figures.latest_invoice_date
        accounting = self.date(latest if latest is not None else _FIRST_INVOICE)
        body: dict[str, object] = {
            "balanceAmount": self.amount(figures.balance),
            "currencyCode": currency.code,
            "currencySymbol": symbol,
            "accountingDate": accounting,
            "firstInvoiceCreationDate": self.date(_FIRST_INVOICE),
            "lastPaymentDate": self.date(figures.last_payment_date),
            "lastPaymentAmount": self.amount(figures.last_payment_amount),
            "latestInvoiceDate": self.date(latest),
        }
        if "no_details" not in self.quirks:
            body["details"] = [self._detail(currency, symbol, accounting, entry) for entry in figures.types]
        body["links"] = {"self": {"uri": "/invoices/summary", "method": "GET", "headers": []}}
        body["attributes"] = {"objectType": "InvoiceSummary"}
        return body

    def _detail(self, currency: Currency, symbol: str | None, accounting: str, entry: TypeFigures) -> dict[str, object]:
        """One `details[]` entry."""
        invoice_type = entry.name.lower() if "lowercase_invoice_types" in self.quirks else entry.name
        return {
            "invoiceType": invoice_type,
            "summary": {
                "balanceAmount": self.amount(entry.balance),
                "currencyCode": currency.code,
                "currencySymbol": symbol,
                "accountingDate": accounting,
                "firstInvoiceCreationDate": self.date(_FIRST_INVOICE),
                "lastPaymentDate": self.date(entry.last_payment_date),
                "lastPaymentAmount": self.amount(entry.last_payment_amount),
                "latestInvoiceDate": self.date(entry.latest_invoice_date),
                "attributes": {"objectType": "InvoiceSummary"},
            },
        }

    def encode(self, document: dict[str, object]) -> bytes:
        """Serialize a document, with a BOM when the quirk says so."""
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return BOM + data if "bom" in self.quirks else data


class Books:
    """All ledgers of one tenant with its rendered bodies cached until a drift event changes them."""

    def __init__(
        self, currencies: Sequence[Currency], quirks: frozenset[Quirk], seed: int, tenant_id: str, start: float
    ) -> None:
        """Build one ledger per currency."""
        self._ledgers = [Ledger(c, seed, tenant_id, start) for c in currencies]
        self._renderer = Renderer(quirks)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[object, bytes]] = {}

    def body(self, endpoint: str, now: float) -> bytes:
        """The `summary` or `summaries` body at time `now` (cached per drift version)."""
        ledgers = self._ledgers[:1] if endpoint == "summary" else self._ledgers
        # One lock around version and render keeps the cached body consistent with its version.
        with self._lock:
            version = tuple(ledger.version(now) for ledger in ledgers)
            cached = self._cache.get(endpoint)
            if cached is not None and cached[0] == version:
                return cached[1]
            body = self._render(endpoint, ledgers, now)
            self._cache[endpoint] = (version, body)
            return body

    def _render(self, endpoint: str, ledgers: Sequence[Ledger], now: float) -> bytes:
        """Render without the cache."""
        items = [self._renderer.summary(ledger.currency, ledger.figures(now)) for ledger in ledgers]
        if endpoint == "summary":
            return self._renderer.encode(items[0])
        document: dict[str, object] = {
            "totalCount": len(items),
            "items": items,
            "links": {"self": {"uri": "/invoices/summaries", "method": "GET", "headers": []}},
            "attributes": {"objectType": "Collection"},
        }
        return self._renderer.encode(document)
