"""The register images the Modbus server answers with: SunSpec models and a flat float32 map.

Pure functions from the gateway's state (the newest ``Snapshot`` of one meter,
the price, DR events, load states) to lists of 16-bit register values; no
pymodbus, no I/O, so every register is tested by value.

SunSpec (SunSpec Information Model Specification 1.9; models from the SunSpec
``models`` repository, smdx_00001 and smdx_00201/00203), at protocol address
40000 ("40001" in 1-based tools)::

    40000  0x5375 0x6E53      'SunS' marker (uint32 0x53756E53)
    40002  1, 66              common model 1: Mn, Md, Opt, Vr, SN (strings), DA, Pad
    40070  201|203, 105       meter model: single phase (201) or wye three phase (203)
    40072  ...105 registers   A..Evt with scale factors (see METER_POINTS)
    40177  0xFFFF, 0          end model

A point the meter does not provide holds the SunSpec "not implemented" value
of its type: int16/sunssf/pad 0x8000, uint16/enum16 0xFFFF, acc32 0, bitfield32
0xFFFFFFFF, strings all zero.  Power ``W`` is positive when importing from the
grid and negative when exporting (the convention of SunSpec meters at the grid
connection point).  Scale factors are fixed per group (``SCALE_DEFAULTS``) and
raised only when a value would not fit an int16 at that scale, so a client
reading a model in one request always gets values and scale factors that
belong together.

The flat map (``FLAT_POINTS``): IEEE 754 float32 values, two registers each,
**big-endian word order** (high word first, "ABCD": mbpoll ``-B``), NaN where
unknown; offsets from ``flat_base``.

Not supported: model 202/204 (split phase, delta), apparent and reactive
energies (always "not implemented"), meter events (``Evt`` not implemented).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.model import DemandResponseEvent, LoadState, PriceSignal, Snapshot
from gateway.quantities import normalised_value, quantities_for

# ---------------------------------------------------------------- SunSpec types
NI_INT16 = 0x8000
NI_UINT16 = 0xFFFF
NI_ACC32 = 0
NI_BITFIELD32 = 0xFFFFFFFF
SUNS = (0x5375, 0x6E53)
COMMON_ID, COMMON_LEN = 1, 66
METER_LEN = 105
END_MODEL = (0xFFFF, 0)

#: Offsets of the common model's body from 40004.
COMMON_POINTS = {"Mn": (0, 16), "Md": (16, 16), "Opt": (32, 8), "Vr": (40, 8), "SN": (48, 16),
                 "DA": (64, 1), "Pad": (65, 1)}

#: Meter model 201/203 points: name -> (offset in the body, type, scale factor name).
METER_POINTS: dict[str, tuple[int, str, str | None]] = {}


def _meter_points() -> None:
    p = METER_POINTS

    def group(start: int, names: Sequence[str], sf: str, kind: str = "int16") -> int:
        step = 2 if kind == "acc32" else 1
        for i, n in enumerate(names):
            p[n] = (start + i * step, kind, sf)
        p[sf] = (start + len(names) * step, "sunssf", None)
        return start + len(names) * step + 1

    o = group(0, ("A", "AphA", "AphB", "AphC"), "A_SF")
    o = group(o, ("PhV", "PhVphA", "PhVphB", "PhVphC", "PPV", "PhVphAB", "PhVphBC", "PhVphCA"),
              "V_SF")
    o = group(o, ("Hz",), "Hz_SF")
    o = group(o, ("W", "WphA", "WphB", "WphC"), "W_SF")
    o = group(o, ("VA", "VAphA", "VAphB", "VAphC"), "VA_SF")
    o = group(o, ("VAR", "VARphA", "VARphB", "VARphC"), "VAR_SF")
    o = group(o, ("PF", "PFphA", "PFphB", "PFphC"), "PF_SF")
    o = group(o, ("TotWhExp", "TotWhExpPhA", "TotWhExpPhB", "TotWhExpPhC",
                  "TotWhImp", "TotWhImpPhA", "TotWhImpPhB", "TotWhImpPhC"), "TotWh_SF", "acc32")
    o = group(o, ("TotVAhExp", "TotVAhExpPhA", "TotVAhExpPhB", "TotVAhExpPhC",
                  "TotVAhImp", "TotVAhImpPhA", "TotVAhImpPhB", "TotVAhImpPhC"), "TotVAh_SF", "acc32")
    o = group(o, tuple(f"TotVArh{d}Q{q}{ph}" for d, q in (("Imp", 1), ("Imp", 2), ("Exp", 3),
                                                          ("Exp", 4))
                       for ph in ("", "PhA", "PhB", "PhC")), "TotVArh_SF", "acc32")
    p["Evt"] = (o, "bitfield32", None)
    assert o + 2 == METER_LEN, o


_meter_points()

#: Default scale factor (power of ten) per group; raised when a value overflows int16.
SCALE_DEFAULTS = {"A_SF": -2, "V_SF": -1, "Hz_SF": -2, "W_SF": 0, "VA_SF": 0, "VAR_SF": 0,
                  "PF_SF": -2, "TotWh_SF": 0, "TotVAh_SF": 0, "TotVArh_SF": 0}

MARKER_ADDR = 0  # offsets from the SunSpec base (40000)
COMMON_ADDR = 2
METER_ADDR = COMMON_ADDR + 2 + COMMON_LEN  # 70
END_ADDR = METER_ADDR + 2 + METER_LEN  # 177
SUNSPEC_SIZE = END_ADDR + 2  # 179


# ---------------------------------------------------------------- meter values
@dataclass(frozen=True, slots=True, kw_only=True)
class MeterValues:
    """The meter's values by quantity key, normalised (W, kWh, V, A, Hz)."""

    values: Mapping[str, float]
    received: datetime | None = None

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def net(self, imp: str, exp: str, net: str) -> float | None:
        """Import minus export (positive = from the grid), or the meter's own net value."""
        if net in self.values:
            return self.values[net]
        i, e = self.values.get(imp), self.values.get(exp)
        if i is None and e is None:
            return None
        return (i or 0.0) - (e or 0.0)

    def total(self, key: str) -> float | None:
        """A register total: the meter's own, else the sum of its tariff registers."""
        if key in self.values:
            return self.values[key]
        parts = [self.values[k] for k in (f"{key}_t{t}" for t in range(1, 5)) if k in self.values]
        return sum(parts) if parts else None

    def phases(self) -> int:
        """3 if the meter sends any per-phase value of L2 or L3, else 1."""
        return 3 if any(k.endswith(("_l2", "_l3")) for k in self.values) else 1


