"""What rules can see: readings, signals, time and loads, as one namespace.

:class:`Inputs` is fed snapshots, price signals and demand-response events (by
the engine's owner, in any order) and keeps only what rules need: the latest
value of each quantity, bounded sliding windows for the series that some rule
averages, the current and future prices, and the DR events not yet over.
:class:`Frame` is the namespace at one ``now``, built once per evaluation.

The namespace (values in the units of :mod:`gateway.rules.ast`: kW, kWh, s):

==========================  ==========  ==================================================
name                        kind        meaning
==========================  ==========  ==================================================
``import_power_kw``         power       active power imported (OBIS 1.7.0); a series
``export_power_kw``         power       active power exported (2.7.0); a series
``net_power_kw``            power       import - export; a series
``import_energy_kwh``       energy      energy imported (1.8.0, else the sum of 1.8.1-4)
``export_energy_kwh``       energy      energy exported (2.8.0, else the sum of 2.8.1-4)
``tariff``                  number      the meter's tariff indicator (0-0:96.14.0)
``meter_power_limit_kw``    power       the meter's limiter threshold (0-0:17.0.0)
``meter.<key>``             by unit     any quantity of :mod:`gateway.quantities` by key
                                        (``meter.power_import_l1``, ``meter.voltage_l1``);
                                        numeric ones are series
``price``                   number      price per kWh of the signal valid now
``price_tier``              number      its tier
``dr.active``               boolean     a demand-response event is in force
``dr.criticality``          number      its criticality 1-9 (0 when none)
``dr.load_adjustment_pct``  number      requested load change in % (0 when none)
``dr.duty_cycle_pct``       number      requested duty cycle in % (100 when none)
``dr.elapsed``              duration    since the event started (0 when none)
``dr.remaining``            duration    until it ends (0 when none)
``dr.event``, ``dr.issuer`` string      its id and issuer ("" when none)
``dr.upcoming``             boolean     an event is announced but has not started
``dr.starts_in``            duration    until the next announced event starts
``time``                    time        local time of day (compare with ``17:00``)
``hour``, ``minute``        number      local hour 0-23, minute 0-59
``weekday``                 number      1 = Monday ... 7 = Sunday (also ``mon`` ... ``sun``)
``weekend``                 boolean     Saturday or Sunday
``day``, ``month``          number      day of month 1-31, month 1-12
``load.<name>.<attr>``      see below   a configured load: ``on``, ``shed``, ``limited``,
                                        ``overridden`` (boolean); ``power_kw``,
                                        ``rated_kw``, ``limit_kw`` (power); ``on_for``,
                                        ``off_for`` (duration)
==========================  ==========  ==================================================

A value the gateway does not have (no price signal yet, a quantity the meter
does not send) makes the comparison that uses it unknown; a rule whose
condition is unknown does not fire (see :mod:`gateway.rules.compile`).

Not supported: several meters feeding one namespace under the same keys (give
``Inputs(meter=...)`` the meter the rules are about), price history (a
window over ``price``), and snapshots that arrive out of order (an older one
than the newest is ignored for the series, though its values are kept).
"""

from __future__ import annotations

import bisect
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from gateway.model import DemandResponseEvent, PriceSignal, Reading, Snapshot
from gateway.quantities import QUANTITIES, Quantity, normalised_value, quantity_for
from gateway.rules.ast import Dim

__all__ = [
    "LOAD_ATTRS",
    "NAMESPACE",
    "Frame",
    "Inputs",
    "LoadView",
    "Missing",
    "NameInfo",
    "meter_name_info",
]

Value = float | bool | str


