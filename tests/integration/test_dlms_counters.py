"""DLMS invocation counters survive a restart of the reader (the counter file in the
data dir): our counter never goes backwards, so the virtual meter (which, like a real
one, remembers the highest counter it accepted) still associates after the restart; and
a meter frame recorded before the restart and replayed after it is refused, in poll
mode and in push mode.  The controls show what happens without the file."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.bus import Bus
from gateway.config import MeterConfig
from gateway.errors import DecryptionError, ProtocolError
from gateway.meters.dlms import CounterFile, DlmsReader
from gateway.model import Snapshot
from gateway.protocols.dlms.apdu import CosemAttributeDescriptor
from gateway.protocols.dlms.client import Associated, DlmsClient, GetDone, Released
from gateway.protocols.dlms.wrapper import WrapperFrame
from gateway.protocols.obis import ObisCode
from gateway.sim.dlms import DlmsMeter, MeterOptions, serve_tcp
from gateway.transport import Transport, open_transport

pytestmark = pytest.mark.timeout(60)

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
ENERGY = CosemAttributeDescriptor(class_id=3, instance=ObisCode(1, 0, 1, 8, 0, 255), attribute=2)
SIM_TITLE = MeterOptions().system_title


@contextlib.asynccontextmanager
async def tcp_meter(meter: DlmsMeter) -> AsyncIterator[str]:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_tcp(meter, "127.0.0.1", 0, on_ready=bound.set_result))
    try:
        yield f"socket://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def keys(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "k").write_text(EK.hex())
    (tmp_path / "a").write_text(AK.hex())
    (tmp_path / "k").chmod(0o600)
    (tmp_path / "a").chmod(0o600)
    return {"key_file": tmp_path / "k", "auth_key_file": tmp_path / "a"}


def reader(port: str, tmp_path: Path, data_dir: Path | None, **options: Any) -> DlmsReader:
    cfg = MeterConfig(id="m", protocol="dlms", port=port, options=options, **keys(tmp_path))
    r = DlmsReader(cfg)
    r.data_dir = data_dir
    return r


class Recording:
    """A transport that keeps what it read (to replay a meter's frame later)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.reads: list[bytes] = []

    async def read(self, max_bytes: int = 4096) -> bytes:
        data = await self.inner.read(max_bytes)
        self.reads.append(data)
        return data

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def set_baudrate(self, baud: int) -> None:
        await self.inner.set_baudrate(baud)

    async def close(self) -> None:
        await self.inner.close()


async def session(r: DlmsReader, transport: Any) -> DlmsClient:
    """Associate, one poll (as the poll loop does, counters saved), release."""
    client = await r._start_client(transport)
    await r.drive(transport, client, client.associate(now=r.clock.monotonic()), Associated)
    await r.poll(transport, client)
    r._ic = client.invocation_counter
    await r._save_counters(r._ic, lease=False)
    await r.drive(transport, client, client.release(now=r.clock.monotonic()), Released)
    return client


async def test_poll_counters_survive_a_restart(tmp_path: Path) -> None:
    meter = DlmsMeter(MeterOptions(key=EK, auth_key=AK))
    data = tmp_path / "data"
    async with tcp_meter(meter) as url:
        first = reader(url, tmp_path, data)
        t = Recording(await open_transport(url))
        try:
            client1 = await session(first, t)
        finally:
            await t.close()
        used = client1.invocation_counter - 1  # the last counter the meter saw from us
        doc = json.loads((data / "dlms-m.json").read_text())
        assert doc["invocation_counter"] > used  # leased ahead, written before use
        assert doc["accepted"] == {SIM_TITLE.hex().upper(): meter.counters.invocation_counter - 1}
        # a ciphered GET response of the first run, with its wrapper header
        old_reply = next(d for d in t.reads if len(d) > 8 and d[8] in (0xC8, 0xCC, 0xDB))

        # restart: a new reader on the same data dir starts above every counter it used
        second = reader(url, tmp_path, data)
        t2 = await open_transport(url)
        try:
            client2 = await second._start_client(t2)
            assert client2.settings.invocation_counter == doc["invocation_counter"] > used
            await second.drive(t2, client2, client2.associate(now=second.clock.monotonic()), Associated)
            await second.drive(t2, client2, client2.get(ENERGY, now=second.clock.monotonic()), GetDone)
            # the meter's frame from before the restart, replayed: refused
            client2.get(ENERGY, now=second.clock.monotonic())
            with pytest.raises(DecryptionError) as info:
                client2.feed(old_reply, now=second.clock.monotonic())
            assert info.value.reason == "replay"
        finally:
            await t2.close()

        # control: without the file the counter restarts at 1 and the meter refuses us
        amnesic = reader(url, tmp_path, None)
        t3 = await open_transport(url)
        try:
            with pytest.raises(ProtocolError, match="invocation counter 1 before"):
                await session(amnesic, t3)
        finally:
            await t3.close()


async def test_the_counter_lease_is_renewed_before_it_runs_out(tmp_path: Path) -> None:
    meter = DlmsMeter(MeterOptions(key=EK, auth_key=AK))
    data = tmp_path / "data"
    async with tcp_meter(meter) as url:
        r = reader(url, tmp_path, data)
        t = await open_transport(url)
        try:
            client = await r._start_client(t)
            await r.drive(t, client, client.associate(now=r.clock.monotonic()), Associated)
            for _ in range(CounterFile.LEASE + 5):
                await r.drive(t, client, client.get(ENERGY, now=r.clock.monotonic()), GetDone)
        finally:
            await t.close()
    lease = json.loads((data / "dlms-m.json").read_text())["invocation_counter"]
    assert lease >= client.invocation_counter  # never behind what went on the wire


def test_an_unreadable_counter_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "dlms-m.json").write_text("{not json")
    with pytest.raises(Exception, match="unreadable"):
        CounterFile(tmp_path / "dlms-m.json").load()


