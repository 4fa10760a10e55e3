"""The object model of the BACnet device without a network: instances, units, DR level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.bacnet import BacnetAdapter, BacnetConfig
from gateway.bus import Bus
from gateway.model import DemandResponseEvent, Reading, Snapshot

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def snap(meter: str, *readings: Reading) -> Snapshot:
    return Snapshot(meter=meter, protocol="dsmr", device_id=None, timestamp=T0, received=T0, readings=readings)


POWER = Reading(id="1-0:1.7.0", value=0.5, unit="kW")
EXPORT = Reading(id="1-0:2.7.0", value=0.0, unit="kW")
ENERGY = Reading(id="1-0:1.8.1", value=10.0, unit="kWh")
GAS = Reading(id="0-1:24.2.1", value=12.5, unit="m3")
TEXT = Reading(id="0-0:96.13.0", value="hello")


def adapter(**cfg: object) -> BacnetAdapter:
    config = BacnetConfig.model_validate({"device_instance": 1, "address": "127.0.0.2/8:47999", **cfg})
    a = BacnetAdapter(gateway_id="t", config=config, meters=("main", "sub"))
    a._bus = Bus()
    a._create_fixed_objects()
    return a


def instances(a: BacnetAdapter) -> dict[str, tuple[int, str, float]]:
    return {f"{m}.{k}": (p.obj.objectIdentifier[1], str(p.obj.units), float(p.obj.presentValue))
            for (m, k), p in a._points.items() if p.obj is not None}


async def test_default_instances_follow_first_appearance_per_meter() -> None:
    a = adapter()
    a._on_snapshot(snap("main", POWER, ENERGY, TEXT, GAS))
    a._on_snapshot(snap("sub", ENERGY))
    a._on_snapshot(snap("main", EXPORT, POWER))
    assert instances(a) == {
        "main.power_import": (1, "watts", 500.0),
        "main.energy_import_t1": (2, "kilowatt-hours", 10.0),
        "main.gas": (3, "cubic-meters", 12.5),
        "main.power_export": (4, "watts", 0.0),
        "sub.energy_import_t1": (1001, "kilowatt-hours", 10.0),
    }


async def test_quantities_list_fixes_instances_and_filters() -> None:
    a = adapter(quantities=["energy_import_t1", "main.power_import"], instances={"sub.energy_import_t1": 77})
    a._on_snapshot(snap("main", POWER, EXPORT, ENERGY))
    a._on_snapshot(snap("sub", ENERGY, POWER))
    got = instances(a)
    assert got == {"main.power_import": (2, "watts", 500.0), "main.energy_import_t1": (1, "kilowatt-hours", 10.0),
                   "sub.energy_import_t1": (77, "kilowatt-hours", 10.0)}


async def test_cov_increments_by_key_unit_and_default() -> None:
    a = adapter(cov_increment={"power_import": 50.0, "kWh": 0.5})
    a._on_snapshot(snap("main", POWER, EXPORT, ENERGY))
    inc = {k: float(p.obj.covIncrement) for (_m, k), p in a._points.items()}
    assert inc == {"power_import": 50.0, "power_export": 10.0, "energy_import_t1": 0.5}


async def test_dr_level_follows_the_events_in_force() -> None:
    a = adapter(dr_max_level=2)
    assert a._bus is not None and a._dr is not None
    now = datetime.now(UTC)
    a._bus.publish(DemandResponseEvent(event_id="past", start=now - timedelta(hours=2), end=now - timedelta(hours=1), level=2))
    a._bus.publish(DemandResponseEvent(event_id="now", start=now - timedelta(minutes=1), end=now + timedelta(hours=1), level=1))
    a._bus.publish(DemandResponseEvent(event_id="later", start=now + timedelta(hours=2), end=now + timedelta(hours=3), level=5))
    a._update_dr()
    assert a._dr.presentValue == 2  # level 1 in force
    assert a._dr_timer is not None  # re-evaluated when "now" ends
    a._bus.publish(DemandResponseEvent(event_id="now2", start=now - timedelta(minutes=1), end=now + timedelta(hours=1), level=9))
    a._update_dr()
    assert a._dr.presentValue == 3  # capped at dr_max_level
    a._dr_timer.cancel()


async def test_tariff_register_and_load_instances() -> None:
    a = adapter(loads={"boiler": {"instance": 1}})
    assert a._tariff is not None
    a._on_snapshot(snap("main", Reading(id="0-0:96.14.0", value="0002")))
    assert a._tariff.presentValue == 2
    a._on_snapshot(snap("main", Reading(id="0-0:96.14.0", value="0009")))  # beyond tariff_states: kept
    assert a._tariff.presentValue == 2
    assert a._load_object("heat_pump").objectIdentifier[1] == 2  # next free after the configured 1
    assert a._load_object("boiler").objectIdentifier[1] == 1
