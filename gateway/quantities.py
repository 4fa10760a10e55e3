"""What a reading *is*: a data table from reading ids to named, unit-normalised quantities.

Maps OBIS codes (IEC 62056-61, as used by DSMR 5.0.2, DLMS/COSEM and SML) and
the short IEC 62056-21 addresses (``1.8.0``, ``32.7.0``) to a :class:`Quantity`:
a topic-safe key (``energy_import_t1``), a human name, and the Home Assistant
``device_class`` / ``state_class`` / unit after normalisation, so that energy
totals land in HA's Energy dashboard (``energy`` + kWh + ``total_increasing``,
``gas`` + m³ + ``total_increasing``).

Units are normalised per dimension: energy to kWh (or GJ for heat read in joules),
power to W, volume to m³, voltage to V, current to A.  ``Quantity.scale`` is the
factor from the reading's own unit to ``Quantity.unit`` (kW → W is ×1000).

Not supported: historic values (OBIS F ≠ 255, ``1.8.0*01``) get a generic
quantity, not the live one; a reading without a unit is assumed to be in the
target unit already; unit strings outside the table pass through unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gateway.model import Reading, Snapshot

__all__ = [
    "QUANTITIES",
    "Quantity",
    "canonical_unit",
    "normalised_value",
    "quantities_for",
    "quantity_for",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantity:
    key: str  # topic-safe slug: [a-z0-9_-]
    name: str
    device_class: str | None = None  # Home Assistant sensor device class
    state_class: str | None = None  # "total_increasing" | "total" | "measurement"
    unit: str | None = None  # unit after normalisation
    scale: float = 1.0  # reading unit -> ``unit``
    diagnostic: bool = False  # HA entity_category "diagnostic"


# ------------------------------------------------------------------- units
# canonical spelling -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "Wh": ("energy", 1.0),
    "kWh": ("energy", 1e3),
    "MWh": ("energy", 1e6),
    "GWh": ("energy", 1e9),
    "J": ("energy", 1 / 3600),
    "kJ": ("energy", 1e3 / 3600),
    "MJ": ("energy", 1e6 / 3600),
    "GJ": ("energy", 1e9 / 3600),
    "W": ("power", 1.0),
    "kW": ("power", 1e3),
    "MW": ("power", 1e6),
    "var": ("reactive_power", 1.0),
    "kvar": ("reactive_power", 1e3),
    "Mvar": ("reactive_power", 1e6),
    "VA": ("apparent_power", 1.0),
    "kVA": ("apparent_power", 1e3),
    "MVA": ("apparent_power", 1e6),
    "varh": ("reactive_energy", 1.0),
    "kvarh": ("reactive_energy", 1e3),
    "Mvarh": ("reactive_energy", 1e6),
    "mV": ("voltage", 1e-3),
    "V": ("voltage", 1.0),
    "kV": ("voltage", 1e3),
    "mA": ("current", 1e-3),
    "A": ("current", 1.0),
    "kA": ("current", 1e3),
    "m³": ("volume", 1.0),
    "L": ("volume", 1e-3),
    "m³/h": ("volume_flow", 1.0),
    "L/h": ("volume_flow", 1e-3),
    "L/min": ("volume_flow", 60e-3),
    "Hz": ("frequency", 1.0),
    "°C": ("temperature", 1.0),
    "bar": ("pressure", 1.0),
    "s": ("duration", 1.0),
    "%": ("ratio", 1.0),
}

# Spellings seen on the wire (DSMR "m3", M-Bus "l", SML "Wh") -> canonical.
_ALIASES: dict[str, str] = {
    "m3": "m³",
    "m^3": "m³",
    "l": "L",
    "dm3": "L",
    "dm³": "L",
    "m3/h": "m³/h",
    "m^3/h": "m³/h",
    "l/h": "L/h",
    "l/min": "L/min",
    "C": "°C",
    "degC": "°C",
    "VAr": "var",
    "kVAr": "kvar",
    "VArh": "varh",
    "kVArh": "kvarh",
    "kvarh": "kvarh",
    "sec": "s",
}

# Case-insensitive fallback for lower/upper-case variants ("KWH", "kwh").  M/m
# prefixes are ambiguous (MWh vs mWh) and so left to the exact tables above.
_CASELESS: dict[str, str] = {
    "wh": "Wh",
    "kwh": "kWh",
    "w": "W",
    "kw": "kW",
    "v": "V",
    "a": "A",
    "m3": "m³",
    "gj": "GJ",
    "kvarh": "kvarh",
    "kvar": "kvar",
    "var": "var",
    "varh": "varh",
    "va": "VA",
    "kva": "kVA",
    "hz": "Hz",
}

# Base-unit target per dimension for quantities that do not name one.
_DEFAULT_TARGET: dict[str, str] = {
    "energy": "kWh",
    "power": "W",
    "reactive_power": "var",
    "apparent_power": "VA",
    "reactive_energy": "kvarh",
    "voltage": "V",
    "current": "A",
    "volume": "m³",
    "volume_flow": "m³/h",
}

# Generic HA classes per dimension, for ids outside the table.
_GENERIC_CLASS: dict[str, tuple[str | None, str]] = {
    "energy": ("energy", "total"),
    "power": ("power", "measurement"),
    "reactive_power": ("reactive_power", "measurement"),
    "apparent_power": ("apparent_power", "measurement"),
    "reactive_energy": (None, "total"),
    "voltage": ("voltage", "measurement"),
    "current": ("current", "measurement"),
    "volume": ("volume", "total"),
    "volume_flow": ("volume_flow_rate", "measurement"),
    "frequency": ("frequency", "measurement"),
    "temperature": ("temperature", "measurement"),
    "pressure": ("pressure", "measurement"),
    "duration": ("duration", "measurement"),
    "ratio": (None, "measurement"),
}

_JOULES = frozenset({"J", "kJ", "MJ", "GJ"})


def canonical_unit(unit: str | None) -> str | None:
    """The table's spelling of ``unit`` (``"m3"`` -> ``"m³"``), or ``unit`` unchanged."""
    if unit is None:
        return None
    text = unit.strip().lstrip("*")
    if not text:
        return None
    if text in _UNITS:
        return text
    if text in _ALIASES:
        return _ALIASES[text]
    return _CASELESS.get(text.lower(), text)


