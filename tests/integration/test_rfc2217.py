"""The ``rfc2217://`` transport against pyserial's own RFC 2217 server (PortManager),
as a serial-over-network box would serve a meter.  The server's serial side is
pyserial's ``loop://`` port (PortManager needs modem-line ioctls a pty lacks): what the
virtual meter writes into it comes out at the gateway's end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import serial
import serial.rfc2217

from gateway.protocols.dsmr import DsmrDecoder
from gateway.sim.dsmr import DsmrSimulator
from gateway.transport import Rfc2217Transport, open_transport

pytestmark = pytest.mark.timeout(60)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


@contextlib.contextmanager
def rfc2217_server(ser: serial.SerialBase) -> Iterator[int]:
    """One-connection RFC 2217 server in threads (pyserial's PortManager does the protocol)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    stop = threading.Event()
    bauds: list[int] = []

    def run() -> None:
        conn, _ = srv.accept()
        pm = serial.rfc2217.PortManager(ser, _Conn(conn))

        def to_net() -> None:
            while not stop.is_set():
                data = ser.read(4096)
                if data:
                    with contextlib.suppress(OSError):
                        conn.sendall(b"".join(pm.escape(data)))

        th = threading.Thread(target=to_net, daemon=True)
        th.start()
        conn.settimeout(0.1)
        while not stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            b"".join(pm.filter(data))  # telnet/RFC 2217 negotiation (a generator); the meter ignores data
            bauds.append(ser.baudrate)
        stop.set()
        th.join(2)
        conn.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield port
    finally:
        stop.set()
        srv.close()
        th.join(5)


async def test_rfc2217_transport_reads_a_meter_through_pyserials_server() -> None:
    line = serial.serial_for_url("loop://", timeout=0.05)
    sim = DsmrSimulator("dsmr5")
    with rfc2217_server(line) as port:
        t = await open_transport(f"rfc2217://127.0.0.1:{port}", baudrate=115200)
        assert isinstance(t, Rfc2217Transport)
        dec = DsmrDecoder()
        frames = []
        try:
            now = datetime(2026, 1, 1, tzinfo=UTC)
            async with asyncio.timeout(20):
                while not frames:
                    now += timedelta(seconds=1)
                    line.write(sim.telegram(now))
                    frames = [f for f in dec.feed(await t.read()) if hasattr(f, "readings")]
            await t.set_baudrate(9600)  # negotiated through the COM-port control option
            async with asyncio.timeout(10):
                while line.baudrate != 9600:
                    await asyncio.sleep(0.05)
        finally:
            await t.close()
            line.close()
    assert frames[0].checksum_ok is True
