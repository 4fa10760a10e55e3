"""BACnet: time from a ``Snapshot`` on the bus to the COV notification seen by a BACnet client.

BACnet pushes changes to subscribers (SubscribeCOV, clause 13.14): **the
protocol's own pacing is one datagram from the device to the subscriber**, and
only when the change reaches the object's COV increment.  The client is the
independent stack ``@bacnet-js/client`` (node, tests/node) subscribed without
confirmation to the power Analog Input of our device (bacpypes3, in this
process), both on loopback on different UDP ports.  The event loop publishes a
snapshot with a new power value (well beyond the 10 W increment) every
``interval``; node stamps each notification with ``process.hrtime`` (the same
CLOCK_MONOTONIC as the publish time taken here), so the pipe back to Python is
not counted.

Rows:

* ``baseline ReadProperty round trip``: node's request to our device and the
  answer, measured in the same run: what a minimal exchange of the two stacks costs.
* ``snapshot -> COV notification``: publish to the notification carrying the
  value; ``beyond pacing`` is that minus half the baseline round trip (one
  datagram and its decoding), the gateway's share (goal <= 20 ms).

``python -m benchmarks.bacnet [--quick]`` runs this scenario alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import ROOT, median, percentile

NODE_DIR = ROOT / "tests" / "node"
PEER_JS = ROOT / "tests" / "integration" / "bacnet" / "bacnet_peer.js"


def _free_udp(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _snapshot(power_w: int) -> Any:
    from gateway.model import Reading, Snapshot

    now = datetime.now(UTC)
    return Snapshot(meter="main", protocol="bench", device_id=None, timestamp=now, received=now,
                    readings=(Reading(id="1-0:1.7.0", value=power_w / 1000, unit="kW"),
                              Reading(id="1-0:2.7.0", value=0.0, unit="kW"),
                              Reading(id="1-0:32.7.0", value=230.0, unit="V")))


class _Peer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._n = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            (self.replies if "id" in msg else self.events).put_nowait(msg)

    async def request(self, op: str, **kw: Any) -> dict[str, Any]:
        self._n += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": self._n, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self.replies.get(), 10)


async def _measure(n: int, interval_s: float) -> dict[str, list[float]]:
    from adapters.bacnet.adapter import BacnetAdapter
    from adapters.bacnet.config import BacnetConfig
    from gateway.bus import Bus

    port = _free_udp("127.0.0.2")
    adapter = BacnetAdapter(gateway_id="bench", meters=["main"], config=BacnetConfig(
        device_instance=4711, address=f"127.0.0.2/8:{port}", quantities=("power_import",)))
    bus = Bus()
    await adapter.start(bus)
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    proc = await asyncio.create_subprocess_exec(
        "node", str(PEER_JS), "127.0.0.1", str(_free_udp("127.0.0.1")), "127.255.255.255",
        cwd=str(NODE_DIR), env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    peer = _Peer(proc)
    address = f"127.0.0.2:{port}"
    rtts: list[float] = []
    lat: list[float] = []
    try:
        while (await asyncio.wait_for(peer.events.get(), 20)).get("event") != "listening":
            pass
        deadline = time.monotonic() + 10
        while not adapter.bound and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        bus.publish(_snapshot(1000))
        await asyncio.sleep(0.1)
        for _ in range(20 if n < 100 else 100):
            r = await peer.request("read", address=address, type=0, instance=1, property=85)
            if r["ok"]:
                rtts.append(int(r["dt_ns"]) / 1e9)
        r = await peer.request("subscribe", address=address, type=0, instance=1, subscribeId=1,
                               confirmed=False, lifetime=3600)
        if not r["ok"]:
            raise RuntimeError(f"SubscribeCOV failed: {r}")
        await asyncio.wait_for(peer.events.get(), 10)  # the initial notification
        for i in range(n):
            value = 2000 + 100 * i  # W, ten increments apart
            t_pub = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            bus.publish(_snapshot(value))
            try:
                while True:
                    ev = await asyncio.wait_for(peer.events.get(), 5)
                    if ev.get("event") == "cov" and ev["values"][0]["value"][0] == value:
                        lat.append((int(ev["t_ns"]) - t_pub) / 1e9)
                        break
            except TimeoutError:
                pass
            await asyncio.sleep(interval_s)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        peer.task.cancel()
        await adapter.stop()
    return {"rtt": rtts, "cov": lat}


def run(quick: bool = False) -> list[dict[str, Any]]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@bacnet-js" / "client").is_dir():
        return [{"scenario": "bacnet", "case": "skipped: node or @bacnet-js/client missing"}]
    n = 40 if quick else 300
    res = asyncio.run(_measure(n, 0.02 if quick else 0.03))
    rtt_p50 = median(res["rtt"])
    lat = res["cov"]
    return [
        {"scenario": "bacnet", "case": "baseline ReadProperty round trip (node -> device)",
         "n": len(res["rtt"]), "p50_ms": round(rtt_p50 * 1e3, 3),
         "p99_ms": round(percentile(res["rtt"], 99) * 1e3, 3), "beyond_pacing_p50_ms": "",
         "beyond_pacing_p99_ms": "", "pacing": "COV is pushed: one datagram"},
        {"scenario": "bacnet", "case": "snapshot -> COV notification (AI power)",
         "n": f"{len(lat)}/{n}", "p50_ms": round(median(lat) * 1e3, 3),
         "p99_ms": round(percentile(lat, 99) * 1e3, 3),
         "beyond_pacing_p50_ms": round((median(lat) - rtt_p50 / 2) * 1e3, 3),
         "beyond_pacing_p99_ms": round((percentile(lat, 99) - rtt_p50 / 2) * 1e3, 3),
         "pacing": "half the baseline round trip"},
    ]


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print("  ".join(f"{k}={v}" for k, v in result.items()))
