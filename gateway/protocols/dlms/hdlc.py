"""HDLC frame format type 3 for DLMS (IEC 62056-46 / Green Book ed. 9, clause 8).

Implemented:

* Frames ``7E | format(2) | dest | source | control | HCS(2) | info | FCS(2) | 7E``
  (8.4.1): format type 0xA, the segmentation bit S and the 11-bit frame length (the
  octets between the flags); HCS over format..control and FCS over format..info,
  both CRC-16/X.25 sent low octet first (8.4.1.5; no HCS when there is no info).
  DLMS HDLC has **no byte stuffing**: 0x7E may occur inside a frame, which is
  delimited by its length (8.4.1.2).  Two frames may share one flag.
* Addresses of 1, 2 or 4 octets (8.4.2.2): 7 address bits per octet, bit 0 set on
  the last octet; a server address is an upper (logical device) and an optional
  lower (physical device) part.
* Control fields (8.4.3): I (N(S), N(R), P/F), RR, RNR, SNRM, DISC, UA, DM, FRMR, UI.
* The LLC header (8.3.2): ``E6 E6 00`` client to server, ``E6 E7 00`` server to client
  (pushes too), once per APDU at the start of its first segment.
* The SNRM/UA information field (8.4.5.3.2): ``81 80 len`` then the maximum
  information field lengths and window sizes (1, 2 or 4 octet values).
* :class:`HdlcFrameDecoder`: finds frames in a byte stream, with resynchronisation;
  optionally with ISO/IEC 13239 octet stuffing (``7D`` escapes) that some
  non-DLMS HAN readers expect (off by default).
* :class:`SegmentAssembler`: joins the information fields of segmented frames.
* :class:`HdlcLink`: a sans-IO connection-mode link (client or server role): SNRM/UA
  with parameter negotiation, I frames with window 1, segmentation of long APDUs
  with RR polling, sequence number checks, DISC/UA and DM.

Not implemented: windows larger than 1 (accepted in negotiation, used as 1), REJ and
SREJ, the FRMR information field, non-DLMS frame types, 7-bit (mode E optical)
framing details beyond the octet layout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, Self

from gateway.errors import (
    ChecksumError,
    FramingError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UnsupportedError,
)
from gateway.protocols._checks import crc16_x25
from gateway.protocols._events import Discarded, DiscardReason

__all__ = [
    "FLAG",
    "LLC_COMMAND",
    "LLC_RESPONSE",
    "ApduReceived",
    "Connected",
    "Disconnected",
    "FrameKind",
    "FrameReceived",
    "HdlcAddress",
    "HdlcEvent",
    "HdlcFrame",
    "HdlcFrameDecoder",
    "HdlcLink",
    "HdlcParameters",
    "LinkEvent",
    "LinkState",
    "SegmentAssembler",
    "crc16_x25",
    "split_llc",
]

FLAG: Final = 0x7E
LLC_COMMAND: Final = b"\xe6\xe6\x00"  # client -> server (8.3.2)
LLC_RESPONSE: Final = b"\xe6\xe7\x00"  # server -> client, pushes
MAX_FRAME_LENGTH: Final = 0x7FF  # 11-bit frame length field

# The HCS/FCS is CRC-16/X.25, sent low octet first (gateway.protocols._checks).


# --------------------------------------------------------------- addresses
@dataclass(frozen=True, slots=True, kw_only=True)
class HdlcAddress:
    """An HDLC address (8.4.2.2).

    A client address is ``upper`` alone (its SAP: 1 management, 16 public client).  A
    server address is ``upper`` (logical device: 1 management) and, in 2- and 4-octet
    form, ``lower`` (physical device).  ``size`` forces 1, 2 or 4 octets; 0 means the
    shortest form that holds the values (decoding sets it only for longer forms).
    """

    upper: int
    lower: int | None = None
    size: Literal[0, 1, 2, 4] = 0

    def encode(self) -> bytes:
        """Raises:
        LocalProtocolError: the values do not fit the (forced or shortest) size.
        """
        upper, lower, size = self.upper, self.lower, self.size
        if size == 0:
            if lower is None:
                size = 1 if 0 <= upper <= 0x7F else 4
            else:
                size = 2 if 0 <= upper <= 0x7F and 0 <= lower <= 0x7F else 4
        if size == 1:
            if lower is not None or not 0 <= upper <= 0x7F:
                raise LocalProtocolError(f"1-octet HDLC address holds one value ≤ 0x7F: {self}")
            return bytes(((upper << 1) | 1,))
        low = 0 if lower is None else lower
        if size == 2:
            if not (0 <= upper <= 0x7F and 0 <= low <= 0x7F):
                raise LocalProtocolError(f"2-octet HDLC address parts are ≤ 0x7F: {self}")
            return bytes((upper << 1, (low << 1) | 1))
        if not (0 <= upper <= 0x3FFF and 0 <= low <= 0x3FFF):
            raise LocalProtocolError(f"4-octet HDLC address parts are ≤ 0x3FFF: {self}")
        return bytes(
            ((upper >> 7) << 1, (upper & 0x7F) << 1, (low >> 7) << 1, ((low & 0x7F) << 1) | 1)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode the 1, 2 or 4 address octets (the last with bit 0 set).

        Raises:
            FramingError: another length, or bit 0 set before the last octet.
        """
        n = len(data)
        if n not in (1, 2, 4) or not data[-1] & 1 or any(b & 1 for b in data[:-1]):
            raise FramingError(f"bad HDLC address {data.hex()}")
        if n == 1:
            return cls(upper=data[0] >> 1)
        if n == 2:
            return cls(upper=data[0] >> 1, lower=data[1] >> 1)
        upper = ((data[0] >> 1) << 7) | (data[1] >> 1)
        lower = ((data[2] >> 1) << 7) | (data[3] >> 1)
        # size=4 only where the shortest form would be 2 octets
        forced: Literal[0, 4] = 4 if upper <= 0x7F and lower <= 0x7F else 0
        return cls(upper=upper, lower=lower, size=forced)

    def same(self, other: HdlcAddress) -> bool:
        """Equal values, whatever the octet form."""
        return self.upper == other.upper and (self.lower or 0) == (other.lower or 0)