def meter_values(snapshot: Snapshot | None) -> MeterValues:
    """Numeric readings of ``snapshot`` in normalised units, keyed by quantity."""
    if snapshot is None:
        return MeterValues(values={})
    out: dict[str, float] = {}
    for reading, quantity in quantities_for(snapshot):
        value = normalised_value(reading, quantity)
        if isinstance(value, bool) or isinstance(value, str):
            continue
        x = float(value)
        if math.isfinite(x):
            out[quantity.key] = x
    return MeterValues(values=out, received=snapshot.received)


# ---------------------------------------------------------------- encoders
_FLOAT32_MAX = 3.4028234663852886e38
def string_regs(text: str, n_regs: int) -> list[int]:
    """A SunSpec string: ASCII, NUL padded, two characters a register, high byte first."""
    raw = text.encode("ascii", "replace")[: 2 * n_regs].ljust(2 * n_regs, b"\0")
    return [int.from_bytes(raw[i: i + 2], "big") for i in range(0, len(raw), 2)]


def float32_regs(value: float | None) -> list[int]:
    """IEEE 754 single precision, high word first; None -> quiet NaN."""
    x = math.nan if value is None else value
    if math.isfinite(x) and abs(x) > _FLOAT32_MAX:
        x = math.copysign(math.inf, x)  # struct.pack would raise OverflowError
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def decode_float32(regs: Sequence[int]) -> float:
    value: float = struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]
    return value


