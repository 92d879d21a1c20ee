"""The optional `state_file`: last good values and last success per tenant, kept across restarts.

Written atomically after changes, read once at start-up. A missing file is a normal first start; a corrupt or
foreign one is a warning and a clean start. Tokens never go here: refresh tokens have their own files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.files import write_atomically
from exporter.snapshot import Snapshot
from exporter.upstream import model
from exporter.upstream.model import InvoiceSummary, InvoiceTypeSummary

log = logging.getLogger(__name__)

FORMAT = "partnercenter-exporter-state"
VERSION = 1


@dataclass(frozen=True, slots=True)
class RestoredTenant:
    """What a previous run knew about one tenant."""

    summaries: tuple[InvoiceSummary, ...]
    last_success: float


def save_state(path: Path, snap: Snapshot) -> None:
    """Write every tenant's last good values to `path` atomically."""
    tenants: dict[str, Any] = {}
    for tc in snap.config.tenants:
        state = snap.tenants.get(tc.name)
        if state is None or state.summaries is None or state.last_success is None:
            continue
        tenants[tc.name] = {
            "tenant_id": tc.tenant_id,
            "endpoint": tc.endpoint,
            "last_success": state.last_success,
            "summaries": [dataclasses.asdict(s) for s in state.summaries],
        }
    data = json.dumps({"format": FORMAT, "version": VERSION, "tenants": tenants}, separators=(",", ":"))
    write_atomically(path, data)


def load_state(path: Path, config: Config) -> dict[str, RestoredTenant]:
    """Read `path`; entries of tenants that are gone or changed identity are ignored."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read state file; starting clean", extra={"path": str(path), "err": exc.strerror})
        return {}
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError("not a state file of this exporter version")
        entries = data.get("tenants")
        if not isinstance(entries, dict):
            raise ValueError("no tenants")
        restored: dict[str, RestoredTenant] = {}
        for tc in config.tenants:
            entry = entries.get(tc.name)
            if not isinstance(entry, dict):
                continue
            if entry.get("tenant_id") != tc.tenant_id or entry.get("endpoint") != tc.endpoint:
                continue  # the name now points at another account
            summaries = entry.get("summaries")
            if not isinstance(summaries, list):
                raise ValueError(f"tenant {tc.name}: no summaries")
            parsed = tuple(_summary(s) for s in summaries)
            _distinct([s.currency for s in parsed], model.MAX_CURRENCIES)
            restored[tc.name] = RestoredTenant(
                summaries=parsed,
                last_success=_number(entry.get("last_success")),
            )
        return restored
    except (ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable state file; starting clean", extra={"path": str(path), "err": str(exc)})
        return {}


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("bad number")
    return float(value)


def _string(value: object) -> str:
    """A label value as the model makes them: stripped, not empty, not too long, and UTF-8 (no lone surrogate)."""
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > model.MAX_LABEL_CHARS:
        raise ValueError("bad string")
    value.encode("utf-8")  # UnicodeEncodeError is a ValueError: it would break every rendering of /metrics
    return value


def _distinct(labels: list[str], limit: int) -> None:
    """A repeated label value would be a duplicate series; more than `limit`, more than an answer may hold."""
    if len(set(labels)) != len(labels) or len(labels) > limit:
        raise ValueError("repeated or too many currencies or invoice types")


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _summary(value: object) -> InvoiceSummary:
    if not isinstance(value, dict):
        raise ValueError("bad summary")
    details = value.get("details")
    if not isinstance(details, list):
        raise ValueError("bad details")
    symbol = value.get("symbol")
    types = tuple(_detail(d) for d in details)
    _distinct([d.invoice_type for d in types], model.MAX_INVOICE_TYPES)
    currency = _string(value.get("currency"))
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
        raise ValueError("bad currency")  # what the model makes of a currencyCode: three letters, upper case
    return InvoiceSummary(
        currency=currency,
        symbol=_string(symbol) if symbol is not None else None,
        balance=_optional_number(value.get("balance")),
        last_payment_amount=_optional_number(value.get("last_payment_amount")),
        last_payment_time=_optional_number(value.get("last_payment_time")),
        latest_invoice_time=_optional_number(value.get("latest_invoice_time")),
        first_invoice_time=_optional_number(value.get("first_invoice_time")),
        accounting_time=_optional_number(value.get("accounting_time")),
        details=types,
    )


def _detail(value: object) -> InvoiceTypeSummary:
    if not isinstance(value, dict):
        raise ValueError("bad detail")
    return InvoiceTypeSummary(
        invoice_type=_string(value.get("invoice_type")),
        balance=_optional_number(value.get("balance")),
        last_payment_amount=_optional_number(value.get("last_payment_amount")),
        latest_invoice_time=_optional_number(value.get("latest_invoice_time")),
        last_payment_time=_optional_number(value.get("last_payment_time")),
    )