def _address_end(buf: bytes | bytearray, start: int, limit: int) -> int:
    """Index after the address starting at ``start``; -1 if not within 4 octets/limit."""
    for i in range(start, min(start + 4, limit)):
        if buf[i] & 1:
            return i + 1
    return -1


# ----------------------------------------------------------------- control
class FrameKind(enum.Enum):
    I = "I"
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


# U frames: control & 0xEF (P/F bit cleared) -> kind (8.4.3.2)
_U_KINDS: Final = {
    0x83: FrameKind.SNRM,
    0x43: FrameKind.DISC,
    0x63: FrameKind.UA,
    0x0F: FrameKind.DM,
    0x87: FrameKind.FRMR,
    0x03: FrameKind.UI,
}
_U_CODES: Final = {kind: code for code, kind in _U_KINDS.items()}
PF_BIT: Final = 0x10


def _kind_of(control: int) -> FrameKind | None:
    if not control & 1:
        return FrameKind.I
    if control & 3 == 1:
        low = control & 0x0F
        return FrameKind.RR if low == 0x01 else FrameKind.RNR if low == 0x05 else None
    return _U_KINDS.get(control & 0xEF)


def control_i(send_seq: int, recv_seq: int, *, final: bool = True) -> int:
    """Control octet of an I frame ``RRR P SSS 0``."""
    return ((recv_seq & 7) << 5) | (PF_BIT if final else 0) | ((send_seq & 7) << 1)


def control_s(kind: Literal[FrameKind.RR, FrameKind.RNR], recv_seq: int, *, final: bool = True) -> int:
    """Control octet of an RR (``RRR P 0001``) or RNR (``RRR P 0101``) frame."""
    low = 0x01 if kind is FrameKind.RR else 0x05
    return ((recv_seq & 7) << 5) | (PF_BIT if final else 0) | low


def control_u(kind: FrameKind, *, final: bool = True) -> int:
    """Control octet of an unnumbered frame (SNRM, DISC, UA, DM, FRMR, UI).

    Raises:
        LocalProtocolError: ``kind`` is I, RR or RNR.
    """
    code = _U_CODES.get(kind)
    if code is None:
        raise LocalProtocolError(f"{kind.name} is not an unnumbered frame")
    return code | (PF_BIT if final else 0)


