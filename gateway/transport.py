"""Bytes in and out of a meter port: serial device, pty, ``socket://`` or ``rfc2217://``.

A transport knows nothing about protocols.  Every OS or pyserial error is
mapped to :class:`gateway.errors.TransportError` at this boundary, so meter
readers handle one family of failures.  URLs:

* ``/dev/ttyUSB0``, ``/dev/pts/3`` or any path: a local serial device or pty,
  opened with pyserial, read without a thread through ``loop.add_reader``.
* ``socket://host:port``: raw TCP, as ser2net and most M-Bus/P1 Ethernet
  converters offer it (asyncio streams; no baud rate: ``set_baudrate`` is a no-op).
* ``rfc2217://host:port``: Telnet COM-port control (RFC 2217) through pyserial,
  whose implementation is blocking, so reads run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from collections.abc import Iterator, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import serial

from gateway.errors import ConnectError, ConnectionLost, TransportError

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class Transport(Protocol):
    url: str

    async def read(self, max_bytes: int = 4096) -> bytes:
        """Return at least one byte; raise ConnectionLost at end of stream."""

    async def write(self, data: bytes) -> None: ...

    async def set_baudrate(self, baud: int) -> None: ...

    async def close(self) -> None: ...


@contextlib.contextmanager
def map_exceptions(url: str, *, connecting: bool = False) -> Iterator[None]:
    """Translate OS/pyserial errors into the gateway's TransportError tree."""
    try:
        yield
    except TransportError:
        raise
    except (serial.SerialException, OSError, EOFError, ValueError, termios.error) as exc:
        cls = ConnectError if connecting else ConnectionLost
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
            detail += " (is the gateway's user in group 'dialout'?)"
        raise cls(f"{url}: {detail}") from exc


class SerialTransport:
    """A local serial device or pty, read through the event loop's selector."""

    def __init__(self, url: str, ser: serial.Serial) -> None:
        self.url = url
        self._ser = ser
        self._fd = ser.fileno()
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls, url: str, *, baudrate: int, bytesize: int, parity: str, stopbits: float
    ) -> SerialTransport:
        if _is_pty(url):
            # A Linux pty forces CS8 without parity, and glibc's tcsetattr then fails
            # with EINVAL for 7E1 (PEERS.md §6): open ptys as 8N1.  The codecs mask
            # the parity bit themselves, so a 7E1 meter behind a pty still decodes.
            bytesize, parity = 8, "N"
        with map_exceptions(url, connecting=True):
            ser = serial.Serial(
                url,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=PARITIES[parity],
                stopbits=stopbits,
                timeout=0,
                exclusive=True,
            )
        return cls(url, ser)

    async def read(self, max_bytes: int = 4096) -> bytes:
        signalled = False
        while True:
            with map_exceptions(self.url):
                try:
                    data = os.read(self._fd, max_bytes)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    # A pty whose other side closed reads EIO: the meter went away.
                    if exc.errno == errno.EIO:
                        raise ConnectionLost(f"{self.url}: the other side closed") from exc
                    raise
            if data:
                return data
            # With VMIN=0 a tty read returns b"" when nothing is there, so b"" is only
            # end of stream when the selector said "readable" (a hang-up), as pyserial does.
            if signalled:
                raise ConnectionLost(f"{self.url}: device reports readiness but returned no data")
            signalled = True
            fut: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_reader(self._fd, fut.set_result, None)
            try:
                await fut
            finally:
                self._loop.remove_reader(self._fd)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with map_exceptions(self.url):
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:
                    n = 0
            view = view[n:]
            if view:
                fut: asyncio.Future[None] = self._loop.create_future()
                self._loop.add_writer(self._fd, fut.set_result, None)
                try:
                    await fut
                finally:
                    self._loop.remove_writer(self._fd)

    async def set_baudrate(self, baud: int) -> None:
        if baud == self._ser.baudrate:
            return  # setting the same speed again fails on a pty (EINVAL) and changes nothing
        with map_exceptions(self.url):
            # Let the bytes already written leave at the old speed first (tcdrain).
            await asyncio.to_thread(termios.tcdrain, self._fd)
            self._ser.baudrate = baud

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ser.close()


