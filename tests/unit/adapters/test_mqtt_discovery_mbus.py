"""Home Assistant discovery of M-Bus readings: device and state classes, HA units."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from adapters.mqtt.discovery import Topics, config_payload, device_info, ha_quantities, mbus_quantity
from gateway.model import MeterFrame, Reading, Snapshot
from gateway.protocols.mbus import MbusDecoder
from gateway.quantities import normalised_value

VECTORS = Path(__file__).resolve().parents[4] / "shared" / "vectors" / "mbus" / "libmbus" / "frames"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = Topics(base="han", gateway="home")


def snapshot_of(vector: str) -> Snapshot:
    data = bytes.fromhex(json.loads((VECTORS / f"{vector}.json").read_text())["frame_hex"])
    decoder = MbusDecoder()
    (frame,) = decoder.feed(data) + decoder.feed_eof()
    assert isinstance(frame, MeterFrame)
    return Snapshot(meter="heat", protocol="mbus", device_id=frame.meter_id, timestamp=NOW,
                    received=NOW, readings=frame.readings)


def classes(snapshot: Snapshot) -> dict[str, tuple[str | None, str | None, str | None, object]]:
    return {r.id: (q.device_class, q.state_class, q.unit, normalised_value(r, q))
            for r, q in ha_quantities(snapshot)}


def test_water_meter_vector() -> None:
    # frame2: water meter 12345678-PAD-01-water (volume, max flow of storage 5, energy)
    got = classes(snapshot_of("frame2"))
    assert got == {
        "volume": ("water", "total_increasing", "m³", 12.565),
        "volume_flow_max_s5": ("volume_flow_rate", "measurement", "m³/h", 0.113),
        "energy_t2_u1": ("energy", "total_increasing", "kWh", 218.37),
    }


def test_heat_meter_vector() -> None:
    snap = snapshot_of("ELS_Elster-F96-Plus")  # 44493951-ELS-2F-heat
    got = classes(snap)
    assert got["energy"] == ("energy", "total_increasing", "kWh", 0)
    assert got["volume"] == ("volume", "total_increasing", "m³", 0.0)  # a heat meter's water
    assert got["flow_temperature"] == ("temperature", "measurement", "°C", 22.7)
    assert got["return_temperature"] == ("temperature", "measurement", "°C", 22.6)
    # stored values of a due date are no running totals: no state class
    assert got["energy_s1"][:2] == ("energy", None)
    assert got["volume_s1"][:2] == ("volume", None)
    # error states (text) and what the M-Bus mapping does not know stay generic
    assert got["power_error"][0] is None
    assert got["temperature_difference"][0] is None
    info = device_info(snap)
    payloads = {r.id: config_payload(TOPICS, "heat", q, info) for r, q in ha_quantities(snap)}
    assert payloads["energy"]["device_class"] == "energy"
    assert payloads["energy"]["state_class"] == "total_increasing"
    assert payloads["energy"]["unit_of_measurement"] == "kWh"
    assert "state_class" not in payloads["energy_s1"]
    assert len({p["unique_id"] for p in payloads.values()}) == len(payloads)


def test_power_and_flow_are_measurements() -> None:
    got = classes(snapshot_of("EDC"))  # heat meter with power, flow, temperatures
    assert got["power"] == ("power", "measurement", "W", 0.0)
    assert got["power_max"] == ("power", "measurement", "W", 18511.912)
    assert got["volume_flow"][:3] == ("volume_flow_rate", "measurement", "m³/h")
    assert got["energy_positive_accumulation"] == ("energy", "total_increasing", "kWh", 35)


def reading(quantity: str, value: float, unit: str, **extra: object) -> Reading:
    fields = {"quantity": quantity, "function": "instantaneous", "storage": 0, "tariff": 0,
              "subunit": 0, **extra}
    return Reading(id=quantity, value=value, unit=unit, extra=tuple(fields.items()))


def test_units_are_converted_to_ones_ha_accepts() -> None:
    cases = [
        (reading("energy", 3.6e9, "J"), "gas", ("energy", "GJ", 3.6)),
        (reading("volume", 100.0, "ft³"), "gas", ("gas", "m³", 2.8316846592)),
        (reading("volume", 1000.0, "US gal"), "water", ("water", "m³", 3.785411784)),
        (reading("volume_flow", 2.0, "m³/min"), None, ("volume_flow_rate", "m³/h", 120)),
        (reading("volume_flow", 0.001, "m³/s"), None, ("volume_flow_rate", "m³/h", 3.6)),
        (reading("power", 7200.0, "J/h"), None, ("power", "W", 2.0)),
    ]
    for r, medium, (device_class, unit, value) in cases:
        q = mbus_quantity(r, medium=medium)
        assert q is not None, r
        assert (q.device_class, q.unit) == (device_class, unit)
        got = normalised_value(r, q)
        assert isinstance(got, int | float) and abs(got - value) < 1e-9 * max(1.0, value), (r, got)


def test_gas_volume_is_gas_and_other_snapshots_are_untouched() -> None:
    q = mbus_quantity(reading("volume", 1.0, "m³"), medium="gas")
    assert q is not None and (q.device_class, q.state_class) == ("gas", "total_increasing")
    assert mbus_quantity(reading("volume", 1.0, "m³", function="max")) is not None
    assert mbus_quantity(reading("mass", 1.0, "kg")) is None
    dsmr = Snapshot(meter="m", protocol="dsmr", device_id=None, timestamp=NOW, received=NOW,
                    readings=(Reading(id="volume", value=1.0, unit="m³",
                                      extra=(("quantity", "volume"),)),))
    ((_, q2),) = ha_quantities(dsmr)
    assert q2.state_class == "total"  # the generic mapping, not the M-Bus one
