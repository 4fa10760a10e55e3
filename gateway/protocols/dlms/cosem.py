"""COSEM interface classes and the mapping of pushed data to readings (IEC 62056-6-2).

* :class:`ClassId` (Blue Book ed. 13, 4.5-4.8) and the logical names every meter has.
* :class:`ScalerUnit` (Register/Extended register attribute 3, Blue Book 4.3.2):
  ``value × 10^scaler`` in ``unit`` (the unit table is Blue Book table 4).
* Clock (class 8) attribute 2 as :class:`~.axdr.CosemDateTime` (:func:`clock_time`).
* :func:`push_content`: a data-notification body to :class:`~gateway.model.Reading`\\ s,
  understanding the push layouts of the HAN meters we have captures of:

  - a list of structures ``{OBIS, value[, scaler_unit]}`` (Aidon NO/SE);
  - a flat structure of ``OBIS, value[, scaler_unit]`` runs, with unnamed items in
    between (Kamstrup NO/DK, Kaifa SE, Austrian Kaifa/Sagemcom M-Bus pushes);
  - bare values by position (Kaifa ``KFM_001`` lists 1, 2 and 3, one- and three-phase);
  - anything else: one reading per leaf value, id ``body.N[.M…]`` (its position).

  Values without a scaler_unit on the wire get the scale and unit the vendor's HAN
  specification gives them when the list identifier names a known list
  (``Kamstrup_V0001``: A ×0.01, energy ×10 Wh; ``KFM_001``: A ×0.001, V ×0.1), and no
  unit otherwise.

Reading ids are OBIS ``A-B:C.D.E`` (F shown only when not 255).  Values: numbers
scaled (int when the scaler is ≥ 0, else float rounded to the scaler's decimals),
strings for visible/utf8 strings and printable octet strings, hex for other octet
strings, ISO 8601 for date-times (with the offset when the meter gives one or
``meter_tz`` is known).

Not implemented: the object list (class 15 attribute 2) and profile generic decoding
beyond :func:`profile_rows`; vendor lists other than the three above; Kamstrup CT
meters (current ×0.001), which cannot be told apart from the frames.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any, Final

from gateway.errors import FramingError
from gateway.model import Reading, make_reading
from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.apdu import CaptureObjectDefinition, DataNotification
from gateway.protocols.dlms.axdr import CosemDateTime, Data, DataType, DataValue
from gateway.protocols.obis import ObisCode

__all__ = [
    "ASSOCIATION_LN",
    "CLOCK",
    "LOGICAL_DEVICE_NAME",
    "UNITS",
    "ClassId",
    "ClockAttribute",
    "PushContent",
    "PushLayout",
    "ScalerUnit",
    "clock_time",
    "extended_register_reading",
    "fast_push_content",
    "profile_rows",
    "push_content",
    "register_reading",
    "scale",
]


class ClassId(enum.IntEnum):
    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    REGISTER_ACTIVATION = 6
    PROFILE_GENERIC = 7
    CLOCK = 8
    SCRIPT_TABLE = 9
    SCHEDULE = 10
    SPECIAL_DAYS_TABLE = 11
    ASSOCIATION_SN = 12
    ASSOCIATION_LN = 15
    SAP_ASSIGNMENT = 17
    IMAGE_TRANSFER = 18
    IEC_LOCAL_PORT_SETUP = 19
    ACTIVITY_CALENDAR = 20
    REGISTER_MONITOR = 21
    SINGLE_ACTION_SCHEDULE = 22
    IEC_HDLC_SETUP = 23
    MBUS_CLIENT = 72
    PUSH_SETUP = 40
    TCP_UDP_SETUP = 41
    IPV4_SETUP = 42
    SECURITY_SETUP = 64
    DISCONNECT_CONTROL = 70
    LIMITER = 71


class ClockAttribute(enum.IntEnum):
    """Clock (class 8) attributes (Blue Book 4.5.1)."""

    LOGICAL_NAME = 1
    TIME = 2
    TIME_ZONE = 3
    STATUS = 4
    DAYLIGHT_SAVINGS_BEGIN = 5
    DAYLIGHT_SAVINGS_END = 6
    DAYLIGHT_SAVINGS_DEVIATION = 7
    DAYLIGHT_SAVINGS_ENABLED = 8
    CLOCK_BASE = 9


CLOCK: Final = ObisCode(0, 0, 1, 0, 0, 255)
ASSOCIATION_LN: Final = ObisCode(0, 0, 40, 0, 0, 255)
SAP_ASSIGNMENT: Final = ObisCode(0, 0, 41, 0, 0, 255)
LOGICAL_DEVICE_NAME: Final = ObisCode(0, 0, 42, 0, 0, 255)
INVOCATION_COUNTER: Final = ObisCode(0, 0, 43, 1, 0, 255)

# Blue Book table 4 "Enumerated values for physical units", spelled as
# gateway.quantities expects them; 254 "other" and 255 "count" have no unit.
UNITS: Final[dict[int, str]] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C",
    10: "currency", 11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h",
    17: "m³/d", 18: "m³/d", 19: "L", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar",
    25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh",
    33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm²/m", 40: "Wb", 41: "T",
    42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)", 47: "1/(VAh)", 48: "V²h",
    49: "A²h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V²h)", 54: "1/(A²h)", 55: "1/m³",
    56: "%", 57: "Ah", 60: "Wh/m³", 61: "J/m³", 62: "mol %", 63: "g/m³", 64: "Pa s",
    65: "J/kg", 66: "g/cm²", 67: "atm", 70: "dBm", 71: "dBµV", 72: "dB",
    128: "in", 129: "ft", 130: "lb", 131: "°F", 132: "°R", 133: "sq in", 134: "sq ft",
    135: "ac", 136: "cu in", 137: "cu ft", 138: "ac ft", 139: "gal (imp)", 140: "gal (US)",
    141: "lbf", 142: "psi", 143: "lb/cu ft", 144: "lb/(ft s)", 145: "sq ft/s", 146: "Btu",
    147: "thm", 148: "cu ft/d", 149: "cu ft/h", 150: "cu ft/min", 151: "cu ft/s",
    152: "gal (US)/d", 153: "gal (US)/h", 154: "gal (US)/min", 155: "gal (US)/s",
}


def scale(value: float, scaler: int) -> int | float:
    """``value × 10^scaler``: an int for scalers ≥ 0, a float rounded to the scaler's
    decimals otherwise (13 × 10^-1 is 1.3, not 1.3000000000000003)."""
    if scaler >= 0:
        factor: int = 10**scaler
        return value * factor
    divisor: int = 10 ** (-scaler)
    return round(value / divisor, -scaler)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalerUnit:
    """A Register's scaler_unit ``{integer scaler, enum unit}``."""

    scaler: int = 0
    unit: int = 255

    @property
    def unit_text(self) -> str | None:
        return UNITS.get(self.unit)

    def apply(self, value: float) -> int | float:
        return scale(value, self.scaler)

    def to_data(self) -> Data:
        return axdr.structure(axdr.integer(self.scaler), axdr.enum(self.unit))

    @classmethod
    def from_data(cls, data: Data) -> ScalerUnit:
        """Raises:
        FramingError: ``data`` is not ``structure{integer, enum}``.
        """
        su = _scaler_unit(data)
        if su is None:
            raise FramingError("scaler_unit is a structure of {integer, enum}")
        return su


