"""Inputs and Frame: snapshots, prices and DR events as the namespace rules see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import DemandResponseEvent, PriceSignal, Reading, Snapshot
from gateway.rules.state import Frame, Inputs, Missing

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def snapshot(t: datetime, *readings: Reading, meter: str = "main") -> Snapshot:
    return Snapshot(meter=meter, protocol="dsmr", device_id=None, timestamp=t, received=t,
                    readings=readings)


def power(t: datetime, import_kw: float, export_kw: float = 0.0) -> Snapshot:
    return snapshot(t, Reading(id="1-0:1.7.0", value=import_kw, unit="kW"),
                    Reading(id="1-0:2.7.0", value=export_kw, unit="kW"))


def test_a_dsmr_snapshot_becomes_the_namespace() -> None:
    inp = Inputs()
    inp.observe(snapshot(
        T0,
        Reading(id="1-0:1.7.0", value=1.234, unit="kW"),
        Reading(id="1-0:2.7.0", value=0.0, unit="kW"),
        Reading(id="1-0:1.8.1", value=1000.5, unit="kWh"),
        Reading(id="1-0:1.8.2", value=2000.25, unit="kWh"),
        Reading(id="1-0:2.8.1", value=10.0, unit="kWh"),
        Reading(id="0-0:96.14.0", value="0002"),
        Reading(id="1-0:21.7.0", value=0.5, unit="kW"),
        Reading(id="1-0:32.7.0", value=229.8, unit="V"),
        Reading(id="0-0:17.0.0", value=4.0, unit="kW"),
    ))
    v = Frame(inp, T0, UTC, {}).vals
    assert v["import_power_kw"] == pytest.approx(1.234)
    assert v["export_power_kw"] == 0.0
    assert v["net_power_kw"] == pytest.approx(1.234)
    assert v["import_energy_kwh"] == pytest.approx(3000.75)
    assert v["export_energy_kwh"] == pytest.approx(10.0)
    assert v["tariff"] == 2.0
    assert v["meter.power_import_l1"] == pytest.approx(0.5)  # W in the table, kW here
    assert v["meter.voltage_l1"] == pytest.approx(229.8)
    assert v["meter_power_limit_kw"] == pytest.approx(4.0)
    assert inp.age(T0.timestamp() + 3) == 3.0


def test_net_power_only_meters_and_watts() -> None:
    inp = Inputs()
    inp.observe(snapshot(T0, Reading(id="1-0:16.7.0", value=-1500, unit="W")))
    v = Frame(inp, T0, UTC, {}).vals
    assert (v["import_power_kw"], v["export_power_kw"], v["net_power_kw"]) == (0.0, 1.5, -1.5)


def test_other_meters_are_ignored_when_one_is_chosen() -> None:
    inp = Inputs(meter="main")
    inp.observe(snapshot(T0, Reading(id="1-0:1.7.0", value=9.0, unit="kW"), meter="other"))
    assert inp.last_received is None
    assert "import_power_kw" not in Frame(inp, T0, UTC, {}).vals


def test_windows_are_time_weighted_and_bounded() -> None:
    inp = Inputs()
    inp.require_window("import_power_kw", 60.0)
    # 1 kW for 30 s, then 4 kW: the mean over the last minute at t=60 is 2.5 kW.
    inp.observe(power(T0, 1.0))
    inp.observe(power(T0 + timedelta(seconds=30), 4.0))
    now = (T0 + timedelta(seconds=60)).timestamp()
    assert inp.window("import_power_kw", "avg", 60.0, now) == pytest.approx(2.5)
    assert inp.window("import_power_kw", "avg", 10.0, now) == pytest.approx(4.0)
    assert inp.window("import_power_kw", "min", 60.0, now) == 1.0
    assert inp.window("import_power_kw", "max", 60.0, now) == 4.0
    # Less history than the window: the mean of what there is.
    assert inp.window("import_power_kw", "avg", 600.0, now) == pytest.approx(2.5)
    for i in range(5000):
        inp.observe(power(T0 + timedelta(seconds=100 + i), float(i % 7)))
    series = inp.series["import_power_kw"]
    assert len(series.t) - series.head <= 62  # one minute of 1 s samples (+ the holder)
    assert len(series.t) < 200  # the dropped head is compacted away
    with pytest.raises(Missing):
        Inputs().window("import_power_kw", "avg", 60.0, now)


def test_frame_caches_window_values() -> None:
    inp = Inputs()
    inp.require_window("import_power_kw", 60.0)
    inp.observe(power(T0, 2.0))
    f = Frame(inp, T0 + timedelta(seconds=1), UTC, {})
    assert f.window("import_power_kw", "avg", 60.0) == 2.0
    inp.observe(power(T0 + timedelta(seconds=1), 100.0))
    assert f.window("import_power_kw", "avg", 60.0) == 2.0  # one frame, one answer


def test_the_latest_price_covering_now_wins() -> None:
    inp = Inputs()
    inp.set_price(PriceSignal(start=T0, end=T0 + timedelta(hours=2), price_per_kwh=0.20, tier=1))
    inp.set_price(PriceSignal(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=3),
                              price_per_kwh=0.50, tier=3))

    def at(hours: float) -> dict[str, float | bool | str]:
        return Frame(inp, T0 + timedelta(hours=hours), UTC, {}).vals

    assert at(0.5)["price"] == 0.20 and at(0.5)["price_tier"] == 1.0
    assert at(1.5)["price"] == 0.50 and at(1.5)["price_tier"] == 3.0
    assert "price" not in at(3.5)
    inp.expire((T0 + timedelta(hours=2.5)).timestamp())
    assert len(inp._prices) == 1


def test_dr_events_randomised_start_and_end_are_reproducible() -> None:
    ev = DemandResponseEvent(event_id="e1", start=T0, end=T0 + timedelta(hours=1),
                             criticality=5, randomize_start_s=600, randomize_end_s=300)
    starts = set()
    for seed in range(20):
        a, b = Inputs(seed=seed), Inputs(seed=seed)
        a.set_dr_event(ev, T0)
        b.set_dr_event(ev, T0)
        (wa,), (wb,) = a._dr.values(), b._dr.values()
        assert (wa.start, wa.end) == (wb.start, wb.end)
        assert T0.timestamp() <= wa.start < T0.timestamp() + 600
        assert T0.timestamp() + 3600 <= wa.end < T0.timestamp() + 3900
        starts.add(wa.start)
    assert len(starts) == 20  # a neighbourhood spreads out


def test_dr_events_strongest_first_cancel_and_supersede() -> None:
    inp = Inputs()
    mild = DemandResponseEvent(event_id="mild", start=T0, end=T0 + timedelta(hours=2),
                               criticality=2, load_classes=("hvac",))
    strong = DemandResponseEvent(event_id="strong", start=T0, end=T0 + timedelta(hours=1),
                                 criticality=7)
    inp.set_dr_event(mild, T0)
    inp.set_dr_event(strong, T0)
    now = T0 + timedelta(minutes=10)
    f = Frame(inp, now, UTC, {})
    assert f.vals["dr.event"] == "strong" and f.dr_classes() == ()
    inp.set_dr_event(DemandResponseEvent(event_id="strong", start=now, end=now, cancelled=True),
                     now)
    f = Frame(inp, now + timedelta(seconds=1), UTC, {})
    assert f.vals["dr.event"] == "mild" and f.dr_classes() == ("hvac",)
    inp.set_dr_event(DemandResponseEvent(event_id="mild2", start=T0, end=T0 + timedelta(hours=2),
                                         criticality=3, supersedes=("mild",)), now)
    inp.expire((now + timedelta(seconds=1)).timestamp())  # the cancelled one is over
    assert set(inp._dr) == {"mild2"}
    later = DemandResponseEvent(event_id="later", start=T0 + timedelta(hours=5),
                                end=T0 + timedelta(hours=6))
    inp.set_dr_event(later, now)
    f = Frame(inp, now, UTC, {})
    assert f.vals["dr.upcoming"] is True
    assert f.vals["dr.starts_in"] == pytest.approx((T0 + timedelta(hours=5) - now).total_seconds())
    # Cancelling an event that has not started drops it.
    inp.set_dr_event(DemandResponseEvent(event_id="later", start=now, end=now, cancelled=True),
                     now)
    assert "later" not in inp._dr
    assert Frame(inp, now, UTC, {}).dr_classes() == ()
