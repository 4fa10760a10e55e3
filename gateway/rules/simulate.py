"""``han-gateway rules simulate``: replay recorded history through the rules.

The history comes from a CSV file (:func:`read_history_csv`) or from the
gateway's store (:func:`read_history_store`).  :func:`simulate` feeds it to an
:class:`~gateway.rules.engine.Engine` as a meter would (the same values again
every ``tick_s`` between records, so the data never looks stale), applies
each command to a simple model of the house, and feeds the modelled import
back, so the rules see their own effect.  :func:`render_report` prints the
timeline of decisions and a summary: the peak before and after (instantaneous
and the highest 15-minute mean, which capacity tariffs bill), energy imported
and the energy shifted.  :func:`plot_result` draws both import curves when
matplotlib is installed (it is optional; ``pip install matplotlib``).

CSV columns (a header row is required; order is free; empty cell = no value):

==========================  =============================================================
``time``                    ISO 8601 (``2026-01-05T17:00:00+01:00``; no offset = UTC) or
                            Unix seconds; rows in increasing order; required
``import_power_w``          import power in W (or ``import_power_kw`` in kW); required
``export_power_w``          export power in W (or ``export_power_kw``)
``import_energy_kwh``       energy register, passed to the rules
``export_energy_kwh``       energy register, passed to the rules
``tariff``                  the meter's tariff indicator
``price``                   price per kWh, valid from this row until the next price
``dr_criticality``          1-9: a DR event in force from this row until the value
                            changes; 0 or empty: none
``dr_event``                the event id (default ``csv-<row>``)
``dr_classes``              target load classes, separated by spaces
``dr_duty_cycle_pct``       the event's duty cycle
``dr_load_adjustment_pct``  the event's load adjustment
``load_<name>_w``           what load ``<name>`` draws without the rules, in W
==========================  =============================================================

The house model: the recorded import includes every load.  Shedding a load
removes what it draws: its ``load_<name>_w`` column, else its rated power
whenever the recorded import leaves room for it (loads without a column taken
in file order: an upper bound of what shedding them saves).  A limit removes
what it draws above the limit.  With a ``load_<name>_w`` column the
energy a load did not get is paid back after the restore, at up to its rated
power ("rebound"); without one no rebound is modelled and the report says
so.  Export is what is left when the modelled net power goes negative.

Not supported: price or DR history from the store (only power), a load's
own dynamics (a thermostat that would have switched by itself).
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO

from gateway.errors import ConfigError
from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    PriceSignal,
    Reading,
    Snapshot,
)
from gateway.quantities import quantity_for
from gateway.rules.engine import Engine
from gateway.rules.rulefile import RuleSet, load_rule_dir

__all__ = [
    "HistorySource",
    "Record",
    "SimulationResult",
    "matplotlib_available",
    "plot_result",
    "read_history_csv",
    "read_history_store",
    "render_report",
    "run_simulate",
    "simulate",
]

BUCKET_S = 900.0  # capacity tariffs bill the highest quarter-hour mean
_NO_MATPLOTLIB = "matplotlib is not installed (pip install matplotlib), so no plot can be drawn"

_FIELDS = ("time", "import_power_w", "import_power_kw", "export_power_w", "export_power_kw",
           "import_energy_kwh", "export_energy_kwh", "tariff", "price", "dr_criticality",
           "dr_event", "dr_classes", "dr_duty_cycle_pct", "dr_load_adjustment_pct")


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One moment of recorded history (powers in W, as recorded: without rules)."""

    time: datetime
    import_power_w: float
    export_power_w: float = 0.0
    import_energy_kwh: float | None = None
    export_energy_kwh: float | None = None
    tariff: str | None = None
    price: float | None = None
    dr_criticality: int = 0
    dr_event: str = ""
    dr_classes: tuple[str, ...] = ()
    dr_duty_cycle_pct: float | None = None
    dr_load_adjustment_pct: float | None = None
    load_power_w: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    rules: RuleSet
    records: int
    start: datetime
    end: datetime
    commands: tuple[LoadCommand, ...]
    command_import_kw: tuple[tuple[float, float], ...]  # (recorded, modelled) at each command
    times: tuple[datetime, ...]  # each modelled interval's start
    baseline_kw: tuple[float, ...]  # import without the rules
    simulated_kw: tuple[float, ...]  # import with the rules
    peak_before_kw: float
    peak_after_kw: float
    peak15_before_kw: float
    peak15_after_kw: float
    energy_before_kwh: float
    energy_after_kwh: float
    shifted_kwh: float
    paid_back_kwh: float
    modelled_loads: tuple[str, ...]  # loads with a load_<name>_w column
    shed_seconds: tuple[tuple[str, float], ...] = field(default=())


