"""Modbus: time from a ``Snapshot`` published on the bus to the value seen by a polling client.

Modbus is poll-only: a server never pushes, so a client sees a change at its
next poll.  **The protocol's own pacing is the client's poll interval** (PV
inverters, batteries and energy managers read their grid meter every 0.2-5 s;
SunSpec does not fix it) plus one request/response round trip.  To measure
what the gateway adds beyond that, a client polls back to back (no interval)
with pymodbus's synchronous ``ModbusTcpClient`` in its own thread, reading the
SunSpec ``W`` register (40088) and the flat map's ``power_w`` float (0-1)
in one request each turn, while the event loop publishes a snapshot with a
new power value every ``interval``.

Rows:

* ``baseline round trip``: one FC 3 request/response with nothing changing,
  measured in the same run: the floor any poll costs on this machine.
* ``snapshot -> sunspec`` / ``snapshot -> flat``: publish to the first
  response carrying the new value.  With back-to-back polling a change lands
  during a request in flight, so the value arrives within about two round
  trips; ``beyond pacing`` is the latency minus one round trip (p50 of the
  baseline), the gateway's share (goal <= 20 ms).

``python -m benchmarks.modbus [--quick]`` runs this scenario alone.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import free_port, median, percentile


def _snapshot(power_w: int) -> Any:
    from gateway.model import Reading, Snapshot

    now = datetime.now(UTC)
    return Snapshot(meter="main", protocol="bench", device_id=None, timestamp=now, received=now,
                    readings=(Reading(id="1-0:1.7.0", value=power_w / 1000, unit="kW"),
                              Reading(id="1-0:2.7.0", value=0.0, unit="kW"),
                              Reading(id="1-0:32.7.0", value=230.0, unit="V")))


def _poller(port: int, stop: threading.Event, seen: list[tuple[float, int, float]],
            rtts: list[float], ready: threading.Event) -> None:
    from pymodbus.client import ModbusTcpClient

    from adapters.modbus.registers import decode_float32

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    if not client.connect():
        ready.set()
        return
    try:
        ready.set()
        while not stop.is_set():
            t0 = time.perf_counter()
            ss = client.read_holding_registers(40088, count=1, device_id=1)
            t1 = time.perf_counter()
            fl = client.read_holding_registers(0, count=2, device_id=1)
            t2 = time.perf_counter()
            rtts.append(t1 - t0)
            if not ss.isError():
                seen.append((t1, ss.registers[0], float("nan")))
            if not fl.isError():
                seen.append((t2, -1, decode_float32(fl.registers)))
    finally:
        client.close()


async def _measure(n: int, interval_s: float) -> dict[str, list[float]]:
    from adapters.modbus.adapter import ModbusAdapter
    from adapters.modbus.config import ModbusConfig
    from gateway.bus import Bus

    port = free_port()
    adapter = ModbusAdapter(gateway_id="bench", meters=["main"],
                            config=ModbusConfig(listen=f"tcp://127.0.0.1:{port}"))
    bus = Bus()
    await adapter.start(bus)
    stop, ready = threading.Event(), threading.Event()
    seen: list[tuple[float, int, float]] = []
    rtts: list[float] = []
    thread = threading.Thread(target=_poller, args=(port, stop, seen, rtts, ready), daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 10)
    published: list[tuple[float, int]] = []
    try:
        await asyncio.sleep(0.5)  # warm up: connection, first reads
        for i in range(n):
            value = 1000 + i  # W, fits int16 at W_SF 0 and float32 exactly
            published.append((time.perf_counter(), value))
            bus.publish(_snapshot(value))
            await asyncio.sleep(interval_s)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
        await adapter.stop()
    sunspec: list[float] = []
    flat: list[float] = []
    for t_pub, value in published:
        s = next((t for t, w, _f in seen if t > t_pub and w == value), None)
        f = next((t for t, _w, fv in seen if t > t_pub and fv == value), None)
        if s is not None:
            sunspec.append(s - t_pub)
        if f is not None:
            flat.append(f - t_pub)
    return {"rtt": rtts, "sunspec": sunspec, "flat": flat, "published": [float(n)]}


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 40 if quick else 300
    res = asyncio.run(_measure(n, 0.02 if quick else 0.03))
    rtt_p50 = median(res["rtt"])
    rows: list[dict[str, Any]] = [{
        "scenario": "modbus", "case": "baseline round trip (FC 3, 1 register)",
        "n": len(res["rtt"]), "p50_ms": round(rtt_p50 * 1e3, 3),
        "p99_ms": round(percentile(res["rtt"], 99) * 1e3, 3), "beyond_pacing_p50_ms": "",
        "beyond_pacing_p99_ms": "",
        "pacing": "client poll interval (Modbus is poll-only) + 1 round trip",
    }]
    for key, case in (("sunspec", "snapshot -> sunspec W (40088)"),
                      ("flat", "snapshot -> flat power_w float32 (0)")):
        lat = res[key]
        rows.append({
            "scenario": "modbus", "case": case, "n": f"{len(lat)}/{n}",
            "p50_ms": round(median(lat) * 1e3, 3), "p99_ms": round(percentile(lat, 99) * 1e3, 3),
            "beyond_pacing_p50_ms": round((median(lat) - rtt_p50) * 1e3, 3),
            "beyond_pacing_p99_ms": round((percentile(lat, 99) - rtt_p50) * 1e3, 3),
            "pacing": "client poll interval (here: back to back)",
        })
    return rows


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print("  ".join(f"{k}={v}" for k, v in result.items()))
