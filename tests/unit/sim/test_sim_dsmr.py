"""The virtual DSMR meter: what it sends decodes, adds up and follows the clock."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import DecryptionError, LocalProtocolError
from gateway.model import MeterFrame
from gateway.protocols import dlms_gcm
from gateway.protocols._events import Discarded
from gateway.protocols.dsmr import DsmrDecoder
from gateway.sim.dsmr import DsmrSimulator, Variant

KEY = bytes.fromhex("D491470F47126332B07D1923B3504188")
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
VARIANTS: list[Variant] = ["dsmr5", "dsmr4", "belgian", "smarty"]
REGISTERS = {
    "dsmr5": ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"),
    "dsmr4": ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"),
    "belgian": ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"),
    "smarty": ("1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0"),
}
GAS = {"dsmr5": "0-1:24.2.1", "dsmr4": "0-1:24.2.1", "belgian": "0-1:24.2.3"}


def simulator(variant: Variant, seed: int = 0) -> DsmrSimulator:
    return DsmrSimulator(variant, key=KEY if variant == "smarty" else None, seed=seed)


def schedule(start: datetime, step_s: float, count: int) -> list[datetime]:
    return [start + timedelta(seconds=step_s * i) for i in range(count)]


def decode(variant: Variant, times: list[datetime], seed: int = 0) -> list[MeterFrame]:
    sim = simulator(variant, seed)
    decoder = DsmrDecoder(key=KEY)
    frames = []
    for now in times:
        events = decoder.feed(sim.telegram(now))
        assert len(events) == 1 and isinstance(events[0], MeterFrame), events
        frames.append(events[0])
    return frames


def values(frame: MeterFrame) -> dict[str, Any]:
    return {r.id: r.value for r in frame.readings}


# Around the end of daylight saving time (27 Oct 2024, 01:00 UTC), across
# midnight, then a gap of a day and a clock that jumps back.
TIMES = (
    schedule(datetime(2024, 10, 26, 23, 58, tzinfo=UTC), 1.0, 240)
    + schedule(datetime(2024, 10, 27, 0, 59, 30, tzinfo=UTC), 7.0, 20)
    + [datetime(2024, 10, 28, 12, 0, 0, tzinfo=UTC)]
    + [datetime(2024, 10, 28, 11, 0, 0, tzinfo=UTC)]
    + schedule(datetime(2024, 10, 28, 12, 0, 1, tzinfo=UTC), 10.0, 30)
)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_telegram_decodes_with_a_good_checksum(variant: Variant) -> None:
    frames = decode(variant, TIMES)
    assert all(f.checksum_ok is True for f in frames)
    assert all(f.meter_id == "E0044007382246019" for f in frames)


@pytest.mark.parametrize("variant", VARIANTS)
def test_timestamps_follow_now(variant: Variant) -> None:
    frames = decode(variant, TIMES)
    for frame, now in zip(frames, TIMES, strict=True):
        assert frame.timestamp == now.replace(microsecond=0)
        # The W/S flag gives the offset Amsterdam had at that moment.
        assert frame.timestamp is not None
        assert frame.timestamp.utcoffset() == now.astimezone(AMSTERDAM).utcoffset()


@pytest.mark.parametrize("variant", VARIANTS)
def test_energy_registers_never_decrease(variant: Variant) -> None:
    frames = decode(variant, TIMES)
    for register in REGISTERS[variant]:
        series = [values(f)[register] for f in frames]
        assert all(isinstance(v, float) for v in series)
        assert series == sorted(series), register
    # A day of use shows up in the import registers.
    first, last = values(frames[0]), values(frames[-1])
    import_registers = REGISTERS[variant][:1] if variant == "smarty" else REGISTERS[variant][:2]
    imported = sum(last[r] - first[r] for r in import_registers)
    assert 3.0 < imported < 40.0


@pytest.mark.parametrize("variant", ["dsmr5", "dsmr4", "belgian"])
def test_gas_channel(variant: Variant) -> None:
    frames = decode(variant, TIMES)
    readings = [next(r for r in f.readings if r.id == GAS[variant]) for f in frames]
    period = 3600 if variant == "dsmr4" else 300
    for reading, now in zip(readings, TIMES, strict=True):
        assert reading.unit == "m3" and reading.timestamp is not None
        assert int(reading.timestamp.timestamp()) % period == 0
        assert timedelta(0) <= now - reading.timestamp < timedelta(seconds=period)
    series = [float(r.value) for r in readings]
    assert series == sorted(series)
    assert series[-1] > series[0]


def test_smarty_frames_are_encrypted_with_an_increasing_counter() -> None:
    sim = simulator("smarty")
    wire = [sim.telegram(now) for now in TIMES[:5]]
    counters = [dlms_gcm.parse_frame(w).frame_counter for w in wire]
    assert counters == sorted(set(counters))
    assert all(w[0] == dlms_gcm.GENERAL_GLO_CIPHERING for w in wire)
    (refused,) = DsmrDecoder(key=bytes(16)).feed(wire[0])
    assert isinstance(refused, Discarded) and isinstance(refused.error, DecryptionError)
    assert refused.error.reason == "wrong_key"
    with pytest.raises(LocalProtocolError):
        DsmrSimulator("smarty")


def test_interval() -> None:
    assert [simulator(v).interval_s for v in VARIANTS] == [1.0, 10.0, 1.0, 1.0]


def test_deterministic_for_a_seed() -> None:
    times = TIMES[:30]
    sim_a, sim_b = simulator("dsmr5", 7), simulator("dsmr5", 7)
    assert [sim_a.telegram(t) for t in times] == [sim_b.telegram(t) for t in times]
    other = simulator("dsmr5", 8)
    assert [other.telegram(t) for t in times] != [simulator("dsmr5", 7).telegram(t) for t in times]


def power_kw(frame: MeterFrame) -> float:
    v = values(frame)
    return float(v["1-0:1.7.0"] - v["1-0:2.7.0"])


def test_daily_load_curve() -> None:
    # A winter weekday minute by minute: low base load at night, peaks in
    # the morning and the evening, per-phase values that add up.
    start = datetime(2024, 1, 16, 23, 0, tzinfo=UTC)  # 00:00 local
    frames = decode("dsmr4", schedule(start, 60.0, 24 * 60))
    by_hour: dict[int, list[float]] = {}
    for frame in frames:
        assert frame.timestamp is not None
        by_hour.setdefault(frame.timestamp.hour, []).append(power_kw(frame))
    night = statistics.median(by_hour[3] + by_hour[4])
    assert 0.12 < night < 0.35
    assert statistics.mean(by_hour[7] + by_hour[8]) > night + 0.3
    assert statistics.mean(by_hour[18] + by_hour[19]) > night + 0.8
    for frame in frames[::37]:
        v = values(frame)
        phases = sum(v[f"1-0:{c}.7.0"] - v[f"1-0:{c + 1}.7.0"] for c in (21, 41, 61))
        assert phases == pytest.approx(power_kw(frame), abs=0.003)
        for c in (32, 52, 72):
            assert 220.0 < v[f"1-0:{c}.7.0"] < 245.0


def test_pv_export_at_midday_in_summer() -> None:
    start = datetime(2024, 6, 18, 9, 0, tzinfo=UTC)  # 11:00 local
    frames = decode("dsmr5", schedule(start, 30.0, 240))
    exporting = [f for f in frames if power_kw(f) < 0]
    assert len(exporting) > len(frames) / 2
    first, last = values(frames[0]), values(frames[-1])
    exported = sum(last[r] - first[r] for r in ("1-0:2.8.1", "1-0:2.8.2"))
    assert exported > 1.0
    # No PV on the DSMR 4 household: nothing is ever exported.
    dsmr4 = decode("dsmr4", schedule(start, 30.0, 60))
    assert all(values(f)["1-0:2.7.0"] == 0.0 for f in dsmr4)


def test_tariff_follows_the_time_of_day() -> None:
    weekday_noon = datetime(2024, 1, 16, 11, 0, tzinfo=UTC)
    weekday_night = datetime(2024, 1, 16, 1, 0, tzinfo=UTC)
    cases: list[tuple[Variant, int, int]] = [("dsmr5", 2, 1), ("belgian", 1, 2)]
    for variant, day, night in cases:
        frames = decode(variant, [weekday_night, weekday_noon])
        assert [values(f)["0-0:96.14.0"] for f in frames] == [night, day]


def test_naive_now_is_utc() -> None:
    frame = DsmrDecoder().feed(simulator("dsmr5").telegram(datetime(2024, 1, 16, 11, 0)))[0]
    assert isinstance(frame, MeterFrame)
    assert frame.timestamp == datetime(2024, 1, 16, 11, 0, tzinfo=UTC)