def _dimension(unit: str | None) -> str | None:
    entry = _UNITS.get(unit) if unit is not None else None
    return entry[0] if entry else None


# ------------------------------------------------------------------- table
_TOTAL = "total_increasing"
_MEAS = "measurement"


def _q(
    key: str,
    name: str,
    device_class: str | None = None,
    state_class: str | None = None,
    unit: str | None = None,
    *,
    diagnostic: bool = False,
) -> Quantity:
    return Quantity(
        key=key,
        name=name,
        device_class=device_class,
        state_class=state_class,
        unit=unit,
        diagnostic=diagnostic,
    )


def _electricity() -> dict[tuple[int, int, int], Quantity]:
    t: dict[tuple[int, int, int], Quantity] = {
        (1, 8, 0): _q("energy_import", "Energy import", "energy", _TOTAL, "kWh"),
        (2, 8, 0): _q("energy_export", "Energy export", "energy", _TOTAL, "kWh"),
        (15, 8, 0): _q("energy_absolute", "Energy absolute", "energy", _TOTAL, "kWh"),
        (3, 8, 0): _q("reactive_energy_import", "Reactive energy import", None, _TOTAL, "kvarh"),
        (4, 8, 0): _q("reactive_energy_export", "Reactive energy export", None, _TOTAL, "kvarh"),
        (1, 7, 0): _q("power_import", "Power import", "power", _MEAS, "W"),
        (2, 7, 0): _q("power_export", "Power export", "power", _MEAS, "W"),
        (16, 7, 0): _q("power_net", "Power (net)", "power", _MEAS, "W"),
        (3, 7, 0): _q("reactive_power_import", "Reactive power import", "reactive_power", _MEAS,
                      "var"),
        (4, 7, 0): _q("reactive_power_export", "Reactive power export", "reactive_power", _MEAS,
                      "var"),
        (9, 7, 0): _q("apparent_power_import", "Apparent power import", "apparent_power", _MEAS,
                      "VA"),
        (10, 7, 0): _q("apparent_power_export", "Apparent power export", "apparent_power", _MEAS,
                       "VA"),
        (1, 4, 0): _q("power_import_average", "Power import (current average demand)", "power",
                      _MEAS, "W"),
        (1, 6, 0): _q("power_import_peak", "Power import (peak demand)", "power", _MEAS, "W"),
        (13, 7, 0): _q("power_factor", "Power factor", "power_factor", _MEAS, None),
        (14, 7, 0): _q("frequency", "Frequency", "frequency", _MEAS, "Hz"),
        (91, 7, 0): _q("current_neutral", "Current neutral", "current", _MEAS, "A"),
    }
    for tariff in range(1, 5):
        t[(1, 8, tariff)] = _q(
            f"energy_import_t{tariff}", f"Energy import tariff {tariff}", "energy", _TOTAL, "kWh"
        )
        t[(2, 8, tariff)] = _q(
            f"energy_export_t{tariff}", f"Energy export tariff {tariff}", "energy", _TOTAL, "kWh"
        )
    # Per phase: C = 20 * phase + offset (IEC 62056-61 table 3).
    for phase in (1, 2, 3):
        base = 20 * phase
        lx = f"l{phase}"
        lname = f"L{phase}"
        t[(base + 1, 7, 0)] = _q(f"power_import_{lx}", f"Power import {lname}", "power", _MEAS,
                                 "W")
        t[(base + 2, 7, 0)] = _q(f"power_export_{lx}", f"Power export {lname}", "power", _MEAS,
                                 "W")
        t[(base + 16, 7, 0)] = _q(f"power_net_{lx}", f"Power (net) {lname}", "power", _MEAS, "W")
        t[(base + 11, 7, 0)] = _q(f"current_{lx}", f"Current {lname}", "current", _MEAS, "A")
        t[(base + 12, 7, 0)] = _q(f"voltage_{lx}", f"Voltage {lname}", "voltage", _MEAS, "V")
        t[(base + 13, 7, 0)] = _q(f"power_factor_{lx}", f"Power factor {lname}", "power_factor",
                                  _MEAS, None)
        t[(base + 12, 32, 0)] = _q(f"voltage_sags_{lx}", f"Voltage sags {lname}", None, _TOTAL,
                                   None, diagnostic=True)
        t[(base + 12, 36, 0)] = _q(f"voltage_swells_{lx}", f"Voltage swells {lname}", None,
                                   _TOTAL, None, diagnostic=True)
    return t


