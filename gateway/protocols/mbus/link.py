"""Wired M-Bus link layer (EN 13757-2, the FT1.2 frame format of IEC 60870-5-2).

Implemented (MBUS_FACTS §1):

* The four frame formats, each a frozen dataclass with ``encode()``/``decode()``:
  single character ``E5`` (:class:`SingleChar`), short frame ``10 C A CS 16``
  (:class:`ShortFrame`), control frame ``68 03 03 68 C A CI CS 16``
  (:class:`ControlFrame`) and long frame ``68 L L 68 C A CI data CS 16``
  (:class:`LongFrame`).  L counts C, A, CI and the data (3..255, data ≤ 252 bytes), is
  sent twice and must match; CS is the sum modulo 256 of C .. last data byte (of C
  and A in a short frame).
* The C field: PRM/DIR bit 6 (1 = master to slave), FCB bit 5 and FCV bit 4 in master
  frames, ACD bit 5 and DFC bit 4 in slave frames; builders for SND_NKE, REQ_UD1,
  REQ_UD2, SND_UD (with the frame count bit), the secondary address selection
  (``SND_UD`` to address 253 with CI 52) and the baud rate switch (CI B8..BF).
* :class:`FrameScanner` splits a byte stream into frames: it resynchronises on the
  start characters ``68``/``10``/``E5`` after garbage, reports checksum errors as
  ``Discarded(reason="checksum")`` and malformed starts (length bytes that differ, L
  below 3, a missing stop character) as ``Discarded(reason="framing")``.

Not implemented: the FT1.2 inter-character gap rule (a pty and TCP have no character
timing; the master session uses telegram timeouts instead) and the fixed-length
"control frame" variants of IEC 60870-5-2 that M-Bus does not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Self

from gateway.errors import ChecksumError, FramingError, LocalProtocolError, ProtocolError
from gateway.protocols._events import Discarded

__all__ = [
    "ACK",
    "ADDRESS_BROADCAST",
    "ADDRESS_SELECTED",
    "ADDRESS_TEST",
    "CI_BAUD",
    "CI_SELECT",
    "C_REQ_UD1",
    "C_REQ_UD2",
    "C_RSP_UD",
    "C_SND_NKE",
    "C_SND_UD",
    "ControlFrame",
    "Frame",
    "FrameScanner",
    "LongFrame",
    "ScanItem",
    "ShortFrame",
    "SingleChar",
    "baud_switch",
    "checksum",
    "decode_frame",
    "req_ud1",
    "req_ud2",
    "snd_nke",
    "snd_ud",
]

ACK: Final = 0xE5
SHORT_START: Final = 0x10
LONG_START: Final = 0x68
STOP: Final = 0x16
MAX_DATA: Final = 252  # L is one byte and counts C, A and CI as well

# C field (EN 13757-2 table "control field"): function codes with DIR/PRM set and
# FCB/FCV clear; RSP_UD with ACD/DFC clear.
C_SND_NKE: Final = 0x40
C_SND_UD: Final = 0x53
C_REQ_UD1: Final = 0x5A
C_REQ_UD2: Final = 0x5B
C_RSP_UD: Final = 0x08
DIR_MASTER: Final = 0x40  # PRM: 1 = master to slave
FCB: Final = 0x20  # frame count bit (master); ACD in slave frames
FCV: Final = 0x10  # frame count bit valid (master); DFC in slave frames

ADDRESS_SELECTED: Final = 253  # the slave selected by secondary address
ADDRESS_TEST: Final = 254  # every slave answers with its own address (one slave only!)
ADDRESS_BROADCAST: Final = 255  # every slave listens, none answers

CI_SELECT: Final = 0x52
# CI B8..BF switch the slave to 300, 600, 1200, 2400, 4800, 9600, 19200, 38400 Bd.
CI_BAUD: Final[dict[int, int]] = {
    300: 0xB8, 600: 0xB9, 1200: 0xBA, 2400: 0xBB, 4800: 0xBC, 9600: 0xBD, 19200: 0xBE, 38400: 0xBF,
}  # fmt: skip


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Arithmetic sum modulo 256 (the FT1.2 check sum)."""
    return sum(data) & 0xFF


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{name} must be 0..255, got {value}")


