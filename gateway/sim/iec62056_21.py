"""A virtual IEC 62056-21 optical meter: the tariff device side of modes A, B, C and D.

Two halves, as everywhere in han-gateway:

* :class:`MeterSession` is sans-IO.  It reads the gateway's request and option select and
  answers with a list of actions (:class:`~gateway.protocols.iec62056_21.Send`,
  :class:`SwitchBaud`, :class:`Wait`) to be carried out in order.  Mode C: ``/?!`` →
  (tr) identification ``/HGW5…`` at 300 Bd → ``ACK 0 Z 0`` → switch to Z → (tr) readout
  → back to 300 Bd.  Mode A answers the readout at 300 Bd right after the
  identification, mode B switches to its rate without acknowledgement, mode D pushes
  identification and readout at 2400 Bd every ``push_interval_s``.  Programming mode
  (``Y = 1``) and mode E (HDLC) are not simulated: such an option select sends the meter
  back to its initial state, silently.  If no option select arrives within
  ``option_timeout_s`` the meter returns to its initial state without sending data
  (some real meters send the readout at 300 Bd instead).
* :func:`serve_pty` and :func:`serve_tcp` carry the actions out on a pty (with baud rate
  checks, see :class:`PtyMeter`) or on TCP connections (``socket://``, no baud rates).

The readings come from a callable ``now -> data sets``; the default :class:`LoadModel`
has energy registers that grow with time, instantaneous power and voltage, the meter's
clock and serial number.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import logging
import math
import os
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Self

from gateway.errors import FramingError, LocalProtocolError
from gateway.protocols.iec62056_21 import (
    INITIAL_BAUD,
    MODE_D_BAUD,
    AckOptionSelect,
    DataLine,
    DataSet,
    IdentificationMessage,
    ReadoutMessage,
    RequestMessage,
    Send,
    baud_char_for,
    transmission_time_s,
)
from gateway.sim.runner import link_pty, open_pty

__all__ = [
    "LoadModel",
    "MeterSession",
    "MeterState",
    "PtyMeter",
    "ReadingSource",
    "SimAction",
    "SwitchBaud",
    "Wait",
    "serve_pty",
    "serve_tcp",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchBaud:
    """The meter's UART changes rate (what it sends and what it can receive)."""

    baud: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Pause before the next action (the reaction time tr)."""

    seconds: float


SimAction = Send | SwitchBaud | Wait
ReadingSource = Callable[[float], Sequence[DataSet | DataLine]]


# ------------------------------------------------------------------ readings
class LoadModel:
    """A household with some PV: deterministic in ``now`` (seconds, any monotonic base).

    Net power = consumption (≈200–850 W, two periods) minus production (0–1800 W,
    30-minute period), so import (1.8.x) and export (2.8.0) both grow.  Energy is
    integrated on a 1 s grid from the first call, so the registers depend only on the
    time elapsed since then, never on how often the meter was read.  Tariff 1 (1.8.1)
    runs 06:00–22:00 meter time, tariff 2 (1.8.2) otherwise.  The meter clock is
    ``clock()`` if given (``datetime.now`` for a live demo), else ``start`` plus the
    elapsed time.  With ``obis_prefix`` the addresses are full OBIS codes
    (``1-0:1.8.0*255``) instead of the short EDIS forms (``1.8.0``).
    """

    def __init__(
        self,
        *,
        serial: str = "12345678",
        start: datetime = datetime(2024, 1, 15, 8, 0, 0),
        clock: Callable[[], datetime] | None = None,
        import_kwh: float = 1234.5,
        export_kwh: float = 321.0,
        obis_prefix: bool = False,
    ) -> None:
        self.serial = serial
        self.start = start
        self.clock = clock
        self.obis_prefix = obis_prefix
        self._t0: float | None = None
        self._done = 0  # whole seconds integrated so far
        self._base = (import_kwh * 1000.0 * 0.6, import_kwh * 1000.0 * 0.4, export_kwh * 1000.0)
        self._wh = list(self._base)  # tariff 1 import, tariff 2 import, export

    @staticmethod
    def power_w(t: float) -> float:
        """Net active power at ``t`` seconds after the first reading (import > 0)."""
        consumption = (
            500.0 + 250.0 * math.sin(2 * math.pi * t / 300) + 100.0 * math.sin(2 * math.pi * t / 47)
        )
        production = 1800.0 * max(0.0, math.sin(2 * math.pi * t / 1800))
        return consumption - production

    @staticmethod
    def voltage_v(t: float) -> float:
        return 230.0 + 2.5 * math.sin(2 * math.pi * t / 90)

    def meter_time(self, elapsed: float) -> datetime:
        if self.clock is not None:
            return self.clock()
        return self.start + timedelta(seconds=elapsed)

    def _integrate(self, elapsed: float) -> None:
        whole = int(elapsed)
        if whole < self._done:  # time went backwards (a test rewinding): start over
            self._done, self._wh = 0, list(self._base)
        for s in range(self._done, whole):
            p = self.power_w(s + 0.5)
            hour = (self.start + timedelta(seconds=s)).hour
            if p >= 0:
                self._wh[0 if 6 <= hour < 22 else 1] += p / 3600.0
            else:
                self._wh[2] -= p / 3600.0
        self._done = max(self._done, whole)

    def __call__(self, now: float) -> tuple[DataSet, ...]:
        if self._t0 is None:
            self._t0 = now
        elapsed = max(0.0, now - self._t0)
        self._integrate(elapsed)
        t1, t2, exp = (wh / 1000.0 for wh in self._wh)
        p = self.power_w(elapsed)
        clock = self.meter_time(elapsed)
        rows: list[tuple[str, str, str, str | None]] = [
            # short address, OBIS form, value, unit
            ("0.0.0", "1-0:0.0.0*255", self.serial, None),
            ("C.1.0", "0-0:96.1.0*255", self.serial, None),
            ("F.F", "1-0:97.97.0*255", "00000000", None),
            ("0.9.1", "1-0:0.9.1*255", clock.strftime("%H%M%S"), None),
            ("0.9.2", "1-0:0.9.2*255", clock.strftime("%y%m%d"), None),
            ("1.8.0", "1-0:1.8.0*255", f"{t1 + t2:010.3f}", "kWh"),
            ("1.8.1", "1-0:1.8.1*255", f"{t1:010.3f}", "kWh"),
            ("1.8.2", "1-0:1.8.2*255", f"{t2:010.3f}", "kWh"),
            ("2.8.0", "1-0:2.8.0*255", f"{exp:010.3f}", "kWh"),
            ("16.7.0", "1-0:16.7.0*255", f"{p / 1000.0:.3f}", "kW"),
            ("1.7.0", "1-0:1.7.0*255", f"{max(p, 0.0) / 1000.0:.3f}", "kW"),
            ("2.7.0", "1-0:2.7.0*255", f"{max(-p, 0.0) / 1000.0:.3f}", "kW"),
            ("32.7.0", "1-0:32.7.0*255", f"{self.voltage_v(elapsed):05.1f}", "V"),
        ]
        return tuple(
            DataSet(address=obis if self.obis_prefix else short, value=value, unit=unit)
            for short, obis, value, unit in rows
        )


# -------------------------------------------------------------- the meter
class MeterState(enum.Enum):
    IDLE = "idle"  # waiting for a request at the initial rate
    WAIT_OPTION = "wait_option"  # mode C: identification sent, waiting for ACK V Z Y


_MASK = bytes(b & 0x7F for b in range(256))
_BREAK = b"\x01B0\x03"


def _with_parity(data: bytes) -> bytes:
    """Set bit 7 to the even parity bit, as a 7E1 character looks to an 8N1 receiver."""
    return bytes(b | 0x80 if b.bit_count() % 2 else b for b in data)


class MeterSession:
    """The tariff device's side of the dialog (sans-IO; ``now`` in seconds).

    ``baud`` is the highest rate the meter offers (mode B/C) and the rate it switches to
    in mode B.  ``echo`` plays a half-duplex optical head that returns every byte the
    gateway sends; ``parity`` sets bit 7 to the even parity bit on what the meter sends
    (a 7E1 line read as 8N1).  ``readings`` defaults to a :class:`LoadModel`.

    Raises:
        LocalProtocolError: settings that do not form a valid identification.
    """

    def __init__(
        self,
        *,
        mode: Literal["A", "B", "C", "D"] = "C",
        manufacturer: str = "HGW",
        identification: str = "SIM-IEC-0001",
        enhanced: tuple[str, ...] = (),
        address: str | None = None,
        baud: int = 9600,
        serial: str = "12345678",
        readings: ReadingSource | None = None,
        reaction_time_s: float = 0.2,
        option_timeout_s: float = 1.5,
        push_interval_s: float = 5.0,
        echo: bool = False,
        parity: bool = False,
    ) -> None:
        if mode == "A":
            baud_char, baud = "X", INITIAL_BAUD  # any character outside the B and C tables
        elif mode == "B":
            baud_char = baud_char_for(baud, "B")
        elif mode == "C":
            baud_char = baud_char_for(baud, "C")
        elif mode == "D":
            baud_char, baud = "3", MODE_D_BAUD
        else:
            raise LocalProtocolError(f"mode must be A, B, C or D, got {mode!r}")
        if reaction_time_s < 0 or option_timeout_s <= 0 or push_interval_s <= 0:
            raise LocalProtocolError("times must be positive")
        self.mode = mode
        self.baud = baud
        self.address = serial if address is None else address
        RequestMessage(address=self.address)  # validates it
        self.identification = IdentificationMessage(
            manufacturer=manufacturer,
            baud_char=baud_char,
            identification=identification,
            enhanced=enhanced,
        )
        self.readings: ReadingSource = readings or LoadModel(serial=serial)
        self.reaction_time_s = reaction_time_s
        self.option_timeout_s = option_timeout_s
        self.push_interval_s = push_interval_s
        self.echo = echo
        self.parity = parity
        self._state = MeterState.IDLE
        self._rx = bytearray()
        self._deadline: float | None = 0.0 if mode == "D" else None  # mode D: push at once
        self.readouts = 0  # readouts sent so far

    @property
    def state(self) -> MeterState:
        return self._state

    @property
    def initial_baud(self) -> int:
        """The rate the meter listens and talks at when idle."""
        return MODE_D_BAUD if self.mode == "D" else INITIAL_BAUD

    def deadline(self) -> float | None:
        return self._deadline

    def readout(self, now: float) -> bytes:
        """The data message (STX … ! CR LF ETX BCC) with the readings at ``now``."""
        lines = tuple(
            item if isinstance(item, DataLine) else DataLine(sets=(item,))
            for item in self.readings(now)
        )
        self.readouts += 1
        return ReadoutMessage(lines=lines).encode()

    def _send(self, data: bytes) -> Send:
        return Send(data=_with_parity(data) if self.parity else data)

    def feed(self, data: bytes, *, now: float) -> list[SimAction]:
        """Bytes the meter received (at the right rate: the I/O side drops the rest)."""
        out: list[SimAction] = [Send(data=data)] if self.echo and data else []
        self._rx += data.translate(_MASK)
        if _BREAK in self._rx:  # SOH B0 ETX: back to the initial state
            self._rx.clear()
            self._state = MeterState.IDLE
            self._deadline = None if self.mode != "D" else self._deadline
        del self._rx[:-256]  # a request or option select is far shorter
        while (lf := self._rx.find(b"\n")) >= 0:
            line = bytes(self._rx[: lf + 1])
            del self._rx[: lf + 1]
            # noise before the message on the same line does not matter
            start = max(line.rfind(b"/"), line.rfind(b"\x06"))
            if start >= 0:
                out += self._on_message(line[start:], now)
        return out

    def _on_message(self, msg: bytes, now: float) -> list[SimAction]:
        if self.mode == "D":
            return []  # a mode D meter only pushes
        tr = Wait(seconds=self.reaction_time_s)
        if msg.startswith(b"/"):
            try:
                request = RequestMessage.decode(msg)
            except FramingError:
                return []
            if request.address and request.address.lstrip("0") != self.address.lstrip("0"):
                return []  # addressed to another meter on the bus
            ident = self.identification.encode()
            if self.mode == "A":
                self._state, self._deadline = MeterState.IDLE, None
                return [tr, self._send(ident), tr, self._send(self.readout(now))]
            if self.mode == "B":
                self._state, self._deadline = MeterState.IDLE, None
                return [
                    tr,
                    self._send(ident),
                    SwitchBaud(baud=self.baud),
                    tr,
                    self._send(self.readout(now)),
                    SwitchBaud(baud=INITIAL_BAUD),
                ]
            self._state = MeterState.WAIT_OPTION
            self._deadline = (
                now
                + self.reaction_time_s
                + transmission_time_s(len(ident), INITIAL_BAUD)
                + self.option_timeout_s
            )
            return [tr, self._send(ident)]
        if self._state is not MeterState.WAIT_OPTION:
            return []
        self._state, self._deadline = MeterState.IDLE, None
        try:
            option = AckOptionSelect.decode(msg)
        except FramingError:
            return []
        baud = option.baud
        if (
            option.protocol_char != "0"
            or option.mode_char != "0"
            or baud is None
            or baud > self.baud
        ):
            return []  # programming mode, HDLC, or a rate we did not offer: not simulated
        # 6.4.4: the meter switches after the acknowledgement and answers after tr
        return [
            SwitchBaud(baud=baud),
            tr,
            self._send(self.readout(now)),
            SwitchBaud(baud=INITIAL_BAUD),
        ]

    def on_timeout(self, *, now: float) -> list[SimAction]:
        if self._deadline is None or now < self._deadline:
            return []
        if self.mode == "D":
            self._deadline = now + self.push_interval_s
            return [self._send(self.identification.encode()), self._send(self.readout(now))]
        self._state, self._deadline = MeterState.IDLE, None
        return []


# ------------------------------------------------------------------ pty I/O
# Python 3.11's termios lacks EXTPROC (Linux value 0o200000).  With EXTPROC set in the
# slave's lflag, every tcsetattr on the slave makes a packet-mode master read a control
# packet with TIOCPKT_IOCTL: that is how the simulator sees the gateway change baud.
_EXTPROC = getattr(termios, "EXTPROC", 0o200000)
_TIOCPKT_IOCTL = 0x40
_GRACE_S = 0.05
_SPEEDS: dict[int, int] = {
    getattr(termios, f"B{b}"): b
    for b in (
        50,
        75,
        110,
        134,
        150,
        200,
        300,
        600,
        1200,
        1800,
        2400,
        4800,
        9600,
        19200,
        38400,
        57600,
        115200,
        230400,
    )
    if hasattr(termios, f"B{b}")
}


def _garble(data: bytes, sent_baud: int, line_baud: int) -> bytes:
    """Roughly what a UART at ``line_baud`` reports for characters sent at ``sent_baud``.

    A slower receiver samples a few bits out of many characters: about one nonsense
    byte per ``sent/line`` characters.  A faster receiver sees each low bit as a long
    run of zeros: NUL bytes with framing errors.  Neither ever forms a valid message.
    """
    if line_baud < sent_baud:
        ratio = max(1, round(sent_baud / line_baud))
        return bytes(
            (sum(data[i : i + ratio]) * 151 & 0x7F) | 0x80 for i in range(0, len(data), ratio)
        )
    ratio = max(1, round(line_baud / sent_baud))
    out = bytearray()
    for b in data:
        zero_bits = 1 + (7 - (b & 0x7F).bit_count())  # start bit + zero data bits
        out += b"\x00" * max(1, ratio * zero_bits // 10)
    return bytes(out)


class PtyMeter:
    """A virtual meter behind a pty; the gateway opens :attr:`path`.

    The master is in packet mode (TIOCPKT) and the slave has EXTPROC, so each
    ``tcsetattr`` by the gateway arrives as a control packet; the slave's speed is then
    read with ``tcgetattr`` and recorded in :attr:`bauds_seen` (the kernel keeps one
    pending status, so changes in quick succession show up once, with the last speed).
    Data packets are passed
    to the session only if the gateway's line speed is the meter's rate (or was, less
    than 50 ms before: a pty reports a speed change before the bytes written just before
    it, and a correct client writes the ACK at 300 Bd and switches right after).  Bytes at
    the wrong rate are dropped, as a real meter would see only garbage; what the meter
    sends while the line is at another rate is garbled (see ``_garble``).

    7E1 cannot be emulated: the kernel forces CS8 and clears PARENB on a pty, so the
    meter sends 7-bit characters unless its session sets ``parity``.  A consequence for
    clients: glibc's ``tcsetattr`` reports EINVAL when the CS7/PARENB it asked for did
    not stick and nothing else changed, so on a pty a 7E1 port must not be reconfigured
    without changing its speed (pyserial: no ``timeout`` changes on the open port, no
    ``baudrate`` set to the current value, no reopen at the speed the pty already has).

    The simulator keeps its own slave fd open, so the master never reads EIO when the
    gateway closes the port, and a reopened port works; should EIO still occur the
    reader backs off and retries.
    """

    def __init__(
        self,
        session_factory: Callable[[], MeterSession],
        *,
        link: str | None = None,
        on_baud: Callable[[int], object] | None = None,
    ) -> None:
        self._factory = session_factory
        self._on_baud = on_baud
        self.master, self._slave, self.tty = open_pty()
        self.link = link
        try:
            attrs = termios.tcgetattr(self._slave)
            attrs[3] |= _EXTPROC
            attrs[4] = attrs[5] = termios.B300
            termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
            fcntl.ioctl(self.master, termios.TIOCPKT, struct.pack("i", 1))
            self.path = link_pty(self.tty, link)
        except BaseException:
            self.close()
            raise
        self.bauds_seen: list[int] = []  # every speed the gateway set, in order
        self.dropped_rx = 0  # bytes received at the wrong rate
        self.garbled_tx = 0  # bytes sent while the gateway was at the wrong rate
        self._baud = INITIAL_BAUD  # the meter's own UART rate
        self._line = self.line_baud()  # the gateway's speed, as last reported
        self._recent: list[tuple[int, float]] = []  # (earlier speed, accepted until)
        self._queue: asyncio.Queue[bytes] | None = None
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        link = getattr(self, "link", None)  # close() also runs from a failed __init__
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)

    def line_baud(self) -> int:
        """The speed the gateway has set on its end (0 if unknown)."""
        return _SPEEDS.get(termios.tcgetattr(self._slave)[5], 0)

    def _on_readable(self) -> None:
        # Drain everything pending in one go: a speed change and bytes written before it
        # are then handled together (see _accepts).
        for _ in range(64):
            try:
                packet = os.read(self.master, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # nobody has the slave open (cannot happen while we hold it): retry later
                loop = asyncio.get_running_loop()
                loop.remove_reader(self.master)
                loop.call_later(0.1, loop.add_reader, self.master, self._on_readable)
                return
            if not packet:
                return
            if packet[0] != 0:  # TIOCPKT control packet
                if packet[0] & _TIOCPKT_IOCTL:
                    self._speed_changed()
                continue
            data = packet[1:]
            if self._accepts(self._baud):
                if self._queue is not None:
                    self._queue.put_nowait(data)
            else:
                self.dropped_rx += len(data)
                log.debug(
                    "dropped %d bytes sent at %d Bd (meter at %d)",
                    len(data),
                    self._line,
                    self._baud,
                )

    def _speed_changed(self) -> None:
        speed = self.line_baud()
        now = time.monotonic()
        # the previous speed stays acceptable for a moment: a pty reports a speed change
        # before the bytes the gateway wrote just before it (they pass through the tty
        # flip buffer), and a correct client writes ACK at 300 Bd, then switches at once
        self._recent = [(b, t) for b, t in self._recent if t > now] + [(self._line, now + _GRACE_S)]
        self._line = speed
        self.bauds_seen.append(speed)
        log.debug("gateway set %d Bd", speed)
        if self._on_baud is not None:
            self._on_baud(speed)

    def _accepts(self, baud: int) -> bool:
        now = time.monotonic()
        return baud == self._line or any(b == baud and t > now for b, t in self._recent)

    def _write(self, data: bytes) -> None:
        line = self.line_baud()
        if line != self._baud:
            self.garbled_tx += len(data)
            data = _garble(data, self._baud, line)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                return  # nobody reads: the rest is lost, as on a real line
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            view = view[n:]

    async def _execute(self, actions: list[SimAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._write(action.data)
            elif isinstance(action, SwitchBaud):
                self._baud = action.baud
            else:
                await asyncio.sleep(action.seconds)

    async def serve(self) -> None:
        """Answer the gateway until cancelled."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queue = queue
        session = self._factory()
        self._baud = session.initial_baud
        loop.add_reader(self.master, self._on_readable)
        try:
            await _drive(session, queue.get, self._execute, loop)
        finally:
            loop.remove_reader(self.master)
            self._queue = None