# ------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True, kw_only=True)
class HdlcFrame:
    """One HDLC frame; ``control`` is the raw control octet (see ``control_*``)."""

    destination: HdlcAddress
    source: HdlcAddress
    control: int
    information: bytes = b""
    segmented: bool = False

    @property
    def kind(self) -> FrameKind:
        """Raises:
        UnsupportedError: a control octet DLMS does not use (REJ, SREJ, …).
        """
        kind = _kind_of(self.control)
        if kind is None:
            raise UnsupportedError(f"HDLC control octet 0x{self.control:02X} is not used by DLMS")
        return kind

    @property
    def poll_final(self) -> bool:
        return bool(self.control & PF_BIT)

    @property
    def send_sequence(self) -> int | None:
        """N(S) of an I frame, else ``None``."""
        return (self.control >> 1) & 7 if not self.control & 1 else None

    @property
    def receive_sequence(self) -> int | None:
        """N(R) of an I, RR or RNR frame, else ``None``."""
        return self.control >> 5 if self.control & 3 != 3 else None

    def encode(self) -> bytes:
        """The frame with both flags.

        Raises:
            LocalProtocolError: an address does not fit, the control octet is not an
                octet, or the frame is longer than 2047 octets.
        """
        if not 0 <= self.control <= 0xFF:
            raise LocalProtocolError(f"control octet out of range: {self.control}")
        addresses = self.destination.encode() + self.source.encode()
        info = self.information
        length = 2 + len(addresses) + 1 + 2 + (len(info) + 2 if info else 0)
        if length > MAX_FRAME_LENGTH:
            raise LocalProtocolError(f"HDLC frame of {length} octets exceeds 2047")
        fmt = 0xA000 | (0x0800 if self.segmented else 0) | length
        header = fmt.to_bytes(2, "big") + addresses + bytes((self.control,))
        if info:
            body = header + crc16_x25(header).to_bytes(2, "little") + info
        else:
            body = header
        return b"\x7e" + body + crc16_x25(body).to_bytes(2, "little") + b"\x7e"

    @classmethod
    def decode(cls, data: bytes) -> HdlcFrame:
        """Decode one frame with its two flags.

        Raises:
            FramingError: flags, format, length or addresses are wrong.
            ChecksumError: the HCS or FCS does not match (``expected`` is computed,
                ``got`` is the one in the frame).
        """
        if len(data) < 9 or data[0] != FLAG or data[-1] != FLAG:
            raise FramingError("an HDLC frame is 7E … 7E, at least 9 octets", raw=data)
        return cls.decode_body(data[1:-1], offset=1)

    @classmethod
    def decode_body(cls, body: bytes, *, offset: int = 0) -> HdlcFrame:
        """Decode the octets between the flags (``offset``: where ``body`` starts, for errors).

        Raises:
            FramingError: format, length or addresses are wrong.
            ChecksumError: the HCS or FCS does not match.
        """
        n = len(body)
        if n < 7:
            raise FramingError(f"HDLC frame of {n} octets is too short", offset=offset, raw=body)
        fmt = (body[0] << 8) | body[1]
        if fmt & 0xF000 != 0xA000:
            raise FramingError(f"HDLC frame format 0x{fmt:04X} is not type 3", offset=offset,
                               raw=body)
        if fmt & 0x7FF != n:
            raise FramingError(f"HDLC length field says {fmt & 0x7FF}, frame has {n}",
                               offset=offset, raw=body)
        header_end = _header_end(body, 0, n)
        if header_end < 0:
            raise FramingError("bad HDLC addresses", offset=offset + 2, raw=body)
        return _parse(body, 0, n, header_end, offset)


def _header_end(buf: bytes | bytearray, start: int, stop: int) -> int:
    """Index after the control octet of the frame body at ``start``; -1 if the
    addresses are malformed, -2 if ``stop`` comes first."""
    da_end = _address_end(buf, start + 2, stop)
    if da_end < 0:
        return -2 if stop - (start + 2) < 4 else -1
    if da_end - (start + 2) == 3:
        return -1
    sa_end = _address_end(buf, da_end, stop)
    if sa_end < 0:
        return -2 if stop - da_end < 4 else -1
    if sa_end - da_end == 3:
        return -1
    return sa_end + 1 if sa_end < stop else -2


def _parse(buf: bytes | bytearray, start: int, stop: int, header_end: int, offset: int) -> HdlcFrame:
    """Check and parse a complete frame body ``buf[start:stop]`` (no flags)."""
    raw = bytes(buf[start:stop])
    h = header_end - start
    n = stop - start
    if n < h + 2 or n == h + 3:
        raise FramingError(f"HDLC length {n} does not fit its header", offset=offset, raw=raw)
    if n > h + 2:
        got_hcs = raw[h] | (raw[h + 1] << 8)
        expected_hcs = crc16_x25(raw[:h])
        if got_hcs != expected_hcs:
            raise ChecksumError("HDLC HCS does not match", expected=expected_hcs, got=got_hcs,
                                offset=offset, raw=raw)
        info = raw[h + 2 : -2]
    else:
        info = b""
    got = raw[-2] | (raw[-1] << 8)
    expected = crc16_x25(raw[:-2])
    if got != expected:
        raise ChecksumError("HDLC FCS does not match", expected=expected, got=got,
                            offset=offset, raw=raw)
    da_end = _address_end(raw, 2, h)
    return HdlcFrame(
        destination=HdlcAddress.decode(raw[2:da_end]),
        source=HdlcAddress.decode(raw[da_end : h - 1]),
        control=raw[h - 1],
        information=info,
        segmented=bool(raw[0] & 0x08),
    )


def split_llc(information: bytes) -> tuple[bytes, bytes]:
    """Split an APDU's first segment into its LLC header and the rest.

    Returns ``(b"", information)`` when there is no LLC header (some meters send none).
    """
    if information[:2] in (b"\xe6\xe6", b"\xe6\xe7") and len(information) >= 3:
        return information[:3], information[3:]
    return b"", information


