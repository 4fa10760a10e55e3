"""A virtual wired M-Bus: N slave meters behind one port (pty or TCP).

Two halves, as for the other virtual meters:

* :class:`VirtualBus` is sans-IO.  ``handle(data, now)`` takes what the master wrote
  and returns ``(when, bytes)`` replies.  Every slave (:class:`SimMeter`) keeps its own
  link state: primary address, secondary address and selection, FCB memory (a request
  with the same FCB as the last one gets the last telegram again), and a multi-telegram
  readout position (the gas meters send their monthly history in a second telegram
  after "more records follow").  Slaves answer SND_NKE, REQ_UD2, REQ_UD1 (E5: no class 1
  data), SND_UD selections (CI 52, wildcards included), address changes (CI 51 with VIF
  7A), application reset (CI 50) and baud rate switches (CI B8..BF, ACK at the old
  rate).  Replies are timed from bits on the wire: the request's transmission time,
  the slave's turnaround (11 bit times + a per-slave jitter), the reply's transmission
  time, all at 11 bits per character at the bus baud rate; a pty has no baud timing, so
  the bus writes each reply at the moment its last bit would arrive.
* When several slaves answer at once, their UART bit streams are combined the way the
  bus combines them (a "0" from any slave wins, as the master sees the largest current
  draw) and read back by a UART: the result is garbage (or, for identical E5s at the
  same instant, a clean E5, as on a real bus).  That is what the master's collision
  handling has to cope with.
* :func:`serve_pty` / :func:`serve_tcp` carry the replies out at their times.

The meters (heat, water, electricity, gas) have values that change with time: energy
and volume registers integrate a slowly varying demand, temperatures follow it, the
meter clock is the wall clock (or ``clock``).  Secondary ids are chosen so that some
share their first digits (``12345678``/``12345679``): a wildcard search has to resolve
collisions down to the last digit.

Not simulated: REQ_UD1 alarm data, electrical faults other than collisions, slaves
that need SND_NKE before answering, encrypted meters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from gateway.errors import ConfigError, LocalProtocolError
from gateway.protocols.mbus import app, link
from gateway.protocols.mbus.app import SecondaryAddress, encode_bcd, encode_date_f, encode_date_g
from gateway.protocols.mbus.link import (
    ADDRESS_BROADCAST,
    ADDRESS_SELECTED,
    ADDRESS_TEST,
    FrameScanner,
)
from gateway.protocols.mbus.master import BITS_PER_CHAR, TURNAROUND_MIN_BITS
from gateway.protocols.mbus.tables import encode_manufacturer
from gateway.sim.runner import PtyMeter

__all__ = [
    "Kind",
    "SimMeter",
    "VirtualBus",
    "make_bus",
    "run_cli",
    "serve_pty",
    "serve_tcp",
    "wire_merge",
]

Kind = Literal["heat", "water", "electricity", "gas"]
_KINDS: Final[tuple[Kind, ...]] = ("heat", "water", "electricity", "gas")
_MEDIUM: Final = {"heat": 0x04, "water": 0x07, "electricity": 0x02, "gas": 0x03}
_MAKERS: Final = {"heat": "LUG", "water": "SEN", "electricity": "ABB", "gas": "ELS"}

Clock = Callable[[], datetime]


def _rec(coding: str, data: bytes) -> bytes:
    return bytes.fromhex(coding) + data


def _i(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=True)


# ------------------------------------------------------------------ meters
_FUNCTION: Final = 0xCF  # the C field without FCB and FCV
@dataclass(eq=False)
class SimMeter:
    """One slave on the virtual bus."""

    primary: int
    address: SecondaryAddress
    kind: Kind
    turnaround_bits: int = TURNAROUND_MIN_BITS
    seed: int = 0
    clock: Clock = datetime.now
    selected: bool = False
    last_fcb: bool | None = False  # after power-up / SND_NKE: FCB = 1 is a new request
    last_reply: bytes | None = None
    next_telegram: int = 0
    access: int = 0
    reads: int = 0  # telegrams sent (new ones, not repeats)
    _rng: random.Random = field(init=False, repr=False)
    _t: float | None = field(default=None, init=False, repr=False)
    _energy_wh: float = field(default=0.0, init=False, repr=False)
    _energy2_wh: float = field(default=0.0, init=False, repr=False)
    _volume_l: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._energy_wh = 1_000_000 + self._rng.randrange(50_000_000)
        self._energy2_wh = 500_000 + self._rng.randrange(20_000_000)
        self._volume_l = 10_000 + self._rng.randrange(2_000_000)

    # -------------------------------------------------------- behaviour
    def demand(self, t: float) -> float:
        """0..1: a day curve plus noise, different per meter."""
        phase = (self.seed % 97) / 97 * 2 * math.pi
        day = 0.5 + 0.4 * math.sin(2 * math.pi * t / 86400 + phase)
        return max(0.0, min(1.0, day + self._rng.uniform(-0.1, 0.1)))

    def _advance(self, t: float) -> float:
        """Integrate the registers up to ``t``; returns the current demand."""
        d = self.demand(t)
        if self._t is not None and t > self._t:
            dt_h = (t - self._t) / 3600
            peak_w = {"heat": 15_000, "water": 0, "electricity": 6_000, "gas": 0}[self.kind]
            self._energy_wh += peak_w * d * dt_h
            self._energy2_wh += peak_w * 0.2 * d * dt_h
            flow_lph = {"heat": 800, "water": 300, "electricity": 0, "gas": 2_000}[self.kind]
            self._volume_l += flow_lph * d * dt_h
        self._t = t
        return d

    def telegrams(self, t: float) -> list[bytes]:
        """The application data (after CI 72) of each telegram of one readout at ``t``."""
        d = self._advance(t)
        now = self.clock()
        clock = encode_date_f(now.year, now.month, now.day, now.hour, now.minute)
        fab = _rec("0C78", bytes.fromhex(self.address.id)[::-1])  # the id digits as BCD
        if self.kind == "heat":
            power_w = int(15_000 * d)
            flow = int(800 * d)  # l/h = 10^-3 m³/h
            t_flow = 550 + int(200 * d)  # 0.1 °C
            t_ret = t_flow - 50 - int(150 * d)
            month_start = encode_date_g(now.year, now.month, 1)
            records = [
                fab,
                _rec("0C06", encode_bcd(int(self._energy_wh / 1000), 4)),  # kWh
                _rec("0C14", encode_bcd(int(self._volume_l / 10), 4)),  # 10^-2 m³
                _rec("0B2D", encode_bcd(power_w // 100, 3)),  # 10^2 W
                _rec("0B3B", encode_bcd(flow, 3)),  # 10^-3 m³/h
                _rec("0A5A", encode_bcd(t_flow, 2)),
                _rec("0A5E", encode_bcd(t_ret, 2)),
                _rec("0B61", encode_bcd((t_flow - t_ret) * 10, 3)),  # 10^-2 K
                _rec("046D", clock),
                _rec("4C06", encode_bcd(int(self._energy_wh / 1000 * 0.9), 4)),  # storage 1
                _rec("426C", month_start),
                _rec("02FD17", _i(0, 2)),  # error flags
            ]
            return [b"".join(records)]
        if self.kind == "water":
            return [b"".join([
                fab,
                _rec("0413", _i(int(self._volume_l), 4)),  # 10^-3 m³
                _rec("023B", _i(int(300 * d), 2)),  # 10^-3 m³/h
                _rec("046D", clock),
                _rec("4413", _i(int(self._volume_l * 0.95), 4)),
                _rec("426C", encode_date_g(now.year, 1, 1)),
                _rec("01FD17", _i(0, 1)),
            ])]  # fmt: skip
        if self.kind == "electricity":
            volts = [2300 + int(self._rng.uniform(-40, 40)) for _ in range(3)]
            records = [
                _rec("8C1004", encode_bcd(int(self._energy_wh / 10), 4)),  # T1, 10 Wh
                _rec("8C2004", encode_bcd(int(self._energy2_wh / 10), 4)),  # T2
                _rec("042B", _i(int(6_000 * d), 4)),  # W
            ]
            for phase, v in enumerate(volts, 1):
                # FD 48: voltage 10^-1 V; VIFE 7C + phase (EN 13757-3:2013 extension)
                records.append(_rec(f"02FDC8FC{phase:02X}", _i(v, 2)))
            records.append(_rec("046D", clock))
            return [b"".join(records)]
        # gas: the current values, then 12 months of history after "more records follow"
        first = b"".join([
            fab,
            _rec("0C13", encode_bcd(int(self._volume_l), 4)),  # 10^-3 m³
            _rec("046D", clock),
            _rec("02FD17", _i(0, 2)),
        ]) + b"\x1f"  # fmt: skip
        history = []
        for m in range(1, 13):
            month = (now.replace(day=1) - timedelta(days=31 * (m - 1))).replace(day=1)
            storage = m
            dife = f"{(storage >> 1) & 0x0F:02X}"
            dif_s = 0x40 if storage & 1 else 0x00
            history.append(_rec(f"{0x82 | dif_s:02X}{dife}6C", encode_date_g(month.year, month.month, 1)))
            history.append(
                _rec(f"{0x8C | dif_s:02X}{dife}13", encode_bcd(int(self._volume_l * (1 - 0.02 * m)), 4))
            )
        return [first, b"".join(history)]

    def rsp_ud(self, payload: bytes) -> bytes:
        self.access = (self.access + 1) & 0xFF
        header = app.Header(address=self.address, access_number=self.access, status=0, signature=0)
        frame = link.LongFrame(control=link.C_RSP_UD, address=self.primary, ci=app.CI_VARIABLE,
                               data=header.encode() + payload)  # fmt: skip
        return frame.encode()

    # ------------------------------------------------------------- link
    def _fcb_new(self, control: int) -> bool:
        """Whether a request with this C field is new (not a repeat), and note its FCB."""
        if not control & link.FCV:
            return True
        fcb = bool(control & link.FCB)
        new = fcb != self.last_fcb or self.last_reply is None
        self.last_fcb = fcb
        return new

    def addressed(self, address: int) -> bool:
        if address == ADDRESS_SELECTED:
            return self.selected
        return address in (self.primary, ADDRESS_TEST, ADDRESS_BROADCAST)

    def on_frame(self, frame: link.Frame, t: float) -> bytes | None:
        """The reply to one master frame (None: silent)."""
        if isinstance(frame, link.ShortFrame):
            if not self.addressed(frame.address):
                return None
            function = frame.control & _FUNCTION
            if frame.control == link.C_SND_NKE:
                self.last_fcb = False
                self.last_reply = None
                self.next_telegram = 0
                return None if frame.address == ADDRESS_BROADCAST else b"\xe5"
            if function == link.C_REQ_UD2 & _FUNCTION:
                if frame.address == ADDRESS_BROADCAST:
                    return None
                if not self._fcb_new(frame.control) and self.last_reply is not None:
                    return self.last_reply  # the master missed it: the same telegram again
                telegrams = self.telegrams(t)
                index = self.next_telegram if self.next_telegram < len(telegrams) else 0
                self.next_telegram = index + 1 if index + 1 < len(telegrams) else 0
                self.last_reply = self.rsp_ud(telegrams[index])
                self.reads += 1
                return self.last_reply
            if function == link.C_REQ_UD1 & _FUNCTION:
                return None if frame.address == ADDRESS_BROADCAST else b"\xe5"
            return None
        if not isinstance(frame, link.LongFrame) or frame.control & _FUNCTION != link.C_SND_UD & _FUNCTION:
            return None
        if frame.ci == link.CI_SELECT and frame.address == ADDRESS_SELECTED:
            if len(frame.data) != 8:
                return None
            mask = SecondaryAddress.decode(frame.data)
            self.selected = mask.matches(self.address)
            if self.selected:
                self._fcb_new(frame.control)
                return b"\xe5"
            return None
        if not self.addressed(frame.address):
            return None
        self._fcb_new(frame.control)
        silent = frame.address == ADDRESS_BROADCAST
        if frame.ci == 0x51 and frame.data[:2] == b"\x01\x7a" and len(frame.data) == 3:
            self.primary = frame.data[2]  # set primary address (DIF 01 VIF 7A)
        elif frame.ci == 0x50:
            self.next_telegram = 0
        return None if silent else b"\xe5"


# --------------------------------------------------------------------- bus
def wire_merge(replies: list[tuple[float, bytes]], baud: int) -> bytes:
    """What a UART reads when these replies (start time, bytes) overlap on the bus.

    Each character is 11 bits (start 0, 8 data LSB first, even parity, stop 1); the
    line is at 1 when idle and 0 whenever any slave sends a 0.  The receiver looks for
    a start bit, samples 8 data bits and skips parity and stop, as a UART does.
    """
    t0 = min(t for t, _ in replies)
    streams = [(round((t - t0) * baud), data) for t, data in replies]
    length = max(off + BITS_PER_CHAR * len(data) for off, data in streams)
    line = bytearray(b"\x01") * (length + BITS_PER_CHAR)
    for off, data in streams:
        pos = off
        for byte in data:
            parity = byte.bit_count() & 1
            bits = (0, *((byte >> k) & 1 for k in range(8)), parity, 1)
            for b in bits:
                if not b:
                    line[pos] = 0
                pos += 1
    out = bytearray()
    i = 0
    while i < length:
        if line[i]:
            i += 1
            continue
        out.append(sum(line[i + 1 + k] << k for k in range(8)))
        i += BITS_PER_CHAR - 1  # resynchronise on the next falling edge after parity
    return bytes(out)


class VirtualBus:
    """All slaves on one line (sans-IO).  ``handle`` returns (time, bytes) to write."""

    CHUNK: Final = 16  # bytes per delivered piece of a reply

    def __init__(self, meters: list[SimMeter], *, baud: int = 2400) -> None:
        self.meters = meters
        self.baud = baud
        self._scanner = FrameScanner()
        self.requests = 0
        self.collisions = 0

    def tx_s(self, n_bytes: int) -> float:
        return n_bytes * BITS_PER_CHAR / self.baud

    def handle(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """The master wrote ``data`` (its last byte reached us at ``now``)."""
        out: list[tuple[float, bytes]] = []
        for item in self._scanner.feed(data):
            if not isinstance(item, tuple):
                continue  # line noise: slaves ignore it
            frame, _at, raw = item
            if isinstance(frame, (link.ShortFrame, link.LongFrame)) and not frame.from_master:
                continue
            self.requests += 1
            # The request occupies the line for its transmission time; slaves answer
            # their turnaround time after its last bit.
            end = now + self.tx_s(len(raw))
            baud_before = self.baud
            replies: list[tuple[float, bytes]] = []
            for m in self.meters:
                reply = m.on_frame(frame, now)
                if reply is not None:
                    replies.append((end + m.turnaround_bits / baud_before, reply))
            if isinstance(frame, link.LongFrame) and frame.ci in link.CI_BAUD.values() and replies:
                self.baud = {v: k for k, v in link.CI_BAUD.items()}[frame.ci]
            if not replies:
                continue
            if len(replies) == 1:
                start, reply = replies[0]
            else:
                self.collisions += 1
                start = min(s for s, _ in replies)
                reply = wire_merge(replies, baud_before)
            # Hand the reply over in pieces, each when its last bit has arrived, as a
            # UART with a small FIFO would: the master sees the reply start in time.
            for i in range(0, len(reply), self.CHUNK):
                piece = reply[i : i + self.CHUNK]
                out.append((start + (i + len(piece)) * BITS_PER_CHAR / baud_before, piece))
        return out


def make_ids(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct 8-digit ids; about a third share 7 digits with another one and the
    first two are 12345678/12345679, so a wildcard search meets collisions at every depth."""
    rng = random.Random(seed)
    ids: list[str] = []
    fixed = ["12345678", "12345679", "87654321", "12340000"]
    while len(ids) < n:
        if fixed:
            candidate = fixed.pop(0)
        elif ids and rng.random() < 0.33:
            base = rng.choice(ids)
            candidate = base[:7] + str(rng.randrange(10))
        else:
            candidate = f"{rng.randrange(10**8):08d}"
        if candidate not in ids:
            ids.append(candidate)
    return ids


