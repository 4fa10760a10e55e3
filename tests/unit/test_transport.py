"""Transports against real ptys and real TCP sockets on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import ConnectError, ConnectionLost, TransportError
from gateway.sim.runner import PtyMeter
from gateway.transport import ScriptedTransport, open_transport


async def test_pty_read_write_and_meter_unplugged(tmp_path: Path) -> None:
    meter = PtyMeter(link=str(tmp_path / "ttyP1"))
    t = await open_transport(str(tmp_path / "ttyP1"), baudrate=115200)
    try:
        meter.write(b"/XMX5 hello\r\n")
        got = b""
        async with asyncio.timeout(5):
            while len(got) < 13:
                got += await t.read()
        assert got == b"/XMX5 hello\r\n"
        await t.write(b"/?!\r\n")
        await asyncio.sleep(0.05)
        assert meter.drain_input() == b"/?!\r\n"
        await t.set_baudrate(9600)  # a pty accepts any speed
        meter.close()
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(5):
                await t.read()
    finally:
        await t.close()
        meter.close()


async def test_missing_device_is_a_connect_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as info:
        await open_transport(str(tmp_path / "nope"))
    assert "nope" in str(info.value)
    assert isinstance(info.value, TransportError)


async def test_unknown_scheme_is_a_connect_error() -> None:
    with pytest.raises(ConnectError):
        await open_transport("http://example.invalid/")


async def test_socket_transport_reads_and_sees_close() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"telegram")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        t = await open_transport(f"socket://127.0.0.1:{port}")
        assert await t.read() == b"telegram"
        await t.write(b"ping")
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(5):
                await t.read()
        await t.close()


async def test_socket_refused_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectError):
        await open_transport(f"socket://127.0.0.1:{port}")


async def test_scripted_transport_splits_and_ends() -> None:
    t = ScriptedTransport([b"abcdef"])
    assert await t.read(4) == b"abcd"
    assert await t.read(4) == b"ef"
    with pytest.raises(ConnectionLost):
        await t.read()