# ------------------------------------------------------- SNRM/UA parameters
@dataclass(frozen=True, slots=True, kw_only=True)
class HdlcParameters:
    """The negotiation parameters of SNRM and UA (8.4.5.3.2), from the sender's view.

    The defaults are the values that hold when the field is absent (128 octets,
    window 1).
    """

    max_info_tx: int = 128
    max_info_rx: int = 128
    window_tx: int = 1
    window_rx: int = 1

    def encode(self) -> bytes:
        """``81 80 len`` + the four parameters (lengths in 1 or 2 octets, windows in 4).

        Raises:
            LocalProtocolError: a value is out of range.
        """
        body = bytearray()
        for ident, value, window in (
            (0x05, self.max_info_tx, False),
            (0x06, self.max_info_rx, False),
            (0x07, self.window_tx, True),
            (0x08, self.window_rx, True),
        ):
            if window:
                if not 1 <= value <= 7:
                    raise LocalProtocolError(f"window size must be 1..7, got {value}")
                width = 4
            else:
                if not 1 <= value <= 0xFFFF:
                    raise LocalProtocolError(f"information field length out of range: {value}")
                width = 1 if value <= 0xFF else 2
            body += bytes((ident, width)) + value.to_bytes(width, "big")
        return b"\x81\x80" + bytes((len(body),)) + body

    @classmethod
    def decode(cls, information: bytes) -> Self:
        """Decode an SNRM/UA information field (empty: the defaults).

        Raises:
            FramingError: not a ``81 80`` parameter field, or a value is cut off.
        """
        if not information:
            return cls()
        if len(information) < 3 or information[0] != 0x81 or information[1] != 0x80:
            raise FramingError("SNRM/UA information is not a 81 80 parameter field")
        end = 3 + information[2]
        if end > len(information):
            raise FramingError("SNRM/UA parameter field is cut off")
        values: dict[int, int] = {}
        pos = 3
        while pos < end:
            if pos + 2 > end:
                raise FramingError("SNRM/UA parameter is cut off", offset=pos)
            ident, width = information[pos], information[pos + 1]
            if pos + 2 + width > end or width not in (1, 2, 4):
                raise FramingError(f"SNRM/UA parameter 0x{ident:02X} has a bad length",
                                   offset=pos)
            values[ident] = int.from_bytes(information[pos + 2 : pos + 2 + width], "big")
            pos += 2 + width
        defaults = cls()
        return cls(
            max_info_tx=values.get(0x05, defaults.max_info_tx),
            max_info_rx=values.get(0x06, defaults.max_info_rx),
            window_tx=values.get(0x07, defaults.window_tx),
            window_rx=values.get(0x08, defaults.window_rx),
        )


# ---------------------------------------------------------- stream decoder
@dataclass(frozen=True, slots=True, kw_only=True)
class FrameReceived:
    """A good frame found in the stream: ``raw`` with flags, at stream ``offset``."""

    frame: HdlcFrame
    raw: bytes
    offset: int


HdlcEvent = FrameReceived | Discarded


# scan_frame outcomes
NEED: Final = 0  # more octets are needed to decide
SKIP: Final = 1  # the flag does not start a frame (no report: a closing flag before noise)
BAD: Final = 2  # a false or damaged frame: discard buf[pos:end] and search on from pos + 1
FRAME: Final = 3  # a good frame; buf[end] is its closing flag


def scan_frame(
    buf: bytes | bytearray, pos: int, *, final: bool, base: int = 0
) -> tuple[int, int, HdlcFrame | ProtocolError | None, DiscardReason]:
    """Decide on the frame the flag at ``buf[pos]`` may open.

    Returns ``(outcome, end, frame or error, discard reason)``; see NEED, SKIP, BAD,
    FRAME.  The header check sequence is verified as soon as the header is in, so a
    false start is rejected without waiting for the length it claims.  ``final``: no
    more octets will come.  ``base`` is the stream offset of ``buf[0]`` (for errors).
    """
    n = len(buf)
    offset = base + pos

    def bad(message: str, end: int, reason: DiscardReason = "framing") -> tuple[
        int, int, ProtocolError, DiscardReason
    ]:
        return BAD, end, FramingError(message, offset=offset, raw=bytes(buf[pos:end])), reason

    if pos + 3 > n:
        # At the end of a stream a flag (and a stray octet) is a closing flag.
        return (NEED, -1, None, "framing") if not final else (SKIP, pos + 1, None, "framing")
    fmt = (buf[pos + 1] << 8) | buf[pos + 2]
    if fmt & 0xF000 != 0xA000:
        return SKIP, pos + 1, None, "framing"
    length = fmt & 0x7FF
    if length < 7:
        return bad(f"HDLC length {length} is too short", pos + 3)
    body = pos + 1
    header_end = _header_end(buf, body, min(n, body + length))
    if header_end == -2:
        if body + length <= n:
            return bad("HDLC header does not fit its length", body + length)
        if final:
            return bad("stream ended inside an HDLC frame", n)
        return NEED, -1, None, "framing"
    if header_end < 0:
        # Report the frame start only: how much follows depends on how the stream
        # was split, and the events must not.
        return bad("bad HDLC addresses", pos + 3)
    if header_end + 2 > n:
        return (NEED, -1, None, "framing") if not final else bad(
            "stream ended inside an HDLC frame", n)
    h = header_end - body
    if length > h + 3:
        got = buf[header_end] | (buf[header_end + 1] << 8)
        expected = crc16_x25(buf[body:header_end])
        if got != expected:
            error = ChecksumError("HDLC HCS does not match", expected=expected, got=got,
                                  offset=offset, raw=bytes(buf[pos : header_end + 2]))
            return BAD, header_end + 2, error, "checksum"
    end = body + length  # index of the closing flag
    if end >= n:
        return (NEED, -1, None, "framing") if not final else bad(
            "stream ended inside an HDLC frame", n)
    if buf[end] != FLAG:
        return bad("no flag where the HDLC frame ends", end + 1)
    try:
        frame = _parse(buf, body, end, header_end, offset)
    except ChecksumError as exc:
        return BAD, end + 1, exc, "checksum"
    except FramingError as exc:
        return BAD, end + 1, exc, "framing"
    return FRAME, end, frame, "framing"