def _scaled_int16(values: Iterable[float | None], default_sf: int) -> tuple[int, list[int]]:
    """Choose the scale factor for a group and encode its int16 values."""
    present = [v for v in values if v is not None]
    sf = default_sf
    while sf < 10 and any(abs(round(v / 10.0 ** sf)) > 32767 for v in present):
        sf += 1
    out: list[int] = []
    for v in values:
        if v is None:
            out.append(NI_INT16)
        else:
            out.append(max(-32767, min(32767, round(v / 10.0 ** sf))) & 0xFFFF)
    return sf, out


def _scaled_acc32(values: Iterable[float | None], default_sf: int) -> tuple[int, list[int]]:
    present = [v for v in values if v is not None]
    sf = default_sf
    while sf < 10 and any(round(v / 10.0 ** sf) > 0xFFFFFFFF for v in present):
        sf += 1
    out: list[int] = []
    for v in values:
        # acc32 "not implemented" is 0; a real 0 Wh reads the same (the spec's choice).
        n = NI_ACC32 if v is None else max(0, min(0xFFFFFFFF, round(v / 10.0 ** sf)))
        out += [n >> 16, n & 0xFFFF]
    return sf, out


# ---------------------------------------------------------------- SunSpec image
@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    manufacturer: str = "han-gateway"
    model: str = "han-gateway HAN bridge"
    options: str = ""
    version: str = ""
    serial: str = ""  # the gateway id
    unit_id: int = 1


def sunspec_points(mv: MeterValues) -> dict[str, float | None]:
    """SunSpec meter point -> value in the point's unit (None: not provided)."""
    v = mv.get
    pts: dict[str, float | None] = {}
    phase_a = [v(f"current_l{i}") for i in (1, 2, 3)]
    pts["AphA"], pts["AphB"], pts["AphC"] = phase_a
    known_a = [a for a in phase_a if a is not None]
    pts["A"] = sum(known_a) if known_a else None
    volts = [v(f"voltage_l{i}") for i in (1, 2, 3)]
    pts["PhVphA"], pts["PhVphB"], pts["PhVphC"] = volts
    known_v = [x for x in volts if x is not None]
    pts["PhV"] = sum(known_v) / len(known_v) if known_v else None
    pts["Hz"] = v("frequency")
    pts["W"] = mv.net("power_import", "power_export", "power_net")
    for ph, i in (("A", 1), ("B", 2), ("C", 3)):
        pts[f"Wph{ph}"] = mv.net(f"power_import_l{i}", f"power_export_l{i}", f"power_net_l{i}")
    if pts["W"] is None:
        per_phase = [pts[f"Wph{ph}"] for ph in "ABC"]
        if any(x is not None for x in per_phase):
            pts["W"] = sum(x or 0.0 for x in per_phase)
    pts["VA"] = mv.net("apparent_power_import", "apparent_power_export", "apparent_power_net")
    pts["VAR"] = mv.net("reactive_power_import", "reactive_power_export", "reactive_power_net")
    for name, key in (("PF", "power_factor"), ("PFphA", "power_factor_l1"),
                      ("PFphB", "power_factor_l2"), ("PFphC", "power_factor_l3")):
        pf = v(key)
        # SunSpec PF is in percent; meters give cos phi as a fraction (DLMS, SML) or percent.
        pts[name] = None if pf is None else (pf * 100.0 if abs(pf) <= 1.0 else pf)
    imp, exp = mv.total("energy_import"), mv.total("energy_export")
    pts["TotWhImp"] = None if imp is None else imp * 1000.0
    pts["TotWhExp"] = None if exp is None else exp * 1000.0
    return pts


