"""Our Modbus server read by independent clients: Debian ``mbpoll`` (TCP and RTU over a
socat pty pair) and a pymodbus client; writes refused with exception 02."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from adapters.modbus.registers import FLAT_LOADS_ADDR, FLAT_POINTS
from gateway.bus import MeterStatus
from gateway.model import DemandResponseEvent, LoadState, PriceSignal

pytestmark = pytest.mark.timeout(120)


def tcp(port: int, *args: str) -> list[str]:
    return ["-m", "tcp", "-p", str(port), *args, "-1", "127.0.0.1"]


def text_of(regs: list[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0").decode("ascii")


async def test_mbpoll_reads_sunspec_header_and_common_model(mbt: Any, modbus_adapter: Any) -> None:
    _adapter, bus, port = await modbus_adapter()
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    # 1-based reference 40001 is protocol address 40000 (mbpoll's default addressing).
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-r", "40001", "-c", "4"))
    assert out.returncode == 0, out.stdout + out.stderr
    v = mbt.values(out.stdout)
    assert [int(v[i]) for i in range(40001, 40005)] == [0x5375, 0x6E53, 1, 66]
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40004", "-c", "66"))
    v = {k: int(x) & 0xFFFF for k, x in mbt.values(out.stdout).items()}
    assert text_of([v[40004 + i] for i in range(16)]) == "han-gateway"
    assert text_of([v[40052 + i] for i in range(16)]) == "gw-test"
    assert v[40068] == 1  # DA: the unit id


async def test_mbpoll_reads_meter_model_203_with_scale_factors(
        mbt: Any, modbus_adapter: Any) -> None:
    _adapter, bus, port = await modbus_adapter()
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40070", "-c", "40"))
    assert out.returncode == 0, out.stdout + out.stderr
    v = {k: int(x) for k, x in mbt.values(out.stdout).items()}
    assert v[40070] == 203 and v[40071] == 105

    def point(offset: int, sf_offset: int) -> float:
        return v[40072 + offset] * 10.0 ** v[40072 + sf_offset]

    assert point(0, 4) == pytest.approx(5.5)  # A = sum of phase currents
    assert [point(i, 4) for i in (1, 2, 3)] == pytest.approx([2.25, 1.5, 1.75])
    assert point(5, 13) == pytest.approx((231.4 + 229.9 + 232.1) / 3, abs=0.05)
    assert [point(i, 13) for i in (6, 7, 8)] == pytest.approx([231.4, 229.9, 232.1])
    assert v[40072 + 9] == -32768  # PPV: not implemented (no line-to-line voltages)
    assert v[40072 + 14] == -32768  # Hz: not implemented
    assert point(16, 20) == pytest.approx(1234)  # W, positive = import
    assert [point(i, 20) for i in (17, 18, 19)] == pytest.approx([500, 334, 400])
    # acc32 energies as 32-bit integers (high word first), with TotWh_SF
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4:int", "-B", "-0", "-r", "40108",
                                  "-c", "1"))
    exp_wh = int(mbt.values(out.stdout)[40108])
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4:int", "-B", "-0", "-r", "40116",
                                  "-c", "1"))
    imp_wh = int(mbt.values(out.stdout)[40116])
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40124", "-c", "1"))
    wh_sf = int(mbt.values(out.stdout)[40124])
    assert imp_wh * 10 ** wh_sf == 3234568  # 1234.567 + 2000.001 kWh, in Wh
    assert exp_wh * 10 ** wh_sf == 30750
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40177", "-c", "2"))
    end = mbt.values(out.stdout)
    assert (int(end[40177]) & 0xFFFF, int(end[40178])) == (0xFFFF, 0)


async def test_mbpoll_reads_flat_float32_map(mbt: Any, modbus_adapter: Any) -> None:
    _adapter, bus, port = await modbus_adapter(flat_base=1000, loads=["boiler"])
    now = datetime.now(UTC)
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    bus.publish(MeterStatus(meter="main", online=True))
    bus.publish(PriceSignal(start=now - timedelta(hours=1), end=now + timedelta(hours=1),
                            price_per_kwh=0.3125, tier=3))
    bus.publish(DemandResponseEvent(event_id="e1", start=now - timedelta(minutes=1),
                                    end=now + timedelta(hours=1), level=2,
                                    target_power_w=2500.0))
    bus.publish(LoadState(load="boiler", on=False, since=now, limit_w=None))
    bus.publish(LoadState(load="ev", on=True, since=now, limit_w=3680.0, power_w=3500.0))
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4:float", "-B", "-0", "-r", "1000",
                                  "-c", "28"))
    assert out.returncode == 0, out.stdout + out.stderr
    v = {k - 1000: float(x) for k, x in mbt.values(out.stdout).items()}
    f = {name: v[off] for name, off in FLAT_POINTS.items()}
    assert f["power_w"] == pytest.approx(1234)
    assert f["power_l2_w"] == pytest.approx(334)
    assert f["voltage_l3_v"] == pytest.approx(232.1, abs=1e-3)
    assert f["current_l1_a"] == pytest.approx(2.25)
    assert f["energy_import_kwh"] == pytest.approx(3234.568, abs=0.01)  # mbpoll prints 6 digits
    assert f["energy_export_t2_kwh"] == pytest.approx(20.25)
    assert f["tariff"] == 2
    assert math.isnan(f["frequency_hz"])
    assert f["meter_online"] == 1
    assert f["price_per_kwh"] == pytest.approx(0.3125)
    assert f["price_tier"] == 3
    assert f["dr_level"] == 2
    assert f["dr_target_power_w"] == 2500
    assert f["loads_known"] == 2
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4:float", "-B", "-0",
                                  "-r", str(1000 + FLAT_LOADS_ADDR), "-c", "8"))
    loads = [float(x) for _k, x in sorted(mbt.values(out.stdout).items())]
    assert loads[0] == 0 and math.isnan(loads[1])  # boiler (configured slot 0): off, no limit
    assert loads[4:7] == [1, 3680, 3500]  # ev (slot 1): on, limit, measured power


async def test_new_snapshot_is_seen_by_the_next_poll(mbt: Any, modbus_adapter: Any) -> None:
    _adapter, bus, port = await modbus_adapter(map="sunspec")
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40088", "-c", "1"))
    assert int(mbt.values(out.stdout)[40088]) == -32768  # no snapshot yet: not implemented
    for kw in (0.75, 2.5):
        bus.publish(mbt.snapshot(("1-0:1.7.0", kw, "kW"), ("1-0:2.7.0", 0.0, "kW")))
        out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40070", "-c", "23"))
        v = mbt.values(out.stdout)
        assert int(v[40070]) == 201  # no per-phase values of L2/L3: single phase
        assert int(v[40088]) * 10 ** int(v[40092]) == pytest.approx(kw * 1000)
    # a snapshot of another meter does not change the registers
    bus.publish(mbt.snapshot(("1-0:1.7.0", 9.0, "kW"), meter="other"))
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40088", "-c", "1"))
    assert int(mbt.values(out.stdout)[40088]) == 2500


async def test_write_is_refused_with_illegal_data_address(mbt: Any, modbus_adapter: Any) -> None:
    adapter, bus, port = await modbus_adapter()
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    out = await mbt.run_async("-m", "tcp", "-p", str(port), "-a", "1", "-t", "4", "-0",
                             "-r", "40070", "127.0.0.1", "201")
    assert out.returncode != 0
    assert "Illegal data address" in out.stdout + out.stderr
    out = await mbt.run_async("-m", "tcp", "-p", str(port), "-a", "1", "-t", "4:float", "-B",
                             "-0", "-r", "0", "127.0.0.1", "1.5")
    assert "Illegal data address" in out.stdout + out.stderr
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert await client.connect()
    try:
        rsp = await client.write_register(40068, 7, device_id=1)  # DA, writable in SunSpec
        assert rsp.isError() and rsp.exception_code == 2
        rsp = await client.write_registers(40072, [1, 2], device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
        rsp = await client.write_coil(0, True, device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
        rsp = await client.mask_write_register(address=40070, and_mask=0, or_mask=1, device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
        rsp = await client.readwrite_registers(read_address=40000, read_count=2,
                                               write_address=40070, values=[1], device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
        rsp = await client.read_coils(0, count=1, device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
        # the registers are unchanged and FC 4 reads them too
        rsp = await client.read_input_registers(40068, count=1, device_id=1)
        assert not rsp.isError() and rsp.registers == [1]
        rsp = await client.read_holding_registers(40072 + 16, count=1, device_id=1)
        assert rsp.registers == [1234]
        # another unit id on TCP: exception 0x0B; 255 is answered
        rsp = await client.read_holding_registers(40000, count=2, device_id=9)
        assert rsp.isError() and rsp.exception_code == 0x0B
        rsp = await client.read_holding_registers(40000, count=2, device_id=255)
        assert rsp.registers == [0x5375, 0x6E53]
        # outside the maps
        rsp = await client.read_holding_registers(30000, count=2, device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
    finally:
        client.close()
    assert adapter.health().counters["refused"] >= 5


async def test_rtu_over_a_pty_pair(mbt: Any, modbus_adapter: Any,
                                   pty_pair: tuple[str, str]) -> None:
    ours, theirs = pty_pair
    _adapter, bus, _port = await modbus_adapter(
        listen=f"rtu://{ours}?baudrate=9600&parity=N", unit_id=7)
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    rtu = ("-m", "rtu", "-b", "9600", "-P", "none", "-1")
    out = await mbt.run_async(*rtu, "-a", "7", "-t", "4", "-0", "-r", "40000", "-c", "4", theirs)
    assert out.returncode == 0, out.stdout + out.stderr
    v = mbt.values(out.stdout)
    assert [int(v[i]) for i in range(40000, 40004)] == [0x5375, 0x6E53, 1, 66]
    out = await mbt.run_async(*rtu, "-a", "7", "-t", "4:float", "-B", "-0", "-r", "0", "-c", "1",
                             theirs)
    assert float(mbt.values(out.stdout)[0]) == pytest.approx(1234)
    out = await mbt.run_async(*rtu, "-a", "7", "-t", "4", "-0", "-r", "40000", theirs, "1")
    assert "Illegal data address" in out.stdout + out.stderr
    # another slave's address on a shared line: no answer at all
    out = await mbt.run_async(*rtu, "-a", "8", "-t", "4", "-0", "-r", "40000", "-c", "1", theirs)
    assert out.returncode != 0
    assert "Connection timed out" in out.stdout + out.stderr or "timed out" in (
        out.stdout + out.stderr).lower()


async def test_busy_port_is_retried_until_free(mbt: Any, modbus_adapter: Any) -> None:
    import asyncio
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        adapter, bus, _ = await modbus_adapter(listen=f"tcp://127.0.0.1:{port}",
                                               reconnect_min_s=0.05, reconnect_max_s=0.2)
        health = adapter.health()
        assert not health.ok and "cannot listen" in health.detail
    finally:
        blocker.close()
    async with asyncio.timeout(20):
        while not adapter.health().ok:
            await asyncio.sleep(0.05)
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    out = await mbt.run_async(*tcp(port, "-a", "1", "-t", "4", "-0", "-r", "40088", "-c", "1"))
    assert int(mbt.values(out.stdout)[40088]) == 1234


async def test_sunspec_model_chain_walk(mbt: Any, modbus_adapter: Any) -> None:
    """What a SunSpec scanner does: marker, then ID/L pairs until the end model."""
    _adapter, bus, port = await modbus_adapter(map="sunspec")
    bus.publish(mbt.snapshot(*mbt.THREE_PHASE))
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert await client.connect()
    try:
        rsp = await client.read_holding_registers(40000, count=2, device_id=1)
        assert rsp.registers == [0x5375, 0x6E53]
        models: list[tuple[int, int]] = []
        addr = 40002
        while True:
            model_id, length = (await client.read_holding_registers(addr, count=2,
                                                                    device_id=1)).registers
            models.append((model_id, length))
            if model_id == 0xFFFF:
                break
            body = await client.read_holding_registers(addr + 2, count=length, device_id=1)
            assert not body.isError() and len(body.registers) == length
            addr += 2 + length
        assert models == [(1, 66), (203, 105), (0xFFFF, 0)]
        # the whole block in one request, as many scanners read it
        rsp = await client.read_holding_registers(40000, count=125, device_id=1)
        assert len(rsp.registers) == 125 and rsp.registers[70] == 203
        # the flat map is not served with map = "sunspec"
        rsp = await client.read_holding_registers(0, count=2, device_id=1)
        assert rsp.isError() and rsp.exception_code == 2
    finally:
        client.close()