class HdlcFrameDecoder:
    """Finds HDLC frames in a byte stream (``feed``/``feed_eof``).

    A frame starts at a flag followed by a type-3 format field; its length field says
    where it ends, and the closing flag must be there (it may open the next frame).
    The header check sequence is verified as soon as the header is in, so a false
    start in noise is rejected at once instead of waiting for up to 2 KiB.  A rejected
    candidate yields ``Discarded`` (``"checksum"`` with :class:`ChecksumError`,
    ``"framing"`` otherwise) and the search resumes one octet after its flag, so a real
    frame hiding inside a false start is still found.  Octets outside frames yield
    ``Discarded(reason="garbage")`` per run (runs cut every ``max_junk`` octets, so the
    events do not depend on how the stream is split); flags alone are not garbage.

    ``byte_stuffing=True`` reads ISO/IEC 13239 octet-stuffed frames instead
    (``7D 5E`` = 7E, ``7D 5D`` = 7D, ``7D 7E`` aborts), as some HAN readers emit them.
    The buffer never holds more than one frame (2049 octets) plus one feed.
    """

    def __init__(self, *, byte_stuffing: bool = False, max_junk: int = 4096) -> None:
        """Raises:
        LocalProtocolError: ``max_junk`` < 16.
        """
        if max_junk < 16:
            raise LocalProtocolError("max_junk must be at least 16")
        self._stuffing = byte_stuffing
        self._max_junk = max_junk
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._silent_until = 0  # stream offset below which junk was already reported
        self._junk_start = -1
        self._junk = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[HdlcEvent]:
        """Add bytes; return the frames and discards completed so far. Never raises."""
        events: list[HdlcEvent] = []
        self._buf += data
        self._run(events, final=False)
        return events

    def feed_eof(self) -> list[HdlcEvent]:
        """Report what is left; the decoder can then take a new stream (offsets go on)."""
        events: list[HdlcEvent] = []
        self._run(events, final=True)
        if self._buf:
            self._discard(events, "framing", "stream ended inside an HDLC frame",
                          0, len(self._buf))
            self._consume(len(self._buf))
        self._flush_junk(events)
        return events

    # ------------------------------------------------------------- internals
    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._base += n

    def _to_junk(self, events: list[HdlcEvent], start: int, end: int) -> None:
        buf = self._buf
        at = start
        while at < end:
            offset = self._base + at
            if offset < self._silent_until:  # part of a candidate already reported
                at = min(end, self._silent_until - self._base)
                continue
            if self._junk_start < 0:
                self._junk_start = offset
            take = min(end - at, self._max_junk - len(self._junk))
            self._junk += buf[at : at + take]
            at += take
            if len(self._junk) >= self._max_junk:
                self._flush_junk(events)

    def _flush_junk(self, events: list[HdlcEvent]) -> None:
        if self._junk_start < 0:
            return
        raw = bytes(self._junk)
        error = FramingError(f"{len(raw)} octets outside any HDLC frame",
                             offset=self._junk_start, raw=raw)
        events.append(Discarded(reason="garbage", error=error, raw=raw, offset=self._junk_start))
        self._junk_start = -1
        self._junk = bytearray()

    def _discard(self, events: list[HdlcEvent], reason: DiscardReason, message: str,
                 start: int, end: int, error: ProtocolError | None = None) -> None:
        self._flush_junk(events)
        raw = bytes(self._buf[start:end])
        offset = self._base + start
        if error is None:
            error = FramingError(message, offset=offset, raw=raw)
        events.append(Discarded(reason=reason, error=error, raw=raw, offset=offset))
        self._silent_until = max(self._silent_until, self._base + end)

    def _run(self, events: list[HdlcEvent], *, final: bool) -> None:
        step = self._stuffed if self._stuffing else self._plain
        pos = 0
        while pos < len(self._buf):
            nxt = step(events, pos, final)
            if nxt < 0:
                break
            pos = nxt
        if pos:
            self._consume(pos)

    def _skip_to_flag(self, events: list[HdlcEvent], pos: int) -> int:
        buf = self._buf
        nxt = buf.find(FLAG, pos)
        if nxt < 0:
            nxt = len(buf)
        self._to_junk(events, pos, nxt)
        return nxt

    def _plain(self, events: list[HdlcEvent], pos: int, final: bool) -> int:
        """Decide on the octets at ``pos``: next position, or -1 for "need more"."""
        buf = self._buf
        if buf[pos] != FLAG:
            return self._skip_to_flag(events, pos)
        if pos + 1 < len(buf) and buf[pos + 1] == FLAG:
            return pos + 1  # repeated flags between frames
        outcome, end, found, reason = scan_frame(buf, pos, final=final, base=self._base)
        if outcome == NEED:
            return -1
        if outcome == SKIP:
            return pos + 1  # a closing flag followed by noise: the noise is junk
        if outcome == BAD:
            assert isinstance(found, ProtocolError)
            self._discard(events, reason, "", pos, end, found)
            return pos + 1  # a real frame may start inside the false one
        assert isinstance(found, HdlcFrame)
        self._flush_junk(events)
        events.append(FrameReceived(frame=found, raw=bytes(buf[pos : end + 1]),
                                    offset=self._base + pos))
        self._silent_until = max(self._silent_until, self._base + end)
        return end  # the closing flag may open the next frame

    def _stuffed(self, events: list[HdlcEvent], pos: int, final: bool) -> int:
        buf = self._buf
        n = len(buf)
        if buf[pos] != FLAG:
            return self._skip_to_flag(events, pos)
        # A stuffed frame is at most 2 x 2047 octets on the wire: no flag within that
        # is an overflow, reported over exactly that span whatever the feeds were.
        limit = pos + 2 * MAX_FRAME_LENGTH + 3
        close = buf.find(FLAG, pos + 1, limit)
        if close < 0:
            if n >= limit:
                self._discard(events, "overflow", "no closing flag for an HDLC frame", pos,
                              limit)
                return limit
            if final:
                if n - pos > 1:
                    self._discard(events, "framing", "stream ended inside an HDLC frame", pos, n)
                return n
            return -1
        if close == pos + 1:
            return close
        stuffed = bytes(buf[pos + 1 : close])
        if stuffed.endswith(b"\x7d"):
            self._discard(events, "framing", "HDLC frame aborted (7D 7E)", pos, close)
            return close
        body = _unstuff(stuffed)
        try:
            frame = HdlcFrame.decode_body(body, offset=self._base + pos + 1)
        except ChecksumError as exc:
            self._discard(events, "checksum", "", pos, close, exc)
            return close
        except FramingError as exc:
            self._discard(events, "framing", str(exc), pos, close)
            return close
        self._flush_junk(events)
        events.append(FrameReceived(frame=frame, raw=bytes(buf[pos : close + 1]),
                                    offset=self._base + pos))
        return close


