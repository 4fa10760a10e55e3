"""The M-Bus master's side of the dialog (EN 13757-2/-3), sans-IO.

:class:`MasterSession` runs one *operation* at a time and asks for I/O with events:
``Send(data)`` to write, ``deadline()``/``on_timeout(now)`` for timers, ``feed(data,
now)`` for what the port returned.  Operations:

* :meth:`MasterSession.read`: read one slave by primary address (``SND_NKE`` once, then
  ``REQ_UD2``) or by secondary address (selection ``SND_UD`` to 253 with CI 52, then
  ``REQ_UD2`` to 253), following "more records follow" (DIF 1F) with further
  ``REQ_UD2`` while toggling the FCB, up to ``max_telegrams``.  A missing or garbled
  reply is asked for again with the *same* FCB, so the slave repeats its last telegram
  (EN 13757-2 / IEC 60870-5-2 frame count bit; MBUS_FACTS §1 "FCB"), up to ``retries``
  times; then :class:`ReadFailed`.  ``DeviceRead`` carries every telegram.
* :meth:`MasterSession.send_ud`: SND_UD with the FCB (set a primary address with CI 51
  ``01 7A nn``, application reset CI 50 …; to 255 as a broadcast without answer) and
  :meth:`MasterSession.switch_baud` (CI B8..BF, then :class:`SetBaudrate`).
* :meth:`MasterSession.scan_primary`: ``SND_NKE`` to each primary address; an ``E5``
  means a slave, a garbled answer two slaves on one address (:class:`Collision`).  Each
  slave found is identified with a ``REQ_UD2``.
* :meth:`MasterSession.scan_secondary`: the wildcard search (libmbus
  ``mbus_scan_2nd_address_range``, jMBus ``ScanSecondaryAddress``): select the mask
  with the first wildcard digit set to 0..9; silence = no slave, a garbled answer = a
  collision, so fix the next digit and search again; a clean ``E5`` is confirmed with a
  ``REQ_UD2``, whose answer must be one clean RSP_UD (two slaves whose ``E5`` overlap
  exactly still garble their RSP_UDs).  :class:`ScanProgress` reports the fraction of
  the id space searched.

Timing, from bits on the wire (11 bits per character at 8E1, MBUS_FACTS §1): a slave
answers 11 to 330 bit times + 50 ms after the request ends, so the reply timeout is
``transmission(request) + (330 bits)/baud + 50 ms + timeout_margin_s`` (converters and
TCP gateways add latency: the margin).  The master leaves the line idle for 33 bit
times after a reply before the next request.

An ``E5`` ends its exchange at once: a second slave's ``E5`` arriving more than a
few characters later is not waited for (that would cost a full reply window per probe);
the ``REQ_UD2`` that confirms every scan hit catches such collisions instead.

Not implemented: REQ_UD1 polling of class 1 data (the ACD bit is not followed), the
alarm protocol, resolving collisions of slaves that share all 8 id digits (reported as
:class:`Collision`; they differ only in manufacturer, version or medium), checking the
A field of a primary RSP_UD against the address asked.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gateway.errors import (
    GatewayError,
    LocalProtocolError,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
)
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import app, link
from gateway.protocols.mbus.app import SecondaryAddress
from gateway.protocols.mbus.decoder import frame_header
from gateway.protocols.mbus.link import ADDRESS_SELECTED, FrameScanner, LongFrame, SingleChar

__all__ = [
    "BITS_PER_CHAR",
    "Collision",
    "CommandDone",
    "CommandFailed",
    "DeviceFound",
    "DeviceRead",
    "MasterEvent",
    "MasterSession",
    "ReadFailed",
    "Retrying",
    "ScanDone",
    "ScanProgress",
    "Send",
    "SessionState",
    "SetBaudrate",
    "Target",
    "cycle_time_s",
    "reply_timeout_s",
    "select_frame",
    "transmission_time_s",
]

BITS_PER_CHAR: Final = 11  # start + 8 data + even parity + stop
TURNAROUND_MIN_BITS: Final = 11  # slave reply starts ≥ 11 bit times after the request
TURNAROUND_MAX_BITS: Final = 330  # … and ≤ 330 bit times + 50 ms
TURNAROUND_EXTRA_S: Final = 0.050
IDLE_BITS: Final = 33  # line idle between telegrams (mbus4j, "M-Bus doc 5.4")
QUIET_CHARS: Final = 24  # silence that ends a garbled or cut reply (see _quiet_s)

Target = int | SecondaryAddress


def transmission_time_s(n_bytes: int, baud: int) -> float:
    """Time ``n_bytes`` take on the wire at ``baud`` (11 bits each)."""
    return n_bytes * BITS_PER_CHAR / baud


def reply_timeout_s(baud: int, margin_s: float = 0.0) -> float:
    """Longest wait for the first reply byte after the request has left the line."""
    return TURNAROUND_MAX_BITS / baud + TURNAROUND_EXTRA_S + margin_s


def cycle_time_s(request_bytes: int, reply_bytes: int, baud: int) -> float:
    """Shortest request/response cycle the standard allows: request, 11 bit times
    turnaround, reply, 33 bit times idle before the next request."""
    bits = (request_bytes + reply_bytes) * BITS_PER_CHAR + TURNAROUND_MIN_BITS + IDLE_BITS
    return bits / baud


def select_frame(mask: SecondaryAddress) -> LongFrame:
    """``68 0B 0B 68 53 FD 52 <8 address bytes> CS 16`` (FCB = 0, see the module doc)."""
    return link.snd_ud(ADDRESS_SELECTED, link.CI_SELECT, mask.encode(), fcb=False)


# ------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write these bytes to the bus."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBaudrate:
    """Switch the port to ``baud`` once the bytes sent before have left the UART (the
    slave acknowledged the switch at the old rate and listens at the new one now)."""

    baud: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandDone:
    """The slave acknowledged a SND_UD (``E5``); for a broadcast, the frame went out."""

    target: Target
    ci: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFailed:
    """A SND_UD got no (or a garbled) acknowledgement after the retries."""

    target: Target
    ci: int
    error: GatewayError
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRead:
    """A complete read: every telegram of the slave in order (``(frame, response)``)."""

    target: Target
    telegrams: tuple[tuple[LongFrame, app.Response], ...]
    raw: bytes  # the telegrams' bytes as received, joined


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadFailed:
    """A read gave up.  ``error``: ``ReadTimeout`` (no answer), ``RemoteProtocolError``
    (garbled or wrong answers), ``MbusApplicationError`` (the slave refused)."""

    target: Target
    error: GatewayError
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Retrying:
    """Attempt ``attempt`` of an exchange with ``target`` failed; the next one follows."""

    target: Target | str
    attempt: int
    error: GatewayError


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFound:
    """A scan found a slave.  ``secondary`` is None when it did not answer REQ_UD2
    (or sent no long header); ``primary`` is None in a secondary scan unless the reply
    said it (the RSP_UD's address field)."""

    primary: int | None
    secondary: SecondaryAddress | None
    header: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Collision:
    """Several slaves answered at once and could not be told apart: two slaves on one
    primary address, or (secondary scan) sharing all 8 id digits."""

    primary: int | None = None
    mask: SecondaryAddress | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanProgress:
    """``fraction`` of the address space searched (0..1), ``probes`` requests sent so far."""

    fraction: float
    probes: int
    found: int
    current: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanDone:
    found: tuple[DeviceFound, ...]
    collisions: tuple[Collision, ...]
    probes: int


MasterEvent = (
    Send | SetBaudrate | DeviceRead | ReadFailed | CommandDone | CommandFailed | Retrying
    | DeviceFound | Collision | ScanProgress | ScanDone | Discarded
)


class SessionState(enum.Enum):
    IDLE = "idle"  # no operation running
    GAP = "gap"  # waiting for the idle time before sending the next request
    WAIT_REPLY = "wait_reply"  # request sent, reply window open


# --------------------------------------------------------------- internals
Expect = Literal["ack", "rsp", "none"]


@dataclass(frozen=True, slots=True)
class _Request:
    data: bytes
    expect: Expect


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: Literal["ok", "timeout", "garbled"]
    frame: LongFrame | None = None
    raw: bytes = b""
    error: GatewayError | None = None


_Op = Generator["_Request | MasterEvent", "_Outcome | None", None]


class MasterSession:
    """The master of one bus (sans-IO; time is passed in, one operation at a time).

    Driver loop: call an operation method (``read``/``scan_primary``/
    ``scan_secondary``), perform the returned ``Send`` events in order, pass bytes from
    the port to ``feed``, call ``on_timeout`` once ``deadline()`` has passed; the
    operation is over when ``state`` is ``IDLE`` again.  Other events are results.

    The session remembers per slave the next FCB and which secondary address is
    selected, so a steady poll cycle costs one ``REQ_UD2`` per telegram.
    """

    def __init__(
        self,
        *,
        baud: int = 2400,
        retries: int = 3,
        timeout_margin_s: float = 0.1,
        max_telegrams: int = 16,
        scan_retries: int = 0,
    ) -> None:
        """Raises:
        LocalProtocolError: a setting is out of range.
        """
        if baud <= 0 or retries < 0 or scan_retries < 0 or timeout_margin_s < 0:
            raise LocalProtocolError("baud must be > 0; retries and margin ≥ 0")
        if not 1 <= max_telegrams <= 256:
            raise LocalProtocolError("max_telegrams must be 1..256")
        self.baud = baud
        self.retries = retries
        self.scan_retries = scan_retries
        self.timeout_margin_s = timeout_margin_s
        self.max_telegrams = max_telegrams
        self._state = SessionState.IDLE
        self._deadline: float | None = None
        self._op: _Op | None = None
        self._pending: _Request | None = None
        self._bus_free_at = 0.0
        self._scanner = FrameScanner()
        self._got: list[tuple[link.Frame, int, bytes]] = []
        self._garbled: ProtocolError | None = None
        self._received = 0
        self._fcb: dict[Target, bool] = {}  # next FCB per primary address / selected slave
        self._selected: SecondaryAddress | None = None
        self.probes = 0  # requests sent by scans

    # ------------------------------------------------------------ public
    @property
    def state(self) -> SessionState:
        return self._state

    def deadline(self) -> float | None:
        """When ``on_timeout`` is due (same clock as ``now``); None when idle."""
        return self._deadline

    @property
    def idle_s(self) -> float:
        return IDLE_BITS / self.baud

    def forget(self) -> None:
        """Forget FCB and selection state (after the port was reopened)."""
        self._fcb.clear()
        self._selected = None

    def read(self, target: Target, *, now: float) -> list[MasterEvent]:
        """Read one slave (primary address 0..250 or a full secondary address).

        Raises:
            LocalProtocolError: an operation is running, or a bad target.
        """
        self._check_target(target)
        return self._start(self._read(target), now)

    def send_ud(self, target: Target, ci: int, data: bytes = b"", *, now: float) -> list[MasterEvent]:
        """SND_UD to a slave (primary 0..250, 255 = broadcast, or a secondary address),
        e.g. CI 51 + ``01 7A 05`` to set primary address 5, CI 50 application reset.

        Raises:
            LocalProtocolError: an operation is running, or a bad target or payload.
        """
        self._check_target(target, broadcast=True)
        link.snd_ud(0, ci, data)  # raises now for a bad CI or payload size
        return self._start(self._command(target, ci, data, None), now)

    def switch_baud(self, target: Target, baud: int, *, now: float) -> list[MasterEvent]:
        """Switch a slave to another baud rate (CI B8..BF); on its ``E5`` (sent at the old
        rate) the session asks for :class:`SetBaudrate` and times everything at ``baud``.

        Raises:
            LocalProtocolError: an operation is running, or no CI for ``baud``.
        """
        self._check_target(target, broadcast=True)
        ci = link.baud_switch(0, baud).ci
        return self._start(self._command(target, ci, b"", baud), now)

    def _check_target(self, target: Target, *, broadcast: bool = False) -> None:
        if isinstance(target, int):
            if not (0 <= target <= 250 or (broadcast and target == link.ADDRESS_BROADCAST)):
                raise LocalProtocolError(f"primary address must be 0..250, got {target}")
        elif "F" in target.id:
            raise LocalProtocolError(f"cannot address the wildcard id {target.id}; scan it")

    def scan_primary(
        self, *, now: float, addresses: Sequence[int] = range(251), identify: bool = True
    ) -> list[MasterEvent]:
        """Ping every address in ``addresses`` with SND_NKE (see the module docstring).

        Raises:
            LocalProtocolError: an operation is running, or an address outside 0..250.
        """
        if any(not 0 <= a <= 250 for a in addresses):
            raise LocalProtocolError("primary addresses are 0..250")
        return self._start(self._scan_primary(tuple(addresses), identify), now)

    def scan_secondary(
        self, *, now: float, mask: SecondaryAddress | None = None, digits: str = "0123456789"
    ) -> list[MasterEvent]:
        """Wildcard search below ``mask`` (default: every id).

        ``digits``: the values tried for each id digit.  Ids are BCD, so 0-9 finds every
        conforming meter (libmbus and jMBus search these); ``"0123456789ABCDE"`` also
        finds ids with hex digits (some meters have them) at 1.5 times the probes.  F
        is the wildcard itself and cannot be searched for.

        Raises:
            LocalProtocolError: an operation is running, a mask without a wildcard digit,
                or bad ``digits``.
        """
        mask = mask or SecondaryAddress(id="FFFFFFFF")
        if "F" not in mask.id:
            raise LocalProtocolError("the mask must have at least one wildcard (F) id digit")
        if not digits or len(set(digits)) != len(digits) or not set(digits) <= set("0123456789ABCDE"):
            raise LocalProtocolError("digits must be distinct characters of 0-9 and A-E")
        return self._start(self._scan_secondary(mask, digits), now)

    def feed(self, data: bytes, *, now: float) -> list[MasterEvent]:
        """Bytes from the bus.  Outside a reply window they are stray and only counted."""
        if self._state is not SessionState.WAIT_REPLY:
            return [
                d for d in self._scanner.feed(data) if isinstance(d, Discarded)
            ] if data else []  # fmt: skip
        self._received += len(data)
        out: list[MasterEvent] = []
        assert self._pending is not None
        expect = self._pending.expect
        for item in self._scanner.feed(data) + self._scanner.flush_garbage():
            if isinstance(item, Discarded):
                out.append(item)
                if self._garbled is None:
                    self._garbled = item.error
                continue
            frame = item[0]
            if isinstance(frame, (link.ShortFrame, LongFrame)) and frame.from_master:
                continue  # a level converter echoing our own request
            self._got.append(item)
        if self._garbled is not None:
            # Collision or noise: wait until the line has been quiet for a moment, then
            # report the exchange as garbled (on_timeout).
            self._deadline = now + self._quiet_s()
            return out
        if self._scanner.pending:
            # A frame is arriving: wait for the rest (its length is in the header),
            # with the quiet time as slack for gaps in the transport.
            self._deadline = now + transmission_time_s(self._scanner.needed, self.baud) + self._quiet_s()
            return out
        if expect == "ack" and self._got:
            if len(self._got) == 1 and isinstance(self._got[0][0], SingleChar):
                return out + self._finish(_Outcome("ok"), now)
            return out + self._finish(self._bad("expected one E5"), now)
        if expect == "rsp" and self._got:
            frame = self._got[0][0]
            if len(self._got) == 1 and isinstance(frame, LongFrame) and frame.control & 0x0F == link.C_RSP_UD:
                return out + self._finish(_Outcome("ok", frame, self._got[0][2]), now)
            return out + self._finish(self._bad("expected one RSP_UD long frame"), now)
        return out

    def on_timeout(self, *, now: float) -> list[MasterEvent]:
        """Call when ``deadline()`` has passed; early calls do nothing."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._state is SessionState.GAP:
            assert self._pending is not None
            return self._send(self._pending, now)
        if self._state is SessionState.WAIT_REPLY:
            assert self._pending is not None
            if self._pending.expect == "none":
                return self._finish(_Outcome("ok"), now)
            if self._garbled is not None or self._scanner.pending or self._got:
                return self._finish(self._bad("incomplete or garbled reply"), now)
            heard = "nothing" if self._received == 0 else f"{self._received} bytes"
            error = ReadTimeout(f"no reply within {self._reply_timeout():.3f} s (heard {heard})")
            return self._finish(_Outcome("timeout", error=error), now)
        return []

    # ---------------------------------------------------------- engine
    def _start(self, op: _Op, now: float) -> list[MasterEvent]:
        if self._op is not None:
            raise LocalProtocolError(f"an operation is running (state {self._state.name})")
        self._op = op
        return self._advance(None, now)

    def _advance(self, value: _Outcome | None, now: float) -> list[MasterEvent]:
        assert self._op is not None
        out: list[MasterEvent] = []
        try:
            item = self._op.send(value)
            while not isinstance(item, _Request):
                out.append(item)
                item = self._op.send(None)
        except StopIteration:
            self._op = None
            self._pending = None
            self._state = SessionState.IDLE
            self._deadline = None
            return out
        self._pending = item
        if now >= self._bus_free_at:
            return out + self._send(item, now)
        self._state = SessionState.GAP
        self._deadline = self._bus_free_at
        return out

    def _send(self, req: _Request, now: float) -> list[MasterEvent]:
        self._state = SessionState.WAIT_REPLY
        self._scanner = FrameScanner()
        self._got = []
        self._garbled = None
        self._received = 0
        tx = transmission_time_s(len(req.data), self.baud)
        # "none": a broadcast; nobody answers, the line is ours again after the request.
        self._deadline = now + tx + (self._reply_timeout() if req.expect != "none" else 0.0)
        return [Send(data=req.data)]

    def _finish(self, outcome: _Outcome, now: float) -> list[MasterEvent]:
        self._bus_free_at = now + self.idle_s
        self._deadline = None
        return self._advance(outcome, now)

    def _reply_timeout(self) -> float:
        return reply_timeout_s(self.baud, self.timeout_margin_s)

    def _quiet_s(self) -> float:
        # How long the line must stay silent before a reply counts as over: within a
        # telegram there are no gaps on the wire, but USB converters and TCP gateways
        # hand bytes over in packets (an FTDI latency timer is 16 ms), so allow 24
        # characters (264 bit times, still below the 330 bit times of the reply window).
        return QUIET_CHARS * BITS_PER_CHAR / self.baud + self.timeout_margin_s

    def _bad(self, what: str) -> _Outcome:
        error = RemoteProtocolError(f"{what}: {self._describe()}", raw=b"")
        return _Outcome("garbled", error=error)

    def _describe(self) -> str:
        kinds = [type(f[0]).__name__ for f in self._got]
        if self._garbled is not None:
            kinds.append(f"garbage ({self._garbled})")
        if self._scanner.pending:
            kinds.append(f"{self._scanner.pending} bytes of an incomplete frame")
        return ", ".join(kinds) or "nothing"

    # ------------------------------------------------------ operations
    def _exchange(
        self, request: bytes, expect: Expect, target: Target | str, retries: int
    ) -> Generator[_Request | MasterEvent, _Outcome | None, tuple[_Outcome, int]]:
        attempt = 0
        while True:
            attempt += 1
            outcome = yield _Request(request, expect)
            assert outcome is not None
            if outcome.kind == "ok" or attempt > retries:
                return outcome, attempt
            assert outcome.error is not None
            yield Retrying(target=target, attempt=attempt, error=outcome.error)

    def _read(self, target: Target) -> _Op:
        address, key, failed, attempts = yield from self._link_ready(target)
        if failed is not None:
            what = "SND_NKE" if isinstance(target, int) else "selection"
            yield self._failed(target, failed, attempts, what)
            return
        telegrams: list[tuple[LongFrame, app.Response]] = []
        raws: list[bytes] = []
        while True:
            fcb = self._fcb.get(key, True)
            outcome, attempts = yield from self._exchange(
                link.req_ud2(address, fcb=fcb).encode(), "rsp", target, self.retries
            )
            if outcome.kind != "ok" or outcome.frame is None:
                yield self._failed(target, outcome, attempts, "REQ_UD2")
                return
            self._fcb[key] = not fcb
            frame = outcome.frame
            try:
                resp = app.decode_response(frame.ci, frame.data)
            except app.MbusApplicationError as exc:
                yield ReadFailed(target=target, error=exc, attempts=attempts)
                return
            except RemoteProtocolError as exc:
                yield ReadFailed(target=target, error=exc, attempts=attempts)
                return
            if isinstance(target, SecondaryAddress) and not _answers_for(resp, target):
                self._selected = None
                yield ReadFailed(
                    target=target,
                    error=RemoteProtocolError(
                        f"a different meter answered for {target.label}: {_who(resp)}"
                    ),
                    attempts=attempts,
                )
                return
            telegrams.append((frame, resp))
            raws.append(outcome.raw)
            more = isinstance(resp, app.VariableDataResponse) and resp.more_records_follow
            if not more or len(telegrams) >= self.max_telegrams:
                break
        yield DeviceRead(target=target, telegrams=tuple(telegrams), raw=b"".join(raws))

    def _link_ready(
        self, target: Target
    ) -> Generator[_Request | MasterEvent, _Outcome | None, tuple[int, Target, _Outcome | None, int]]:
        """Reset (primary, once) or select (secondary, when another one is selected) the
        slave; returns (address to use, FCB key, the failed outcome or None, attempts)."""
        if isinstance(target, int):
            if target not in self._fcb and target != link.ADDRESS_BROADCAST:
                outcome, attempts = yield from self._exchange(
                    link.snd_nke(target).encode(), "ack", target, self.retries
                )
                if outcome.kind != "ok":
                    return target, target, outcome, attempts
                self._fcb[target] = True  # after the reset the slave expects FCB = 1
            return target, target, None, 0
        if self._selected != target:
            self._selected = None
            outcome, attempts = yield from self._exchange(
                select_frame(target).encode(), "ack", target, self.retries
            )
            if outcome.kind != "ok":
                return ADDRESS_SELECTED, ADDRESS_SELECTED, outcome, attempts
            # The selection went out with FCB = 0 (FCV = 1), so whatever the slave
            # remembered, FCB = 1 is a new request for it now.
            self._selected = target
            self._fcb[ADDRESS_SELECTED] = True
        return ADDRESS_SELECTED, ADDRESS_SELECTED, None, 0

    def _command(self, target: Target, ci: int, data: bytes, baud: int | None) -> _Op:
        address, key, failed, attempts = yield from self._link_ready(target)
        if failed is not None:
            error = failed.error or RemoteProtocolError("no acknowledgement")
            yield CommandFailed(target=target, ci=ci, error=error, attempts=attempts)
            return
        broadcast = address == link.ADDRESS_BROADCAST
        fcb = self._fcb.get(key, True) and not broadcast
        request = link.snd_ud(address, ci, data, fcb=fcb).encode()
        outcome, attempts = yield from self._exchange(
            request, "none" if broadcast else "ack", target, 0 if broadcast else self.retries
        )
        if outcome.kind != "ok":
            self._forget(target)
            error = outcome.error or RemoteProtocolError("no acknowledgement")
            yield CommandFailed(target=target, ci=ci, error=error, attempts=attempts)
            return
        if not broadcast:
            self._fcb[key] = not fcb
        if broadcast or (ci == 0x51 and data[:2] == b"\x01\x7a"):
            self._forget(target)  # a new primary address (or many slaves): state unknown
        if baud is not None:
            self.baud = baud
            yield SetBaudrate(baud=baud)
        yield CommandDone(target=target, ci=ci)

    def _forget(self, target: Target) -> None:
        if isinstance(target, int):
            self._fcb.pop(target, None)
            if target == link.ADDRESS_BROADCAST:
                self.forget()
        else:
            self._fcb.pop(ADDRESS_SELECTED, None)
            self._selected = None

    def _failed(self, target: Target, outcome: _Outcome, attempts: int, what: str) -> ReadFailed:
        # The slave's link state is unknown now: reset it (primary) or select it
        # again (secondary) before the next read.
        self._fcb.pop(target if isinstance(target, int) else ADDRESS_SELECTED, None)
        if isinstance(target, SecondaryAddress):
            self._selected = None
        error = outcome.error or RemoteProtocolError(f"{what} failed")
        return ReadFailed(target=target, error=error, attempts=attempts)

    def _identify(
        self, address: int, label: str
    ) -> Generator[_Request | MasterEvent, _Outcome | None, tuple[_Outcome, app.Response | None]]:
        outcome, _ = yield from self._exchange(
            link.req_ud2(address, fcb=True).encode(), "rsp", label, self.scan_retries
        )
        self.probes += 1
        if outcome.kind != "ok" or outcome.frame is None:
            return outcome, None
        try:
            return outcome, app.decode_response(outcome.frame.ci, outcome.frame.data)
        except RemoteProtocolError:
            return outcome, None

    def _scan_primary(self, addresses: tuple[int, ...], identify: bool) -> _Op:
        found: list[DeviceFound] = []
        collisions: list[Collision] = []
        total = len(addresses)
        for i, a in enumerate(addresses):
            yield ScanProgress(fraction=i / total, probes=self.probes, found=len(found),
                               current=f"primary address {a}")  # fmt: skip
            outcome, _ = yield from self._exchange(
                link.snd_nke(a).encode(), "ack", f"primary {a}", self.scan_retries
            )
            self.probes += 1
            if outcome.kind == "garbled":
                collision = Collision(primary=a)
                collisions.append(collision)
                yield collision
                continue
            if outcome.kind != "ok":
                continue
            self._fcb[a] = True
            secondary: SecondaryAddress | None = None
            header = ""
            if identify:
                outcome, resp = yield from self._identify(a, f"primary {a}")
                if outcome.kind == "ok":
                    self._fcb[a] = False
                if resp is not None:
                    secondary = _address_of(resp)
                    header = _header_of(resp)
            dev = DeviceFound(primary=a, secondary=secondary, header=header)
            found.append(dev)
            yield dev
        yield ScanProgress(fraction=1.0, probes=self.probes, found=len(found), current="done")
        yield ScanDone(found=tuple(found), collisions=tuple(collisions), probes=self.probes)

    def _scan_secondary(self, mask: SecondaryAddress, digits: str) -> _Op:
        found: list[DeviceFound] = []
        collisions: list[Collision] = []
        start = mask.id.index("F")
        covered = 0.0
        # Depth-first, digits ascending, so the output is sorted by id and progress is
        # the id space searched so far.  Each stack entry is a mask to probe.
        stack = [_with_digit(mask, start, d) for d in reversed(digits)]
        self._selected = None
        while stack:
            probe = stack.pop()
            depth = probe.id.index("F") if "F" in probe.id else 8
            share = float(len(digits)) ** -(depth - start)
            yield ScanProgress(fraction=covered, probes=self.probes, found=len(found),
                               current=probe.id)  # fmt: skip
            outcome, _ = yield from self._exchange(
                select_frame(probe).encode(), "ack", probe.id, self.scan_retries
            )
            self.probes += 1
            result: Literal["none", "single", "collision"] = "none"
            resp: app.Response | None = None
            reply: _Outcome | None = None
            if outcome.kind == "garbled":
                result = "collision"
            elif outcome.kind == "ok":
                reply, resp = yield from self._identify(ADDRESS_SELECTED, probe.id)
                if reply.kind == "garbled":
                    result = "collision"
                elif reply.kind == "ok":
                    result = "single"
                else:
                    # E5 but no RSP_UD: narrow it down further; at full depth report it.
                    result = "collision" if depth < 8 else "single"
            if result == "collision" and depth < 8:
                stack.extend(_with_digit(probe, depth, d) for d in reversed(digits))
                continue
            covered += share
            if result == "collision":
                collision = Collision(mask=probe)
                collisions.append(collision)
                yield collision
            elif result == "single":
                address = _address_of(resp) if resp is not None else None
                primary = reply.frame.address if reply is not None and reply.frame is not None else None
                dev = DeviceFound(
                    primary=primary,
                    secondary=address if address is not None else probe,
                    header=_header_of(resp) if resp is not None else "",
                )
                found.append(dev)
                yield dev
        self._selected = None
        self._fcb.pop(ADDRESS_SELECTED, None)
        yield ScanProgress(fraction=1.0, probes=self.probes, found=len(found), current="done")
        yield ScanDone(found=tuple(found), collisions=tuple(collisions), probes=self.probes)


def _with_digit(mask: SecondaryAddress, pos: int, digit: str) -> SecondaryAddress:
    ident = mask.id[:pos] + digit + mask.id[pos + 1 :]
    return SecondaryAddress(id=ident, manufacturer=mask.manufacturer, version=mask.version,
                            medium=mask.medium)  # fmt: skip


def _address_of(resp: app.Response) -> SecondaryAddress | None:
    if isinstance(resp, app.VariableDataResponse) and resp.header is not None:
        return resp.header.address
    return None


def _header_of(resp: app.Response) -> str:
    return frame_header(resp)


def _answers_for(resp: app.Response, target: SecondaryAddress) -> bool:
    address = _address_of(resp)
    if address is None:
        return True  # no long header: nothing to check against
    return target.matches(address)


def _who(resp: app.Response) -> str:
    address = _address_of(resp)
    return address.label if address is not None else "unknown"