def _scaler_unit(data: Data) -> ScalerUnit | None:
    items = data.value
    if data.type is not DataType.STRUCTURE or not isinstance(items, tuple) or len(items) != 2:
        return None
    s, u = items
    if s.type is not DataType.INTEGER or u.type is not DataType.ENUM:
        return None
    assert isinstance(s.value, int) and isinstance(u.value, int)
    return ScalerUnit(scaler=s.value, unit=u.value)


def clock_time(data: Data) -> CosemDateTime:
    """Clock attribute 2 (or any date-time value) as a :class:`CosemDateTime`.

    Raises:
        FramingError: neither a 12-octet octet-string nor a date-time.
    """
    value = data.value
    if isinstance(value, CosemDateTime):
        return value
    if isinstance(value, bytes) and len(value) == 12:
        return CosemDateTime.decode(value)
    raise FramingError("a clock time is a 12-octet octet-string or a date-time")


def register_reading(obis: ObisCode, value: Data, scaler_unit: Data | ScalerUnit | None = None,
                     *, meter_tz: tzinfo | None = None) -> Reading | None:
    """A Register/Extended register (or Data) value as a reading; ``None`` for null data.

    Raises:
        FramingError: ``scaler_unit`` is not a scaler_unit structure.
    """
    su = ScalerUnit.from_data(scaler_unit) if isinstance(scaler_unit, Data) else scaler_unit
    return _reading(str(obis), obis, value.type, value.value, su, None, meter_tz)


def extended_register_reading(obis: ObisCode, value: Data, scaler_unit: Data | ScalerUnit,
                              status: Data | None = None, capture_time: Data | None = None, *,
                              meter_tz: tzinfo | None = None) -> Reading | None:
    """An Extended register (class 4): attributes 2 value, 3 scaler_unit, 4 status,
    5 capture_time as one reading (``timestamp`` = the capture time when it is an
    instant, ``extra`` = ``("status", …)`` when the status is a number or string).

    Raises:
        FramingError: ``scaler_unit`` is not a scaler_unit structure, or the capture time
            is not a date-time.
    """
    reading = register_reading(obis, value, scaler_unit, meter_tz=meter_tz)
    if reading is None:
        return None
    when = clock_time(capture_time).to_datetime(meter_tz) if capture_time is not None else None
    extra: tuple[tuple[str, object], ...] = ()
    if status is not None and isinstance(status.value, int | str | bytes):
        value_of = status.value.hex().upper() if isinstance(status.value, bytes) else status.value
        extra = (("status", value_of),)
    return Reading(id=reading.id, value=reading.value, unit=reading.unit, timestamp=when,
                   extra=extra)


def profile_rows(buffer: Data, capture_objects: Data) -> list[dict[str, Data]]:
    """Profile generic buffer rows as ``{capture object id: value}`` dicts.

    The ids are ``A-B:C.D.E/attribute`` (``/attribute:index`` when the data index is
    not 0), in capture-object order.

    Raises:
        FramingError: the buffer is not an array of structures matching the objects.
    """
    objects = [CaptureObjectDefinition.from_data(d) for d in capture_objects.items]
    names = [f"{o.instance}/{o.attribute}" + (f":{o.data_index}" if o.data_index else "")
             for o in objects]
    rows = []
    for row in buffer.items:
        values = row.items
        if len(values) != len(names):
            raise FramingError(f"profile row of {len(values)} values for {len(names)} columns")
        rows.append(dict(zip(names, values, strict=True)))
    return rows


