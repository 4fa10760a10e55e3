"""I/O for the push-style virtual meters: write telegrams to a pty or to TCP clients.

The telegram content comes from the pure simulators (``gateway.sim.dsmr``);
this module only decides where the bytes go and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pty
import termios
import tty
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

TelegramSource = Callable[[datetime], bytes]


def open_pty() -> tuple[int, int, str]:
    """A raw, non-echoing pty: (master fd, non-blocking; slave fd; slave path)."""
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        return master, slave, os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise


def link_pty(tty_path: str, link: str | None) -> str:
    """Point ``link`` (replacing what was there) at the pty; returns the path to give the gateway."""
    if not link:
        return tty_path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(tty_path, link)
    return link


class PtyMeter:
    """A pty whose slave end plays the meter's serial port.

    The master is written to; the slave path (``self.path``, or the symlink
    ``link``) is what the gateway opens.  The simulator keeps its own slave fd
    open so that the pty survives the gateway closing and reopening the port.
    ``close()`` removes the pty: to the gateway that looks like a meter unplugged.
    """

    def __init__(self, link: str | None = None) -> None:
        self.master, self._slave, self.tty = open_pty()
        self.link = link
        self.path = link_pty(self.tty, link)
        self.dropped = 0

    def write(self, data: bytes) -> None:
        """Write without blocking; bytes nobody reads are dropped, as on a real line."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                self.dropped += len(view)
                # Nobody reads: throw away the stale backlog so the next reader gets fresh data.
                with contextlib.suppress(OSError):
                    termios.tcflush(self._slave, termios.TCIFLUSH)
                return
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            view = view[n:]

    def drain_input(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)


async def push_to_pty(meter: PtyMeter, source: TelegramSource, interval_s: float,
                      *, count: int | None = None) -> None:
    """Write one telegram every ``interval_s`` (aligned to the wall clock second)."""
    loop = asyncio.get_running_loop()
    sent = 0
    while count is None or sent < count:
        meter.write(source(datetime.now(UTC)))
        meter.drain_input()  # a P1 port ignores what the gateway sends (request line)
        sent += 1
        now = loop.time()
        await asyncio.sleep(interval_s - (now % interval_s) if interval_s >= 1 else interval_s)


async def push_to_tcp(host: str, port: int, source: TelegramSource, interval_s: float,
                      *, started: asyncio.Event | None = None) -> None:
    """Serve telegrams to every TCP client (as a ser2net port or a P1 dongle does)."""
    clients: set[asyncio.StreamWriter] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.add(writer)
        try:
            while await reader.read(1024):
                pass
        finally:
            clients.discard(writer)
            writer.close()

    server = await asyncio.start_server(on_client, host, port)
    if started is not None:
        started.set()
    async with server:
        while True:
            data = source(datetime.now(UTC))
            for w in tuple(clients):
                w.write(data)
                if w.transport.get_write_buffer_size() > 1 << 20:
                    w.close()  # a client that does not read is dropped, not buffered forever
            await asyncio.sleep(interval_s)


def write_path_file(path: str | None, value: str) -> None:
    if path:
        Path(path).write_text(value + "\n")
