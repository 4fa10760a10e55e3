"""BACnet peers on loopback (../shared/PEERS.md §3).

- ``bacnet_peer()``: the independent stack ``@bacnet-js/client`` (npm, tests/node) in a
  node process, driven by JSON lines (``bacnet_peer.js``); bound to 127.0.0.1 on its own
  UDP port, broadcasting to 127.255.255.255.
- ``start_target(port)``: a second bacpypes3 application (``bacnet_target.py``) in its own
  process on 127.0.0.3, the actuator's target; ``bacnet_js_target.js`` is a tiny target
  device on @bacnet-js/client (used directly by test_bacnet_actuator).
- ``bacnet_device_factory``: our adapter as a device on 127.0.0.2/8 on another free UDP port
  (bacpypes3 short-circuits unicasts to 127.x on its own port, so every peer uses a
  different port; @bacnet-js/client ignores requests from "127.0.0.1" on 47808, so
  nothing here uses 47808).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.bacnet import BacnetAdapter, BacnetConfig
from gateway.bus import Bus

HERE = Path(__file__).parent
NODE_DIR = HERE.parents[1] / "node"
PEER_JS = HERE / "bacnet_peer.js"
TARGET_PY = HERE / "bacnet_target.py"


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def node_available() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "@bacnet-js" / "client").is_dir():
        return "@bacnet-js/client is not installed (make tests/node/node_modules/.installed)"
    return None


class NodePeer:
    """A running ``bacnet_peer.js``; ``await request(op, ...)``, ``events`` as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "id" in msg:
                fut = self._replies.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                self.events.append(msg)
                self._changed.set()

    async def request(self, op: str, timeout: float = 10.0, **kw: Any) -> dict[str, Any]:
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": rid, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout)

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                         start: int = 0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for ev in self.events[start:]:
                if pred(ev):
                    return ev
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout} s; got {self.events[start:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def start_node_peer(bind_ip: str = "127.0.0.1") -> NodePeer:
    port = free_udp_port(bind_ip)
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    proc = await asyncio.create_subprocess_exec(
        "node", str(PEER_JS), bind_ip, str(port), "127.255.255.255", cwd=str(NODE_DIR), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    peer = NodePeer(proc, port)
    await peer.wait_event(lambda e: e.get("event") == "listening", timeout=20)
    return peer


@pytest.fixture
async def bacnet_peer() -> AsyncIterator[Callable[..., Any]]:
    why = node_available()
    if why:
        pytest.skip(why)
    peers: list[NodePeer] = []

    async def factory(bind_ip: str = "127.0.0.1") -> NodePeer:
        peer = await start_node_peer(bind_ip)
        peers.append(peer)
        return peer

    yield factory
    for p in peers:
        await p.close()


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        v = cond()
        if v:
            return v
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Device:
    def __init__(self, adapter: BacnetAdapter, bus: Bus, port: int) -> None:
        self.adapter = adapter
        self.bus = bus
        self.port = port
        self.address = f"127.0.0.2:{port}"


@pytest.fixture
async def bacnet_device_factory() -> AsyncIterator[Callable[..., Any]]:
    devices: list[Device] = []

    async def factory(meters: tuple[str, ...] = ("main",), port: int | None = None, **cfg: Any) -> Device:
        port = port or free_udp_port("127.0.0.2")
        cfg = {k: [p.format(port=port) for p in v] if k == "bbmd_peers" else v for k, v in cfg.items()}
        config = BacnetConfig.model_validate({"device_instance": 4711, "address": f"127.0.0.2/8:{port}", **cfg})
        bus = Bus()
        adapter = BacnetAdapter(gateway_id="test", config=config, meters=meters)
        await adapter.start(bus)
        await wait_for(lambda: adapter.bound, 10, "the BACnet device to bind")
        dev = Device(adapter, bus, port)
        devices.append(dev)
        return dev

    yield factory
    for d in devices:
        await d.adapter.stop()


async def start_target(port: int, host: str = "127.0.0.3") -> asyncio.subprocess.Process:
    """A second bacpypes3 application in its own process, the actuator's target device."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(TARGET_PY), f"{host}/8:{port}", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"ready", line
    return proc