# ------------------------------------------------------------------ push lists
@dataclass(frozen=True, slots=True, kw_only=True)
class PushContent:
    """What a data notification says: readings, the meter's clock, its identity."""

    readings: tuple[Reading, ...]
    timestamp: datetime | None  # aware, or None when the meter gives no offset
    meter_id: str | None  # logical device name, else the serial number
    list_id: str | None  # "AIDON_V0001", "Kamstrup_V0001", "KFM_001", …
    logical_device_name: str | None = None  # 0-0:42.0.0 when the push holds it


@dataclass(frozen=True, slots=True)
class _Vendor:
    # (C, D) -> (factor exponent, unit) for values without scaler_unit
    scaling: dict[tuple[int, int], tuple[int, str]]


_POWER_UNITS: Final = {1: "W", 2: "W", 3: "var", 4: "var", 9: "VA", 10: "VA"}
_ENERGY_UNITS: Final = {1: "Wh", 2: "Wh", 3: "varh", 4: "varh", 9: "VAh", 10: "VAh"}


def _vendor_table(current: int, voltage: int, energy: int) -> _Vendor:
    table: dict[tuple[int, int], tuple[int, str]] = {}
    for c, unit in _POWER_UNITS.items():
        for base in (0, 20, 40, 60):  # total and per phase (Blue Book 7.5.2.1)
            table[(c + base, 7)] = (0, unit)
    for c, unit in _ENERGY_UNITS.items():
        for base in (0, 20, 40, 60):
            table[(c + base, 8)] = (energy, unit)
    for c in (31, 51, 71, 91):
        table[(c, 7)] = (current, "A")
    for c in (32, 52, 72):
        table[(c, 7)] = (voltage, "V")
    table[(14, 7)] = (0, "Hz")
    return _Vendor(scaling=table)


# Vendor HAN specifications (as quoted by amshan and AMS reader): Kamstrup sends A in
# 0.01 A and energy in 10 Wh; Kaifa sends A in mA and V in 0.1 V.
_VENDORS: Final = {
    "Kamstrup_V0001": _vendor_table(current=-2, voltage=0, energy=1),
    "KFM_001": _vendor_table(current=-3, voltage=-1, energy=0),
}

# Kaifa KFM_001 lists carry bare values; their OBIS codes by position and list length.
_KFM_HEAD: Final = ("1-1:0.2.129", "0-0:96.1.0", "0-0:96.1.7", "1-0:1.7.0", "1-0:2.7.0",
                    "1-0:3.7.0", "1-0:4.7.0")
_KFM_ONE_PHASE: Final = (*_KFM_HEAD, "1-0:31.7.0", "1-0:32.7.0")
_KFM_THREE_PHASE: Final = (*_KFM_HEAD, "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0", "1-0:32.7.0",
                           "1-0:52.7.0", "1-0:72.7.0")
_KFM_HOURLY: Final = ("0-0:1.0.0", "1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0")
_KFM_POSITIONS: Final = {
    9: _KFM_ONE_PHASE,
    13: _KFM_THREE_PHASE,
    14: (*_KFM_ONE_PHASE, *_KFM_HOURLY),
    18: (*_KFM_THREE_PHASE, *_KFM_HOURLY),
}

# Which reading names the meter, best first (logical device name, then serials).
_METER_ID_RANK: Final = {(0, 0, 42, 0, 0): 0, (0, 0, 96, 1, 0): 1, (0, 0, 96, 1, 1): 2,
                         (1, 1, 0, 0, 5): 3, (1, 0, 0, 0, 5): 3}


def _is_obis(d: Data) -> bool:
    v = d.value
    return d.type is DataType.OCTET_STRING and isinstance(v, bytes) and len(v) == 6


def _text(value: bytes) -> str | None:
    if value and value.isascii():
        text = value.decode("ascii")
        if text.isprintable():
            return text
    return None


def _iso(stamp: CosemDateTime, meter_tz: tzinfo | None) -> str | None:
    aware = stamp.to_datetime(meter_tz)
    if aware is not None:
        return aware.isoformat()
    naive = stamp.to_naive()
    return naive.isoformat() if naive is not None else None


_DATE_TIME_FIELDS: Final = struct.Struct(">HBBBBBBBhB")


@lru_cache(maxsize=16)
def _stamp_info(raw: bytes, meter_tz: tzinfo | None) -> tuple[datetime | None, str | None]:
    """A 12-octet date-time as (aware datetime or None, ISO text or None).

    The same as ``CosemDateTime.decode(raw).to_datetime(meter_tz)`` and ``_iso``,
    without building the CosemDateTime: a push carries its time twice (notification
    header and clock), and this is a good part of decoding one.
    """
    year, month, day, _, hour, minute, second, hundredths, deviation, _ = (
        _DATE_TIME_FIELDS.unpack(raw))
    if not (year != 0xFFFF and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24
            and minute < 60 and second < 60):
        return None, None
    tz = meter_tz
    if deviation != axdr.DEVIATION_NOT_SPECIFIED and -720 <= deviation <= 840:
        tz = axdr.tz_of(-deviation)
    try:
        when = datetime(year, month, day, hour, minute, second,
                        hundredths * 10_000 if hundredths < 100 else 0, tzinfo=tz)
    except ValueError:
        return None, None
    return (when if tz is not None else None), when.isoformat()


