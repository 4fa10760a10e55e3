"""KNX: time from a ``Snapshot`` published on the bus to the telegram seen by knxd's own tool.

Set-up (as in the tests): knxd with a dummy bus, KNXnet/IP tunnelling on UDP,
inside a private network namespace that a thread of this process enters
(knxd must never run its KNXnet/IP server in the machine's namespace: it joins
224.0.23.12 on the default-route interface).  ``knxtool groupsocketlisten``
prints every group telegram; a reader thread timestamps its lines.

**The protocol's pacing**: xknx sends one telegram at a time and, over a
tunnel, waits for the server's TUNNELLING_ACK before the next; on top of that
its ``rate_limit`` (``[adapter.knx] rate_limit_per_s``, default 20/s, i.e. at
least 50 ms between two telegrams; TP1 carries about 50 telegrams/s) spaces
telegrams out.  Snapshots are published further apart than that
(``interval``), so no telegram waits for the limiter; the latency measured
is the path through the gateway plus one tunnel request.

Rows:

* ``baseline``: a plain xknx tunnel (no adapter) writing DPT 14 to a group
  address, put on xknx's telegram queue to the line printed by
  groupsocketlisten — the floor of xknx + knxd + knxtool on this machine,
  measured in the same run, same rate limit.
* ``adapter``: ``bus.publish(snapshot)`` to the line with the new value;
  ``beyond pacing`` is its p50 minus the baseline's p50 (goal <= 20 ms).

``python -m benchmarks.knx [--quick]`` runs this scenario alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import median, percentile

T = TypeVar("T")
RATE_LIMIT_PER_S = 20


class _Netns:
    """A thread in a fresh network namespace running an asyncio loop (see tests/integration/knx)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        ready = threading.Event()

        def main() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET, this thread only
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
                for cmd in ("ip link set lo up", "ip link set lo multicast on",
                            "ip route add 224.0.0.0/4 dev lo src 127.0.0.1"):
                    subprocess.run(cmd.split(), check=True, capture_output=True)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                self.error = exc
                ready.set()
                return
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        if self.error is not None:
            raise self.error

    def run(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _Listener:
    """knxtool groupsocketlisten; ``wait(group, data)`` -> monotonic time the line was read."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: dict[tuple[str, bytes], float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at = time.monotonic()
            parts = line.strip().split(" ", 5)  # Write from 0.0.2 to 1/1/1: 44 9A 50 00
            if len(parts) >= 5 and parts[0] == "Write":
                key = (parts[4].rstrip(":"), bytes.fromhex(parts[5] if len(parts) > 5 else ""))
                with self.cond:
                    self.seen.setdefault(key, at)
                    self.cond.notify_all()

    def wait(self, group: str, data: bytes, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (group, data) not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{group} {data.hex()} not seen within {timeout} s")
                self.cond.wait(left)
            return self.seen[(group, data)]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _snapshot(power_w: float) -> Any:
    from gateway.model import Reading, Snapshot

    now = datetime.now(UTC)
    return Snapshot(meter="main", protocol="bench", device_id=None, timestamp=now, received=now,
                    readings=(Reading(id="1-0:1.7.0", value=power_w / 1000, unit="kW"),))


async def _measure(listen: _Listener, n: int, interval: float) -> tuple[list[float], list[float]]:
    from xknx import XKNX
    from xknx.dpt.dpt_14 import DPTPower
    from xknx.io import ConnectionConfig, ConnectionType
    from xknx.telegram import GroupAddress, Telegram
    from xknx.telegram.apci import GroupValueWrite

    from adapters.knx import ConnectionState, KnxAdapter, KnxConfig
    from gateway.bus import Bus

    baseline: list[float] = []
    xknx = XKNX(rate_limit=RATE_LIMIT_PER_S, connection_config=ConnectionConfig(
        connection_type=ConnectionType.TUNNELING, gateway_ip="127.0.0.1", local_ip="127.0.0.1"))
    await xknx.start()
    try:
        for i in range(n):
            value = 5000.0 + i
            t0 = time.monotonic()
            xknx.telegrams.put_nowait(Telegram(destination_address=GroupAddress("1/1/9"),
                                               payload=GroupValueWrite(DPTPower.to_knx(value))))
            t1 = await asyncio.to_thread(listen.wait, "1/1/9", struct.pack(">f", value))
            baseline.append((t1 - t0) * 1000)
            await asyncio.sleep(interval)
    finally:
        await xknx.stop()

    adapter = KnxAdapter(gateway_id="bench", config=KnxConfig.model_validate({
        "gateway_host": "127.0.0.1", "local_ip": "127.0.0.1", "rate_limit_per_s": RATE_LIMIT_PER_S,
        "exposure": [{"value": "power_import", "group_address": "1/1/1", "dpt": "14.056"}]}))
    bus = Bus()
    await adapter.start(bus)
    ours: list[float] = []
    try:
        deadline = time.monotonic() + 10
        while adapter.state is not ConnectionState.CONNECTED:
            if time.monotonic() > deadline:
                raise RuntimeError(f"adapter did not connect: {adapter.health().detail}")
            await asyncio.sleep(0.01)
        for i in range(n):
            value = 1000.0 + i
            t0 = time.monotonic()
            bus.publish(_snapshot(value))
            t1 = await asyncio.to_thread(listen.wait, "1/1/1", struct.pack(">f", value))
            ours.append((t1 - t0) * 1000)
            await asyncio.sleep(interval)
    finally:
        await adapter.stop()
    return baseline, ours


def run(quick: bool = False) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"scenario": "knx"}
    for tool in ("knxd", "knxtool", "ip"):
        if shutil.which(tool) is None:
            return [{**base, "skipped": f"{tool} not installed"}]
    if os.geteuid() != 0:
        return [{**base, "skipped": "needs root for a private network namespace"}]
    n = 40 if quick else 300
    interval = 2 / RATE_LIMIT_PER_S  # twice the limiter's spacing: no telegram waits for it
    ns = _Netns()
    with tempfile.TemporaryDirectory() as d:
        sock = Path(d) / "knxd.sock"

        async def start() -> tuple[subprocess.Popen[bytes], _Listener]:
            knxd = subprocess.Popen(["knxd", "-e", "0.0.1", "-E", "0.0.2:8", "-u", str(sock),
                                     "-D", "-T", "-S", "-b", "dummy:"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not sock.exists():
                if time.monotonic() > deadline or knxd.poll() is not None:
                    raise RuntimeError("knxd did not start")
                await asyncio.sleep(0.01)
            listen = _Listener(subprocess.Popen(
                ["knxtool", "groupsocketlisten", f"local:{sock}"], stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1))
            return knxd, listen

        knxd, listen = ns.run(start)
        try:
            baseline, ours = ns.run(lambda: _measure(listen, n, interval))
        finally:
            listen.close()
            knxd.terminate()
            knxd.wait(5)
            ns.close()
    common = {**base, "transport": "tunnelling UDP", "n": n,
              "rate_limit_per_s": RATE_LIMIT_PER_S, "interval_ms": round(interval * 1000)}
    return [
        {**common, "kind": "baseline: xknx queue -> knxtool",
         "p50_ms": round(median(baseline), 2), "p99_ms": round(percentile(baseline, 99), 2)},
        {**common, "kind": "adapter: snapshot -> knxtool",
         "p50_ms": round(median(ours), 2), "p99_ms": round(percentile(ours, 99), 2),
         "beyond_pacing_p50_ms": round(median(ours) - median(baseline), 2),
         "beyond_pacing_p99_ms": round(percentile(ours, 99) - median(baseline), 2)},
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import table

    print(table(run(quick="--quick" in sys.argv)))