def _is_pty(path: str) -> bool:
    try:
        real = os.path.realpath(path)
    except OSError:
        return False
    return real.startswith("/dev/pts/") or real == "/dev/ptmx"


class SocketTransport:
    """Raw TCP (``socket://host:port``), e.g. ser2net or a P1-to-Ethernet dongle."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.url = url
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = 10.0) -> SocketTransport:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ConnectError(f"{url}: expected socket://HOST:PORT")
        with map_exceptions(url, connecting=True):
            try:
                async with asyncio.timeout(connect_timeout_s):
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            except TimeoutError as exc:
                raise ConnectError(f"{url}: no answer within {connect_timeout_s} s") from exc
        return cls(url, reader, writer)

    async def read(self, max_bytes: int = 4096) -> bytes:
        with map_exceptions(self.url):
            data = await self._reader.read(max_bytes)
        if not data:
            raise ConnectionLost(f"{self.url}: connection closed by peer")
        return data

    async def write(self, data: bytes) -> None:
        with map_exceptions(self.url):
            self._writer.write(data)
            await self._writer.drain()

    async def set_baudrate(self, baud: int) -> None:
        """A raw TCP bridge has a fixed line speed; nothing to do."""

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class Rfc2217Transport:
    """RFC 2217 through pyserial; its client is blocking, so reads use a thread."""

    def __init__(self, url: str, ser: serial.SerialBase) -> None:
        self.url = url
        self._ser = ser

    @classmethod
    async def open(
        cls, url: str, *, baudrate: int, bytesize: int, parity: str, stopbits: float
    ) -> Rfc2217Transport:
        def _open() -> serial.SerialBase:
            return serial.serial_for_url(
                url, baudrate=baudrate, bytesize=bytesize, parity=PARITIES[parity],
                stopbits=stopbits, timeout=0.5,
            )

        with map_exceptions(url, connecting=True):
            ser = await asyncio.to_thread(_open)
        return cls(url, ser)

    async def read(self, max_bytes: int = 4096) -> bytes:
        while True:
            with map_exceptions(self.url):
                data: bytes = await asyncio.to_thread(self._ser.read, max_bytes)
            if data:
                return data
            if not self._ser.is_open:
                raise ConnectionLost(f"{self.url}: closed")

    async def write(self, data: bytes) -> None:
        with map_exceptions(self.url):
            await asyncio.to_thread(self._ser.write, data)

    async def set_baudrate(self, baud: int) -> None:
        def _set() -> None:
            self._ser.baudrate = baud

        with map_exceptions(self.url):
            await asyncio.to_thread(_set)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._ser.close)


async def open_transport(
    url: str,
    *,
    baudrate: int = 115200,
    bytesize: int = 8,
    parity: str = "N",
    stopbits: float = 1,
) -> Transport:
    """Open a meter port by URL.

    Raises:
        ConnectError: the port cannot be opened.
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "socket":
        return await SocketTransport.open(url)
    if scheme == "rfc2217":
        return await Rfc2217Transport.open(
            url, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits
        )
    if scheme:
        raise ConnectError(f"{url}: unknown port scheme {scheme!r} (use a device path, socket:// or rfc2217://)")
    return await SerialTransport.open(
        url, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits
    )


class ScriptedTransport:
    """An in-memory transport for tests: hands out scripted chunks, records writes.

    After the script is used up, ``read`` raises ConnectionLost (like a closed port).
    """

    def __init__(self, chunks: Sequence[bytes], url: str = "scripted://") -> None:
        self.url = url
        self._chunks = list(chunks)
        self.written: list[bytes] = []
        self.baudrates: list[int] = []
        self.closed = False

    async def read(self, max_bytes: int = 4096) -> bytes:
        await asyncio.sleep(0)
        if not self._chunks:
            raise ConnectionLost(f"{self.url}: script finished")
        chunk = self._chunks.pop(0)
        if len(chunk) > max_bytes:
            self._chunks.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    async def set_baudrate(self, baud: int) -> None:
        self.baudrates.append(baud)

    async def close(self) -> None:
        self.closed = True