@lru_cache(maxsize=1024)
def _obis_of(raw: bytes) -> tuple[ObisCode, str]:
    """The OBIS code of six octets and its reading id (a meter repeats the same few)."""
    obis = ObisCode.from_bytes(raw)
    return obis, str(obis)


@lru_cache(maxsize=256)
def _su_of(scaler: int, unit: int) -> ScalerUnit:
    return ScalerUnit(scaler=scaler, unit=unit)




def _content_maker() -> Callable[
    [tuple[Reading, ...], datetime | None, str | None, str | None, str | None], PushContent
]:
    """``PushContent(...)`` positionally without ``object.__setattr__`` (as above)."""
    names = tuple(f.name for f in fields(PushContent))
    if names != ("readings", "timestamp", "meter_id", "list_id", "logical_device_name") or \
            hasattr(PushContent, "__post_init__"):
        return lambda r, t, m, li, ldn: PushContent(readings=r, timestamp=t, meter_id=m,
                                                    list_id=li, logical_device_name=ldn)
    new = object.__new__
    setters = tuple(getattr(PushContent, name).__set__ for name in names)
    s_readings, s_timestamp, s_meter, s_list, s_ldn = setters

    def make(readings: tuple[Reading, ...], timestamp: datetime | None, meter_id: str | None,
             list_id: str | None, ldn: str | None) -> PushContent:
        content: PushContent = new(PushContent)
        s_readings(content, readings)
        s_timestamp(content, timestamp)
        s_meter(content, meter_id)
        s_list(content, list_id)
        s_ldn(content, ldn)
        return content

    return make


_new_content: Final = _content_maker()

# One element of a push: reading id, OBIS code (None when unnamed), type, value, scaler.
Entry = tuple[str, ObisCode | None, DataType, DataValue, ScalerUnit | None]


def _reading(rid: str, obis: ObisCode | None, kind: DataType, value: DataValue,
             su: ScalerUnit | None, vendor: _Vendor | None,
             meter_tz: tzinfo | None) -> Reading | None:
    if isinstance(value, int) and kind is not DataType.BOOLEAN:
        unit = None
        if su is not None:
            number: int | float = su.apply(value)
            unit = su.unit_text
        else:
            number = value
            if vendor is not None and obis is not None:
                rule = vendor.scaling.get((obis.c, obis.d))
                if rule is not None:
                    number = scale(value, rule[0])
                    unit = rule[1]
        return make_reading(rid, number, unit, None, ())
    if isinstance(value, bool):
        return make_reading(rid, value, None, None, ())
    if isinstance(value, float):
        if su is not None:
            return make_reading(rid, su.apply(value), su.unit_text, None, ())
        return make_reading(rid, value, None, None, ())
    if isinstance(value, str):
        return make_reading(rid, value, None, None, ())
    if isinstance(value, bytes):
        if len(value) == 12 and (obis is None or (obis.c, obis.d) == (1, 0)):
            # a date-time sent as an octet string (the clock, or unnamed)
            text = _stamp_info(value, meter_tz)[1]
            if text is not None:
                return make_reading(rid, text, None, None, ())
        return make_reading(rid, _text(value) or value.hex().upper(), None, None, ())
    if isinstance(value, CosemDateTime):
        text = _iso(value, meter_tz)
        return make_reading(rid, text if text is not None else value.encode().hex().upper(), None, None, ())
    if isinstance(value, axdr.BitString):
        return make_reading(rid, value.bits, None, None, ())
    return None  # null data, dont-care, nested structures, dates and times alone


def _leaves(d: Data, path: str, out: list[Entry]) -> None:
    value = d.value
    if isinstance(value, tuple | axdr.CompactArray):
        for i, item in enumerate(d.items):
            _leaves(item, f"{path}.{i}", out)
    else:
        out.append((path, None, d.type, value, None))


def push_content(notification: DataNotification | Data, *,
                 meter_tz: tzinfo | None = None) -> PushContent:
    """Readings, clock and identity from a data notification (or its body).

    Never raises for a well-formed notification: layouts it does not recognise give
    positional readings.
    """
    if isinstance(notification, DataNotification):
        body = notification.body
        stamp = notification.date_time
    else:
        body = notification
        stamp = b""
    items: tuple[Data, ...] = body.value if isinstance(body.value, tuple) else (body,)
    entries: list[Entry] = []
    list_id = _list_id(items)
    if items and all(_obis_struct(i) for i in items):
        # Aidon: {OBIS, value[, scaler_unit]} per item
        for item in items:
            members = item.items
            obis, rid = _obis_of(_octets(members[0]))
            su = _scaler_unit(members[2]) if len(members) > 2 else None
            entries.append((rid, obis, members[1].type, members[1].value, su))
    elif any(_is_obis(i) for i in items[:-1]):
        # Kamstrup, Kaifa SE, Austrian: OBIS, value[, scaler_unit] runs in one structure
        i, n = 0, len(items)
        while i < n:
            item = items[i]
            if _is_obis(item) and i + 1 < n:
                obis, rid = _obis_of(_octets(item))
                su = _scaler_unit(items[i + 2]) if i + 2 < n else None
                entries.append((rid, obis, items[i + 1].type, items[i + 1].value, su))
                i += 3 if su is not None else 2
            else:
                entries.append((f"body.{i}", None, item.type, item.value, None))
                i += 1
    elif list_id == "KFM_001" and len(items) in _KFM_POSITIONS:
        for text, item in zip(_KFM_POSITIONS[len(items)], items, strict=True):
            position = ObisCode.parse(text)
            entries.append((str(position), position, item.type, item.value, None))
    elif len(items) == 1 and items[0].type is DataType.DOUBLE_LONG_UNSIGNED:
        # Kaifa list 1: a lone active power import, in W
        power = ObisCode(1, 0, 1, 7, 0)
        entries.append((str(power), power, items[0].type, items[0].value,
                        ScalerUnit(scaler=0, unit=27)))
    elif body.type in (DataType.ARRAY, DataType.STRUCTURE):
        for i, item in enumerate(items):
            _leaves(item, f"body.{i}", entries)
    else:
        entries.append(("body", None, body.type, body.value, None))
    return _content(entries, list_id, stamp, meter_tz)