def sunspec_registers(mv: MeterValues, ident: Identity, *, phases: int) -> list[int]:
    """The whole SunSpec block (179 registers) for the base address 40000."""
    regs = [0] * SUNSPEC_SIZE
    regs[0:2] = SUNS
    regs[COMMON_ADDR: COMMON_ADDR + 2] = [COMMON_ID, COMMON_LEN]
    body = COMMON_ADDR + 2
    for name, text in (("Mn", ident.manufacturer), ("Md", ident.model), ("Opt", ident.options),
                       ("Vr", ident.version), ("SN", ident.serial)):
        off, n = COMMON_POINTS[name]
        regs[body + off: body + off + n] = string_regs(text, n)
    regs[body + 64] = ident.unit_id
    regs[body + 65] = NI_INT16  # pad
    regs[METER_ADDR: METER_ADDR + 2] = [201 if phases == 1 else 203, METER_LEN]
    mbody = METER_ADDR + 2
    pts = sunspec_points(mv)
    if phases == 1:  # model 201: phases B and C do not exist
        for name in list(pts):
            if name.endswith(("phB", "phC", "PhB", "PhC")):
                pts[name] = None
    groups: dict[str, list[str]] = {}
    for name, (_off, _kind, group_sf) in METER_POINTS.items():
        if group_sf is not None:
            groups.setdefault(group_sf, []).append(name)
    for sf_name, names in groups.items():
        values = [pts.get(point) for point in names]
        kind = METER_POINTS[names[0]][1]
        default = SCALE_DEFAULTS[sf_name]
        if kind == "acc32":
            sf, encoded = _scaled_acc32(values, default)
            for i, point in enumerate(names):
                at = mbody + METER_POINTS[point][0]
                regs[at: at + 2] = encoded[2 * i: 2 * i + 2]
        else:
            sf, encoded = _scaled_int16(values, default)
            for point, e in zip(names, encoded, strict=True):
                regs[mbody + METER_POINTS[point][0]] = e
        regs[mbody + METER_POINTS[sf_name][0]] = sf & 0xFFFF
    evt = METER_POINTS["Evt"][0]
    regs[mbody + evt: mbody + evt + 2] = [NI_BITFIELD32 >> 16, NI_BITFIELD32 & 0xFFFF]
    regs[END_ADDR: END_ADDR + 2] = END_MODEL
    return regs


# ---------------------------------------------------------------- flat map
#: Flat map: name -> offset from ``flat_base`` (each a float32 = 2 registers).
FLAT_POINTS: dict[str, int] = {}
FLAT_DOC: dict[str, str] = {}
_FLAT = (
    ("power_w", "net active power, W (+ import, - export)"),
    ("power_import_w", "active power import, W"),
    ("power_export_w", "active power export, W"),
    ("power_l1_w", "net active power L1, W"),
    ("power_l2_w", "net active power L2, W"),
    ("power_l3_w", "net active power L3, W"),
    ("voltage_l1_v", "voltage L1, V"),
    ("voltage_l2_v", "voltage L2, V"),
    ("voltage_l3_v", "voltage L3, V"),
    ("current_l1_a", "current L1, A"),
    ("current_l2_a", "current L2, A"),
    ("current_l3_a", "current L3, A"),
    ("energy_import_kwh", "energy import total, kWh"),
    ("energy_export_kwh", "energy export total, kWh"),
    ("energy_import_t1_kwh", "energy import tariff 1, kWh"),
    ("energy_import_t2_kwh", "energy import tariff 2, kWh"),
    ("energy_export_t1_kwh", "energy export tariff 1, kWh"),
    ("energy_export_t2_kwh", "energy export tariff 2, kWh"),
    ("frequency_hz", "frequency, Hz"),
    ("power_factor", "power factor (0..1)"),
    ("tariff", "tariff indicator of the meter (1, 2, ...)"),
    ("age_s", "seconds since the gateway received the snapshot (at the time of the read)"),
    ("meter_online", "1 meter online, 0 offline, NaN unknown"),
    ("price_per_kwh", "current price per kWh (NaN: none in force)"),
    ("price_tier", "current price tier (NaN: none)"),
    ("dr_level", "highest level of the DR events in force (0: none)"),
    ("dr_target_power_w", "lowest target power of the DR events in force, W (NaN: none)"),
    ("loads_known", "number of load slots in use"),
)
for _i, (_name, _doc) in enumerate(_FLAT):
    FLAT_POINTS[_name] = 2 * _i
    FLAT_DOC[_name] = _doc
