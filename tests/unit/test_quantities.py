"""The reading-id -> quantity table and unit normalisation."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Reading, Snapshot
from gateway.quantities import (
    QUANTITIES,
    Quantity,
    canonical_unit,
    normalised_value,
    quantities_for,
    quantity_for,
)

KEY = re.compile(r"^[a-z0-9_-]+$")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def q(rid: str, value: float | str = 1.0, unit: str | None = None) -> Quantity:
    return quantity_for(Reading(id=rid, value=value, unit=unit))


@pytest.mark.parametrize(
    ("rid", "unit", "key"),
    [
        ("1-0:1.8.1", "kWh", "energy_import_t1"),
        ("1-0:1.8.2", "kWh", "energy_import_t2"),
        ("1-0:2.8.1", "kWh", "energy_export_t1"),
        ("1-0:2.8.2", "kWh", "energy_export_t2"),
        ("1-0:1.8.0", "kWh", "energy_import"),
        ("1-0:2.8.0", "kWh", "energy_export"),
        ("1.8.0", "kWh", "energy_import"),
        ("1.8.1", "kWh", "energy_import_t1"),
        ("1.8.2", "kWh", "energy_import_t2"),
        ("2.8.0", "kWh", "energy_export"),
        ("1-0:1.8.0*255", "kWh", "energy_import"),
    ],
)
def test_energy_totals_land_in_the_energy_dashboard(rid: str, unit: str, key: str) -> None:
    quantity = q(rid, 123.4, unit)
    assert quantity.key == key
    assert (quantity.device_class, quantity.state_class, quantity.unit) == (
        "energy", "total_increasing", "kWh")


@pytest.mark.parametrize(
    ("rid", "key", "device_class", "unit"),
    [
        ("1-0:1.7.0", "power_import", "power", "W"),
        ("1-0:2.7.0", "power_export", "power", "W"),
        ("1-0:21.7.0", "power_import_l1", "power", "W"),
        ("1-0:41.7.0", "power_import_l2", "power", "W"),
        ("1-0:61.7.0", "power_import_l3", "power", "W"),
        ("1-0:22.7.0", "power_export_l1", "power", "W"),
        ("1-0:42.7.0", "power_export_l2", "power", "W"),
        ("1-0:62.7.0", "power_export_l3", "power", "W"),
        ("1-0:32.7.0", "voltage_l1", "voltage", "V"),
        ("1-0:52.7.0", "voltage_l2", "voltage", "V"),
        ("1-0:72.7.0", "voltage_l3", "voltage", "V"),
        ("1-0:31.7.0", "current_l1", "current", "A"),
        ("1-0:51.7.0", "current_l2", "current", "A"),
        ("1-0:71.7.0", "current_l3", "current", "A"),
        ("16.7.0", "power_net", "power", "W"),
        ("32.7.0", "voltage_l1", "voltage", "V"),
    ],
)
def test_instantaneous_values_are_measurements(
    rid: str, key: str, device_class: str, unit: str
) -> None:
    quantity = q(rid, 1.0, unit)
    assert (quantity.key, quantity.device_class, quantity.state_class, quantity.unit) == (
        key, device_class, "measurement", unit)


def test_abstract_objects() -> None:
    tariff = q("0-0:96.14.0", "0002")
    assert (tariff.key, tariff.device_class, tariff.state_class, tariff.unit) == (
        "tariff", None, None, None)
    failures = q("0-0:96.7.21", 4)
    assert (failures.key, failures.state_class, failures.diagnostic) == (
        "power_failures", "total_increasing", True)
    assert q("0-0:96.7.9", 1).key == "long_power_failures"


@pytest.mark.parametrize(
    ("rid", "unit", "key", "device_class", "target"),
    [
        ("0-1:24.2.1", "m3", "gas", "gas", "m³"),
        ("0-2:24.2.1", "m3", "gas_2", "gas", "m³"),
        ("0-1:24.2.3", "m3", "gas", "gas", "m³"),
        ("0-1:24.2.1", "GJ", "heat", "energy", "GJ"),
        ("0-3:24.2.1", "kWh", "heat_3", "energy", "kWh"),
        ("7-0:3.0.0", "m3", "gas", "gas", "m³"),
        ("8-0:1.0.0", "m3", "water", "water", "m³"),
        ("6-0:1.0.0", "GJ", "heat", "energy", "GJ"),
    ],
)
def test_mbus_channels_and_media(
    rid: str, unit: str, key: str, device_class: str, target: str
) -> None:
    quantity = q(rid, 12.5, unit)
    assert (quantity.key, quantity.device_class, quantity.unit) == (key, device_class, target)
    assert quantity.state_class == "total_increasing"


def test_medium_from_reading_extra_and_snapshot_device_type() -> None:
    water = quantity_for(Reading(id="0-2:24.2.1", value=1.0, unit="m3",
                                 extra=(("device_type", 7),)))
    assert (water.key, water.device_class) == ("water_2", "water")
    snap = Snapshot(
        meter="m", protocol="dsmr", device_id=None, timestamp=NOW, received=NOW,
        readings=(
            Reading(id="0-1:24.1.0", value=3),
            Reading(id="0-1:24.2.1", value=1.0, unit="m3"),
            Reading(id="0-2:24.1.0", value="007"),
            Reading(id="0-2:24.2.1", value=2.0, unit="m3"),
        ),
    )
    keys = {r.id: qq for r, qq in quantities_for(snap)}
    assert keys["0-1:24.2.1"].key == "gas"
    assert (keys["0-2:24.2.1"].key, keys["0-2:24.2.1"].device_class) == ("water_2", "water")


def test_unknown_ids_get_a_generic_quantity_from_their_slug() -> None:
    generic = q("1-0:99.97.0", "(1)(0-0:96.7.19)")
    assert generic.key == "1-0_99_97_0"
    assert (generic.device_class, generic.state_class) == (None, None)
    # historic values are not the live register
    assert q("1-0:1.8.0*101", 5.0, "kWh").key == "1-0_1_8_0_101"
    # a numeric unknown id with a known unit still gets sensible classes
    flow = q("vendor:flow", 0.5, "m3/h")
    assert (flow.key, flow.device_class, flow.unit) == ("vendor_flow", "volume_flow_rate", "m³/h")
    energy = q("mbus:12", 5, "Wh")
    assert (energy.device_class, energy.unit, energy.scale) == ("energy", "kWh", 0.001)


@pytest.mark.parametrize(
    ("rid", "value", "unit", "expected"),
    [
        ("1-0:1.7.0", 1.234, "kW", 1234),
        ("1-0:1.7.0", 0.1, "kW", 100),
        ("1-0:1.7.0", 250, "W", 250),
        ("1-0:1.8.0", 123456, "Wh", 123.456),
        ("1-0:1.8.0", 1.5, "MWh", 1500),
        ("1-0:1.8.0", 10.0, "kWh", 10.0),
        ("0-1:24.2.1", 1500, "l", 1.5),
        ("0-1:24.2.1", 12.345, "m3", 12.345),
        ("0-0:96.14.0", "0002", None, "0002"),
        ("1-0:32.7.0", 230.1, None, 230.1),  # no unit: taken as the target unit
    ],
)
def test_normalised_values(rid: str, value: float | str, unit: str | None,
                           expected: float | str) -> None:
    reading = Reading(id=rid, value=value, unit=unit)
    got = normalised_value(reading, quantity_for(reading))
    assert got == expected
    assert type(got) is type(expected)


def test_mismatched_unit_drops_the_device_class() -> None:
    odd = q("1-0:1.8.0", 5.0, "V")
    assert (odd.unit, odd.device_class, odd.scale) == ("V", None, 1.0)


def test_unit_spellings() -> None:
    assert canonical_unit("m3") == "m³"
    assert canonical_unit("*kWh") == "kWh"
    assert canonical_unit("KWH") == "kWh"
    assert canonical_unit("MWh") == "MWh"
    assert canonical_unit("") is None
    assert canonical_unit("furlong") == "furlong"


def test_table_keys_are_unique_and_topic_safe() -> None:
    for key, quantity in QUANTITIES.items():
        assert KEY.match(key), key
        assert quantity.key == key
        if quantity.device_class == "energy":
            assert quantity.state_class == "total_increasing" and quantity.unit == "kWh"
        if quantity.state_class == "measurement" and quantity.device_class == "power":
            assert quantity.unit == "W"


def test_duplicate_keys_in_one_snapshot_are_disambiguated() -> None:
    snap = Snapshot(
        meter="m", protocol="dsmr", device_id=None, timestamp=NOW, received=NOW,
        readings=(Reading(id="0-1:24.2.1", value=1.0, unit="m3"),
                  Reading(id="0-1:24.2.3", value=1.0, unit="m3")),
    )
    keys = [qq.key for _, qq in quantities_for(snap)]
    assert keys[0] == "gas" and len(set(keys)) == 2 and KEY.match(keys[1])


@given(st.text(max_size=40), st.one_of(st.floats(allow_nan=True), st.integers(), st.text()),
       st.one_of(st.none(), st.text(max_size=6)))
def test_any_reading_gets_a_topic_safe_quantity(rid: str, value: float | str,
                                                 unit: str | None) -> None:
    reading = Reading(id=rid, value=value, unit=unit)
    quantity = quantity_for(reading)
    assert KEY.match(quantity.key)
    normalised_value(reading, quantity)