# ------------------------------------------------------------------ reading
def _bad(file: str, line: int, column: str, msg: str) -> ConfigError:
    return ConfigError([(f"{file}:{line}", column, msg)])


def _float(file: str, line: int, column: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _bad(file, line, column, f"expected a number, found {text!r}") from None
    if not math.isfinite(v):
        raise _bad(file, line, column, f"expected a finite number, found {text!r}")
    return v


def _time(file: str, line: int, text: str) -> datetime:
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        t = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise _bad(file, line, "time",
                   f"expected ISO 8601 or Unix seconds, found {text!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def read_history_csv(path: Path) -> list[Record]:
    """Read a history CSV (columns in the module docstring).

    Raises:
        ConfigError: the file cannot be read, or a row is wrong (``file:line``,
            column, what was expected).
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError([(file, "(file)", f"cannot read: {detail}")]) from exc
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise _bad(file, 1, "(header)", "the file is empty; expected a header row")
    header = [h.strip() for h in header]
    for h in header:
        if h not in _FIELDS and not (h.startswith("load_") and h.endswith("_w")):
            raise _bad(file, 1, h,
                       f"unknown column (expected {', '.join(_FIELDS)} or load_<name>_w)")
    if "time" not in header:
        raise _bad(file, 1, "time", "required column is missing")
    if "import_power_w" not in header and "import_power_kw" not in header:
        raise _bad(file, 1, "import_power_w", "required column is missing (or import_power_kw)")
    out: list[Record] = []
    for n, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise _bad(file, n, "(row)", f"expected {len(header)} cells, found {len(row)}")
        cells = {h: c.strip() for h, c in zip(header, row, strict=True)}
        t = _time(file, n, cells["time"])
        if out and t <= out[-1].time:
            raise _bad(file, n, "time", "expected rows in increasing time order")

        def num(col: str, scale: float = 1.0, *, cells: dict[str, str] = cells,
                n: int = n) -> float | None:
            text = cells.get(col, "")
            return _float(file, n, col, text) * scale if text else None

        imp = num("import_power_w")
        if imp is None:
            imp = num("import_power_kw", 1000.0)
        if imp is None:
            raise _bad(file, n, "import_power_w", "expected a value in every row")
        exp = num("export_power_w")
        if exp is None:
            exp = num("export_power_kw", 1000.0)
        crit_text = cells.get("dr_criticality", "")
        crit = 0
        if crit_text:
            c = _float(file, n, "dr_criticality", crit_text)
            if c != int(c) or not 0 <= c <= 9:
                raise _bad(file, n, "dr_criticality", "expected a whole number from 0 to 9")
            crit = int(c)
        loads = tuple(
            (h[5:-2], v) for h in header if h.startswith("load_") and h.endswith("_w")
            for v in (num(h),) if v is not None
        )
        out.append(Record(
            time=t,
            import_power_w=imp,
            export_power_w=exp or 0.0,
            import_energy_kwh=num("import_energy_kwh"),
            export_energy_kwh=num("export_energy_kwh"),
            tariff=cells.get("tariff") or None,
            price=num("price"),
            dr_criticality=crit,
            dr_event=cells.get("dr_event", ""),
            dr_classes=tuple(cells.get("dr_classes", "").split()),
            dr_duty_cycle_pct=num("dr_duty_cycle_pct"),
            dr_load_adjustment_pct=num("dr_load_adjustment_pct"),
            load_power_w=loads,
        ))
    if not out:
        raise _bad(file, 2, "(rows)", "expected at least one data row")
    return out


class _AggregateLike(Protocol):
    @property
    def start(self) -> datetime: ...

    @property
    def avg(self) -> float: ...


class HistorySource(Protocol):
    """What :func:`read_history_store` needs of :class:`gateway.store.Store`."""

    async def readings(self, meter: str) -> list[tuple[str, str | None]]: ...

    async def history(self, meter: str, reading_id: str, start: datetime,
                      end: datetime) -> list[tuple[datetime, float]]: ...

    async def aggregates(self, meter: str, reading_id: str, start: datetime,
                         end: datetime) -> Sequence[_AggregateLike]: ...


async def read_history_store(store: HistorySource, *, meter: str, start: datetime,
                             end: datetime) -> list[Record]:
    """Import and export power of ``meter`` from the store, raw where kept, else the
    15-minute means.

    Raises:
        ConfigError: the store has no import power for that meter and span.
        StoreError: the store failed.
    """
    ids: dict[str, tuple[str, float]] = {}
    for rid, unit in await store.readings(meter):
        q = quantity_for(Reading(id=rid, value=0.0, unit=unit))
        if q.key in ("power_import", "power_export") and q.key not in ids and q.unit == "W":
            ids[q.key] = (rid, q.scale)
    if "power_import" not in ids:
        raise ConfigError([("(store)", f"meter {meter}",
                            "no import power (1-0:1.7.0) in the history")])
    series: dict[str, list[tuple[datetime, float]]] = {}
    for key, (rid, scale) in ids.items():
        raw = await store.history(meter, rid, start, end)
        if not raw:
            raw = [(a.start, a.avg) for a in await store.aggregates(meter, rid, start, end)]
        series[key] = [(t, v * scale) for t, v in raw]
    times = sorted({t for pts in series.values() for t, _ in pts})
    if not times:
        raise ConfigError([("(store)", f"meter {meter}",
                            f"no import power between {start.isoformat()} and {end.isoformat()}")])
    out: list[Record] = []
    idx = {k: 0 for k in series}
    last: dict[str, float] = {}
    for t in times:
        for k, pts in series.items():
            i = idx[k]
            while i < len(pts) and pts[i][0] <= t:
                last[k] = pts[i][1]
                i += 1
            idx[k] = i
        if "power_import" not in last:
            continue
        out.append(Record(time=t, import_power_w=last["power_import"],
                          export_power_w=last.get("power_export", 0.0)))
    return out


# --------------------------------------------------------------- simulating
def _snapshot(t: datetime, import_w: float, export_w: float, rec: Record) -> Snapshot:
    readings = [
        Reading(id="1-0:1.7.0", value=round(import_w / 1000.0, 6), unit="kW"),
        Reading(id="1-0:2.7.0", value=round(export_w / 1000.0, 6), unit="kW"),
    ]
    if rec.import_energy_kwh is not None:
        readings.append(Reading(id="1-0:1.8.0", value=rec.import_energy_kwh, unit="kWh"))
    if rec.export_energy_kwh is not None:
        readings.append(Reading(id="1-0:2.8.0", value=rec.export_energy_kwh, unit="kWh"))
    if rec.tariff is not None:
        readings.append(Reading(id="0-0:96.14.0", value=rec.tariff))
    return Snapshot(meter="history", protocol="history", device_id=None, timestamp=t, received=t,
                    readings=tuple(readings))


def _signals(records: Sequence[Record], horizon: datetime) -> tuple[
        list[tuple[int, PriceSignal]], list[tuple[int, DemandResponseEvent]]]:
    prices: list[tuple[int, PriceSignal]] = []
    events: list[tuple[int, DemandResponseEvent]] = []
    price_rows = [i for i, r in enumerate(records) if r.price is not None]
    for k, i in enumerate(price_rows):
        end = records[price_rows[k + 1]].time if k + 1 < len(price_rows) else horizon
        p = records[i].price
        assert p is not None
        prices.append((i, PriceSignal(start=records[i].time, end=end, price_per_kwh=p,
                                      source="history")))
    i = 0
    while i < len(records):
        r = records[i]
        if r.dr_criticality <= 0:
            i += 1
            continue
        j = i + 1
        while (j < len(records) and records[j].dr_criticality == r.dr_criticality
               and records[j].dr_event == r.dr_event):
            j += 1
        end = records[j].time if j < len(records) else horizon
        events.append((i, DemandResponseEvent(
            event_id=r.dr_event or f"csv-{i + 2}", start=r.time, end=end, issuer="history",
            criticality=r.dr_criticality, load_classes=r.dr_classes,
            duty_cycle_pct=r.dr_duty_cycle_pct, load_adjustment_pct=r.dr_load_adjustment_pct,
            source="history")))
        i = j
    return prices, events


@dataclass(slots=True)
class _Plant:
    """What each load draws with the rules, given what it would draw without them."""

    mode: dict[str, str]
    limit_w: dict[str, float]
    owed_kwh: dict[str, float]

    def power(self, rules: RuleSet, rec: Record, dt_s: float,
              commit: bool) -> tuple[float, float, float]:
        """(removed W, paid back W, energy shifted kWh) over the next ``dt_s``;
        ``commit`` books the energy owed and paid back."""
        cols = dict(rec.load_power_w)
        removed = paid = 0.0
        shifted = 0.0
        room = rec.import_power_w - sum(cols.values())
        for spec in rules.loads:
            modelled = spec.name in cols
            if modelled:
                draw = cols[spec.name]
            elif room >= spec.rated_power_w:
                draw = spec.rated_power_w
                room -= draw
            else:
                draw = 0.0
            mode = self.mode.get(spec.name, "on")
            if mode == "off":
                cut = draw
            elif mode == "limit":
                cut = max(0.0, draw - self.limit_w.get(spec.name, draw))
            else:
                cut = 0.0
            removed += cut
            shifted += cut * dt_s / 3.6e6
            owed = self.owed_kwh.get(spec.name, 0.0)
            if mode == "on" and owed > 0 and dt_s > 0:
                room = max(0.0, spec.rated_power_w - draw)
                extra = min(room, owed * 3.6e6 / dt_s)
                paid += extra
                owed -= extra * dt_s / 3.6e6
            if cut > 0 and modelled:
                owed += cut * dt_s / 3.6e6
            if commit:
                self.owed_kwh[spec.name] = owed
        return removed, paid, shifted


def simulate(rules: RuleSet, records: Sequence[Record], *, seed: int = 0,
             tick_s: float = 60.0) -> SimulationResult:
    """Run ``records`` through an engine for ``rules``; pure (no I/O).

    Raises:
        ValueError: ``records`` is empty or not in time order (read_history_* never
            return such).
    """
    if not records:
        raise ValueError("no records")
    engine = Engine(rules, rng_seed=seed, log_commands=False)
    # The last record holds as long as the one before it (or one tick).
    last_span = (records[-1].time - records[-2].time if len(records) > 1
                 else timedelta(seconds=max(tick_s, 1.0)))
    horizon = records[-1].time + last_span
    prices, events = _signals(records, horizon)
    plant = _Plant(mode={}, limit_w={}, owed_kwh={})
    commands: list[LoadCommand] = []
    at_command: list[tuple[float, float]] = []
    times: list[datetime] = []
    base: list[float] = []
    sim: list[float] = []
    shifted = paid_total = 0.0
    shed_s: dict[str, float] = {}
    pi = ei = 0
    for i, rec in enumerate(records):
        end = records[i + 1].time if i + 1 < len(records) else horizon
        while pi < len(prices) and prices[pi][0] <= i:
            engine.set_price(prices[pi][1])
            pi += 1
        while ei < len(events) and events[ei][0] <= i:
            engine.set_dr_event(events[ei][1], rec.time)
            ei += 1
        t = rec.time
        while t < end:
            nxt = min(end, t + timedelta(seconds=tick_s))
            wake = engine.next_wakeup(t)
            if wake is not None and t < wake < nxt:
                nxt = wake
            dt_s = (nxt - t).total_seconds()
            # What the meter shows now (the rules' earlier decisions included) ...
            removed, payback, _ = plant.power(rules, rec, dt_s, commit=False)
            net = rec.import_power_w - rec.export_power_w - removed + payback
            engine.observe(_snapshot(t, max(net, 0.0), max(-net, 0.0), rec))
            cmds = engine.evaluate(t)
            for c in cmds:
                if c.action is LoadAction.SHED:
                    plant.mode[c.load] = "off"
                elif c.action is LoadAction.LIMIT:
                    plant.mode[c.load] = "limit"
                    plant.limit_w[c.load] = c.limit_w or 0.0
                else:
                    plant.mode[c.load] = "on"
            # ... and over the interval that follows, after them.
            removed, payback, cut_kwh = plant.power(rules, rec, dt_s, commit=True)
            net = rec.import_power_w - rec.export_power_w - removed + payback
            after = max(net, 0.0) / 1000.0
            for c in cmds:
                commands.append(c)
                at_command.append((rec.import_power_w / 1000.0, after))
            for name, mode in plant.mode.items():
                if mode == "off":
                    shed_s[name] = shed_s.get(name, 0.0) + dt_s
            shifted += cut_kwh
            paid_total += payback * dt_s / 3.6e6
            times.append(t)
            base.append(rec.import_power_w / 1000.0)
            sim.append(after)
            t = nxt
    spans = [(times[k + 1] if k + 1 < len(times) else horizon) - times[k]
             for k in range(len(times))]
    secs = [s.total_seconds() for s in spans]
    return SimulationResult(
        rules=rules,
        records=len(records),
        start=records[0].time,
        end=records[-1].time,
        commands=tuple(commands),
        command_import_kw=tuple(at_command),
        times=tuple(times),
        baseline_kw=tuple(base),
        simulated_kw=tuple(sim),
        peak_before_kw=max(base),
        peak_after_kw=max(sim),
        peak15_before_kw=_peak15(times, base, secs),
        peak15_after_kw=_peak15(times, sim, secs),
        energy_before_kwh=sum(b * s for b, s in zip(base, secs, strict=True)) / 3600.0,
        energy_after_kwh=sum(v * s for v, s in zip(sim, secs, strict=True)) / 3600.0,
        shifted_kwh=shifted,
        paid_back_kwh=paid_total,
        modelled_loads=tuple(sorted({n for r in records for n, _ in r.load_power_w})),
        shed_seconds=tuple(sorted(shed_s.items())),
    )


def _peak15(times: Sequence[datetime], kw: Sequence[float], secs: Sequence[float]) -> float:
    """The highest mean over an aligned quarter hour (partly covered ones by their cover)."""
    energy: dict[int, float] = {}
    cover: dict[int, float] = {}
    for t, v, s in zip(times, kw, secs, strict=True):
        a = t.timestamp()
        b = a + s
        while a < b:
            bucket = int(a // BUCKET_S)
            edge = min(b, (bucket + 1) * BUCKET_S)
            energy[bucket] = energy.get(bucket, 0.0) + v * (edge - a)
            cover[bucket] = cover.get(bucket, 0.0) + (edge - a)
            a = edge
    return max(energy[k] / cover[k] for k in energy if cover[k] > 0)


# ---------------------------------------------------------------- reporting
def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_report(result: SimulationResult, out: TextIO) -> None:
    """Print the decision timeline and the summary."""
    rs = result.rules
    w = out.write
    w(f"rules: {len(rs.loads)} load(s), {len(rs.rules)} rule(s) from "
      f"{', '.join(rs.files) or '(none)'}\n")
    w(f"history: {_when(result.start)} to {_when(result.end)} UTC, {result.records} record(s)\n\n")
    lw = max([4, *(len(c.load) for c in result.commands)])
    rw = max([4, *(len(c.rule) for c in result.commands)])
    w(f"{'time (UTC)':<19}  {'load':<{lw}}  {'action':<16} {'rule':<{rw}}  {'import kW':>9} "
      f"  {'model':>6}  reason\n")
    for c, (before, after) in zip(result.commands, result.command_import_kw, strict=True):
        action = c.action.value
        if c.action is LoadAction.LIMIT and c.limit_w is not None:
            action = f"limit {c.limit_w / 1000:.2f} kW"
        issued = c.issued or result.start
        w(f"{_when(issued):<19}  {c.load:<{lw}}  {action:<16} {c.rule:<{rw}}  {before:>9.2f} → "
          f"{after:>6.2f}  {c.reason}\n")
    if not result.commands:
        w("(no decisions)\n")
    w("\nsummary                         without rules   with rules\n")
    r = result
    w(f"  peak import                   {r.peak_before_kw:>10.2f} kW {r.peak_after_kw:>9.2f} kW\n")
    w(f"  peak 15-minute mean           {r.peak15_before_kw:>10.2f} kW "
      f"{r.peak15_after_kw:>9.2f} kW\n")
    w(f"  energy imported               {r.energy_before_kwh:>9.2f} kWh "
      f"{r.energy_after_kwh:>8.2f} kWh\n")
    w(f"  energy shifted (not drawn while shed or limited): {result.shifted_kwh:.2f} kWh")
    if result.modelled_loads:
        w(f", paid back afterwards: {result.paid_back_kwh:.2f} kWh "
          f"(loads with a power column: {', '.join(result.modelled_loads)})\n")
    else:
        w(" (no load_<name>_w columns: loads assumed at rated power where the import leaves "
          "room, rebound not modelled)\n")
    per_load: dict[str, int] = {}
    for c in result.commands:
        per_load[c.load] = per_load.get(c.load, 0) + 1
    if per_load:
        w("  commands: " + ", ".join(f"{k} {v}" for k, v in sorted(per_load.items())) + "\n")
    if result.shed_seconds:
        w("  time shed: " + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in result.shed_seconds)
          + "\n")


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_result(result: SimulationResult, path: Path) -> None:
    """Write a PNG of import power with and without the rules.

    Raises:
        ConfigError: matplotlib is not installed, or the file cannot be written.
    """
    if not matplotlib_available():
        raise ConfigError([(str(path), "--plot", _NO_MATPLOTLIB)])
    # Imported by name: matplotlib is optional and has no stubs here.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    fig, ax = plt.subplots(figsize=(11, 4.5))
    try:
        xs = list(result.times)
        ax.step(xs, result.baseline_kw, where="post", label="without rules", color="#999999",
                linewidth=1)
        ax.step(xs, result.simulated_kw, where="post", label="with rules", color="#c0392b",
                linewidth=1.2)
        ax.set_ylabel("import power (kW)")
        ax.set_title(f"peak {result.peak_before_kw:.2f} → {result.peak_after_kw:.2f} kW, "
                     f"15-min peak {result.peak15_before_kw:.2f} → {result.peak15_after_kw:.2f} kW")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
        fig.autofmt_xdate()
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=100)
        except OSError as exc:
            raise ConfigError([(str(path), "--plot",
                                f"cannot write: {exc.strerror or exc}")]) from exc
    finally:
        plt.close(fig)


async def run_simulate(
    *,
    rules_dir: Path,
    history: Path | None = None,
    store: HistorySource | None = None,
    meter: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    plot: Path | None = None,
    seed: int = 0,
    tick_s: float = 60.0,
    out: TextIO,
) -> int:
    """The ``rules simulate`` command: validate, read history, simulate, report.

    Give ``history`` (a CSV file) or ``store`` with ``meter`` (``start``/``end``
    default to the 7 days before ``end``, itself defaulting to now).  Returns the
    exit status (0).

    Raises:
        ConfigError: bad rules (RuleSyntaxError), history or arguments; the
            plot was asked for but matplotlib is missing.
        StoreError: the store failed.
    """
    if plot is not None and not matplotlib_available():
        raise ConfigError([(str(plot), "--plot", _NO_MATPLOTLIB)])
    rules = load_rule_dir(rules_dir)
    if history is not None:
        records = read_history_csv(history)
    elif store is not None and meter is not None:
        stop = end or datetime.now(UTC)
        since = start or stop - timedelta(days=7)
        records = await read_history_store(store, meter=meter, start=since, end=stop)
    else:
        raise ConfigError([("(arguments)", "--history", "give --history FILE.csv or --from-store")])
    result = simulate(rules, records, seed=seed, tick_s=tick_s)
    render_report(result, out)
    if plot is not None:
        plot_result(result, plot)
        out.write(f"\nplot written to {plot}\n")
    return 0
