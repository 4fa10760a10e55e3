"""The DLMS TCP/UDP wrapper (IEC 62056-47 / Green Book ed. 9, clause 7).

Each APDU is sent with an 8-octet header: ``version(2) = 0x0001 | source wPort(2) |
destination wPort(2) | length(2)``, length = the APDU octets that follow (no LLC).
IANA port 4059 (tcp and udp).  wPorts mirror the HDLC SAPs: client 1 management,
16 public; server 1 management logical device, 16-126 open; 127 broadcast.

:class:`WrapperDecoder` reassembles a TCP byte stream (a segment may hold part of an
APDU or several).  Bytes that are not a version-1 header are discarded up to the next
``00 01``; a header announcing more than ``max_apdu`` octets is discarded as well.

Not implemented: other wrapper versions (none is defined).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Self

from gateway.errors import FramingError, LocalProtocolError
from gateway.protocols._events import Discarded

__all__ = [
    "HEADER_LEN",
    "PORT",
    "VERSION",
    "WrapperDecoder",
    "WrapperEvent",
    "WrapperFrame",
    "WrapperReceived",
]

VERSION: Final = 1
HEADER_LEN: Final = 8
PORT: Final = 4059


@dataclass(frozen=True, slots=True, kw_only=True)
class WrapperFrame:
    """One wrapper PDU: the header's wPorts and the APDU it carries."""

    source_wport: int
    destination_wport: int
    apdu: bytes

    def encode(self) -> bytes:
        """Raises:
        LocalProtocolError: a wPort or the APDU length does not fit 16 bits.
        """
        if not (0 <= self.source_wport <= 0xFFFF and 0 <= self.destination_wport <= 0xFFFF):
            raise LocalProtocolError("wPorts are 16-bit values")
        if len(self.apdu) > 0xFFFF:
            raise LocalProtocolError("an APDU in the wrapper is at most 65535 octets")
        return (
            VERSION.to_bytes(2, "big")
            + self.source_wport.to_bytes(2, "big")
            + self.destination_wport.to_bytes(2, "big")
            + len(self.apdu).to_bytes(2, "big")
            + self.apdu
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one wrapper PDU.

        Raises:
            FramingError: not version 1, or the length does not match.
        """
        if len(data) < HEADER_LEN:
            raise FramingError("a wrapper header is 8 octets", raw=data)
        version = int.from_bytes(data[0:2], "big")
        if version != VERSION:
            raise FramingError(f"wrapper version {version}, expected 1", raw=data)
        length = int.from_bytes(data[6:8], "big")
        if length != len(data) - HEADER_LEN:
            raise FramingError(
                f"wrapper length says {length}, {len(data) - HEADER_LEN} octets follow",
                offset=6,
                raw=data,
            )
        return cls(
            source_wport=int.from_bytes(data[2:4], "big"),
            destination_wport=int.from_bytes(data[4:6], "big"),
            apdu=bytes(data[HEADER_LEN:]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WrapperReceived:
    """A complete wrapper PDU found in the stream at ``offset``."""

    frame: WrapperFrame
    offset: int


WrapperEvent = WrapperReceived | Discarded


class WrapperDecoder:
    """Reassembles wrapper PDUs from a TCP stream (``feed``/``feed_eof``; never raises)."""

    def __init__(self, *, max_apdu: int = 65535) -> None:
        self._max = max_apdu
        self._buf = bytearray()
        self._base = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[WrapperEvent]:
        events: list[WrapperEvent] = []
        self._buf += data
        self._run(events, final=False)
        return events

    def feed_eof(self) -> list[WrapperEvent]:
        events: list[WrapperEvent] = []
        self._run(events, final=True)
        if self._buf:
            self._discard(events, len(self._buf), "stream ended inside a wrapper PDU")
        return events

    def _discard(self, events: list[WrapperEvent], n: int, message: str) -> None:
        raw = bytes(self._buf[:n])
        error = FramingError(message, offset=self._base, raw=raw)
        events.append(Discarded(reason="framing", error=error, raw=raw, offset=self._base))
        del self._buf[:n]
        self._base += n

    def _run(self, events: list[WrapperEvent], *, final: bool) -> None:
        buf = self._buf
        while buf:
            if len(buf) >= 2 and (buf[0], buf[1]) != (0, VERSION):
                nxt = buf.find(b"\x00\x01", 1)
                self._discard(events, nxt if nxt > 0 else len(buf) - (buf[-1] == 0),
                              "octets that are not a wrapper header")
                continue
            if len(buf) < HEADER_LEN:
                return
            length = int.from_bytes(buf[6:8], "big")
            if length > self._max:
                self._discard(events, 2, f"wrapper PDU of {length} octets exceeds {self._max}")
                continue
            total = HEADER_LEN + length
            if len(buf) < total:
                return
            frame = WrapperFrame.decode(bytes(buf[:total]))
            events.append(WrapperReceived(frame=frame, offset=self._base))
            del buf[:total]
            self._base += total