#: Electricity (OBIS A=1, and short IEC 62056-21 addresses) by (C, D, E).
ELECTRICITY: Mapping[tuple[int, int, int], Quantity] = _electricity()

#: Abstract objects (OBIS A=0, B=0) by (C, D, E).
ABSTRACT: Mapping[tuple[int, int, int], Quantity] = {
    (96, 14, 0): _q("tariff", "Tariff"),
    (96, 7, 21): _q("power_failures", "Power failures", None, _TOTAL, None, diagnostic=True),
    (96, 7, 9): _q("long_power_failures", "Long power failures", None, _TOTAL, None,
                   diagnostic=True),
    (96, 1, 1): _q("equipment_id", "Equipment identifier", diagnostic=True),
    (96, 1, 4): _q("p1_version_be", "P1 version (e-MUCS)", diagnostic=True),
    (96, 13, 0): _q("text_message", "Text message", diagnostic=True),
    (96, 3, 10): _q("breaker_state", "Breaker state", diagnostic=True),
    (17, 0, 0): _q("power_limit", "Power limit", "power", _MEAS, "W", diagnostic=True),
}

#: Full-id entries that fit no group rule.
SPECIAL: Mapping[str, Quantity] = {
    "1-3:0.2.8": _q("p1_version", "P1 version", diagnostic=True),
    # The identification line ("/ISK5\\2M550T-1012"), where a codec passes it as a reading.
    "header": _q("identification", "Identification", diagnostic=True),
    "identification": _q("identification", "Identification", diagnostic=True),
}

#: Everything named in the tables, by key, for documentation and tests.
QUANTITIES: Mapping[str, Quantity] = {
    q.key: q for q in (*ELECTRICITY.values(), *ABSTRACT.values(), *SPECIAL.values())
}