# -------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True, kw_only=True)
class SingleChar:
    """``E5``: the slave's acknowledgement of SND_NKE/SND_UD (and of a selection)."""

    def encode(self) -> bytes:
        return b"\xe5"

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not the single character E5.
        """
        if data != b"\xe5":
            raise FramingError("not the single character E5", raw=bytes(data[:8]))
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShortFrame:
    """``10 C A CS 16``: SND_NKE, REQ_UD1/2 (master to slave)."""

    control: int
    address: int

    def __post_init__(self) -> None:
        _check_byte("control", self.control)
        _check_byte("address", self.address)

    @property
    def from_master(self) -> bool:
        return bool(self.control & DIR_MASTER)

    def encode(self) -> bytes:
        c, a = self.control, self.address
        return bytes((SHORT_START, c, a, (c + a) & 0xFF, STOP))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a short frame.
        ChecksumError: the check sum does not match.
        """
        if len(data) != 5 or data[0] != SHORT_START or data[4] != STOP:
            raise FramingError("not a short frame (10 C A CS 16)", raw=bytes(data[:8]))
        expected = (data[1] + data[2]) & 0xFF
        if data[3] != expected:
            raise ChecksumError(
                f"short frame check sum 0x{data[3]:02X}, computed 0x{expected:02X}",
                expected=expected, got=data[3], offset=3, raw=bytes(data),
            )  # fmt: skip
        return cls(control=data[1], address=data[2])


