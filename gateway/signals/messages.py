"""The JSON schema of price and demand-response messages, parsed into the model.

A price message (``han/<gateway>/price/set``)::

    {"price": 0.31, "currency": "EUR", "tier": 3,
     "start": "2026-11-22T17:00:00Z", "end": "2026-11-22T20:00:00Z",
     "source": "dayahead"}

``price`` (per kWh, a finite number) is required; ``start`` defaults to the
time of receipt and ``end`` to one day after ``start``; ``currency`` is a
three-letter code (default EUR); ``tier`` an integer 1-15 (ZigBee SE price
tier, 1 = cheapest).

A demand-response event (``han/<gateway>/dr/set``)::

    {"event_id": "evt-42", "start": "2026-11-22T17:00:00Z", "duration_s": 3600,
     "criticality": 5, "load_classes": ["ev", "water_heater"],
     "load_adjustment_pct": -30, "randomize_start_s": 300, "issuer": "dso"}

``event_id`` is required.  ``start`` defaults to now, the length is
``duration_s`` or ``end`` (default one hour).  ``criticality`` is 1-9 as in
ZigBee SE DRLC (1 green, 2-6 voluntary, 7 emergency, 8 planned outage, 9
service disconnect; default 5); ``level`` 0-15 (default: criticality); optional
``target_power_w``, ``duty_cycle_pct`` (0-100), ``load_adjustment_pct``
(-100-100), ``randomize_start_s`` / ``randomize_end_s`` (0-3600),
``supersedes`` (event ids).  ``{"event_id": "evt-42", "cancel": true}``
cancels an event.

Both may carry the signature fields of :mod:`gateway.signals.signing`
(``key_id``, ``seq``, ``expires``, ``signature``), which are checked there and
ignored here.  Unknown keys are refused, so a typo is not silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.errors import SignalError
from gateway.model import DemandResponseEvent, PriceSignal

__all__ = ["MAX_MESSAGE_BYTES", "SIGNATURE_KEYS", "decode_json", "parse_dr", "parse_price"]

MAX_MESSAGE_BYTES = 16 * 1024
SIGNATURE_KEYS = frozenset({"key_id", "seq", "expires", "signature"})
_PRICE_KEYS = frozenset({"price", "currency", "tier", "start", "end", "source"})
_DR_KEYS = frozenset({
    "event_id", "start", "end", "duration_s", "criticality", "level", "target_power_w",
    "load_classes", "load_adjustment_pct", "duty_cycle_pct", "randomize_start_s",
    "randomize_end_s", "cancel", "supersedes", "issuer", "source",
})
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_SPAN = timedelta(days=7)


def decode_json(payload: bytes) -> dict[str, Any]:
    """Bytes to a JSON object.

    Raises:
        SignalError: (malformed) too long, not UTF-8 JSON, or not an object.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise SignalError("malformed", f"message longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignalError("malformed", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SignalError("malformed", "expected a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_price(obj: Mapping[str, Any], *, now: datetime, source: str = "") -> PriceSignal:
    """Validate a price message (see the module docstring).

    Raises:
        SignalError: (schema) naming the first bad key and what was expected.
    """
    _known(obj, _PRICE_KEYS)
    price = _number(obj, "price", required=True, lo=-1e6, hi=1e6)
    assert price is not None
    start = _time(obj, "start") or now
    end = _time(obj, "end") or start + timedelta(days=1)
    _span(start, end)
    currency = _string(obj, "currency") or "EUR"
    if not _CURRENCY.match(currency):
        raise SignalError("schema", "currency: expected a three-letter code such as EUR")
    tier = _integer(obj, "tier", lo=1, hi=15)
    return PriceSignal(start=start, end=end, price_per_kwh=price, currency=currency,
                       source=_string(obj, "source") or source, tier=tier)


def parse_dr(obj: Mapping[str, Any], *, now: datetime, source: str = "") -> DemandResponseEvent:
    """Validate a DR event or cancellation (see the module docstring).

    Raises:
        SignalError: (schema) naming the first bad key and what was expected.
    """
    _known(obj, _DR_KEYS)
    event_id = _string(obj, "event_id", required=True)
    if not _ID.match(event_id):
        raise SignalError("schema", "event_id: expected 1-64 letters, digits or _.:-")
    cancel = obj.get("cancel", False)
    if not isinstance(cancel, bool):
        raise SignalError("schema", "cancel: expected true or false")
    start = _time(obj, "start") or now
    if "end" in obj and "duration_s" in obj:
        raise SignalError("schema", "give either end or duration_s, not both")
    end = _time(obj, "end")
    if end is None:
        duration = _number(obj, "duration_s", lo=1, hi=_MAX_SPAN.total_seconds())
        end = start + timedelta(seconds=duration if duration is not None else 3600)
    _span(start, end)
    criticality = _integer(obj, "criticality", lo=1, hi=9) or 5
    level = _integer(obj, "level", lo=0, hi=15)
    classes = obj.get("load_classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and _CLASS.match(c)
                                                for c in classes):
        raise SignalError("schema", "load_classes: expected a list of load class names "
                                    "(lower-case letters, digits, _)")
    supersedes = obj.get("supersedes", [])
    if not isinstance(supersedes, list) or not all(isinstance(s, str) and _ID.match(s)
                                                   for s in supersedes):
        raise SignalError("schema", "supersedes: expected a list of event ids")
    return DemandResponseEvent(
        event_id=event_id,
        start=start,
        end=end,
        level=level if level is not None else criticality,
        target_power_w=_number(obj, "target_power_w", lo=0, hi=1e9),
        source=_string(obj, "source") or source,
        issuer=_string(obj, "issuer") or source,
        criticality=criticality,
        load_classes=tuple(classes),
        load_adjustment_pct=_number(obj, "load_adjustment_pct", lo=-100, hi=100),
        duty_cycle_pct=_number(obj, "duty_cycle_pct", lo=0, hi=100),
        randomize_start_s=_number(obj, "randomize_start_s", lo=0, hi=3600) or 0.0,
        randomize_end_s=_number(obj, "randomize_end_s", lo=0, hi=3600) or 0.0,
        cancelled=cancel,
        supersedes=tuple(supersedes),
    )


# ------------------------------------------------------------------ fields
def _known(obj: Mapping[str, Any], keys: frozenset[str]) -> None:
    unknown = sorted(set(obj) - keys - SIGNATURE_KEYS)
    if unknown:
        raise SignalError("schema", f"unknown key(s): {', '.join(unknown)[:200]}")


def _string(obj: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    v = obj.get(key)
    if v is None:
        if required:
            raise SignalError("schema", f"{key}: required")
        return ""
    if not isinstance(v, str) or len(v) > 200:
        raise SignalError("schema", f"{key}: expected a string of at most 200 characters")
    return v


def _number(obj: Mapping[str, Any], key: str, *, required: bool = False,
            lo: float, hi: float) -> float | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise SignalError("schema", f"{key}: required")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (
            isinstance(v, float) and not math.isfinite(v)):
        raise SignalError("schema", f"{key}: expected a number")
    if not lo <= v <= hi:  # compared before float(): a huge int would overflow it
        raise SignalError("schema", f"{key}: expected a number from {lo:g} to {hi:g}")
    return float(v)


def _integer(obj: Mapping[str, Any], key: str, *, lo: int, hi: int) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SignalError("schema", f"{key}: expected an integer from {lo} to {hi}")
    return v


def _time(obj: Mapping[str, Any], key: str) -> datetime | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 40:
        raise SignalError("schema", f"{key}: expected an ISO 8601 time with a UTC offset")
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
    except ValueError:
        raise SignalError("schema", f"{key}: expected an ISO 8601 time with a UTC offset") from None
    if t.tzinfo is None:
        raise SignalError("schema", f"{key}: the time needs a UTC offset (e.g. Z or +01:00)")
    return t.astimezone(UTC)


def _span(start: datetime, end: datetime) -> None:
    if end <= start:
        raise SignalError("schema", "end: must be after start")
    if end - start > _MAX_SPAN:
        raise SignalError("schema", "end: at most 7 days after start")