# M-Bus device type (EN 13757-3 medium) -> medium name.
_MBUS_MEDIUM: dict[int, str] = {
    3: "gas",
    4: "heat",
    6: "hot_water",
    7: "water",
    10: "cooling",
    11: "cooling",
    12: "heat",
    13: "heat",
    21: "hot_water",
    22: "water",
}

# medium -> (key stem, name, device class); the unit follows the reading.
_MEDIA: dict[str, tuple[str, str, str]] = {
    "gas": ("gas", "Gas", "gas"),
    "water": ("water", "Water", "water"),
    "hot_water": ("hot_water", "Hot water", "water"),
    "heat": ("heat", "Heat", "energy"),
    "cooling": ("cooling", "Cooling", "energy"),
}

_OBIS = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.&](\d{1,3}))?$")
_SHORT = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_SLUG = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """A topic- and HA-safe slug of ``text``: ``1-0:99.97.0`` -> ``1-0_99_97_0``."""
    out = _SLUG.sub("_", text.lower()).strip("_")
    return out or "_"


def _channel_suffix(channel: int) -> str:
    return "" if channel <= 1 else f"_{channel}"


def _medium_from_extra(reading: Reading) -> str | None:
    for k, v in reading.extra:
        if k == "medium" and isinstance(v, str) and v in _MEDIA:
            return v
        if k == "device_type" and isinstance(v, int) and not isinstance(v, bool):
            return _MBUS_MEDIUM.get(v)
    return None


def _medium_quantity(medium: str, channel: int, unit: str | None) -> Quantity:
    stem, name, device_class = _MEDIA[medium]
    dim = _dimension(unit)
    if device_class == "energy":
        target = "GJ" if unit in _JOULES else "kWh"
    else:
        target = "m³"
    if unit is not None and dim not in ("energy", "volume"):
        target = unit
    suffix = _channel_suffix(channel)
    return _q(
        f"{stem}{suffix}",
        f"{name} {channel}" if suffix else name,
        device_class,
        _TOTAL,
        target,
    )


def _lookup(reading: Reading, media: Mapping[int, str] | None) -> Quantity | None:
    rid = reading.id
    special = SPECIAL.get(rid)
    if special is not None:
        return special
    unit = canonical_unit(reading.unit)
    m = _OBIS.match(rid)
    if m is not None:
        a, b, c, d, e = (int(g) for g in m.groups()[:5])
        f = m.group(6)
        if f is not None and int(f) != 255:
            return None  # a historic (billing period) value, not the live register
        if a == 1 and b <= 1:
            return ELECTRICITY.get((c, d, e))
        if a == 1:
            q = ELECTRICITY.get((c, d, e))
            if q is None:
                return None
            return replace(q, key=f"{q.key}_{b}", name=f"{q.name} ({b})")
        if a == 0 and b == 0:
            return ABSTRACT.get((c, d, e))
        if a == 0 and c == 24 and (d, e) in ((2, 1), (2, 3), (3, 0)):
            medium = _medium_from_extra(reading) or (media or {}).get(b)
            if medium is None:
                medium = "heat" if _dimension(unit) == "energy" else "gas"
            return _medium_quantity(medium, b, unit)
        if a == 0 and (c, d, e) == (24, 1, 0):
            return _q(f"mbus_device_type{_channel_suffix(b)}", f"M-Bus device type {b}",
                      diagnostic=True)
        if a == 0 and (c, d, e) == (96, 1, 0):
            return _q(f"mbus_equipment_id{_channel_suffix(b)}", f"M-Bus equipment id {b}",
                      diagnostic=True)
        if a == 6 and (c, d, e) == (1, 0, 0):
            return _medium_quantity("heat", b, unit)
        if a == 7 and (c, d, e) == (3, 0, 0):
            return _medium_quantity("gas", b, unit)
        if a == 8 and (c, d, e) == (1, 0, 0):
            return _medium_quantity("water", b, unit)
        if a == 9 and (c, d, e) == (1, 0, 0):
            return _medium_quantity("hot_water", b, unit)
        return None
    m = _SHORT.match(rid)
    if m is not None:
        c, d, e = (int(g) for g in m.groups())
        return ELECTRICITY.get((c, d, e))
    return None