async def _drive(
    session: MeterSession,
    receive: Callable[[], Awaitable[bytes]],
    execute: Callable[[list[SimAction]], Awaitable[None]],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The pump: received bytes and due deadlines in, actions out, until EOF (b"")."""
    while True:
        deadline = session.deadline()
        if deadline is not None and deadline <= loop.time():
            await execute(session.on_timeout(now=loop.time()))
            continue
        try:
            async with asyncio.timeout_at(deadline):
                data = await receive()
        except TimeoutError:
            continue
        if not data:
            return
        await execute(session.feed(data, now=loop.time()))


async def serve_pty(
    session_factory: Callable[[], MeterSession],
    *,
    link: str | None = None,
    on_ready: Callable[[str], object] | None = None,
    on_baud: Callable[[int], object] | None = None,
) -> None:
    """Run a virtual meter on a new pty until cancelled.

    ``on_ready(path)`` is called with the port to open (``link`` if given, which is
    created as a symlink to the pty, else the pty's own name); ``on_baud(baud)`` with
    every speed the gateway sets.
    """
    with PtyMeter(session_factory, link=link, on_baud=on_baud) as meter:
        if on_ready is not None:
            on_ready(meter.path)
        await meter.serve()


async def serve_tcp(
    session_factory: Callable[[], MeterSession],
    host: str,
    port: int,
    *,
    on_ready: Callable[[int], object] | None = None,
) -> None:
    """Serve a virtual meter to each TCP client (``socket://host:port``) until cancelled.

    Each connection gets its own session.  There is no baud rate on TCP: SwitchBaud is
    ignored, the reaction time is kept.  ``on_ready(port)`` gets the bound port (useful
    with port 0).
    """
    loop = asyncio.get_running_loop()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = session_factory()

        async def execute(actions: list[SimAction]) -> None:
            for action in actions:
                if isinstance(action, Send):
                    writer.write(action.data)
                    await writer.drain()
                elif isinstance(action, Wait):
                    await asyncio.sleep(action.seconds)

        try:
            await _drive(session, lambda: reader.read(4096), execute, loop)
        except ConnectionError:
            pass  # the gateway went away: nothing to clean up but the socket
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port)
    async with server:
        if on_ready is not None:
            on_ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()