def _content(entries: list[Entry], list_id: str | None, stamp: bytes,
             meter_tz: tzinfo | None) -> PushContent:
    """Readings and frame fields from the entries; ``stamp``: the notification's
    date-time octets (12, or none)."""
    vendor = _VENDORS.get(list_id) if list_id else None
    readings: list[Reading] = []
    meter_id: str | None = None
    best = len(_METER_ID_RANK)
    clock: datetime | None = None
    has_clock = False
    for rid, code, kind, value, su in entries:
        reading = _reading(rid, code, kind, value, su, vendor, meter_tz)
        if reading is None:
            continue
        readings.append(reading)
        if code is None:
            continue
        rank = _METER_ID_RANK.get((code.a, code.b, code.c, code.d, code.e))
        if rank is not None and rank < best and isinstance(reading.value, str) and reading.value:
            best, meter_id = rank, reading.value
        if code.c == 1 and code.d == 0 and code.e == 0:
            has_clock = True
            if clock is None:
                if isinstance(value, bytes) and len(value) == 12:
                    clock = _stamp_info(value, meter_tz)[0]
                elif isinstance(value, CosemDateTime):
                    clock = value.to_datetime(meter_tz)
    timestamp = None
    if len(stamp) == 12:
        timestamp, stamp_text = _stamp_info(stamp, meter_tz)
        if not has_clock and stamp_text is not None:
            # The notification's own time is the meter clock when it pushed.
            readings.insert(0, make_reading("0-0:1.0.0", stamp_text, None, None, ()))
    return _new_content(tuple(readings), timestamp or clock, meter_id, list_id,
                        meter_id if best == 0 else None)


def _octets(d: Data) -> bytes:
    value = d.value
    assert isinstance(value, bytes)
    return value


def _obis_struct(d: Data) -> bool:
    value = d.value
    return (d.type is DataType.STRUCTURE and isinstance(value, tuple) and len(value) >= 2
            and _is_obis(value[0]))


def _list_id(items: tuple[Data, ...]) -> str | None:
    """The list version identifier: the value of OBIS x-x:0.2.129.255, else a leading
    unnamed string (Kamstrup, Kaifa NO)."""
    for i, item in enumerate(items):
        if _obis_struct(item):
            members = item.items
            code = _octets(members[0])
            if code[2:5] == b"\x00\x02\x81":
                return _string(members[1].value)
        elif _is_obis(item) and i + 1 < len(items):
            code = _octets(item)
            if code[2:5] == b"\x00\x02\x81":
                return _string(items[i + 1].value)
    if items and items[0].type in (DataType.VISIBLE_STRING, DataType.OCTET_STRING) \
            and not _is_obis(items[0]):
        return _string(items[0].value)
    return None


def _string(value: DataValue) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return _text(value)
    return None


# ----------------------------------------------------------------- fast path
# The two layouts of nearly every push (a list of {OBIS, value[, scaler_unit]}
# structures, or OBIS/value[/scaler_unit] runs in one structure), read straight from
# the octets into entries without building a Data tree: a third of the time.  Any
# octet it does not expect makes it give up (None), and the caller takes the general
# path, which yields the same result (a property test holds the two together).
_LEAF, _OBIS, _SU, _STRUCT = range(4)  # _OBIS: a leaf octet-string of 6 octets
_FIXED = axdr.FIXED_INT_TAGS
_OCTETS = DataType.OCTET_STRING
_VISIBLE = DataType.VISIBLE_STRING
_LIST_ID_CDE = b"\x00\x02\x81"  # OBIS C.D.E of the list version identifier 0.2.129


def _scan_leaf(buf: bytes, pos: int, end: int) -> tuple[DataType, DataValue, int] | None:
    tag = buf[pos]
    spec = _FIXED[tag]
    if spec is not None:
        kind, width, signed = spec
        stop = pos + 1 + width
        if stop > end:
            return None
        return kind, int.from_bytes(buf[pos + 1 : stop], "big", signed=signed), stop
    if tag == 0x09 or tag == 0x0A:
        if pos + 1 >= end or buf[pos + 1] >= 0x80:
            return None
        stop = pos + 2 + buf[pos + 1]
        if stop > end:
            return None
        raw = buf[pos + 2 : stop]
        if tag == 0x09:
            return _OCTETS, raw, stop
        return _VISIBLE, raw.decode("latin-1"), stop
    if tag == 0x00:
        return DataType.NULL_DATA, None, pos + 1
    if tag == 0x19 and pos + 13 <= end:
        return DataType.DATE_TIME, CosemDateTime.decode(buf[pos + 1 : pos + 13]), pos + 13
    return None