class Missing(Exception):  # a signal inside evaluation, never raised to callers
    """A value the namespace does not have right now (internal to evaluation)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NameInfo:
    dim: Dim
    doc: str
    series: bool = False  # may be windowed: avg(x, 5m), min(x, 5m), max(x, 5m)


NAMESPACE: Mapping[str, NameInfo] = {
    "import_power_kw": NameInfo(dim=Dim.POWER, doc="active power imported", series=True),
    "export_power_kw": NameInfo(dim=Dim.POWER, doc="active power exported", series=True),
    "net_power_kw": NameInfo(dim=Dim.POWER, doc="import minus export", series=True),
    "import_energy_kwh": NameInfo(dim=Dim.ENERGY, doc="energy imported"),
    "export_energy_kwh": NameInfo(dim=Dim.ENERGY, doc="energy exported"),
    "tariff": NameInfo(dim=Dim.NUMBER, doc="the meter's tariff indicator"),
    "meter_power_limit_kw": NameInfo(dim=Dim.POWER, doc="the meter's limiter threshold"),
    "price": NameInfo(dim=Dim.NUMBER, doc="price per kWh now"),
    "price_tier": NameInfo(dim=Dim.NUMBER, doc="price tier now"),
    "dr.active": NameInfo(dim=Dim.BOOL, doc="a DR event is in force"),
    "dr.criticality": NameInfo(dim=Dim.NUMBER, doc="criticality 1-9, 0 when none"),
    "dr.load_adjustment_pct": NameInfo(dim=Dim.NUMBER, doc="load change in %"),
    "dr.duty_cycle_pct": NameInfo(dim=Dim.NUMBER, doc="duty cycle in %"),
    "dr.elapsed": NameInfo(dim=Dim.DURATION, doc="since the event started"),
    "dr.remaining": NameInfo(dim=Dim.DURATION, doc="until the event ends"),
    "dr.event": NameInfo(dim=Dim.STRING, doc="event id"),
    "dr.issuer": NameInfo(dim=Dim.STRING, doc="event issuer"),
    "dr.upcoming": NameInfo(dim=Dim.BOOL, doc="an event is announced"),
    "dr.starts_in": NameInfo(dim=Dim.DURATION, doc="until the next event starts"),
    "time": NameInfo(dim=Dim.TIME, doc="local time of day"),
    "hour": NameInfo(dim=Dim.NUMBER, doc="local hour"),
    "minute": NameInfo(dim=Dim.NUMBER, doc="local minute"),
    "weekday": NameInfo(dim=Dim.NUMBER, doc="1 = Monday ... 7 = Sunday"),
    "weekend": NameInfo(dim=Dim.BOOL, doc="Saturday or Sunday"),
    "day": NameInfo(dim=Dim.NUMBER, doc="day of month"),
    "month": NameInfo(dim=Dim.NUMBER, doc="month"),
}

#: Constants usable in expressions.
CONSTANTS: Mapping[str, float] = {
    "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7,
}

#: Attributes of ``load.<name>``.
LOAD_ATTRS: Mapping[str, NameInfo] = {
    "on": NameInfo(dim=Dim.BOOL, doc="running (not shed; a limited load is on)"),
    "shed": NameInfo(dim=Dim.BOOL, doc="switched off by the engine"),
    "limited": NameInfo(dim=Dim.BOOL, doc="running under a power limit"),
    "overridden": NameInfo(dim=Dim.BOOL, doc="under a manual override"),
    "power_kw": NameInfo(dim=Dim.POWER, doc="measured power, else the estimate"),
    "rated_kw": NameInfo(dim=Dim.POWER, doc="rated power"),
    "limit_kw": NameInfo(dim=Dim.POWER, doc="current limit (rated when not limited)"),
    "on_for": NameInfo(dim=Dim.DURATION, doc="time since switched on (0 when off)"),
    "off_for": NameInfo(dim=Dim.DURATION, doc="time since switched off (0 when on)"),
}


def _dim_of_unit(unit: str | None) -> tuple[Dim, float]:
    if unit == "W":
        return Dim.POWER, 0.001
    if unit == "kWh":
        return Dim.ENERGY, 1.0
    return Dim.NUMBER, 1.0


def meter_name_info(key: str) -> NameInfo | None:
    """The namespace entry of ``meter.<key>``, or None for a key outside the table."""
    q = QUANTITIES.get(key)
    if q is None:
        return None
    dim, _ = _dim_of_unit(q.unit)
    numeric = q.state_class is not None
    return NameInfo(dim=dim, doc=q.name, series=numeric)


class LoadView(Protocol):
    """What the engine exposes of one load to ``load.<name>.<attr>``."""

    def attr(self, name: str, now: datetime) -> Value: ...


# ------------------------------------------------------------------- series
class _Series:
    """Sample-and-hold samples of one value over a bounded horizon.

    ``cum[i]`` is the integral of the held value from ``t[head]`` to ``t[i]``, so a
    time-weighted mean over any span inside the horizon costs two bisections.
    """

    __slots__ = ("cum", "head", "horizon", "t", "v")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.t: list[float] = []
        self.v: list[float] = []
        self.cum: list[float] = []
        self.head = 0

    def add(self, ts: float, value: float) -> None:
        t = self.t
        if len(t) > self.head:
            last = t[-1]
            if ts < last:
                return
            if ts == last:
                self.v[-1] = value
                return
            self.cum.append(self.cum[-1] + self.v[-1] * (ts - last))
        else:
            self.cum.append(0.0)
        t.append(ts)
        self.v.append(value)
        # Keep the last sample at or before ts - horizon: it holds the window's start.
        cut = ts - self.horizon
        h = self.head
        while h + 1 < len(t) and t[h + 1] <= cut:
            h += 1
        self.head = h
        if h > 64 and h * 2 > len(t):
            del t[:h], self.v[:h], self.cum[:h]
            self.head = 0

    def _integral(self, x: float) -> float:
        i = bisect.bisect_right(self.t, x, self.head) - 1
        return self.cum[i] + self.v[i] * (x - self.t[i])

    def _span(self, now: float, seconds: float) -> tuple[float, float] | None:
        if len(self.t) <= self.head:
            return None
        first = self.t[self.head]
        start = max(now - seconds, first)
        if now < first:
            return None
        return start, now

    def mean(self, now: float, seconds: float) -> float:
        span = self._span(now, seconds)
        if span is None:
            raise Missing("no samples")
        a, b = span
        if b <= a:
            i = bisect.bisect_right(self.t, b, self.head) - 1
            return self.v[i]
        return (self._integral(b) - self._integral(a)) / (b - a)

    def extreme(self, now: float, seconds: float, largest: bool) -> float:
        span = self._span(now, seconds)
        if span is None:
            raise Missing("no samples")
        a, b = span
        t = self.t
        lo = max(bisect.bisect_right(t, a, self.head) - 1, self.head)
        hi = bisect.bisect_right(t, b, self.head)
        vals = self.v[lo:hi]
        return max(vals) if largest else min(vals)


# ------------------------------------------------------------------- inputs
def _epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True, slots=True, kw_only=True)
class _DrWindow:
    event: DemandResponseEvent
    start: float  # effective, after the randomised offset
    end: float


class Inputs:
    """Readings and signals as rules see them; fed in any order, queried at ``now``.

    ``seed`` makes the randomised start/end of DR events reproducible.
    """

    def __init__(self, *, meter: str | None = None, seed: int = 0,
                 max_prices: int = 512, max_events: int = 256) -> None:
        self.meter = meter
        self.seed = seed
        self.values: dict[str, float | str] = {}
        self.last_received: float | None = None
        self.series: dict[str, _Series] = {}
        self._qcache: dict[tuple[str, str | None], tuple[Quantity, Dim, float]] = {}
        self._prices: list[tuple[float, float, int, PriceSignal]] = []  # start, end, seq, sig
        self._price_seq = 0
        self._max_prices = max_prices
        self._dr: dict[str, _DrWindow] = {}
        self._max_events = max_events

    # ---------------------------------------------------------------- feeding
    def require_window(self, name: str, seconds: float) -> None:
        """Keep ``name`` (a series of :data:`NAMESPACE` or ``meter.<key>``) for ``seconds``."""
        s = self.series.get(name)
        if s is None:
            self.series[name] = _Series(seconds)
        elif seconds > s.horizon:
            s.horizon = seconds

    def _quantity(self, r: Reading) -> tuple[Quantity, Dim, float]:
        key = (r.id, r.unit if isinstance(r.unit, str) else None)
        hit = self._qcache.get(key)
        if hit is None:
            q = quantity_for(r)  # ``q.unit`` is the reading's own where it cannot convert
            dim, factor = _dim_of_unit(q.unit)
            hit = (q, dim, factor)
            if len(self._qcache) < 4096:
                self._qcache[key] = hit
        return hit

    def observe(self, snapshot: Snapshot) -> None:
        """Take in a snapshot (ignored when it is from another meter than ``meter``)."""
        if self.meter is not None and snapshot.meter != self.meter:
            return
        vals: dict[str, float | str] = {}
        for r in snapshot.readings:
            q, dim, factor = self._quantity(r)
            v = normalised_value(r, q)
            if isinstance(v, str):
                vals[q.key] = v
            elif dim is Dim.NUMBER:
                vals[q.key] = float(v)
            else:
                vals[q.key] = float(v) * factor
        ts = _epoch(snapshot.received)
        values = self.values
        for k, v in vals.items():
            values["meter." + k] = v
        imp = vals.get("power_import")
        exp = vals.get("power_export")
        net = vals.get("power_net")
        if not isinstance(imp, float) and isinstance(net, float):
            imp = max(net, 0.0)
        if not isinstance(exp, float) and isinstance(net, float):
            exp = max(-net, 0.0)
        if isinstance(imp, float):
            values["import_power_kw"] = imp
        if isinstance(exp, float):
            values["export_power_kw"] = exp
        if isinstance(imp, float) or isinstance(exp, float):
            i = imp if isinstance(imp, float) else 0.0
            e = exp if isinstance(exp, float) else 0.0
            values["net_power_kw"] = i - e
        for direction in ("import", "export"):
            total = vals.get(f"energy_{direction}")
            if not isinstance(total, float):
                parts = [vals.get(f"energy_{direction}_t{n}") for n in range(1, 5)]
                nums = [p for p in parts if isinstance(p, float)]
                total = sum(nums) if nums else None
            if isinstance(total, float):
                values[f"{direction}_energy_kwh"] = total
        tariff = vals.get("tariff")
        if tariff is not None:
            with contextlib.suppress(ValueError):  # a tariff that is not a number
                values["tariff"] = float(tariff)
        limit = vals.get("power_limit")
        if isinstance(limit, float):
            values["meter_power_limit_kw"] = limit
        if self.last_received is None or ts > self.last_received:
            self.last_received = ts
        for name, series in self.series.items():
            cur = values.get(name)
            if isinstance(cur, float):
                series.add(ts, cur)

    def set_price(self, signal: PriceSignal) -> None:
        """Add a price valid over ``[start, end)``; a later one wins where they overlap."""
        self._price_seq += 1
        self._prices.append((_epoch(signal.start), _epoch(signal.end), self._price_seq, signal))
        if len(self._prices) > self._max_prices:
            self._prices.sort(key=lambda p: p[1])
            del self._prices[: len(self._prices) - self._max_prices]

    def set_dr_event(self, event: DemandResponseEvent, now: datetime) -> None:
        """Add, replace, supersede or cancel (``event.cancelled``) a DR event.

        The effective start and end lie at a reproducible random point within
        ``randomize_start_s`` / ``randomize_end_s``, drawn from ``seed`` and the
        event id, so that a neighbourhood does not switch at the same second.
        A cancellation ends an event in force at ``now`` plus such a random
        part of its own ``randomize_end_s``, and drops an event not yet started.
        """
        now_s = _epoch(now)
        for old in event.supersedes:
            self._dr.pop(old, None)
        if event.cancelled:
            win = self._dr.get(event.event_id)
            if win is None:
                return
            if win.start > now_s:
                del self._dr[event.event_id]
                return
            rng = random.Random(f"{self.seed}:{event.event_id}:cancel")
            end = now_s + rng.random() * max(event.randomize_end_s, 0.0)
            self._dr[event.event_id] = _DrWindow(event=win.event, start=win.start,
                                                 end=min(win.end, end))
            return
        rng = random.Random(f"{self.seed}:{event.event_id}")
        start = _epoch(event.start) + rng.random() * max(event.randomize_start_s, 0.0)
        end = _epoch(event.end) + rng.random() * max(event.randomize_end_s, 0.0)
        self._dr[event.event_id] = _DrWindow(event=event, start=start, end=max(end, start))
        if len(self._dr) > self._max_events:
            oldest = min(self._dr.values(), key=lambda w: w.end)
            del self._dr[oldest.event.event_id]

    def expire(self, now: float) -> None:
        """Forget prices and DR events that are over."""
        if self._prices and any(p[1] <= now for p in self._prices):
            self._prices = [p for p in self._prices if p[1] > now]
        if self._dr and any(w.end <= now for w in self._dr.values()):
            self._dr = {k: w for k, w in self._dr.items() if w.end > now}

    # ---------------------------------------------------------------- queries
    def age(self, now: float) -> float | None:
        """Seconds since the newest snapshot was received; None before the first."""
        if self.last_received is None:
            return None
        return now - self.last_received

    def price(self, now: float) -> PriceSignal | None:
        best: tuple[float, float, int, PriceSignal] | None = None
        for p in self._prices:
            if p[0] <= now < p[1] and (best is None or p[2] > best[2]):
                best = p
        return best[3] if best is not None else None

    def active_events(self, now: float) -> list[tuple[DemandResponseEvent, float, float]]:
        """Events in force at ``now`` with their effective start and end, strongest first."""
        out = [(w.event, w.start, w.end) for w in self._dr.values() if w.start <= now < w.end]
        out.sort(key=lambda x: (-x[0].criticality, -x[1], x[0].event_id))
        return out

    def next_event_start(self, now: float) -> float | None:
        starts = [w.start for w in self._dr.values() if w.start > now]
        return min(starts) if starts else None

    def next_change(self, now: float) -> float | None:
        """The next time a price or DR event starts or ends (for scheduling)."""
        times = [t for p in self._prices for t in (p[0], p[1]) if t > now]
        for w in self._dr.values():
            times.extend(t for t in (w.start, w.end) if t > now)
        return min(times) if times else None

    def window(self, name: str, kind: str, seconds: float, now: float) -> float:
        s = self.series.get(name)
        if s is None:
            raise Missing(name)
        if kind == "avg":
            return s.mean(now, seconds)
        return s.extreme(now, seconds, kind == "max")


# -------------------------------------------------------------------- frame
class Frame:
    """The namespace at one ``now``: built by the engine for each evaluation."""

    __slots__ = ("_cache", "inputs", "loads", "now", "now_s", "vals")

    def __init__(self, inputs: Inputs, now: datetime, tz: tzinfo,
                 loads: Mapping[str, LoadView]) -> None:
        self.inputs = inputs
        self.now = now
        now_s = _epoch(now)
        self.now_s = now_s
        self.loads = loads
        self._cache: dict[tuple[str, str, float], float] = {}
        vals: dict[str, Value] = dict(inputs.values)
        local = now.astimezone(tz)
        vals["time"] = (local.hour * 3600.0 + local.minute * 60.0 + local.second
                        + local.microsecond / 1e6)
        vals["hour"] = float(local.hour)
        vals["minute"] = float(local.minute)
        wd = local.isoweekday()
        vals["weekday"] = float(wd)
        vals["weekend"] = wd >= 6
        vals["day"] = float(local.day)
        vals["month"] = float(local.month)
        price = inputs.price(now_s)
        if price is not None:
            vals["price"] = price.price_per_kwh
            if price.tier is not None:
                vals["price_tier"] = float(price.tier)
        events = inputs.active_events(now_s)
        if events:
            ev, start, end = events[0]
            vals["dr.active"] = True
            vals["dr.criticality"] = float(ev.criticality)
            vals["dr.load_adjustment_pct"] = float(ev.load_adjustment_pct or 0.0)
            vals["dr.duty_cycle_pct"] = float(
                ev.duty_cycle_pct if ev.duty_cycle_pct is not None else 100.0
            )
            vals["dr.elapsed"] = now_s - start
            vals["dr.remaining"] = end - now_s
            vals["dr.event"] = ev.event_id
            vals["dr.issuer"] = ev.issuer
        else:
            vals["dr.active"] = False
            vals["dr.criticality"] = 0.0
            vals["dr.load_adjustment_pct"] = 0.0
            vals["dr.duty_cycle_pct"] = 100.0
            vals["dr.elapsed"] = 0.0
            vals["dr.remaining"] = 0.0
            vals["dr.event"] = ""
            vals["dr.issuer"] = ""
        nxt = inputs.next_event_start(now_s)
        vals["dr.upcoming"] = nxt is not None
        if nxt is not None:
            vals["dr.starts_in"] = nxt - now_s
        self.vals = vals

    def dr_classes(self) -> tuple[str, ...] | None:
        """Target classes of the strongest event in force; () = all loads; None = no event."""
        events = self.inputs.active_events(self.now_s)
        if not events:
            return None
        return events[0][0].load_classes

    def window(self, name: str, kind: str, seconds: float) -> float:
        key = (name, kind, seconds)
        v = self._cache.get(key)
        if v is None:
            v = self.inputs.window(name, kind, seconds, self.now_s)
            self._cache[key] = v
        return v
