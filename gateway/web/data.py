"""The numbers the page and ``/api`` show, computed from the bus and the store.

- **Live**: import/export power of the shown meter's last snapshot (normalised
  to W through :mod:`gateway.quantities`), the current price, DR events with
  their countdown, and every configured load merged with its last ``LoadState``.
- **Energy per interval** (history, "today"): growth of the meter's energy
  registers (all tariff registers summed, ``energy_import_t1`` + ``_t2``; the
  total register where the meter has no tariff registers) between interval
  boundaries in the household's time zone, from the store's quarter-hour
  aggregates (:meth:`gateway.store.Store.register_deltas`).  Days, weeks
  (Monday first), months and years follow local time, so a day with a DST
  change has 23 or 25 hourly intervals.
- **Comparison** (``compare``): ``previous`` = the same weekday a week earlier
  (day), the week, month or year before; ``year`` = the same period a year
  earlier (29 February compares with the 28th).  Aligned interval by interval.
- **Peaks**: the largest interval of each series, and the highest quarter-hour
  average import power of the period (what capacity tariffs bill).
- **Cost**: each hour's import energy times the price valid in that hour, as
  seen on the bus since the page started; where none was seen, ``[web]
  price_per_kwh``, else the current price.  Export is not credited.

Not supported: several meters summed into one household total; gas and heat
history (electricity only).  Prices survive restarts through the audit trail
(:func:`prices_from_audit`).
"""

from __future__ import annotations

import calendar
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.model import DemandResponseEvent, PriceSignal, Reading, Snapshot
from gateway.quantities import normalised_value, quantities_for, quantity_for
from gateway.store import BUCKET_S, AuditEntry, Store

Period = Literal["day", "week", "month", "year"]
Compare = Literal["previous", "year"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "year")
COMPARES: tuple[Compare, ...] = ("previous", "year")
DEFAULT_COMPARE: dict[Period, Compare] = {"day": "previous", "week": "previous", "month": "year", "year": "year"}

_IMPORT_TARIFF = re.compile(r"^energy_import_t\d+$")
_EXPORT_TARIFF = re.compile(r"^energy_export_t\d+$")


def local_zone(name: str | None) -> tzinfo:
    """The configured zone, else the system's (``TZ``, ``/etc/localtime``), else UTC."""
    candidates = [name] if name else [os.environ.get("TZ", "").lstrip(":") or None, _etc_localtime()]
    for cand in candidates:
        if cand:
            try:
                return ZoneInfo(cand)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return UTC


def _etc_localtime() -> str | None:
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        try:
            return Path("/etc/timezone").read_text(encoding="ascii").strip() or None
        except OSError:
            return None
    _, sep, name = target.partition("zoneinfo/")
    return name if sep else None


# ------------------------------------------------------------------ periods
@dataclass(frozen=True, slots=True)
class Span:
    start: datetime  # local, aware
    end: datetime
    boundaries: tuple[datetime, ...]  # start ... end, aware UTC


def _midnight(d: date, zone: tzinfo) -> datetime:
    return datetime.combine(d, time(0), tzinfo=zone)


def _add_years(d: date, years: int) -> date:
    y = d.year + years
    return d.replace(year=y, day=min(d.day, calendar.monthrange(y, d.month)[1]))


def period_start(period: Period, anchor: date) -> date:
    if period == "day":
        return anchor
    if period == "week":
        return anchor - timedelta(days=anchor.weekday())
    if period == "month":
        return anchor.replace(day=1)
    return anchor.replace(month=1, day=1)