def _scan_su(buf: bytes, pos: int, end: int) -> ScalerUnit | None:
    """``02 02 0F scaler 16 unit`` at ``pos``, else None."""
    if (pos + 6 <= end and buf[pos] == 0x02 and buf[pos + 1] == 0x02 and buf[pos + 2] == 0x0F
            and buf[pos + 4] == 0x16):
        scaler = buf[pos + 3]
        return _su_of(scaler - 256 if scaler > 127 else scaler, buf[pos + 5])
    return None


# (code, type, value, OBIS octets of a structure, scaler_unit)
_Item = tuple[int, DataType, DataValue, bytes, ScalerUnit | None]


def _scan_items(buf: bytes, pos: int, end: int, spans: list[tuple[int, int] | None] | None = None
                ) -> tuple[list[_Item], int] | None:
    """The items of the body at ``pos``; with ``spans``, also where each item's value
    octets are (start, stop), or None for an item whose octets are all constant in a
    layout (OBIS codes and scaler_units)."""
    if pos + 2 > end or buf[pos] not in (0x01, 0x02) or buf[pos + 1] >= 0x80:
        return None
    count = buf[pos + 1]
    pos += 2
    items: list[_Item] = []
    append = items.append
    for _ in range(count):
        if pos >= end:
            return None
        if buf[pos] == 0x02:
            su = _scan_su(buf, pos, end)
            if su is not None:
                append((_SU, DataType.STRUCTURE, None, b"", su))
                if spans is not None:
                    spans.append(None)
                pos += 6
                continue
            if pos + 10 > end or buf[pos + 1] not in (2, 3) or buf[pos + 2] != 0x09 \
                    or buf[pos + 3] != 0x06:
                return None
            members = buf[pos + 1]
            obis = buf[pos + 4 : pos + 10]
            leaf = _scan_leaf(buf, pos + 10, end)
            if leaf is None:
                return None
            if spans is not None:
                spans.append(_value_span(buf, pos + 10, leaf[2]))
            kind, value, pos = leaf
            su = None
            if members == 3:
                su = _scan_su(buf, pos, end)
                if su is None:
                    return None
                pos += 6
            append((_STRUCT, kind, value, obis, su))
            continue
        leaf = _scan_leaf(buf, pos, end)
        if leaf is None:
            return None
        start = pos
        kind, value, pos = leaf
        code = _OBIS if kind is _OCTETS and len(value) == 6 else _LEAF  # type: ignore[arg-type]
        append((code, kind, value, b"", None))
        if spans is not None:
            spans.append(_value_span(buf, start, pos) if code == _LEAF else None)
    return items, pos


def _value_span(buf: bytes, leaf: int, stop: int) -> tuple[int, int]:
    """The value octets of the leaf at ``leaf`` (after its tag, and its length octet)."""
    return (leaf + 2 if buf[leaf] in (0x09, 0x0A) else leaf + 1), stop


def fast_push_content(data: bytes, pos: int, stamp: bytes = b"", *,
                      meter_tz: tzinfo | None = None) -> tuple[PushContent, int] | None:
    """:func:`push_content` of the body at ``data[pos:]`` without decoding it to Data;
    ``stamp`` is the notification's date-time octets (``DataNotification.date_time``).

    Returns the content and the position after the body, or ``None`` when the body is
    not in one of the two common layouts (then decode it and call
    :func:`push_content`, which gives the same content for bodies this accepts).
    """
    if pos < len(data) and data[pos] not in (0x01, 0x02):
        # a single value for a body (as in dlms-cosem's UDP pushes)
        leaf = _scan_leaf(data, pos, len(data))
        if leaf is None or leaf[0] is DataType.DOUBLE_LONG_UNSIGNED:
            return None  # a lone power value is the Kaifa list 1 rule: general path
        single_kind, single, single_end = leaf
        list_id = _string(single) if single_kind is _VISIBLE or (
            isinstance(single, bytes) and len(single) != 6) else None
        return (_content([("body", None, single_kind, single, None)], list_id, stamp, meter_tz),
                single_end)
    scanned = _scan_items(data, pos, len(data))
    if scanned is None:
        return None
    items, end = scanned
    found = _entries(items)
    if found is None:
        return None
    entries, _sources, list_id, _list_source = found
    return _content(entries, list_id, stamp, meter_tz), end