def make_bus(
    n: int = 3,
    *,
    baud: int = 2400,
    seed: int = 1,
    kinds: tuple[Kind, ...] = _KINDS,
    primary: Literal["sequential", "zero"] = "sequential",
    jitter_bits: int = 10,
    ids: list[str] | None = None,
    clock: Clock = datetime.now,
) -> VirtualBus:
    """A bus of ``n`` meters (kinds in turn), primary addresses 1..n (or all 0).

    Raises:
        LocalProtocolError: bad sizes, kinds or ids.
    """
    if not 1 <= n <= 250 * 40:
        raise LocalProtocolError("a virtual bus has 1..10000 meters")
    if primary == "sequential" and n > 250:
        raise LocalProtocolError("more than 250 meters need primary=zero (secondary addressing)")
    id_list = ids if ids is not None else make_ids(n, seed)
    if len(id_list) < n:
        raise LocalProtocolError(f"{n} meters need {n} ids, got {len(id_list)}")
    meters: list[SimMeter] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        address = SecondaryAddress(
            id=id_list[i].upper(),
            manufacturer=encode_manufacturer(_MAKERS[kind]),
            version=1 + i % 7,
            medium=_MEDIUM[kind],
        )
        meters.append(SimMeter(
            primary=i + 1 if primary == "sequential" else 0,
            address=address,
            kind=kind,
            turnaround_bits=TURNAROUND_MIN_BITS + (i * 7) % (jitter_bits + 1),
            seed=seed * 1000 + i,
            clock=clock,
        ))  # fmt: skip
    return VirtualBus(meters, baud=baud)


