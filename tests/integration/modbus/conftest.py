"""Modbus peers on loopback (../shared/PEERS.md §4).

- ``run_mbpoll(*args)`` / ``mbpoll_values(out)``: Debian ``mbpoll`` as a subprocess,
  its value lines parsed into ``{reference: text}``.
- ``libmodbus_server``: ``mb_server.c`` (next to this file) compiled with ``cc ...
  -lmodbus`` into a temporary folder and started on a free port; skipped only when
  ``cc`` or the libmodbus headers are missing.
- ``pymodbus_peer``: a pymodbus 3.16 server (coils and holding registers, writable)
  in the test's event loop, on a free port.
- ``pty_pair``: two linked ptys from ``socat`` (RTU tests).
- ``modbus_adapter(**config)``: our adapter started on a bus, stopped at the end.
- ``mbt``: the helper functions and test data of this module (``mbt.run_async``,
  ``mbt.values``, ``mbt.snapshot``, ``mbt.THREE_PHASE``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.adapter import ModbusAdapter
from adapters.modbus.config import ModbusConfig
from gateway.bus import Bus
from gateway.model import Reading, Snapshot

HERE = Path(__file__).resolve().parent
MBPOLL = shutil.which("mbpoll")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mbpoll(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``mbpoll ARGS`` (one poll unless the args write), output as text."""
    if MBPOLL is None:
        pytest.skip("mbpoll is not installed (Debian package mbpoll)")
    return subprocess.run([MBPOLL, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


_VALUE = re.compile(r"^\[(\d+)\]:\s+(\S+)(?:\s+\((-?\d+)\))?\s*$")


def mbpoll_values(out: str) -> dict[int, str]:
    """``[40000]: 21365`` lines -> {40000: "21365"}; a signed reading "(-2)" wins."""
    values: dict[int, str] = {}
    for line in out.splitlines():
        m = _VALUE.match(line.strip())
        if m is not None:
            values[int(m[1])] = m[3] if m[3] is not None else m[2]
    return values


async def mbpoll_async(*args: str) -> subprocess.CompletedProcess[str]:
    """mbpoll off the event loop (our server runs on it)."""
    return await asyncio.to_thread(run_mbpoll, *args)


# ------------------------------------------------------------------ libmodbus
@dataclass
class CServer:
    port: int
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def writes(self) -> list[str]:
        """The ``write FC ADDR`` lines printed so far (reads the pipe without blocking)."""
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.strip())
        return [x for x in self.lines if x.startswith("write")]


@pytest.fixture(scope="session")
def libmodbus_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) for the libmodbus test server")
    if not Path("/usr/include/modbus/modbus.h").exists():
        pytest.skip("libmodbus headers missing (Debian package libmodbus-dev)")
    out = tmp_path_factory.mktemp("libmodbus") / "mb_server"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(HERE / "mb_server.c"),
                    "-I/usr/include/modbus", "-lmodbus"], check=True, timeout=60)
    return out


@pytest.fixture
def libmodbus_server(libmodbus_binary: Path) -> Iterator[CServer]:
    port = free_port()
    proc = subprocess.Popen([str(libmodbus_binary), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first == "ready", f"libmodbus server did not start: {first!r}"
        yield CServer(port=port, proc=proc)
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------ pymodbus peer
@dataclass
class PyPeer:
    port: int
    server: ModbusTcpServer

    async def read(self, kind: str, address: int) -> int:
        """The peer's own value of a coil ("c") or holding register ("h")."""
        func = 1 if kind == "c" else 3
        values = await self.server.context.async_getValues(0, func, address, 1)
        assert isinstance(values, list)
        return int(values[0])


@pytest.fixture
async def pymodbus_peer() -> AsyncIterator[PyPeer]:
    """Coils 0..63 (off) and holding registers 0..99 (1000 + address), any unit id."""
    device = SimDevice(id=0, simdata=(
        [SimData(address=0, count=64, values=False, datatype=DataType.BITS)],
        [SimData(address=0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(address=0, values=[1000 + i for i in range(100)], datatype=DataType.UINT16)],
        [SimData(address=0, count=10, values=0, datatype=DataType.UINT16)],
    ))
    port = free_port()
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield PyPeer(port=port, server=server)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ ptys
@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (Debian package socat)")
    a, b = tmp_path / "rtuA", tmp_path / "rtuB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            assert proc.poll() is None, "socat exited"
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)


# ------------------------------------------------------------------ our adapter
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def snapshot(*readings: tuple[str, float | int | str, str | None], meter: str = "main",
             received: datetime | None = None) -> Snapshot:
    return Snapshot(meter=meter, protocol="dsmr", device_id="E0000", timestamp=T0,
                    received=received or datetime.now(UTC),
                    readings=tuple(Reading(id=i, value=v, unit=u) for i, v, u in readings))


THREE_PHASE = (
    ("1-0:1.8.1", 1234.567, "kWh"), ("1-0:1.8.2", 2000.001, "kWh"),
    ("1-0:2.8.1", 10.5, "kWh"), ("1-0:2.8.2", 20.25, "kWh"),
    ("0-0:96.14.0", 2, None),
    ("1-0:1.7.0", 1.234, "kW"), ("1-0:2.7.0", 0.0, "kW"),
    ("1-0:21.7.0", 0.5, "kW"), ("1-0:41.7.0", 0.334, "kW"), ("1-0:61.7.0", 0.4, "kW"),
    ("1-0:22.7.0", 0.0, "kW"), ("1-0:42.7.0", 0.0, "kW"), ("1-0:62.7.0", 0.0, "kW"),
    ("1-0:32.7.0", 231.4, "V"), ("1-0:52.7.0", 229.9, "V"), ("1-0:72.7.0", 232.1, "V"),
    ("1-0:31.7.0", 2.25, "A"), ("1-0:51.7.0", 1.5, "A"), ("1-0:71.7.0", 1.75, "A"),
)

AdapterFactory = Callable[..., Awaitable[tuple[ModbusAdapter, Bus, int]]]


class Tools:
    """The helpers above for the test modules (pytest's importlib mode lets a test
    module import no sibling, so they come as the ``mbt`` fixture)."""

    run = staticmethod(run_mbpoll)
    run_async = staticmethod(mbpoll_async)
    values = staticmethod(mbpoll_values)
    snapshot = staticmethod(snapshot)
    free_port = staticmethod(free_port)
    THREE_PHASE = THREE_PHASE
    T0 = T0


@pytest.fixture
def mbt() -> Tools:
    return Tools()


@pytest.fixture
async def modbus_adapter() -> AsyncIterator[AdapterFactory]:
    """``await factory(bus=None, meters=("main",), **config) -> (adapter, bus, port)``."""
    started: list[ModbusAdapter] = []

    async def factory(bus: Bus | None = None, meters: tuple[str, ...] = ("main",),
                      **config: Any) -> tuple[ModbusAdapter, Bus, int]:
        port = free_port()
        config.setdefault("listen", f"tcp://127.0.0.1:{port}")
        cfg = ModbusConfig.model_validate(config)
        adapter = ModbusAdapter(gateway_id="gw-test", config=cfg, meters=meters)
        bus = bus or Bus()
        await adapter.start(bus)
        started.append(adapter)
        return adapter, bus, port

    yield factory
    for adapter in started:
        await adapter.stop()