def _entries(items: list[_Item]) -> tuple[list[Entry], list[int], str | None, int] | None:
    """The entries of the scanned items (None: not one of the two layouts), the item
    each entry's value comes from, the list id and the item it comes from (-1: none)."""
    codes = [item[0] for item in items]
    entries: list[Entry] = []
    sources: list[int] = []
    list_id = None
    list_source = -1
    if codes and codes.count(_STRUCT) == len(codes):
        # Aidon: {OBIS, value[, scaler_unit]} per item
        for i, (_, kind, value, raw, su) in enumerate(items):
            obis, rid = _obis_of(raw)
            entries.append((rid, obis, kind, value, su))
            sources.append(i)
            if list_source < 0 and raw[2:5] == _LIST_ID_CDE:
                list_source = i  # the first one counts, as in _list_id
                list_id = _string(value)
    elif _OBIS in codes[:-1] and _STRUCT not in codes:
        # OBIS, value[, scaler_unit] runs in one structure
        i, n = 0, len(items)
        while i < n:
            code, kind, value, _, _ = items[i]
            if code == _OBIS and i + 1 < n:
                nxt = items[i + 1]
                if nxt[0] == _SU:
                    return None  # a structure for a value: the general path
                after = items[i + 2] if i + 2 < n else None
                su = after[4] if after is not None and after[0] == _SU else None
                assert isinstance(value, bytes)
                obis, rid = _obis_of(value)
                entries.append((rid, obis, nxt[1], nxt[2], su))
                sources.append(i + 1)
                i += 3 if su is not None else 2
            else:
                if code != _SU:
                    entries.append((f"body.{i}", None, kind, value, None))
                    sources.append(i)
                i += 1
        list_source = _flat_list_source(items)
        list_id = _string(items[list_source][2]) if list_source >= 0 else None
    else:
        return None
    return entries, sources, list_id, list_source


def _flat_list_source(items: list[_Item]) -> int:
    """:func:`_list_id` over the scanned items of a flat list: the index of the item
    holding the list id (-1: none)."""
    last = len(items) - 1
    for i, (code, _, value, _, _) in enumerate(items):
        if code == _OBIS and i < last and value[2:5] == _LIST_ID_CDE:  # type: ignore[index]
            return i + 1 if items[i + 1][0] != _SU else -1
    first = items[0]
    if first[0] == _LEAF and first[1] in (_VISIBLE, _OCTETS):
        return 0
    return -1


# ------------------------------------------------------------- layout cache
# A meter pushes the same list again and again: the same OBIS codes, scaler_units,
# types and string lengths; only the values change.  A PushLayout is compiled from one
# body by the fast path's own scan.  For the next bodies one regular expression checks
# every constant octet (structure headers, OBIS codes, tags, lengths, scaler_units) in
# one C call and one struct.unpack_from reads every value; each entry keeps its last
# Reading, reused while its value is the same (readings are immutable), and converts a
# new value with _reading, the function the other paths use.  A body that differs in
# any constant octet does not match (None): the caller takes the fast path, whose
# result the layout reproduces exactly (a property test holds them together).
_UNPACK: Final = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
                  (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}
_UNSET: Final = object()


_GENERAL, _TIMES, _DIVIDED = range(3)


def _int_rule(obis: ObisCode | None, kind: DataType, su: ScalerUnit | None,
              vendor: _Vendor | None) -> tuple[int, int, int, str | None]:
    """How :func:`_reading` maps an integer of this entry: ``(_TIMES, factor, 0, unit)``
    (value × factor), ``(_DIVIDED, divisor, digits, unit)`` (value / divisor rounded),
    or ``(_GENERAL, …)`` for anything that is not a plain integer (call _reading)."""
    if axdr.FIXED_INT_TAGS[kind.value] is None:
        return _GENERAL, 0, 0, None
    scaler, unit = 0, None
    if su is not None:
        scaler, unit = su.scaler, su.unit_text
    elif vendor is not None and obis is not None:
        rule = vendor.scaling.get((obis.c, obis.d))
        if rule is not None:
            scaler, unit = rule
    if scaler >= 0:
        return _TIMES, 10**scaler, 0, unit
    return _DIVIDED, 10 ** (-scaler), -scaler, unit