def _generic(reading: Reading) -> Quantity:
    unit = canonical_unit(reading.unit)
    key = slug(reading.id)
    if isinstance(reading.value, str):
        return _q(key, reading.id, None, None, unit)
    dim = _dimension(unit)
    if dim is None:
        return _q(key, reading.id, None, _MEAS, unit)
    device_class, state_class = _GENERIC_CLASS[dim]
    target = _DEFAULT_TARGET.get(dim, unit)
    if dim == "energy" and unit in _JOULES:
        target = "GJ"
    return _q(key, reading.id, device_class, state_class, target)


def _with_scale(q: Quantity, reading: Reading) -> Quantity:
    """Fill in ``scale`` from the reading's unit to ``q.unit``.

    Where the reading's unit is not of the quantity's dimension the value is
    passed on in the reading's own unit and the device class dropped, so that
    HA never sees a unit that contradicts the class.
    """
    src = canonical_unit(reading.unit)
    if src is None:
        return q
    if q.unit is None:
        # Unit-less in the table (counts, power factor) but the meter names one.
        if q.device_class == "power_factor" and src != "%":
            return replace(q, unit=src, device_class=None)
        return replace(q, unit=src)
    if src == q.unit:
        return q
    src_dim = _UNITS.get(src)
    dst_dim = _UNITS.get(q.unit)
    if src_dim is None or dst_dim is None or src_dim[0] != dst_dim[0]:
        return replace(q, unit=src, device_class=None, scale=1.0)
    return replace(q, scale=src_dim[1] / dst_dim[1])


def quantity_for(reading: Reading, *, media: Mapping[int, str] | None = None) -> Quantity:
    """The quantity a reading measures, with ``scale`` set for the reading's unit.

    ``media`` maps an M-Bus channel to its medium (``"gas"``, ``"water"``,
    ``"heat"``...) where the snapshot says so (see :func:`quantities_for`);
    without it a volume on channel ``n`` is taken to be gas and an energy heat.
    Ids outside the table get a generic quantity keyed by the id's slug.
    """
    q = _lookup(reading, media)
    if q is None:
        q = _generic(reading)
    return _with_scale(q, reading)


def channel_media(snapshot: Snapshot) -> dict[int, str]:
    """M-Bus channel -> medium from the DSMR device-type objects ``0-n:24.1.0``."""
    out: dict[int, str] = {}
    for r in snapshot.readings:
        m = _OBIS.match(r.id)
        if m is None:
            continue
        a, b, c, d, e = (int(g) for g in m.groups()[:5])
        if (a, c, d, e) != (0, 24, 1, 0):
            continue
        value = r.value
        if isinstance(value, str):
            try:
                value = int(value, 10)
            except ValueError:
                continue
        if isinstance(value, int) and value in _MBUS_MEDIUM:
            out[b] = _MBUS_MEDIUM[value]
    return out


def quantities_for(snapshot: Snapshot) -> list[tuple[Reading, Quantity]]:
    """Each reading of ``snapshot`` with its quantity; keys are unique within the list.

    A key that two readings would share (``0-1:24.2.1`` and ``0-1:24.2.3`` both
    being gas) keeps its plain form for the first and gets the id's slug
    appended for later ones.
    """
    media = channel_media(snapshot)
    seen: set[str] = set()
    out: list[tuple[Reading, Quantity]] = []
    for r in snapshot.readings:
        q = quantity_for(r, media=media)
        if q.key in seen:
            q = replace(q, key=f"{q.key}_{slug(r.id)}", name=f"{q.name} ({r.id})")
        seen.add(q.key)
        out.append((r, q))
    return out


def normalised_value(reading: Reading, quantity: Quantity) -> float | int | str:
    """``reading.value`` in ``quantity.unit``.

    Strings pass unchanged.  Scaled values are rounded to 12 significant digits
    so that unit changes do not show binary noise (``0.1 kW`` -> ``100`` W, not
    ``100.00000000000001``); a scaled-up value that is whole becomes an ``int``.
    """
    value = reading.value
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if quantity.scale == 1.0:
        return value
    x = value * quantity.scale
    if not math.isfinite(x):
        return x
    x = float(f"{x:.12g}")
    if quantity.scale > 1.0 and x.is_integer():
        return int(x)
    return x
