"""EN 13757-3 data tables: VIF/VIFE units and scaling, media, manufacturer codes.

Pure data, no parsing.  The EN texts were not available while writing this; every
entry follows at least two independent public implementations (libmbus,
wmbusmeters, jMBus, mbus4j, libmburs) as collected in ``shared/MBUS_FACTS.md``
§3-§7.  Where the editions disagree (§8 there) the choice is stated next to the entry.

Units are the *base* unit of a VIF group and the exponent is applied by the
decoder, so a meter coding its energy in 10 Wh and another in kWh both report
``Wh`` (values scaled to the unit given).  Durations coded in minutes, hours or
days are reported in seconds (``factor``).  Flow stays in the unit the VIF names
(m³/h, m³/min, m³/s), since converting would turn exact decimals into floats for
no gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "APPLICATION_ERRORS",
    "FB_TABLE",
    "FD_TABLE",
    "FIXED_MEDIUM",
    "FIXED_UNIT",
    "MANUFACTURERS",
    "MEDIUM",
    "PRIMARY_VIF",
    "VIFE",
    "VIFE_7C",
    "Kind",
    "VifInfo",
    "VifeInfo",
    "decode_manufacturer",
    "encode_manufacturer",
    "medium_name",
]

Kind = Literal["number", "date"]


@dataclass(frozen=True, slots=True)
class VifInfo:
    """One value information code: what it measures and how to scale it.

    ``value = raw × factor × 10**exponent`` in ``unit``.  ``kind == "date"`` means
    the data field holds a date/time type (G, F, I or J by its length) instead.
    """

    quantity: str
    unit: str | None = None
    exponent: int = 0
    factor: int = 1
    kind: Kind = "number"


def _reserved(table: str, code: int) -> VifInfo:
    return VifInfo(f"reserved_{table}{code:02x}")


# Durations: n = 0..3 selects seconds, minutes, hours, days (primary VIF 20-27, 70-77;
# FD 24-27, 2C-2F, 34-37, 3C-3F).
_DURATION_FACTOR: Final = (1, 60, 3600, 86400)


def _primary() -> tuple[VifInfo, ...]:
    """Primary VIF codes (E = 0 part of the VIF, EN 13757-3 "primary VIF codes")."""
    t: list[VifInfo | None] = [None] * 128
    for n in range(8):
        t[0x00 + n] = VifInfo("energy", "Wh", n - 3)
        t[0x08 + n] = VifInfo("energy", "J", n)
        t[0x10 + n] = VifInfo("volume", "m³", n - 6)
        t[0x18 + n] = VifInfo("mass", "kg", n - 3)
        t[0x28 + n] = VifInfo("power", "W", n - 3)
        t[0x30 + n] = VifInfo("power", "J/h", n)
        t[0x38 + n] = VifInfo("volume_flow", "m³/h", n - 6)
        t[0x40 + n] = VifInfo("volume_flow", "m³/min", n - 7)
        t[0x48 + n] = VifInfo("volume_flow", "m³/s", n - 9)
        t[0x50 + n] = VifInfo("mass_flow", "kg/h", n - 3)
    for n in range(4):
        f = _DURATION_FACTOR[n]
        t[0x20 + n] = VifInfo("on_time", "s", 0, f)
        t[0x24 + n] = VifInfo("operating_time", "s", 0, f)
        t[0x58 + n] = VifInfo("flow_temperature", "°C", n - 3)
        t[0x5C + n] = VifInfo("return_temperature", "°C", n - 3)
        t[0x60 + n] = VifInfo("temperature_difference", "K", n - 3)
        t[0x64 + n] = VifInfo("external_temperature", "°C", n - 3)
        t[0x68 + n] = VifInfo("pressure", "bar", n - 3)
        t[0x70 + n] = VifInfo("averaging_duration", "s", 0, f)
        t[0x74 + n] = VifInfo("actuality_duration", "s", 0, f)
    t[0x6C] = VifInfo("date", kind="date")  # type G
    t[0x6D] = VifInfo("datetime", kind="date")  # type F (int32), I (int48), J (int24)
    t[0x6E] = VifInfo("hca")  # units for heat cost allocation (dimensionless)
    t[0x78] = VifInfo("fabrication_number")
    t[0x79] = VifInfo("enhanced_identification")
    t[0x7A] = VifInfo("bus_address")
    t[0x7C] = VifInfo("plain_text")  # the unit is the text after the VIF
    t[0x7E] = VifInfo("any_vif")  # readout selection of all VIFs (master to slave)
    t[0x7F] = VifInfo("manufacturer_specific")
    # 6F: reserved (2013+: EF = a reserved third table); 7B and 7D are FB/FD and only
    # valid with the extension bit set, so the bare codes are reserved too.
    return tuple(v if v is not None else _reserved("vif", i) for i, v in enumerate(t))


def _fd() -> tuple[VifInfo, ...]:
    """FD: main VIFE code extension table (VIF = FD, code in the first VIFE).

    Codes marked "2013+" are reserved in libmbus/wmbusmeters/mbus4j and defined by
    jMBus/libmburs (EN 13757-3:2013/2018); both readings agree where they overlap.
    """
    t: list[VifInfo | None] = [None] * 128
    for n in range(4):
        f = _DURATION_FACTOR[n]
        t[0x00 + n] = VifInfo("credit", "currency", n - 3)
        t[0x04 + n] = VifInfo("debit", "currency", n - 3)
        t[0x24 + n] = VifInfo("storage_interval", "s", 0, f)
        t[0x2C + n] = VifInfo("duration_since_last_readout", "s", 0, f)
        t[0x34 + n] = VifInfo("tariff_period", "s", 0, f)
        t[0x3C + n] = VifInfo("nominal_transmission_period", "s", 0, f)  # 2013+
    names = {
        0x08: "access_number",
        0x09: "device_type",
        0x0A: "manufacturer",
        0x0B: "parameter_set_id",
        0x0C: "model_version",
        0x0D: "hardware_version",
        0x0E: "firmware_version",
        0x0F: "software_version",
        0x10: "customer_location",
        0x11: "customer",
        0x12: "access_code_user",
        0x13: "access_code_operator",
        0x14: "access_code_system_operator",
        0x15: "access_code_developer",
        0x16: "password",
        0x17: "error_flags",
        0x18: "error_mask",
        0x19: "security_key",  # 2013+
        0x1A: "digital_output",
        0x1B: "digital_input",
        0x1C: "baud_rate",
        0x1E: "retry",
        0x1F: "remote_control",  # 2013+
        0x20: "first_storage_number",
        0x21: "last_storage_number",
        0x22: "storage_block_size",
        0x23: "tariff_subunit_descriptor",  # 2013+
        0x2A: "operator_specific_data",  # 2013+
        0x2B: "time_point_second",  # 2013+
        0x3A: "dimensionless",
        0x3B: "wmbus_data_container",  # 2013+
        0x60: "reset_counter",
        0x61: "cumulation_counter",
        0x62: "control_signal",
        0x63: "day_of_week",
        0x64: "week_number",
        0x65: "time_point_of_day_change",
        0x66: "parameter_activation_state",
        0x67: "special_supplier_information",
        0x71: "rf_level",  # 2013+, dBm
        0x73: "listening_window",  # 2013+
        0x74: "remaining_battery_days",  # 2013+ (also wmbusmeters)
        0x75: "times_meter_stopped",  # 2013+
        0x76: "manufacturer_protocol_container",  # 2013+
    }
    for code, name in names.items():
        t[code] = VifInfo(name)
    t[0x1D] = VifInfo("response_delay", "bit_times")
    t[0x28] = VifInfo("storage_interval_months", "month")
    t[0x29] = VifInfo("storage_interval_years", "a")
    # 30: start (date/time) of tariff; type G or F by the data field.
    t[0x30] = VifInfo("tariff_start", kind="date")
    for n in range(1, 4):  # 31-33: tariff duration in minutes, hours, days
        t[0x30 + n] = VifInfo("tariff_duration", "s", 0, _DURATION_FACTOR[n])
    t[0x38] = VifInfo("tariff_period_months", "month")
    t[0x39] = VifInfo("tariff_period_years", "a")
    for n in range(16):
        t[0x40 + n] = VifInfo("voltage", "V", n - 9)
        t[0x50 + n] = VifInfo("current", "A", n - 12)
    # hours and days are plain durations (reported in seconds); months and years are not
    for n, (unit, factor) in enumerate((("s", 3600), ("s", 86400), ("month", 1), ("a", 1))):
        t[0x68 + n] = VifInfo("duration_since_last_cumulation", unit, 0, factor)
        t[0x6C + n] = VifInfo("battery_operating_time", unit, 0, factor)
    t[0x70] = VifInfo("battery_change_date", kind="date")
    t[0x72] = VifInfo("daylight_saving")  # 2013+, type K (kept raw)
    return tuple(v if v is not None else _reserved("fd", i) for i, v in enumerate(t))


def _fb() -> tuple[VifInfo, ...]:
    """FB: alternate extended VIF code table (VIF = FB, code in the first VIFE).

    Both editions are merged: the 1998 US-gallon and °F codes (retired in 2018) and
    the 2013+ additions use disjoint codes.  Apparent power 34-37 follows jMBus and
    the 2018 decoder U18 (10^(nn-3) kVA); libmburs reads nn-1 (MBUS_FACTS §8.3).
    """
    t: list[VifInfo | None] = [None] * 128
    for n in range(2):
        t[0x00 + n] = VifInfo("energy", "Wh", n - 1 + 6)  # 10^(n-1) MWh
        t[0x08 + n] = VifInfo("energy", "J", n - 1 + 9)  # 10^(n-1) GJ
        t[0x10 + n] = VifInfo("volume", "m³", n + 2)
        t[0x18 + n] = VifInfo("mass", "kg", n + 2 + 3)  # 10^(n+2) t
        t[0x28 + n] = VifInfo("power", "W", n - 1 + 6)  # 10^(n-1) MW
        t[0x30 + n] = VifInfo("power", "J/h", n - 1 + 9)  # 10^(n-1) GJ/h
        t[0x02 + n] = VifInfo("reactive_energy", "varh", n + 3)  # 2013+: 10^n kvarh
        t[0x04 + n] = VifInfo("apparent_energy", "VAh", n + 3)  # 2013+: 10^n kVAh
        t[0x1A + n] = VifInfo("relative_humidity", "%", n - 1)  # 2013+
    for n in range(4):
        t[0x0C + n] = VifInfo("energy", "cal", n - 1 + 6)  # 2013+: 10^(nn-1) Mcal
        t[0x14 + n] = VifInfo("reactive_power", "var", n - 3 + 3)  # 2013+: 10^(nn-3) kvar
        t[0x2C + n] = VifInfo("frequency", "Hz", n - 3)  # 2013+
        t[0x34 + n] = VifInfo("apparent_power", "VA", n - 3 + 3)  # 2013+
        t[0x58 + n] = VifInfo("flow_temperature", "°F", n - 3)  # 1998
        t[0x5C + n] = VifInfo("return_temperature", "°F", n - 3)  # 1998
        t[0x60 + n] = VifInfo("temperature_difference", "°F", n - 3)  # 1998 (°F difference)
        t[0x64 + n] = VifInfo("external_temperature", "°F", n - 3)  # 1998
        t[0x70 + n] = VifInfo("temperature_limit", "°F", n - 3)  # 1998
        t[0x74 + n] = VifInfo("temperature_limit", "°C", n - 3)
    for n in range(8):
        t[0x78 + n] = VifInfo("cumulated_max_power", "W", n - 3)
    t[0x20] = VifInfo("volume", "ft³")  # 2013+
    t[0x21] = VifInfo("volume", "ft³", -1)
    t[0x22] = VifInfo("volume", "US gal", -1)  # 1998
    t[0x23] = VifInfo("volume", "US gal")  # 1998
    t[0x24] = VifInfo("volume_flow", "US gal/min", -3)  # 1998
    t[0x25] = VifInfo("volume_flow", "US gal/min")  # 1998
    t[0x26] = VifInfo("volume_flow", "US gal/h")  # 1998
    t[0x2A] = VifInfo("phase_u_u", "°", -1)  # 2013+
    t[0x2B] = VifInfo("phase_u_i", "°", -1)  # 2013+
    for i, name in enumerate(("k", "kq", "kc", "kcr", "kch", "kt", "kd")):
        t[0x68 + i] = VifInfo(f"hca_factor_{name}")  # 2013+ HCA rating factors
    return tuple(v if v is not None else _reserved("fb", i) for i, v in enumerate(t))


PRIMARY_VIF: Final = _primary()
FD_TABLE: Final = _fd()
FB_TABLE: Final = _fb()


# ------------------------------------------------------------------ VIFE
VifeEffect = Literal[
    "error", "unit", "tag", "date", "count", "duration", "scale", "offset", "ext7c", "manufacturer"
]


@dataclass(frozen=True, slots=True)
class VifeInfo:
    """A combinable (orthogonal) VIFE: how it changes the record's meaning.

    ``tag`` goes into the reading id (``""`` for pure scaling), ``text`` into the
    reading's ``qualifier``/``error``.  ``unit`` is appended to the VIF unit for the
    "per ..." codes; ``factor`` is the duration factor for the duration codes and
    ``exponent`` the decimal correction for 70-77/7D.
    """

    effect: VifeEffect
    tag: str = ""
    text: str = ""
    unit: str = ""
    exponent: int = 0
    factor: int = 1


_RECORD_ERRORS: Final = {
    0x00: "none",
    0x01: "too many DIFEs",
    0x02: "storage number not implemented",
    0x03: "unit number not implemented",
    0x04: "tariff number not implemented",
    0x05: "function not implemented",
    0x06: "data class not implemented",
    0x07: "data size not implemented",
    0x0B: "too many VIFEs",
    0x0C: "illegal VIF group",
    0x0D: "illegal VIF exponent",
    0x0E: "VIF/DIF mismatch",
    0x0F: "unimplemented action",
    0x15: "no data available",
    0x16: "data overflow",
    0x17: "data underflow",
    0x18: "data error",
    0x1C: "premature end of record",
}

_PER: Final = (
    (0x20, "per_second", "/s"),
    (0x21, "per_minute", "/min"),
    (0x22, "per_hour", "/h"),
    (0x23, "per_day", "/d"),
    (0x24, "per_week", "/week"),
    (0x25, "per_month", "/month"),
    (0x26, "per_year", "/a"),
    (0x27, "per_revolution", "/rev"),
    (0x28, "per_input_pulse_0", "/pulse"),
    (0x29, "per_input_pulse_1", "/pulse"),
    (0x2A, "per_output_pulse_0", "/pulse"),
    (0x2B, "per_output_pulse_1", "/pulse"),
    (0x2C, "per_litre", "/L"),
    (0x2D, "per_m3", "/m³"),
    (0x2E, "per_kg", "/kg"),
    (0x2F, "per_kelvin", "/K"),
    (0x30, "per_kwh", "/kWh"),
    (0x31, "per_gj", "/GJ"),
    (0x32, "per_kw", "/kW"),
    (0x33, "per_kelvin_litre", "/(K·L)"),
    (0x34, "per_volt", "/V"),
    (0x35, "per_ampere", "/A"),
    (0x36, "times_second", "·s"),
    (0x37, "times_second_per_volt", "·s/V"),
    (0x38, "times_second_per_ampere", "·s/A"),
)


def _vife() -> tuple[VifeInfo, ...]:
    """Combinable VIFE codes (E = 0 part), after a primary VIF or an FB/FD code."""
    t: list[VifeInfo | None] = [None] * 128
    for code in range(0x20):
        text = _RECORD_ERRORS.get(code, f"reserved record error 0x{code:02X}")
        t[code] = VifeInfo("error", text=text)
    for code, tag, unit in _PER:
        t[code] = VifeInfo("unit", tag, tag.replace("_", " "), unit)
    t[0x39] = VifeInfo("date", "start", "start date/time of")
    t[0x3A] = VifeInfo("tag", "uncorrected", "uncorrected unit (meter unit)")
    t[0x3B] = VifeInfo("tag", "positive_accumulation", "accumulation only of positive contributions")
    t[0x3C] = VifeInfo("tag", "negative_accumulation", "accumulation of abs value only of negative contributions")
    for u, ul in ((0, "lower"), (1, "upper")):
        base = 0x40 | u << 3
        t[base] = VifeInfo("tag", f"{ul}_limit", f"{ul} limit value")
        t[base | 1] = VifeInfo("count", f"{ul}_limit_exceeds", f"number of {ul} limit exceeds")
        for f, fl in ((0, "first"), (1, "last")):
            for b, bl in ((0, "begin"), (1, "end")):
                # E100 u f 1 b (mbus4j/wmbusmeters/U18: b = 0 begin; the ABB manual's
                # wording has it the other way round, MBUS_FACTS §8.4).
                t[base | f << 2 | 2 | b] = VifeInfo(
                    "date", f"{ul}_limit_{fl}_{bl}", f"date/time of {bl} of {fl} {ul} limit exceed"
                )
            for nn in range(4):
                # E101 u f nn: duration of limit exceed, nn = s/min/h/d
                t[0x50 | u << 3 | f << 2 | nn] = VifeInfo(
                    "duration",
                    f"{ul}_limit_{fl}_duration",
                    f"duration of {fl} {ul} limit exceed",
                    factor=_DURATION_FACTOR[nn],
                )
    for f, fl in ((0, "first"), (1, "last")):
        for nn in range(4):
            # E110 0 f nn: duration of D (the VIF's quantity)
            t[0x60 | f << 2 | nn] = VifeInfo(
                "duration", f"{fl}_duration", f"duration of {fl}", factor=_DURATION_FACTOR[nn]
            )
        for b, bl in ((0, "begin"), (1, "end")):
            # 1998: E110 1 f 1 b date/time of begin/end of first/last (6A, 6B, 6E, 6F)
            t[0x68 | f << 2 | 2 | b] = VifeInfo("date", f"{fl}_{bl}", f"date/time of {bl} of {fl}")
    # 2013+ (wmbusmeters, U18): 68/6C value during lower/upper limit exceed, 69 leakage
    # values, 6D overflow values; 6A/6B/6E/6F keep their 1998 meaning above.
    t[0x68] = VifeInfo("tag", "during_lower_limit_exceed", "value during lower limit exceed")
    t[0x6C] = VifeInfo("tag", "during_upper_limit_exceed", "value during upper limit exceed")
    t[0x69] = VifeInfo("tag", "leakage", "leakage values")
    t[0x6D] = VifeInfo("tag", "overflow", "overflow values")
    for nnn in range(8):
        t[0x70 + nnn] = VifeInfo("scale", exponent=nnn - 6)  # multiplicative 10^(nnn-6)
    for nn in range(4):
        t[0x78 + nn] = VifeInfo("offset", exponent=nn - 3)  # additive 10^(nn-3) × VIF unit
    t[0x7C] = VifeInfo("ext7c")  # 2013+: the next VIFE says which phase/quadrant
    t[0x7D] = VifeInfo("scale", exponent=3)  # multiplicative 10^3
    t[0x7E] = VifeInfo("tag", "future", "future value")
    t[0x7F] = VifeInfo("manufacturer")  # the rest of the chain is manufacturer specific
    return tuple(
        v if v is not None else VifeInfo("tag", f"vife{i:02x}", f"reserved VIFE 0x{i:02X}")
        for i, v in enumerate(t)
    )


VIFE: Final = _vife()

#: 2013+ VIFE 7C extension: the VIFE after 7C (E = 0 part).
VIFE_7C: Final = {
    0x01: "l1",
    0x02: "l2",
    0x03: "l3",
    0x04: "n",
    0x05: "l1_l2",
    0x06: "l2_l3",
    0x07: "l3_l1",
    0x08: "q1",
    0x09: "q2",
    0x0A: "q3",
    0x0B: "q4",
    0x0C: "import_minus_export",
    0x10: "absolute",
    0x11: "type_c",
    0x12: "type_d",
}


# ------------------------------------------------------------------ medium
#: Device type / medium byte of the header (libmbus, wmbusmeters, jMBus, mbus4j agree
#: except where noted).  The slug is used in the reading-independent meter id.
MEDIUM: Final[dict[int, str]] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat",  # heat, volume measured at return temperature (outlet)
    0x05: "steam",
    0x06: "warm_water",  # 30-90 °C
    0x07: "water",
    0x08: "hca",
    0x09: "compressed_air",
    0x0A: "cooling",  # volume measured at return temperature (outlet)
    0x0B: "cooling_inlet",
    0x0C: "heat_inlet",
    0x0D: "heat_cooling",
    0x0E: "bus",
    0x0F: "unknown",
    0x10: "irrigation_water",  # libmbus only
    0x11: "water_logger",  # libmbus only
    0x12: "gas_logger",  # libmbus only
    0x13: "gas_converter",  # libmbus only
    0x14: "calorific_value",  # libmbus, jMBus
    0x15: "hot_water",  # >= 90 °C
    0x16: "cold_water",
    0x17: "dual_water",
    0x18: "pressure",
    0x19: "ad_converter",
    0x1A: "smoke_detector",
    0x1B: "room_sensor",
    0x1C: "gas_detector",
    0x20: "breaker",
    0x21: "valve",
    0x25: "customer_unit",
    0x28: "waste_water",
    0x29: "garbage",
    0x30: "service_unit",  # libmbus only
    0x31: "gateway",
    0x32: "repeater",
    0x33: "bidirectional_repeater",
    0x36: "radio_converter_system",
    0x37: "radio_converter_meter",
    0x38: "bus_control_unit",  # libmbus comment only
    0xFF: "any",
}


def medium_name(code: int) -> str:
    """Slug of a medium byte; unassigned codes read ``medium_XX`` (hex)."""
    return MEDIUM.get(code, f"medium_{code:02x}")


# Fixed data structure (CI 73/77, libmbus only, MBUS_FACTS §7): medium from the top
# two bits of both unit bytes, unit from the low six bits.
FIXED_MEDIUM: Final = (
    "other", "oil", "electricity", "gas", "heat", "steam", "warm_water", "water",
    "hca", "reserved", "gas", "heat", "warm_water", "water", "hca", "reserved",
)  # fmt: skip


def _fixed_units() -> tuple[VifInfo, ...]:
    t: list[VifInfo] = [VifInfo("reserved")] * 64
    t[0x00] = VifInfo("time", "h,min,s")  # the counter holds a time (kept as a number)
    t[0x01] = VifInfo("date", "D,M,Y")
    for n in range(9):
        t[0x02 + n] = VifInfo("energy", "Wh", n)
        t[0x0B + n] = VifInfo("energy", "J", n + 3)  # kJ × 10^n
        t[0x14 + n] = VifInfo("power", "W", n)
        t[0x1D + n] = VifInfo("power", "J/h", n + 3)  # kJ/h × 10^n
        t[0x26 + n] = VifInfo("volume", "m³", n - 6)  # ml × 10^n
        t[0x2F + n] = VifInfo("volume_flow", "m³/h", n - 6)  # ml/h × 10^n
    t[0x38] = VifInfo("temperature", "°C", -3)
    t[0x39] = VifInfo("hca")
    t[0x3E] = VifInfo("historic")  # "same as counter 1, historic value"
    t[0x3F] = VifInfo("counter")  # no unit
    return tuple(t)


FIXED_UNIT: Final = _fixed_units()


# ----------------------------------------------------------- manufacturers
def decode_manufacturer(code: int) -> str:
    """The three letters of a manufacturer id (EN 13757-3 / FLAG association).

    Each letter is 5 bits (A = 1): ``((m >> 10) & 31) + 64`` …  A letter outside
    A-Z (a garbled or zero id) is shown as ``@`` or ``[``..``_``, never refused.
    """
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def encode_manufacturer(letters: str) -> int:
    """Inverse of :func:`decode_manufacturer` for three letters A-Z.

    Raises:
        ValueError: not three letters A-Z.
    """
    if len(letters) != 3 or not all("A" <= c <= "Z" for c in letters):
        raise ValueError(f"manufacturer id must be three letters A-Z, got {letters!r}")
    a, b, c = (ord(ch) - 64 for ch in letters)
    return a << 10 | b << 5 | c


#: A few FLAG codes met on wired M-Bus, for logs and the virtual bus (not exhaustive).
MANUFACTURERS: Final[dict[str, str]] = {
    "ABB": "ABB",
    "ACW": "Itron",
    "AMT": "Aquametro",
    "DME": "Diehl Metering",
    "EFE": "Engelmann",
    "ELS": "Elster",
    "ELV": "Elvaco",
    "EMH": "EMH metering",
    "EMU": "EMU Elektronik",
    "FIN": "Finder",
    "GWF": "GWF MessSysteme",
    "HYD": "Diehl Metering (Hydrometer)",
    "KAM": "Kamstrup",
    "LGB": "Landis+Gyr",
    "LSE": "Siemens",
    "LUG": "Landis+Gyr (Ultraheat)",
    "QDS": "Qundis",
    "REL": "Relay",
    "SBC": "Saia-Burgess",
    "SEN": "Sensus",
    "SLB": "Schlumberger",
    "SPX": "Sensus (Spanner-Pollux)",
    "TCH": "Techem",
    "ZRM": "Minol",
}

#: CI 70 application error codes (1998: libmbus, mbus4j, libmburs; 2013+: libmburs).
APPLICATION_ERRORS: Final[dict[int, str]] = {
    0x00: "unspecified error",
    0x01: "unimplemented CI field",
    0x02: "buffer too long, truncated",
    0x03: "too many records",
    0x04: "premature end of record",
    0x05: "more than 10 DIFEs",
    0x06: "more than 10 VIFEs",
    0x08: "application busy",
    0x09: "too many readouts",  # libmburs: "credit overflow" (MBUS_FACTS §8.6)
    0x11: "no function",
    0x12: "data error",
    0x13: "routing or relay error",
    0x14: "access violation",
    0x15: "parameter error",
    0x16: "size error",
    0x20: "security error",
    0x21: "security mechanism not supported",
    0x22: "inadequate security",
    0xF0: "dynamic error",
}