def span(period: Period, anchor: date, zone: tzinfo) -> Span:
    """The period containing ``anchor`` and its interval boundaries."""
    first = period_start(period, anchor)
    if period == "day":
        start, end = _midnight(first, zone), _midnight(first + timedelta(days=1), zone)
        s_utc, e_utc = start.astimezone(UTC), end.astimezone(UTC)
        n = round((e_utc - s_utc).total_seconds() / 3600)
        bounds = tuple(s_utc + timedelta(hours=h) for h in range(n + 1))
        return Span(start, end, bounds)
    if period == "week":
        days = [first + timedelta(days=i) for i in range(8)]
    elif period == "month":
        ndays = calendar.monthrange(first.year, first.month)[1]
        days = [first + timedelta(days=i) for i in range(ndays + 1)]
    else:
        days = [date(first.year + m // 12, m % 12 + 1, 1) for m in range(13)]
    bounds = tuple(_midnight(d, zone).astimezone(UTC) for d in days)
    return Span(_midnight(days[0], zone), _midnight(days[-1], zone), bounds)


def previous_anchor(period: Period, anchor: date, compare: Compare) -> date:
    """The anchor of the period compared with.

    ``previous``: a day is compared with the same weekday a week earlier, a
    week with the week before, a month with the month before, a year with the
    year before.  ``year``: the same period a year earlier (a day or week: the
    same weekday of the same ISO week; a month: the same month).
    """
    if compare == "previous":
        if period in ("day", "week"):
            return anchor - timedelta(days=7)
        if period == "month":
            first = anchor.replace(day=1) - timedelta(days=1)
            return first.replace(day=1)
        return _add_years(anchor, -1)
    if period in ("day", "week"):
        iso = anchor.isocalendar()
        last_weeks = date(iso.year - 1, 12, 28).isocalendar().week
        week = min(iso.week, last_weeks)
        return date.fromisocalendar(iso.year - 1, week, iso.weekday)
    return _add_years(anchor, -1)


def labels(period: Period, sp: Span, zone: tzinfo) -> list[str]:
    starts = [b.astimezone(zone) for b in sp.boundaries[:-1]]
    if period == "day":
        return [s.strftime("%H:%M") for s in starts]
    if period == "week":
        return [s.strftime("%a %d") for s in starts]
    if period == "month":
        return [str(s.day) for s in starts]
    return [s.strftime("%b") for s in starts]


# ------------------------------------------------------------------ energy
async def energy_ids(store: Store, meter: str) -> dict[str, list[tuple[str, float]]]:
    """``{"import": [(reading id, scale to kWh)], "export": [...]}`` for a meter's history."""
    out: dict[str, list[tuple[str, float]]] = {"import": [], "export": []}
    totals: dict[str, list[tuple[str, float]]] = {"import": [], "export": []}
    for rid, unit in await store.readings(meter):
        q = quantity_for(Reading(id=rid, value=0.0, unit=unit))
        if q.unit != "kWh":
            continue
        if _IMPORT_TARIFF.match(q.key):
            out["import"].append((rid, q.scale))
        elif _EXPORT_TARIFF.match(q.key):
            out["export"].append((rid, q.scale))
        elif q.key == "energy_import":
            totals["import"].append((rid, q.scale))
        elif q.key == "energy_export":
            totals["export"].append((rid, q.scale))
    for k in out:
        if not out[k]:
            out[k] = totals[k][:1]
    return out


async def interval_energy(
    store: Store, meter: str, ids: Sequence[tuple[str, float]], boundaries: Sequence[datetime]
) -> list[float | None]:
    """kWh per interval, summed over ``ids``; None where any register has no data."""
    n = max(0, len(boundaries) - 1)
    if not ids:
        return [None] * n
    total: list[float | None] = [0.0] * n
    for rid, scale in ids:
        deltas = await store.register_deltas(meter, rid, boundaries)
        for i, d in enumerate(deltas):
            cur = total[i]
            total[i] = None if cur is None or d is None else cur + max(0.0, d) * scale
    return [None if v is None else round(v, 6) for v in total]


def peak(values: Sequence[float | None]) -> dict[str, Any] | None:
    best: tuple[int, float] | None = None
    for i, v in enumerate(values):
        if v is not None and (best is None or v > best[1]):
            best = (i, v)
    return None if best is None else {"index": best[0], "value": best[1]}


async def peak_demand(store: Store, meter: str, start: datetime, end: datetime) -> dict[str, Any] | None:
    """Highest quarter-hour average import power in ``[start, end)``, in W."""
    for rid, unit in await store.readings(meter):
        q = quantity_for(Reading(id=rid, value=0.0, unit=unit))
        if q.key != "power_import":
            continue
        aggs = await store.aggregates(meter, rid, start, end)
        if not aggs:
            return None
        top = max(aggs, key=lambda a: a.avg)
        return {"power_w": round(top.avg * q.scale, 3), "start": top.start.isoformat(),
                "end": (top.start + timedelta(seconds=BUCKET_S)).isoformat()}
    return None


def _series(values: list[float | None], sp: Span, zone: tzinfo, *, export: list[float | None]) -> dict[str, Any]:
    return {
        "start": sp.start.isoformat(),
        "end": sp.end.isoformat(),
        "starts": [b.astimezone(zone).isoformat() for b in sp.boundaries[:-1]],
        "import_kwh": values,
        "export_kwh": export,
        "total_import_kwh": round(sum(v for v in values if v is not None), 6),
        "total_export_kwh": round(sum(v for v in export if v is not None), 6),
        "peak": peak(values),
    }


def _fit(values: list[float | None], n: int) -> list[float | None]:
    return (values + [None] * n)[:n]


async def history(
    store: Store, meter: str, period: Period, anchor: date, compare: Compare, zone: tzinfo
) -> dict[str, Any]:
    """The history document of ``/api/history`` (see the module docstring)."""
    ids = await energy_ids(store, meter)
    cur = span(period, anchor, zone)
    prev_anchor = previous_anchor(period, anchor, compare)
    prev = span(period, prev_anchor, zone)
    n = len(cur.boundaries) - 1
    cur_imp = await interval_energy(store, meter, ids["import"], cur.boundaries)
    cur_exp = await interval_energy(store, meter, ids["export"], cur.boundaries)
    prev_imp = _fit(await interval_energy(store, meter, ids["import"], prev.boundaries), n)
    prev_exp = _fit(await interval_energy(store, meter, ids["export"], prev.boundaries), n)
    return {
        "meter": meter,
        "period": period,
        "compare": compare,
        "date": anchor.isoformat(),
        "previous_date": prev_anchor.isoformat(),
        "timezone": str(zone),
        "unit": "kWh",
        "labels": labels(period, cur, zone),
        "current": _series(cur_imp, cur, zone, export=cur_exp),
        "previous": _series(prev_imp, prev, zone, export=prev_exp),
        "peak_demand": await peak_demand(store, meter, cur.start, cur.end),
    }


def history_csv(doc: dict[str, Any]) -> str:
    """The history document as CSV, one row per interval (RFC 4180, CRLF)."""
    cur, prev = doc["current"], doc["previous"]
    rows = ["interval_start,import_kwh,export_kwh,previous_start,previous_import_kwh,previous_export_kwh"]
    prev_starts = prev["starts"] + [""] * len(cur["starts"])

    def fmt(v: float | None) -> str:
        return "" if v is None else f"{v:.6f}".rstrip("0").rstrip(".")

    for i, start in enumerate(cur["starts"]):
        rows.append(",".join([start, fmt(cur["import_kwh"][i]), fmt(cur["export_kwh"][i]),
                              prev_starts[i], fmt(prev["import_kwh"][i]), fmt(prev["export_kwh"][i])]))
    return "\r\n".join(rows) + "\r\n"


# -------------------------------------------------------------------- live
def power(snapshot: Snapshot | None) -> tuple[float | None, float | None]:
    """(import W, export W) of a snapshot (normalised), None where absent."""
    if snapshot is None:
        return None, None
    imp = exp = None
    for reading, q in quantities_for(snapshot):
        if q.key in ("power_import", "power_export"):
            v = normalised_value(reading, q)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if q.key == "power_import":
                    imp = float(v)
                else:
                    exp = float(v)
    return imp, exp


class PriceLog:
    """Price signals seen on the bus, to cost each hour with the price of that hour."""

    def __init__(self, keep: int = 2000) -> None:
        self._keep = keep
        self.signals: list[PriceSignal] = []

    def add(self, sig: PriceSignal) -> None:
        self.signals.append(sig)
        del self.signals[: max(0, len(self.signals) - self._keep)]

    def at(self, t: datetime) -> PriceSignal | None:
        for sig in reversed(self.signals):  # newest first: a later signal corrects an earlier one
            if sig.start <= t < sig.end:
                return sig
        return None


def prices_from_audit(rows: Iterable[AuditEntry]) -> list[PriceSignal]:
    """The price signals the gateway accepted, from its audit trail (oldest first), so
    that the cost of today survives a restart.  Rows it cannot read are skipped."""
    out: list[PriceSignal] = []
    for row in rows:
        if (row.kind, row.action, row.rule) != ("signal", "accepted", "price"):
            continue
        d = row.detail
        try:
            start = datetime.fromisoformat(str(d["start"]))
            end = datetime.fromisoformat(str(d["end"]))
            price = float(d["price"])
        except (KeyError, TypeError, ValueError):
            continue
        if start.tzinfo is None or end.tzinfo is None or not math.isfinite(price):
            continue
        tier = d.get("tier")
        out.append(PriceSignal(start=start, end=end, price_per_kwh=price,
                               currency=str(d.get("currency") or "EUR"),
                               source=str(d.get("source") or row.source),
                               tier=tier if isinstance(tier, int) else None))
    return out


def price_json(sig: PriceSignal | None, now: datetime) -> dict[str, Any] | None:
    if sig is None:
        return None
    return {
        "price_per_kwh": sig.price_per_kwh,
        "currency": sig.currency,
        "tier": sig.tier,
        "start": sig.start.isoformat(),
        "end": sig.end.isoformat(),
        "source": sig.source,
        "current": sig.start <= now < sig.end,
    }


def dr_json(ev: DemandResponseEvent, now: datetime) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "start": ev.start.isoformat(),
        "end": ev.end.isoformat(),
        "level": ev.level,
        "criticality": ev.criticality,
        "target_power_w": ev.target_power_w,
        "issuer": ev.issuer,
        "active": ev.start <= now < ev.end,
        "starts_in_s": max(0.0, round((ev.start - now).total_seconds(), 1)),
        "ends_in_s": max(0.0, round((ev.end - now).total_seconds(), 1)),
    }