# ----------------------------------------------------------------------- push
@contextlib.asynccontextmanager
async def scripted_pusher() -> AsyncIterator[tuple[str, asyncio.Queue[asyncio.StreamWriter]]]:
    """A TCP server handing each connection's writer to the test, which pushes with it."""
    connections: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def handle(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.put_nowait(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        server.close()
        while not connections.empty():
            connections.get_nowait().close()


async def next_snapshot(sub: Any) -> Snapshot:
    async with asyncio.timeout(20):
        while True:
            item = await sub.get()
            if isinstance(item, Snapshot):
                return item


@contextlib.asynccontextmanager
async def running(r: DlmsReader, bus: Bus) -> AsyncIterator[None]:
    task = asyncio.create_task(r.run(bus))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("with_file", [True, False])
async def test_a_push_replayed_after_a_restart_is_refused(tmp_path: Path, with_file: bool) -> None:
    meter = DlmsMeter(MeterOptions(key=EK, auth_key=AK),
                      now=lambda: datetime(2026, 3, 1, 12, tzinfo=UTC))
    pushes = [WrapperFrame(source_wport=1, destination_wport=16,
                           apdu=meter.push_notification()).encode() for _ in range(3)]
    data = tmp_path / "data" if with_file else None
    bus = Bus()
    sub = bus.subscribe(Snapshot)
    async with scripted_pusher() as (url, connections):
        first = reader(url, tmp_path, data, mode="push")
        async with running(first, bus):
            line = await asyncio.wait_for(connections.get(), 10)
            line.write(pushes[0] + pushes[1])
            await next_snapshot(sub)
            await next_snapshot(sub)
        line.close()
        # restart; the recorded first push is replayed, then the meter's next one
        second = reader(url, tmp_path, data, mode="push")
        async with running(second, bus):
            line = await asyncio.wait_for(connections.get(), 10)
            line.write(pushes[0])
            line.write(pushes[2])
            await next_snapshot(sub)
            if not with_file:
                await next_snapshot(sub)  # the amnesic reader takes the replay too
            else:  # the replay was refused before the next push was decoded
                assert second.counters.decryption_errors == 1
        line.close()
    assert second.counters.decryption_errors == (1 if with_file else 0)
    assert second.counters.frames == (1 if with_file else 2)