@dataclass(frozen=True, slots=True, kw_only=True)
class LongFrame:
    """``68 L L 68 C A CI data CS 16`` with at least one data byte (RSP_UD, SND_UD)."""

    control: int
    address: int
    ci: int
    data: bytes

    MIN_DATA: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_byte("control", self.control)
        _check_byte("address", self.address)
        _check_byte("ci", self.ci)
        if not self.MIN_DATA <= len(self.data) <= MAX_DATA:
            raise LocalProtocolError(
                f"{type(self).__name__} carries {self.MIN_DATA}..{MAX_DATA} data bytes,"
                f" got {len(self.data)}"
            )

    @property
    def from_master(self) -> bool:
        return bool(self.control & DIR_MASTER)

    def encode(self) -> bytes:
        body = bytes((self.control, self.address, self.ci)) + self.data
        n = len(body)
        return bytes((LONG_START, n, n, LONG_START)) + body + bytes((checksum(body), STOP))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a well-formed frame of this kind.
        ChecksumError: the check sum does not match.
        """
        frame = decode_frame(data)
        if not isinstance(frame, cls):
            raise FramingError(f"not a {cls.__name__}: {type(frame).__name__}", raw=bytes(data[:8]))
        return frame


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlFrame(LongFrame):
    """``68 03 03 68 C A CI CS 16``: a long frame without data (e.g. baud rate switch)."""

    data: bytes = b""
    MIN_DATA: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if self.data:
            raise LocalProtocolError("a control frame carries no data")
        LongFrame.__post_init__(self)


Frame = SingleChar | ShortFrame | ControlFrame | LongFrame
_ACK_FRAME: Final = SingleChar()


def _long(data: bytes | bytearray, start: int, length: int) -> LongFrame:
    """Build the frame from a checked buffer: C at ``start``, ``length`` = L."""
    c, a, ci = data[start], data[start + 1], data[start + 2]
    if length == 3:
        return ControlFrame(control=c, address=a, ci=ci)
    return LongFrame(control=c, address=a, ci=ci, data=bytes(data[start + 3 : start + length]))


def decode_frame(data: bytes) -> Frame:
    """Exactly one frame of any format.

    Raises:
        FramingError: not exactly one well-formed frame (offset = the bad byte).
        ChecksumError: the check sum does not match.
    """
    raw = bytes(data)
    if raw == b"\xe5":
        return SingleChar()
    if raw[:1] == b"\x10":
        return ShortFrame.decode(raw)
    if raw[:1] != b"\x68":
        raise FramingError("no M-Bus start character (68, 10 or E5)", offset=0, raw=raw[:16])
    if len(raw) < 4 or raw[3] != LONG_START or raw[1] != raw[2]:
        raise FramingError("long frame header must be 68 L L 68", offset=0, raw=raw[:16])
    length = raw[1]
    if length < 3:
        raise FramingError(f"long frame length L={length} is below 3", offset=1, raw=raw[:16])
    if len(raw) != length + 6:
        raise FramingError(
            f"long frame of L={length} needs {length + 6} bytes, got {len(raw)}",
            offset=min(len(raw), length + 6) - 1, raw=raw[:16],
        )  # fmt: skip
    if raw[-1] != STOP:
        raise FramingError("long frame does not end in 16", offset=len(raw) - 1, raw=raw[:16])
    expected = checksum(raw[4 : 4 + length])
    if raw[-2] != expected:
        raise ChecksumError(
            f"long frame check sum 0x{raw[-2]:02X}, computed 0x{expected:02X}",
            expected=expected, got=raw[-2], offset=len(raw) - 2, raw=raw[:16],
        )  # fmt: skip
    return _long(raw, 4, length)


# ------------------------------------------------------------ builders
def _fcb(control: int, fcb: bool) -> int:
    return control | FCB if fcb else control


def snd_nke(address: int) -> ShortFrame:
    """SND_NKE: link reset; the slave answers E5 and clears its FCB memory."""
    return ShortFrame(control=C_SND_NKE, address=address)


def req_ud2(address: int, *, fcb: bool) -> ShortFrame:
    """REQ_UD2 (class 2 data) with FCV set: ``5B``/``7B``."""
    return ShortFrame(control=_fcb(C_REQ_UD2, fcb), address=address)


def req_ud1(address: int, *, fcb: bool) -> ShortFrame:
    """REQ_UD1 (class 1 data, alarms): ``5A``/``7A``."""
    return ShortFrame(control=_fcb(C_REQ_UD1, fcb), address=address)


def snd_ud(address: int, ci: int, data: bytes = b"", *, fcb: bool = False) -> LongFrame:
    """SND_UD ``53``/``73``: user data to the slave (a control frame when ``data`` is empty).

    Raises:
        LocalProtocolError: more than 252 data bytes or a field out of range.
    """
    control = _fcb(C_SND_UD, fcb)
    if not data:
        return ControlFrame(control=control, address=address, ci=ci)
    return LongFrame(control=control, address=address, ci=ci, data=data)


def baud_switch(address: int, baud: int) -> ControlFrame:
    """``68 03 03 68 53 A CI CS 16`` with CI B8..BF; the slave ACKs at the old rate.

    Raises:
        LocalProtocolError: ``baud`` has no CI code.
    """
    ci = CI_BAUD.get(baud)
    if ci is None:
        raise LocalProtocolError(f"{baud} Bd has no M-Bus baud rate CI (300..38400)")
    return ControlFrame(control=C_SND_UD, address=address, ci=ci)


# ------------------------------------------------------------ scanner
#: A frame found by the scanner: (frame, stream offset of its first byte, its bytes).
ScanItem = tuple[Frame, int, bytes] | Discarded
_GARBAGE_LIMIT: Final = 4096  # a garbage run is reported in pieces of at most this size


class FrameScanner:
    """Split a byte stream into frames; sans-IO, any chunking gives the same events.

    ``feed`` returns ``(frame, offset, raw)`` triples and :class:`Discarded` events in
    stream order; ``offset`` is the frame's first byte in everything fed so far.  Bytes that
    belong to no frame are reported once as one ``Discarded`` per run: reason
    ``"framing"`` when the run starts with a start character whose frame is malformed,
    ``"garbage"`` otherwise.  A frame with a wrong check sum is ``"checksum"``.  The
    buffer never holds more than one frame (261 bytes) plus the garbage run's first
    ``_GARBAGE_LIMIT`` bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._garbage = bytearray()
        self._garbage_at = 0
        self._garbage_error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    @property
    def needed(self) -> int:
        """How many more bytes the frame being received needs, as far as known (a long
        frame's header tells its length; before that, the header's 4 bytes)."""
        buf = self._buf
        if not buf:
            return 0
        if buf[0] == SHORT_START:
            return max(5 - len(buf), 0)
        if buf[0] == LONG_START:
            if len(buf) < 4:
                return 4 - len(buf)
            return max(buf[1] + 6 - len(buf), 0)
        return 0

    def feed(self, data: bytes) -> list[ScanItem]:
        self._buf += data
        out: list[ScanItem] = []
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            b = buf[i]
            if b == ACK:
                self._flush(out)
                out.append((_ACK_FRAME, self._base + i, b"\xe5"))
                i += 1
                continue
            if b == SHORT_START:
                if n - i < 5:
                    break
                if buf[i + 4] != STOP:
                    self._junk(out, i, FramingError("short frame does not end in 16",
                                                    offset=self._base + i + 4))
                    i += 1
                    continue
                self._flush(out)
                expected = (buf[i + 1] + buf[i + 2]) & 0xFF
                if buf[i + 3] != expected:
                    raw = bytes(buf[i : i + 5])
                    out.append(self._bad_sum(raw, i, i + 3, expected))
                else:
                    out.append((ShortFrame(control=buf[i + 1], address=buf[i + 2]), self._base + i,
                                bytes(buf[i : i + 5])))
                i += 5
                continue
            if b == LONG_START:
                if n - i < 4:
                    break
                length = buf[i + 1]
                if buf[i + 3] != LONG_START or buf[i + 2] != length or length < 3:
                    self._junk(out, i, FramingError(
                        f"bad long frame header {bytes(buf[i : i + 4]).hex(' ')}",
                        offset=self._base + i,
                    ))  # fmt: skip
                    i += 1
                    continue
                total = length + 6
                if n - i < total:
                    break
                if buf[i + total - 1] != STOP:
                    self._junk(out, i, FramingError(
                        f"long frame of L={length} does not end in 16",
                        offset=self._base + i + total - 1,
                    ))  # fmt: skip
                    i += 1
                    continue
                self._flush(out)
                expected = sum(buf[i + 4 : i + 4 + length]) & 0xFF
                if buf[i + total - 2] != expected:
                    raw = bytes(buf[i : i + total])
                    out.append(self._bad_sum(raw, i, i + total - 2, expected))
                else:
                    out.append((_long(buf, i + 4, length), self._base + i, bytes(buf[i : i + total])))
                i += total
                continue
            self._junk(out, i, None)
            i += 1
        del buf[:i]
        self._base += i
        return out

    def feed_eof(self) -> list[ScanItem]:
        """End of stream: a frame cut short is reported, then the scanner is empty."""
        out: list[ScanItem] = []
        if self._buf:
            at = self._base
            rest = bytes(self._buf)
            # A cut frame: report it, then rescan what follows its start byte, which may
            # hold complete frames (a stray 68 in garbage looks like a frame start).
            self._junk(out, 0, FramingError(
                f"stream ended inside a frame ({len(rest)} bytes)", offset=at, raw=rest[:16]
            ))  # fmt: skip
            self._buf = bytearray()
            self._base = at + 1
            out += self.feed(rest[1:])
            out += self.feed_eof()
            return out
        self._flush(out)
        return out

    def flush_garbage(self) -> list[ScanItem]:
        """Report the garbage run now instead of when the next frame starts (a master
        wants to know at once that a reply was garbled; the decoder does not call this,
        so its events do not depend on how the stream was chunked)."""
        out: list[ScanItem] = []
        self._flush(out)
        return out

    # ----------------------------------------------------------- helpers
    def _junk(
        self, out: list[ScanItem], i: int, error: ProtocolError | None
    ) -> None:
        if not self._garbage:
            self._garbage_at = self._base + i
            self._garbage_error = error
        self._garbage.append(self._buf[i])
        if len(self._garbage) >= _GARBAGE_LIMIT:
            self._flush(out)

    def _flush(self, out: list[ScanItem]) -> None:
        if not self._garbage:
            return
        raw = bytes(self._garbage)
        error = self._garbage_error
        if error is None:
            error = FramingError(
                f"{len(raw)} byte(s) outside any frame", offset=self._garbage_at, raw=raw[:16]
            )
            out.append(Discarded(reason="garbage", error=error, raw=raw, offset=self._garbage_at))
        else:
            out.append(Discarded(reason="framing", error=error, raw=raw, offset=self._garbage_at))
        self._garbage = bytearray()
        self._garbage_error = None

    def _bad_sum(self, raw: bytes, i: int, at: int, expected: int) -> Discarded:
        got = self._buf[at]
        error = ChecksumError(
            f"check sum 0x{got:02X}, computed 0x{expected:02X}",
            expected=expected, got=got, offset=self._base + at, raw=raw[:16],
        )  # fmt: skip
        return Discarded(reason="checksum", error=error, raw=raw, offset=self._base + i)
