"""The virtual IEC 62056-21 meter on a real pty (and on TCP), read by pyserial and by
ClientSession.  The simulator sees the gateway's baud changes through TIOCPKT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import serial

from gateway.model import MeterFrame
from gateway.protocols.iec62056_21 import (
    ClientSession,
    ReadoutDecoder,
    Send,
    SessionState,
    SetBaudrate,
)
from gateway.sim.iec62056_21 import MeterSession, PtyMeter, serve_pty, serve_tcp

pytestmark = pytest.mark.timeout(60)

TR = 0.02  # reaction time for tests; the standard's minimum is 0.2 s (0.02 s for fast meters)


def _factory(**kw: Any) -> Callable[[], MeterSession]:
    return lambda: MeterSession(reaction_time_s=TR, **kw)


@contextlib.asynccontextmanager
async def running(meter: PtyMeter) -> AsyncIterator[PtyMeter]:
    task = asyncio.create_task(meter.serve(), name="pty-meter")
    try:
        await asyncio.sleep(0)
        yield meter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        meter.close()


def _dedup(bauds: list[int]) -> list[int]:
    return [b for i, b in enumerate(bauds) if i == 0 or bauds[i - 1] != b]


def _read_until_bcc(port: serial.Serial, limit_s: float) -> bytes:
    data = b""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        data += bytes(port.read(4096))
        etx = data.find(b"\x03")
        if 0 <= etx < len(data) - 1:
            break
    return data


def _mode_c_by_hand(path: str, *, switch: bool) -> bytes:
    """The mode C dialog with plain pyserial, 7E1 as on a real optical head."""
    with serial.Serial(path, 300, bytesize=7, parity="E", timeout=0.3) as port:
        port.write(b"/?!\r\n")
        ident = bytes(port.readline())
        time.sleep(TR)  # tr before the acknowledgement
        port.write(b"\x06050\r\n")
        port.flush()  # the ACK must be out before the rate changes
        if switch:
            port.baudrate = 9600
        return ident + _read_until_bcc(port, 1.5)


async def test_mode_c_sign_on_and_baud_switch_on_a_pty() -> None:
    async with running(PtyMeter(_factory())) as meter:
        capture = await asyncio.to_thread(_mode_c_by_hand, meter.path, switch=True)
        dec = ReadoutDecoder()
        (frame,) = dec.feed(capture)
        assert isinstance(frame, MeterFrame)
        assert frame.checksum_ok is True and frame.header == "/HGW5SIM-IEC-0001"
        assert frame.meter_id == "12345678"
        assert {"1.8.0", "2.8.0", "16.7.0", "32.7.0"} <= {r.id for r in frame.readings}
        # the simulator saw the gateway open at 300 Bd and then switch to 9600 Bd
        assert _dedup(meter.bauds_seen)[-2:] == [300, 9600]
        assert meter.garbled_tx == 0 and meter.dropped_rx == 0


async def test_a_client_that_does_not_switch_gets_no_readout() -> None:
    async with running(PtyMeter(_factory())) as meter:
        capture = await asyncio.to_thread(_mode_c_by_hand, meter.path, switch=False)
        assert capture.startswith(b"/HGW5SIM-IEC-0001\r\n")  # the sign-on worked at 300 Bd
        dec = ReadoutDecoder()
        events = dec.feed(capture) + dec.feed_eof()
        assert not [e for e in events if isinstance(e, MeterFrame)]
        assert meter.garbled_tx > 0 and _dedup(meter.bauds_seen) == [300]


def _sign_on_at(path: str, baud: int) -> bytes:
    with serial.Serial(path, baud, timeout=0.3) as port:
        time.sleep(0.2)  # well after the speed change (the meter allows 50 ms for stragglers)
        port.write(b"/?!\r\n")
        return bytes(port.read(64))


async def test_a_sign_on_at_the_wrong_rate_is_ignored_and_the_port_can_be_reopened() -> None:
    async with running(PtyMeter(_factory())) as meter:
        assert await asyncio.to_thread(_sign_on_at, meter.path, 9600) == b""
        assert meter.dropped_rx == 5
        # the gateway closed the port and opens it again: the meter is still there
        assert await asyncio.to_thread(_sign_on_at, meter.path, 300) == b"/HGW5SIM-IEC-0001\r\n"


def _drive(path: str, session: ClientSession) -> list[object]:
    """A blocking driver loop over pyserial: what a meter reader does asynchronously."""
    out: list[object] = []
    # The read timeout is fixed at open: on a pty, reconfiguring a 7E1 port without
    # changing its speed fails with EINVAL (see PtyMeter), so no timeout changes and no
    # baud rate "changes" to the current rate.
    with serial.Serial(path, 300, bytesize=7, parity="E", timeout=0.01) as port:

        def perform(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, Send):
                    port.write(item.data)
                elif isinstance(item, SetBaudrate):
                    if item.baud != port.baudrate:
                        port.flush()  # drain: bytes already written go out at the old rate
                        port.baudrate = item.baud
                else:
                    out.append(item)

        perform(session.start(time.monotonic()))
        while session.state not in (SessionState.DONE, SessionState.ERROR):
            data = port.read(4096)
            now = time.monotonic()
            if data:
                perform(session.feed(data, now=now))
            if (d := session.deadline()) is not None and now >= d:
                perform(session.on_timeout(now=now))
    return out


@pytest.mark.parametrize("mode", ["A", "B", "C", "D"])
async def test_client_session_reads_the_pty_meter(mode: Any, tmp_path: Path) -> None:
    ready = asyncio.Event()
    paths: list[str] = []
    bauds: list[int] = []

    def on_ready(path: str) -> None:
        paths.append(path)
        ready.set()

    link = str(tmp_path / "ttyIEC")
    factory = _factory(mode=mode, echo=True, parity=True, push_interval_s=0.5)
    task = asyncio.create_task(
        serve_pty(factory, link=link, on_ready=on_ready, on_baud=bauds.append)
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert paths == [link] and os.path.islink(link)
        session = ClientSession(
            mode=mode, reaction_time_s=TR, timeout_s=1.5 if mode != "D" else 3.0
        )
        out = await asyncio.to_thread(_drive, link, session)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not os.path.lexists(link)  # the symlink goes with the meter
    frames = [o for o in out if isinstance(o, MeterFrame)]
    assert session.state is SessionState.DONE, out
    (frame,) = frames
    assert frame.checksum_ok is True and frame.meter_id == "12345678"
    # mode D switches right after the open; TIOCPKT may report both changes as one
    expected = {"A": [300], "B": [300, 9600], "C": [300, 9600], "D": [2400]}[mode]
    assert _dedup(bauds)[-len(expected) :] == expected


async def test_tcp_meter_with_an_asyncio_driver() -> None:
    """socket:// (ser2net style): no baud rates; the reaction time is still honoured."""
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve_tcp(_factory(), "127.0.0.1", 0, on_ready=bound.set_result))
    try:
        port = await asyncio.wait_for(bound, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        session = ClientSession(reaction_time_s=TR)
        out: list[object] = []

        async def perform(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, Send):
                    writer.write(item.data)
                    await writer.drain()
                elif not isinstance(item, SetBaudrate):  # no baud rate on TCP
                    out.append(item)

        await perform(session.start(loop.time()))
        while session.state not in (SessionState.DONE, SessionState.ERROR):
            try:
                async with asyncio.timeout_at(session.deadline()):
                    data = await reader.read(4096)
            except TimeoutError:
                await perform(session.on_timeout(now=loop.time()))
                continue
            assert data, "the simulator closed the connection"
            await perform(session.feed(data, now=loop.time()))
        writer.close()
        await writer.wait_closed()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    (frame,) = [o for o in out if isinstance(o, MeterFrame)]
    assert frame.checksum_ok and frame.header == "/HGW5SIM-IEC-0001"
