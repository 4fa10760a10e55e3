"""Meter readers against virtual meters on real ptys: snapshots on the bus,
baud switching, reconnect after the port disappears, clear errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.bus import Bus, MeterStatus
from gateway.config import MeterConfig
from gateway.meters.dsmr import DsmrReader
from gateway.meters.iec62056_21 import Iec62056Reader
from gateway.model import Snapshot
from gateway.sim import iec62056_21 as iec
from gateway.sim.dsmr import DsmrSimulator
from gateway.sim.runner import PtyMeter, push_to_pty

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def task(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    t = asyncio.create_task(coro)
    try:
        yield t
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def next_snapshot(sub: Any, timeout: float = 10.0) -> Snapshot:
    async with asyncio.timeout(timeout):
        while True:
            item = await sub.get()
            if isinstance(item, Snapshot):
                return item


async def test_iec_reader_mode_c_switches_baud_and_publishes(tmp_path: Path) -> None:
    model = iec.LoadModel(clock=lambda: datetime(2026, 3, 1, 12, 0, 0))
    bauds: list[int] = []
    meter = iec.PtyMeter(lambda: iec.MeterSession(reaction_time_s=0.02, readings=model),
                         link=str(tmp_path / "optical"), on_baud=bauds.append)
    cfg = MeterConfig(id="opt", protocol="iec62056-21", port=str(tmp_path / "optical"),
                      poll_interval_s=0.5, reaction_time_s=0.02, timezone="Europe/Amsterdam")
    bus = Bus()
    sub = bus.subscribe(Snapshot)
    async with task(meter.serve()), task(Iec62056Reader(cfg).run(bus)):
        first = await next_snapshot(sub)
        second = await next_snapshot(sub)
    meter.close()
    assert first.meter == "opt" and first.protocol == "iec62056-21"
    assert first.device_id == "12345678"
    assert first.checksum_ok is True
    # the meter clock (local time, Europe/Amsterdam) became an aware timestamp
    assert first.timestamp == datetime(2026, 3, 1, 11, 0, 0, tzinfo=UTC)
    energy = first.reading("1.8.0")
    assert energy is not None and energy.unit == "kWh" and isinstance(energy.value, float)
    assert second.reading("1.8.0") is not None
    # the sign-on ran at 300 Bd and the readout at 9600 Bd, twice
    assert 300 in bauds and 9600 in bauds
    assert bauds.index(300) < bauds.index(9600)


async def test_iec_reader_reports_a_silent_meter(tmp_path: Path) -> None:
    silent = PtyMeter(link=str(tmp_path / "dead"))  # a pty nobody answers on
    cfg = MeterConfig(id="opt", protocol="iec62056-21", port=str(tmp_path / "dead"),
                      poll_interval_s=0.5, reaction_time_s=0.02)
    bus = Bus()
    sub = bus.subscribe(MeterStatus)
    reader = Iec62056Reader(cfg)
    async with task(reader.run(bus)):
        async with asyncio.timeout(30):
            while True:
                st = await sub.get()
                if "readout failed" in st.detail:
                    break
    silent.close()
    assert not st.online
    assert reader.counters.errors >= 1


async def test_dsmr_reader_reads_and_comes_back_after_unplug(tmp_path: Path) -> None:
    link = str(tmp_path / "p1")
    sim = DsmrSimulator("dsmr5")
    cfg = MeterConfig(id="main", protocol="dsmr", port=link)
    bus = Bus()
    sub = bus.subscribe(Snapshot, MeterStatus)
    meter = PtyMeter(link=link)
    reader = DsmrReader(cfg)
    async with task(reader.run(bus)):
        async with task(push_to_pty(meter, sim.telegram, 0.2)):
            snap = await next_snapshot(sub)
            assert snap.meter == "main" and snap.checksum_ok is True
            assert snap.reading("1-0:1.8.1") is not None
        meter.close()  # meter unplugged: the pty disappears
        async with asyncio.timeout(10):
            while True:
                st = await sub.get()
                if isinstance(st, MeterStatus) and not st.online:
                    break
        assert "port lost" in st.detail or "cannot open" in st.detail
        meter = PtyMeter(link=link)  # plugged in again
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with task(push_to_pty(meter, sim.telegram, 0.2)):
            await next_snapshot(sub, timeout=10)
        assert loop.time() - t0 < 5.0  # reading again within 5 s
        meter.close()
    assert reader.counters.reconnects >= 1


async def test_dsmr_reader_wrong_key_is_a_clear_error_naming_the_meter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    wrong = "F" * 32
    sim = DsmrSimulator("smarty", key=key, auth_key=key)
    link = str(tmp_path / "smarty")
    meter = PtyMeter(link=link)
    cfg = MeterConfig(id="lux", protocol="dsmr", port=link, key=wrong, auth_key=key.hex())
    bus = Bus()
    statuses = bus.subscribe(MeterStatus)
    reader = DsmrReader(cfg)
    caplog.set_level("INFO")
    async with task(reader.run(bus)), task(push_to_pty(meter, sim.telegram, 0.1)):
        async with asyncio.timeout(10):
            while reader.counters.decryption_errors < 3:
                await asyncio.sleep(0.05)
    meter.close()
    status = statuses.get_nowait()
    while (nxt := statuses.get_nowait()) is not None:
        status = nxt
    assert status is not None and "wrong decryption" in status.detail  # health names the cause
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1  # logged once per burst, not once per telegram
    assert "meter lux" in errors[0].getMessage() and "wrong" in errors[0].getMessage()
    assert wrong not in caplog.text and key.hex() not in caplog.text.lower()
    assert reader.counters.frames == 0