def _unstuff(data: bytes) -> bytes:
    if 0x7D not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


# ------------------------------------------------------------- segmentation
class SegmentAssembler:
    """Joins segmented information fields (8.4.4.1: S = 1 on all but the last frame).

    ``add`` returns the whole information once the last segment is in, else ``None``.

    Raises (from ``add``):
        FramingError: the joined information would exceed ``max_size`` (the partial
            APDU is dropped).
    """

    def __init__(self, *, max_size: int = 65536) -> None:
        self._max = max_size
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def reset(self) -> None:
        self._parts = []
        self._size = 0

    def add(self, frame: HdlcFrame) -> bytes | None:
        self._size += len(frame.information)
        if self._size > self._max:
            self.reset()
            raise FramingError(f"segmented APDU exceeds {self._max} octets")
        if frame.segmented:
            self._parts.append(frame.information)
            return None
        if not self._parts:
            return frame.information
        self._parts.append(frame.information)
        whole = b"".join(self._parts)
        self.reset()
        return whole


# ------------------------------------------------------------- the link
class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"  # client: SNRM sent
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"  # client: DISC sent
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """The link is up; ``parameters`` are the negotiated ones (from our view)."""

    parameters: HdlcParameters


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The link is down (``by_peer``: the peer sent DISC or DM)."""

    by_peer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ApduReceived:
    """A whole APDU (segments joined, LLC header removed)."""

    apdu: bytes


LinkEvent = Connected | Disconnected | ApduReceived | Discarded


class HdlcLink:
    """A sans-IO HDLC connection (normal response mode, window 1) for one client/server pair.

    ``role="client"``: :meth:`connect` returns the SNRM; the UA brings ``Connected``.
    :meth:`send` returns the I frame(s) to write for an APDU; an APDU longer than the
    negotiated maximum information field goes out in segments, one per call: the first
    now, each next one when the peer's RR asks for it (fed frames return it as bytes in
    :meth:`receive`'s second value).  Segmented replies from the peer are pulled with RR
    frames the same way, and the joined APDU comes as ``ApduReceived``.

    ``role="server"``: answers SNRM with UA (negotiating the parameters), DISC with UA
    (or DM when not connected), I frames with the next segment / RR as above;
    :meth:`send` returns the reply's (first) I frame.

    Sequence numbers are checked: an I frame with an unexpected N(S) is discarded and
    answered with RR (asking again for the one expected).  ``receive(data)`` takes raw
    bytes and returns ``(events, bytes to write)``.  Frames for other addresses are
    ignored.  Timeouts and retries belong to the driver.
    """

    def __init__(
        self,
        *,
        role: Literal["client", "server"],
        client: HdlcAddress,
        server: HdlcAddress,
        parameters: HdlcParameters | None = None,
        max_apdu: int = 65536,
    ) -> None:
        if role not in ("client", "server"):
            raise LocalProtocolError(f"role must be client or server, got {role!r}")
        self.role = role
        self.client = client
        self.server = server
        self._proposed = parameters or HdlcParameters()
        self.parameters = HdlcParameters()  # until negotiated
        self.state = LinkState.DISCONNECTED
        self._decoder = HdlcFrameDecoder()
        self._assembler = SegmentAssembler(max_size=max_apdu)
        self._vs = 0  # V(S): N(S) of our next I frame
        self._vr = 0  # V(R): N(S) we expect next
        self._out: list[bytes] = []  # segments of our APDU still to send
        self._awaiting_ack = False
        self._last_sent = b""  # our last I frame, in case the peer asks for it again

    # addresses from our side
    @property
    def _local(self) -> HdlcAddress:
        return self.client if self.role == "client" else self.server

    @property
    def _remote(self) -> HdlcAddress:
        return self.server if self.role == "client" else self.client

    def _frame(self, control: int, information: bytes = b"", *, segmented: bool = False) -> bytes:
        return HdlcFrame(destination=self._remote, source=self._local, control=control,
                         information=information, segmented=segmented).encode()

    @property
    def _max_tx(self) -> int:
        return self.parameters.max_info_tx

    # ------------------------------------------------------------- client
    def connect(self) -> bytes:
        """The SNRM to send (client).

        Raises:
            LocalProtocolError: not a client, or not disconnected.
        """
        if self.role != "client":
            raise LocalProtocolError("only a client sends SNRM")
        if self.state is not LinkState.DISCONNECTED:
            raise LocalProtocolError(f"connect() in state {self.state.name}")
        self.state = LinkState.CONNECTING
        return self._frame(control_u(FrameKind.SNRM), self._proposed.encode())

    def disconnect(self) -> bytes:
        """The DISC to send (client).

        Raises:
            LocalProtocolError: not a client.
        """
        if self.role != "client":
            raise LocalProtocolError("only a client sends DISC")
        self.state = LinkState.DISCONNECTING
        return self._frame(control_u(FrameKind.DISC))

    # ------------------------------------------------------------- both
    def send(self, apdu: bytes) -> bytes:
        """The first I frame carrying ``apdu`` (LLC header added); later segments are
        returned by :meth:`receive` as the peer asks for them.

        Raises:
            LocalProtocolError: not connected, or a previous APDU is still being sent.
        """
        if self.state is not LinkState.CONNECTED:
            raise LocalProtocolError(f"send() in state {self.state.name}")
        if self._out or self._awaiting_ack:
            raise LocalProtocolError("the previous APDU is still being sent")
        llc = LLC_COMMAND if self.role == "client" else LLC_RESPONSE
        info = llc + apdu
        size = max(1, self._max_tx)
        self._out = [info[i : i + size] for i in range(0, len(info), size)]
        return self._next_segment()

    def acknowledge(self) -> bytes:
        """An RR frame with our N(R): the answer to a poll when there is no APDU to
        send (e.g. after an unconfirmed service).

        Raises:
            LocalProtocolError: not connected.
        """
        if self.state is not LinkState.CONNECTED:
            raise LocalProtocolError(f"acknowledge() in state {self.state.name}")
        return self._frame(control_s(FrameKind.RR, self._vr))

    def _next_segment(self) -> bytes:
        segment = self._out.pop(0)
        frame = self._frame(control_i(self._vs, self._vr), segment, segmented=bool(self._out))
        self._vs = (self._vs + 1) & 7
        self._awaiting_ack = True
        self._last_sent = frame
        return frame

    def receive(self, data: bytes) -> tuple[list[LinkEvent], list[bytes]]:
        """Feed received bytes; returns the events and the frames to write now."""
        events: list[LinkEvent] = []
        replies: list[bytes] = []
        for ev in self._decoder.feed(data):
            if isinstance(ev, Discarded):
                events.append(ev)
                continue
            frame = ev.frame
            if not (frame.destination.same(self._local) and frame.source.same(self._remote)):
                continue  # another station's frame (multi-drop line)
            try:
                self._on_frame(frame, ev.offset, events, replies)
            except RemoteProtocolError as exc:
                events.append(Discarded(reason="framing", error=exc, raw=ev.raw,
                                        offset=ev.offset))
        return events, replies

    def _on_frame(self, frame: HdlcFrame, offset: int, events: list[LinkEvent],
                  replies: list[bytes]) -> None:
        kind = frame.kind
        if self.role == "server":
            if kind is FrameKind.SNRM:
                theirs = HdlcParameters.decode(frame.information)
                mine = self._proposed
                # Each side's transmit length is bounded by the other's receive length.
                agreed = HdlcParameters(
                    max_info_tx=min(mine.max_info_tx, theirs.max_info_rx),
                    max_info_rx=min(mine.max_info_rx, theirs.max_info_tx),
                    window_tx=1,
                    window_rx=1,
                )
                self.parameters = agreed
                self._reset_sequences()
                self.state = LinkState.CONNECTED
                replies.append(self._frame(control_u(FrameKind.UA), agreed.encode()))
                events.append(Connected(parameters=agreed))
                return
            if kind is FrameKind.DISC:
                if self.state is LinkState.CONNECTED:
                    replies.append(self._frame(control_u(FrameKind.UA)))
                    self.state = LinkState.DISCONNECTED
                    self._reset_sequences()
                    events.append(Disconnected(by_peer=True))
                else:
                    replies.append(self._frame(control_u(FrameKind.DM)))
                return
            if self.state is not LinkState.CONNECTED:
                if kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
                    replies.append(self._frame(control_u(FrameKind.DM)))
                return
        else:
            if kind is FrameKind.UA and self.state is LinkState.CONNECTING:
                theirs = HdlcParameters.decode(frame.information)
                # The server's UA states its own transmit/receive lengths.
                self.parameters = HdlcParameters(
                    max_info_tx=theirs.max_info_rx,
                    max_info_rx=theirs.max_info_tx,
                    window_tx=1,
                    window_rx=1,
                )
                self._reset_sequences()
                self.state = LinkState.CONNECTED
                events.append(Connected(parameters=self.parameters))
                return
            if kind in (FrameKind.UA, FrameKind.DM) and self.state is LinkState.DISCONNECTING:
                self.state = LinkState.DISCONNECTED
                self._reset_sequences()
                events.append(Disconnected(by_peer=False))
                return
            if kind is FrameKind.DM:
                self.state = LinkState.DISCONNECTED
                self._reset_sequences()
                events.append(Disconnected(by_peer=True))
                return
            if kind is FrameKind.FRMR:
                self.state = LinkState.ERROR
                raise RemoteProtocolError("the server rejected a frame (FRMR)")
        if kind in (FrameKind.RR, FrameKind.RNR):
            self._on_ack(frame, replies)
            return
        if kind is FrameKind.I:
            self._on_i(frame, events, replies)
            return
        if kind is FrameKind.UI:
            info = self._assembler.add(frame)
            if info is not None:
                events.append(ApduReceived(apdu=split_llc(info)[1]))

    def _reset_sequences(self) -> None:
        self._vs = self._vr = 0
        self._out = []
        self._awaiting_ack = False
        self._last_sent = b""
        self._assembler.reset()

    def _on_ack(self, frame: HdlcFrame, replies: list[bytes]) -> None:
        nr = frame.receive_sequence
        if self._awaiting_ack and nr == self._vs:
            self._awaiting_ack = False
            if self._out and frame.kind is FrameKind.RR:
                replies.append(self._next_segment())
        elif self._awaiting_ack and nr == (self._vs - 1) & 7 and self._last_sent:
            # The peer did not get our last I frame and asks for it again (8.4.3.1).
            replies.append(self._last_sent)

    def _on_i(self, frame: HdlcFrame, events: list[LinkEvent], replies: list[bytes]) -> None:
        ns, nr = frame.send_sequence, frame.receive_sequence
        if ns != self._vr:
            # Out of sequence (a repeat or a loss): ask for the one we expect.
            replies.append(self._frame(control_s(FrameKind.RR, self._vr)))
            raise RemoteProtocolError(f"I frame N(S)={ns}, expected {self._vr}")
        self._vr = (self._vr + 1) & 7
        if self._awaiting_ack and nr == self._vs:
            self._awaiting_ack = False  # an I frame acknowledges ours too
        info = self._assembler.add(frame)
        if info is None:
            # More segments follow: the receiver pulls each with RR (8.4.4.1).
            replies.append(self._frame(control_s(FrameKind.RR, self._vr)))
            return
        events.append(ApduReceived(apdu=split_llc(info)[1]))
