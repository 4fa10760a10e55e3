"""Store.register_deltas: how much an energy register grew per interval, from the
quarter-hour aggregates (what the history and "today" are made of)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.model import Reading, Snapshot
from gateway.store import Store
from gateway.web.data import energy_ids, interval_energy

T0 = datetime(2026, 1, 10, 0, 0, tzinfo=UTC)


def snap(t: datetime, t1: float, t2: float | None = None) -> Snapshot:
    readings = [Reading(id="1-0:1.8.1", value=t1, unit="kWh")]
    if t2 is not None:
        readings.append(Reading(id="1-0:1.8.2", value=t2, unit="kWh"))
    return Snapshot(meter="m", protocol="dsmr", device_id=None, timestamp=t, received=t, readings=tuple(readings))


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = await Store.open(tmp_path / "s.sqlite3", raw_retention_s=1e9)
    yield s  # type: ignore[misc]
    await s.close()


async def test_deltas_per_hour_from_minute_readings(store: Store) -> None:
    # one reading a minute for three hours, growing 1 kWh per hour
    await store.append_many([snap(T0 + timedelta(minutes=i), 100 + i / 60) for i in range(181)], destinations=())
    hours = [T0 + timedelta(hours=h) for h in range(6)]
    got = await store.register_deltas("m", "1-0:1.8.1", hours)
    assert got[:4] == pytest.approx([1.0, 1.0, 1.0, 0.0])  # the 4th starts at the newest value
    assert got[4] is None, "the interval after the newest value has no data"


async def test_readings_exactly_on_the_boundary_count_for_it(store: Store) -> None:
    await store.append_many([snap(T0 + timedelta(hours=h), 10.0 * h) for h in range(5)], destinations=())
    got = await store.register_deltas("m", "1-0:1.8.1", [T0 + timedelta(hours=h) for h in range(5)])
    assert got == pytest.approx([10.0, 10.0, 10.0, 10.0])


async def test_first_interval_starts_at_its_own_first_value(store: Store) -> None:
    await store.append_many([snap(T0 + timedelta(minutes=30 + i), 50 + i / 60) for i in range(91)],
                            destinations=())
    got = await store.register_deltas("m", "1-0:1.8.1", [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)])
    assert got == pytest.approx([0.5, 1.0])


async def test_gaps_and_unknown_series(store: Store) -> None:
    await store.append_many([snap(T0 + timedelta(days=2), 1.0)], destinations=())
    assert await store.register_deltas("m", "1-0:1.8.1", [T0, T0 + timedelta(days=1)]) == [None]
    assert await store.register_deltas("m", "nope", [T0, T0 + timedelta(hours=1)]) == [None]
    assert await store.register_deltas("m", "1-0:1.8.1", [T0]) == []


async def test_tariff_registers_are_summed(store: Store) -> None:
    await store.append_many([snap(T0 + timedelta(minutes=15 * i), 10 + i * 0.25, 20 + i * 0.5) for i in range(9)],
                            destinations=())
    ids = await energy_ids(store, "m")
    assert ids["import"] == [("1-0:1.8.1", 1.0), ("1-0:1.8.2", 1.0)] and ids["export"] == []
    got = await interval_energy(store, "m", ids["import"], [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)])
    assert got == pytest.approx([3.0, 3.0])