FLAT_LOADS_ADDR = 64  # load slot i at 64 + 8 i: on, limit_w, power_w, override
FLAT_LOAD_FIELDS = ("on", "limit_w", "power_w", "override")
FLAT_LOAD_SLOTS = 16
FLAT_SIZE = FLAT_LOADS_ADDR + 2 * len(FLAT_LOAD_FIELDS) * FLAT_LOAD_SLOTS  # 192
assert FLAT_POINTS["loads_known"] + 2 <= FLAT_LOADS_ADDR


@dataclass(slots=True, kw_only=True)
class SignalState:
    """What the flat map shows besides the meter: price, DR and loads."""

    price: PriceSignal | None = None
    dr_events: Mapping[str, DemandResponseEvent] = field(default_factory=dict)
    loads: Mapping[str, LoadState] = field(default_factory=dict)
    load_order: Sequence[str] = ()  # slot order
    meter_online: bool | None = None


def flat_registers(mv: MeterValues, sig: SignalState, now: datetime) -> list[int]:
    """The flat float32 map (``FLAT_SIZE`` registers) as of ``now``."""
    v = mv.get
    values: dict[str, float | None] = {
        "power_w": mv.net("power_import", "power_export", "power_net"),
        "power_import_w": v("power_import"),
        "power_export_w": v("power_export"),
        "energy_import_kwh": mv.total("energy_import"),
        "energy_export_kwh": mv.total("energy_export"),
        "frequency_hz": v("frequency"),
        "power_factor": v("power_factor"),
        "tariff": v("tariff"),
        "age_s": None if mv.received is None else max(0.0, (now - mv.received).total_seconds()),
        "meter_online": None if sig.meter_online is None else float(sig.meter_online),
    }
    for i in (1, 2, 3):
        values[f"power_l{i}_w"] = mv.net(f"power_import_l{i}", f"power_export_l{i}",
                                         f"power_net_l{i}")
        values[f"voltage_l{i}_v"] = v(f"voltage_l{i}")
        values[f"current_l{i}_a"] = v(f"current_l{i}")
    for d in ("import", "export"):
        for t in (1, 2):
            values[f"energy_{d}_t{t}_kwh"] = v(f"energy_{d}_t{t}")
    price = sig.price
    if price is not None and price.start <= now < price.end:
        values["price_per_kwh"] = price.price_per_kwh
        values["price_tier"] = None if price.tier is None else float(price.tier)
    active = [e for e in sig.dr_events.values() if not e.cancelled and e.start <= now < e.end]
    values["dr_level"] = float(max((e.level for e in active), default=0))
    targets = [e.target_power_w for e in active if e.target_power_w is not None]
    values["dr_target_power_w"] = min(targets) if targets else None
    slots = list(sig.load_order)[:FLAT_LOAD_SLOTS]
    values["loads_known"] = float(len(slots))
    regs: list[int] = []
    for name, _doc in _FLAT:
        regs += float32_regs(values.get(name))
    regs += float32_regs(None) * ((FLAT_LOADS_ADDR - len(regs)) // 2)
    for i in range(FLAT_LOAD_SLOTS):
        state = sig.loads.get(slots[i]) if i < len(slots) else None
        if state is None:
            regs += float32_regs(None) * len(FLAT_LOAD_FIELDS)
            continue
        regs += float32_regs(1.0 if state.on else 0.0)
        regs += float32_regs(state.limit_w)
        regs += float32_regs(state.power_w)
        regs += float32_regs(1.0 if state.override else 0.0)
    assert len(regs) == FLAT_SIZE
    return regs