class PushLayout:
    """The compiled layout of one push body (see the comment above); one decoder
    keeps a few, for the lists its meter alternates."""

    __slots__ = ("_entries", "_ints", "_list_id", "_list_slot", "_match", "_others",
                 "_primed", "_readings", "_special", "_unpack", "_values", "_vendor", "length")

    def __init__(self, data: bytes, pos: int, items: list[_Item],
                 spans: list[tuple[int, int] | None], entries: list[Entry], sources: list[int],
                 list_id: str | None, list_source: int) -> None:
        pattern: list[bytes] = []
        fmt = [">"]
        slot_of: dict[int, int] = {}
        prev = pos
        for i, (span, item) in enumerate(zip(spans, items, strict=True)):
            if span is None or span[0] == span[1]:
                continue  # constant: an OBIS code, a scaler_unit, null, an empty string
            start, stop = span
            pattern.append(re.escape(data[prev:start]))
            pattern.append(b".{%d}" % (stop - start))
            if start > prev:
                fmt.append(f"{start - prev}x")
            spec = _FIXED[data[start - 1]] if item[1] is not _OCTETS and \
                item[1] is not _VISIBLE else None
            fmt.append(_UNPACK[(spec[1], spec[2])] if spec is not None and item[1] is not
                       DataType.DATE_TIME else f"{stop - start}s")
            slot_of[i] = len(slot_of)
            prev = stop
        end = len(data)
        pattern.append(re.escape(data[prev:end]))
        self.length = end - pos
        self._match = re.compile(b"".join(pattern), re.DOTALL).fullmatch
        self._unpack = struct.Struct("".join(fmt)).unpack_from
        self._list_id = list_id
        self._list_slot = slot_of.get(list_source, -1)
        # per entry: reading id, OBIS, type, scaler_unit, value slot (-1: constant), the
        # constant value, how an integer becomes the reading's value (see _int_rule);
        # and, in _converters, its last value and reading
        vendor = _VENDORS.get(list_id) if list_id else None
        self._entries = [(rid, obis, kind, su, slot_of.get(src, -1), value,
                          *_int_rule(obis, kind, su, vendor))
                         for (rid, obis, kind, value, su), src in zip(entries, sources, strict=True)]
        # the last value and reading of each entry (a constant entry's never change)
        self._values: list[Any] = [_UNSET] * len(entries)
        self._readings: list[Reading | None] = [None] * len(entries)
        self._primed = False
        self._vendor = vendor
        # the entries whose value varies: integers mapped inline, the others by _reading
        self._ints = [(n, e[4], e[6], e[7], e[8], e[0], e[9])
                      for n, e in enumerate(self._entries) if e[4] >= 0 and e[6] != _GENERAL]
        self._others = [(n, e[4], e[2], e[0], e[1], e[3])
                        for n, e in enumerate(self._entries) if e[4] >= 0 and e[6] == _GENERAL]
        # entries that may name the meter or carry its clock (see _content)
        self._special = [n for n, (_, obis, _, _, _) in enumerate(entries)
                         if obis is not None and (
                             (obis.a, obis.b, obis.c, obis.d, obis.e) in _METER_ID_RANK
                             or (obis.c == 1 and obis.d == 0 and obis.e == 0))]

    @classmethod
    def compile(cls, data: bytes, pos: int) -> PushLayout | None:
        """The layout of the body at ``data[pos:]`` (to its end), or None when the fast
        path does not read it."""
        spans: list[tuple[int, int] | None] = []
        scanned = _scan_items(data, pos, len(data), spans)
        if scanned is None or scanned[1] != len(data):
            return None
        found = _entries(scanned[0])
        if found is None:
            return None
        return cls(data, pos, scanned[0], spans, *found)

    def content(self, data: bytes, pos: int, stamp: bytes,
                meter_tz: tzinfo | None) -> PushContent | None:
        """:func:`fast_push_content` of a body of this layout (to the end of ``data``),
        or None when the body is not of this layout."""
        if len(data) - pos != self.length or self._match(data, pos) is None:
            return None
        raw = self._unpack(data, pos)
        if self._list_slot >= 0 and _string(raw[self._list_slot]) != self._list_id:
            return None  # another list (and maybe another vendor's scaling)
        vendor = self._vendor
        values = self._values
        readings = self._readings
        if not self._primed:  # the constant entries, once
            for n, (rid, obis, kind, su, slot, const, *_rule) in enumerate(self._entries):
                if slot < 0:
                    values[n] = const
                    readings[n] = _reading(rid, obis, kind, const, su, vendor, meter_tz)
            self._primed = True
        # One entry's values are all of one Python type (its A-XDR type is fixed), so
        # an equal value is the same value: its reading stands.
        make = make_reading
        for n, slot, rule, arg, digits, rid, unit in self._ints:
            number = raw[slot]
            if number != values[n]:
                values[n] = number
                readings[n] = make(rid, number * arg if rule == _TIMES
                                   else round(number / arg, digits), unit, None, ())
        for n, slot, kind, rid, obis, su in self._others:
            value = raw[slot]
            if kind is _VISIBLE:
                value = value.decode("latin-1")
            elif kind is DataType.DATE_TIME:
                value = CosemDateTime.decode(value)
            if value != values[n] or values[n] is _UNSET:
                values[n] = value
                readings[n] = _reading(rid, obis, kind, value, su, vendor, meter_tz)
        return self._finish(readings, stamp, meter_tz)

    def _finish(self, readings: list[Reading | None], stamp: bytes,
                meter_tz: tzinfo | None) -> PushContent:
        """What _content does after the readings: the meter id, the clock, the stamp."""
        meter_id: str | None = None
        best = len(_METER_ID_RANK)
        clock: datetime | None = None
        has_clock = False
        for n in self._special:
            reading = readings[n]
            if reading is None:
                continue
            obis = self._entries[n][1]
            assert obis is not None
            rank = _METER_ID_RANK.get((obis.a, obis.b, obis.c, obis.d, obis.e))
            if rank is not None and rank < best and isinstance(reading.value, str) \
                    and reading.value:
                best, meter_id = rank, reading.value
            if obis.c == 1 and obis.d == 0 and obis.e == 0:
                has_clock = True
                if clock is None:
                    value = self._values[n]
                    if isinstance(value, bytes) and len(value) == 12:
                        clock = _stamp_info(value, meter_tz)[0]
                    elif isinstance(value, CosemDateTime):
                        clock = value.to_datetime(meter_tz)
        out = [r for r in readings if r is not None]
        timestamp = None
        if len(stamp) == 12:
            timestamp, stamp_text = _stamp_info(stamp, meter_tz)
            if not has_clock and stamp_text is not None:
                out.insert(0, make_reading("0-0:1.0.0", stamp_text, None, None, ()))
        return _new_content(tuple(out), timestamp or clock, meter_id, self._list_id,
                            meter_id if best == 0 else None)