# ---------------------------------------------------------------------- I/O
async def serve_pty(
    bus: VirtualBus, *, link_path: str | None = None, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run the bus on a new pty until cancelled (the pty and its link are removed then)."""
    meter = PtyMeter(link_path)
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []

    def readable() -> None:
        try:
            data = os.read(meter.master, 4096)
        except (BlockingIOError, OSError):
            return
        now = loop.time()
        for at, reply in bus.handle(data, now):
            handles.append(loop.call_at(at, meter.write, reply))
        if len(handles) > 64:
            handles[:] = [h for h in handles if not h.cancelled() and h.when() > now]

    loop.add_reader(meter.master, readable)
    try:
        if on_ready is not None:
            on_ready(meter.path)
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(meter.master)
        for h in handles:
            h.cancel()
        meter.close()


async def serve_tcp(
    bus: VirtualBus, host: str, port: int, *, started: asyncio.Event | None = None
) -> None:
    """The bus behind a TCP port (as an M-Bus-to-Ethernet gateway offers it)."""
    loop = asyncio.get_running_loop()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while data := await reader.read(4096):
                for at, reply in bus.handle(data, loop.time()):
                    loop.call_at(at, send, reply)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port)
    if started is not None:
        started.set()
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------- CLI
_OPTION_KEYS: Final = ("meters", "baud", "seed", "kinds", "primary", "jitter", "ids")


def bus_from_options(opts: dict[str, str]) -> VirtualBus:
    """``--option`` keys: meters=N (3), baud=2400, seed=1, kinds=heat,water,electricity,gas,
    primary=sequential|zero, jitter=BITS (10: extra turnaround per slave, 0..jitter),
    ids=12345678,12345679,… (default: generated, some sharing digits).

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    unknown = sorted(set(opts) - set(_OPTION_KEYS))
    if unknown:
        message = f"unknown key(s) {', '.join(unknown)}; expected {', '.join(_OPTION_KEYS)}"
        raise ConfigError([("(command line)", "--option", message)])
    try:
        names = [k.strip() for k in opts.get("kinds", ",".join(_KINDS)).split(",") if k.strip()]
        if not names or any(k not in _KINDS for k in names):
            raise ValueError(f"kinds must be among {', '.join(_KINDS)}")
        kinds = tuple(cast(Kind, k) for k in names)
        primary = opts.get("primary", "sequential")
        if primary not in ("sequential", "zero"):
            raise ValueError("primary must be sequential or zero")
        baud = int(opts.get("baud", "2400"))
        if baud not in link.CI_BAUD:
            raise ValueError(f"baud must be one of {', '.join(map(str, link.CI_BAUD))}")
        ids = [i.strip() for i in opts["ids"].split(",")] if "ids" in opts else None
        return make_bus(
            int(opts.get("meters", "3")),
            baud=baud,
            seed=int(opts.get("seed", "1")),
            kinds=kinds,
            primary="zero" if primary == "zero" else "sequential",
            jitter_bits=int(opts.get("jitter", "10")),
            ids=ids,
        )
    except (ValueError, LocalProtocolError) as exc:
        raise ConfigError([("(command line)", "--option", str(exc))]) from exc


def _listen(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise ConfigError([("(command line)", "--listen", "expected tcp://HOST:PORT")])
    return parts.hostname, parts.port


def describe(bus: VirtualBus) -> str:
    prim = [m.primary for m in bus.meters]
    addressing = (f"primary {min(prim)}-{max(prim)}" if any(prim) else "primary 0 (all)")
    return (f"{len(bus.meters)} meters, {bus.baud} Bd, {addressing}, secondary "
            + ", ".join(m.address.id for m in bus.meters[:6])
            + (" …" if len(bus.meters) > 6 else ""))  # fmt: skip


async def run_cli(args: argparse.Namespace) -> int:
    """``han-gateway simulate-meter --protocol mbus (--pty [--link P] | --listen URL)``."""
    from gateway.sim.cli import options

    bus = bus_from_options(options(args))
    if args.pty:
        def ready(path: str) -> None:
            print(f"virtual M-Bus meter on {path} ({describe(bus)})", flush=True)

        await serve_pty(bus, link_path=args.link, on_ready=ready)
    else:
        host, port = _listen(args.listen)
        started = asyncio.Event()
        task = asyncio.create_task(serve_tcp(bus, host, port, started=started))
        await started.wait()
        print(f"virtual M-Bus meter on socket://{host}:{port} ({describe(bus)})", flush=True)
        await task
    return 0
