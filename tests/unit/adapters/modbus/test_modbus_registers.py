"""The Modbus adapter's pure parts: register images, config and actuator addresses."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from adapters.modbus import plugin
from adapters.modbus.client import ModbusAddress, parse_address
from adapters.modbus.config import ModbusConfig, RtuListen, TcpListen, parse_listen
from adapters.modbus.registers import (
    END_ADDR,
    FLAT_LOADS_ADDR,
    FLAT_POINTS,
    FLAT_SIZE,
    METER_ADDR,
    METER_LEN,
    METER_POINTS,
    SUNSPEC_SIZE,
    Identity,
    MeterValues,
    SignalState,
    decode_float32,
    flat_registers,
    meter_values,
    string_regs,
    sunspec_registers,
)
from gateway.model import DemandResponseEvent, LoadState, PriceSignal, Reading, Snapshot

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def snap(*readings: tuple[str, float | int | str, str | None]) -> Snapshot:
    return Snapshot(meter="m", protocol="x", device_id=None, timestamp=NOW, received=NOW,
                    readings=tuple(Reading(id=i, value=v, unit=u) for i, v, u in readings))


def signed(x: int) -> int:
    return x - 0x10000 if x & 0x8000 else x


def point(regs: list[int], name: str) -> float | None:
    """A meter model point with its scale factor applied (None: not implemented)."""
    off, kind, sf = METER_POINTS[name]
    base = METER_ADDR + 2 + off
    if kind == "acc32":
        raw = (regs[base] << 16) | regs[base + 1]
        if raw == 0:
            return None
    else:
        if regs[base] == 0x8000:
            return None
        raw = signed(regs[base])
    assert sf is not None
    return float(raw * 10.0 ** signed(regs[METER_ADDR + 2 + METER_POINTS[sf][0]]))


def test_sunspec_layout_and_not_implemented_values() -> None:
    regs = sunspec_registers(MeterValues(values={}), Identity(serial="gw1", unit_id=4), phases=1)
    assert len(regs) == SUNSPEC_SIZE == 179
    assert regs[0:4] == [0x5375, 0x6E53, 1, 66]
    assert regs[4:12] == string_regs("han-gateway", 8)
    assert regs[52:60] == string_regs("gw1", 8)
    assert regs[68:70] == [4, 0x8000]  # DA, Pad
    assert regs[METER_ADDR:METER_ADDR + 2] == [201, METER_LEN]
    assert regs[END_ADDR:END_ADDR + 2] == [0xFFFF, 0]
    assert all(point(regs, n) is None for n, (_o, kind, sf) in METER_POINTS.items()
               if sf is not None)
    evt = METER_ADDR + 2 + METER_POINTS["Evt"][0]
    assert regs[evt:evt + 2] == [0xFFFF, 0xFFFF]


def test_sunspec_values_from_iec_short_ids_and_tariff_sums() -> None:
    mv = meter_values(snap(("1.8.1", 1.5, "kWh"), ("1.8.2", 2.25, "kWh"), ("2.8.0", 7, "kWh"),
                           ("1.7.0", 0.1, "kW"), ("2.7.0", 0.6, "kW"), ("32.7.0", 230.1, "V"),
                           ("13.7.0", 0.95, None), ("14.7.0", 49.98, "Hz")))
    assert mv.phases() == 1
    regs = sunspec_registers(mv, Identity(), phases=mv.phases())
    assert regs[METER_ADDR] == 201
    assert point(regs, "W") == -500  # exporting: negative
    assert point(regs, "TotWhImp") == 3750
    assert point(regs, "TotWhExp") == 7000
    assert point(regs, "PhVphA") == pytest.approx(230.1)
    assert point(regs, "PhV") == pytest.approx(230.1)
    assert point(regs, "PF") == pytest.approx(95)  # percent
    assert point(regs, "Hz") == pytest.approx(49.98)
    assert point(regs, "PhVphB") is None


def test_scale_factor_rises_instead_of_overflowing() -> None:
    mv = MeterValues(values={"power_import_l1": 40_000.0, "power_import_l2": 1.0,
                             "power_import_l3": 2.0, "current_l1": 400.0})
    regs = sunspec_registers(mv, Identity(), phases=3)
    assert regs[METER_ADDR] == 203
    assert point(regs, "WphA") == 40_000  # W_SF 1
    assert point(regs, "W") == 40_000  # W from the phases: 40003 at SF 1 rounds to 40000
    assert point(regs, "WphB") == 0  # the price of a shared scale factor
    assert point(regs, "AphA") == pytest.approx(400)


def test_flat_map_floats_signals_and_loads() -> None:
    mv = meter_values(snap(("1-0:1.7.0", 0.0, "kW"), ("1-0:2.7.0", 1.5, "kW"),
                           ("1-0:1.8.0", 12.5, "kWh"), ("1-0:31.7.0", 3, "A")))
    sig = SignalState(
        price=PriceSignal(start=NOW - timedelta(hours=1), end=NOW, price_per_kwh=0.5),  # ended
        dr_events={
            "a": DemandResponseEvent(event_id="a", start=NOW, end=NOW + timedelta(hours=1),
                                     level=1, target_power_w=3000),
            "b": DemandResponseEvent(event_id="b", start=NOW - timedelta(hours=1),
                                     end=NOW + timedelta(hours=1), level=4, target_power_w=2000),
            "c": DemandResponseEvent(event_id="c", start=NOW + timedelta(hours=1),
                                     end=NOW + timedelta(hours=2), level=9),  # not yet
        },
        loads={"ev": LoadState(load="ev", on=True, since=NOW, limit_w=2000.0, override=True)},
        load_order=["boiler", "ev"], meter_online=False)
    regs = flat_registers(mv, sig, NOW + timedelta(seconds=5))
    assert len(regs) == FLAT_SIZE

    def f(name: str) -> float:
        off = FLAT_POINTS[name]
        return decode_float32(regs[off:off + 2])

    assert regs[0:2] == [0xC4BB, 0x8000]  # -1500.0, big-endian word order
    assert f("power_w") == -1500 and f("power_export_w") == 1500
    assert f("energy_import_kwh") == 12.5 and f("current_l1_a") == 3
    assert math.isnan(f("voltage_l1_v")) and math.isnan(f("price_per_kwh"))
    assert f("age_s") == 5 and f("meter_online") == 0
    assert f("dr_level") == 4 and f("dr_target_power_w") == 2000
    assert f("loads_known") == 2
    boiler = [decode_float32(regs[FLAT_LOADS_ADDR + i:FLAT_LOADS_ADDR + i + 2])
              for i in range(0, 8, 2)]
    ev = [decode_float32(regs[FLAT_LOADS_ADDR + 8 + i:FLAT_LOADS_ADDR + 10 + i])
          for i in range(0, 8, 2)]
    assert all(math.isnan(x) for x in boiler)  # configured, no state yet
    assert ev[0] == 1 and ev[1] == 2000 and math.isnan(ev[2]) and ev[3] == 1


def test_listen_syntax() -> None:
    assert parse_listen("tcp://0.0.0.0:502") == TcpListen(host="0.0.0.0", port=502)
    assert parse_listen("tcp://[::1]") == TcpListen(host="::1", port=502)
    assert parse_listen("rtu:///dev/ttyUSB1?baudrate=9600&parity=n&stopbits=2") == RtuListen(
        device="/dev/ttyUSB1", baudrate=9600, parity="N", stopbits=2)
    assert parse_listen("") is None
    for bad in ("udp://x:1", "tcp://:502", "rtu://dev/ttyUSB1", "rtu:///dev/x?speed=9600",
                "rtu:///dev/x?parity=X", "tcp://h:99999"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_config_is_validated() -> None:
    cfg = ModbusConfig.model_validate({"listen": "tcp://127.0.0.1:1502", "unit_id": 7})
    assert cfg.map == "both" and cfg.flat_base == 0
    for bad in ({"unit_id": 0}, {"listen": "tcp:/x"}, {"map": "sunspec2"},
                {"flat_base": 40100}, {"loads": ["a", "a"]}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            ModbusConfig.model_validate(bad)


def test_actuator_addresses() -> None:
    assert parse_address("relay.local/1/coil:16") == ModbusAddress(
        host="relay.local", port=502, unit=1, kind="coil", address=16)
    assert parse_address("[fd00::5]:1502/255/hr:16=0xFF00,0") == ModbusAddress(
        host="fd00::5", port=1502, unit=255, kind="hr", address=16, on_value=0xFF00,
        off_value=0)
    a = parse_address("10.0.0.9:502/1/hr:100=3,1/limit:101*0.001449=32")
    assert isinstance(a, ModbusAddress)
    assert (a.limit_address, a.limit_restore, a.limit_raw(11_040)) == (101, 32, 16)
    for bad in ("host/1/hr:5", "host/1/coil:5=1,0", "host:0/1/coil:1", "host/256/coil:1",
                "host/1/coil:70000", "host/1/ir:5", "host/1/hr:5=1,70000", "/1/coil:1"):
        problem = plugin.actuator_problem(bad)
        assert problem is not None, bad
    assert plugin.actuator_problem("h:1502/1/hr:5=1,0/limit:6") is None


def test_plugin_warns_about_plaintext_tcp_and_checks_the_meter() -> None:
    from adapters.base import AdapterContext
    from gateway.errors import ConfigError

    warnings = plugin.warnings(ModbusConfig(listen="tcp://0.0.0.0:502"))
    assert len(warnings) == 2 and "no authentication" in warnings[0]
    assert len(plugin.warnings(ModbusConfig(listen="tcp://10.1.2.3:502"))) == 1
    assert plugin.warnings(ModbusConfig(listen="rtu:///dev/ttyUSB0")) == []

    class NoOutbox:
        pass

    ctx = AdapterContext(gateway_id="g", config={"meter": "nope"}, outbox=NoOutbox(),  # type: ignore[arg-type]
                         meters=("main",))
    with pytest.raises(ConfigError, match="adapter.modbus.meter"):
        plugin.create(ctx)
    ctx = AdapterContext(gateway_id="g", config={"flat_base": -1}, outbox=NoOutbox(),  # type: ignore[arg-type]
                         meters=("main",))
    with pytest.raises(ConfigError, match="adapter.modbus.flat_base"):
        plugin.create(ctx)
    ctx = AdapterContext(gateway_id="g", config={}, outbox=NoOutbox(),  # type: ignore[arg-type]
                         meters=("main",))
    assert plugin.create(ctx).meter == "main"
