"""Property tests of the SunSpec and flat encoders: every register is 16 bits, and a value
read back with its scale factor is the value sent, within half a step of that scale."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.registers import (
    FLAT_POINTS,
    FLAT_SIZE,
    METER_ADDR,
    METER_POINTS,
    SUNSPEC_SIZE,
    Identity,
    MeterValues,
    SignalState,
    decode_float32,
    flat_registers,
    sunspec_points,
    sunspec_registers,
)

KEYS = ("power_import", "power_export", "power_import_l1", "power_export_l2", "current_l1",
        "current_l2", "current_l3", "voltage_l1", "voltage_l3", "frequency", "power_factor",
        "energy_import", "energy_export_t1", "energy_export_t2")
finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
huge = st.floats(allow_nan=False, allow_infinity=False)
values = st.dictionaries(st.sampled_from(KEYS), finite)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def signed(x: int) -> int:
    return x - 0x10000 if x & 0x8000 else x


def read(regs: list[int], name: str) -> tuple[int, int]:
    """(raw signed value, scale factor) of an int16 meter point."""
    off, _kind, sf = METER_POINTS[name]
    assert sf is not None
    return signed(regs[METER_ADDR + 2 + off]), signed(regs[METER_ADDR + 2 + METER_POINTS[sf][0]])


@given(values, st.sampled_from([1, 3]))
def test_sunspec_registers_are_16_bit_and_round_trip(vals: dict[str, float], phases: int) -> None:
    mv = MeterValues(values=vals)
    regs = sunspec_registers(mv, Identity(serial="x" * 40), phases=phases)
    assert len(regs) == SUNSPEC_SIZE
    assert all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs)
    w = sunspec_points(mv)["W"]  # net, or the sum of the phases
    raw, sf = read(regs, "W")
    if w is None:
        assert raw == -32768
    else:
        assert -32767 <= raw <= 32767 and 0 <= sf <= 10
        if abs(w) < 32767 * 10.0 ** 10:  # representable at the highest scale factor
            assert abs(raw * 10.0 ** sf - w) <= 0.5 * 10.0 ** sf * (1 + 1e-9)
    if "current_l1" in vals:
        raw, sf = read(regs, "AphA")
        if abs(vals["current_l1"]) < 32767 * 10.0 ** 10:
            assert abs(raw * 10.0 ** sf - vals["current_l1"]) <= 0.5 * 10.0 ** sf * (1 + 1e-9)


@given(values)
def test_flat_registers_are_16_bit_floats(vals: dict[str, float]) -> None:
    regs = flat_registers(MeterValues(values=vals), SignalState(), NOW)
    assert len(regs) == FLAT_SIZE and all(0 <= r <= 0xFFFF for r in regs)
    off = FLAT_POINTS["current_l1_a"]
    got = decode_float32(regs[off:off + 2])
    if "current_l1" in vals:
        assert math.isclose(got, vals["current_l1"], rel_tol=1e-6, abs_tol=1e-37)
    else:
        assert math.isnan(got)


@given(huge)
def test_values_beyond_float32_become_infinities(x: float) -> None:
    regs = flat_registers(MeterValues(values={"power_import": x}), SignalState(), NOW)
    got = decode_float32(regs[FLAT_POINTS["power_import_w"]:FLAT_POINTS["power_import_w"] + 2])
    assert got == x or math.isinf(got) and got * x > 0 or abs(got - x) <= abs(x) * 1e-6 + 1e-37
    sunspec = sunspec_registers(MeterValues(values={"power_import": x}), Identity(), phases=1)
    assert all(0 <= r <= 0xFFFF for r in sunspec)
