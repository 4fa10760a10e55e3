"""IEC 62056-21 (ex IEC 61107, "D0", the optical port): messages, readout decoder, client dialog.

Implemented (clause numbers of IEC 62056-21:2002):

* 6.3 messages, each a frozen dataclass with ``encode()``/``decode()``:
  request ``/?address!CRLF`` (6.3.1), identification ``/XXXZ\\W…ident CRLF`` with the
  enhanced identification ``\\W`` (6.3.2), acknowledgement/option select
  ``ACK V Z Y CRLF`` (6.3.3), the readout data message ``STX block ! CRLF ETX BCC``
  (6.3.4), ``ACK``/``NAK`` (6.3.5/6.3.6), programming command messages
  ``SOH C D STX data ETX BCC`` including break ``SOH B0 ETX BCC`` (6.3.7) and the
  programming-mode answer/error messages ``STX data ETX BCC`` (6.3.8/6.3.9); data sets
  ``address(value*unit)`` and data lines (6.5).  The block check character is the XOR
  of every byte after SOH/STX up to and including ETX/EOT.
* 6.4 protocol modes A, B, C and D for **data readout** (:class:`ClientSession`), with
  the baud rate characters of modes B and C/E and the reaction time ``tr`` (200 ms ≤ tr
  ≤ 1500 ms; 20 ms for meters whose manufacturer id has an upper-case third letter).
* :class:`ReadoutDecoder` finds every readout in a capture (noise, echoes, parity bits
  and all); see its docstring.

Not implemented:

* Programming mode (option select ``Y = 1``): the command *messages* encode and decode,
  but no session sends passwords, reads or writes registers.
* Mode E (``\\2`` enhanced identification plus option select ``V = 2, Y = 2``, which
  switches the line to HDLC/DLMS): a mode-E capable meter is read in mode C; a capture
  that switches to HDLC yields ``Discarded(reason="unsupported")``.
* Partial blocks (EOT) are decoded as messages but never reassembled.

Every byte is read with its top bit cleared: the link is 7E1, and a port opened as 8N1
(or a pty, which cannot do 7E1) delivers the parity bit in bit 7.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import ClassVar, Literal, Self

from gateway.errors import (
    ChecksumError,
    FramingError,
    GatewayError,
    LocalProtocolError,
    ProtocolError,
    ReadTimeout,
    UnsupportedError,
)
from gateway.model import MeterFrame, Reading
from gateway.protocols._checks import bcc
from gateway.protocols._events import Discarded
from gateway.protocols.obis import normalise_id

__all__ = [
    "BAUD_MODE_B",
    "BAUD_MODE_C",
    "PROTOCOL",
    "Ack",
    "AckOptionSelect",
    "Action",
    "AnswerMessage",
    "ClientSession",
    "CommandMessage",
    "DataLine",
    "DataSet",
    "IdentReceived",
    "IdentificationMessage",
    "Message",
    "Nak",
    "ReadoutDecoder",
    "ReadoutMessage",
    "RequestMessage",
    "Retrying",
    "Send",
    "SessionEvent",
    "SessionFailed",
    "SessionState",
    "SetBaudrate",
    "baud_char_for",
    "decode_message",
    "transmission_time_s",
]

PROTOCOL = "iec62056-21"

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CR = 0x0D
LF = 0x0A
SLASH = 0x2F

# 6.3.14 baud rate identification.  Mode B: 'A'..'I', mode C and E: '0'..'9'.  'G'..'I'
# and '7'..'9' are reserved for later extensions; a meter sending one is "unsupported".
BAUD_MODE_B: dict[str, int] = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
BAUD_MODE_C: dict[str, int] = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
_RESERVED_B = frozenset("GHI")
_RESERVED_C = frozenset("789")
INITIAL_BAUD = 300  # modes A, B, C and E start at 300 Bd (6.4)
MODE_D_BAUD = 2400  # mode D pushes at 2400 Bd (6.4.5)

# The parity bit of a 7E1 character read as 8N1 lands in bit 7: dropping it gives the
# 7-bit character back (and leaves real 7-bit traffic untouched).
_MASK = bytes(b & 0x7F for b in range(256))

_ADDRESS_RE = re.compile(r"^[0-9A-Za-z ]{0,32}$")
_MANUFACTURER_RE = re.compile(r"^[A-Za-z]{3}$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")


def transmission_time_s(n_bytes: int, baud: int) -> float:
    """Time to send ``n_bytes`` at ``baud`` on a 7E1 line (10 bits per character)."""
    return n_bytes * 10 / baud


def baud_char_for(baud: int, mode: Literal["B", "C"] = "C") -> str:
    """The baud rate character announcing ``baud`` in mode B or C/E.

    Raises:
        LocalProtocolError: ``baud`` has no character in that mode's table.
    """
    table = BAUD_MODE_B if mode == "B" else BAUD_MODE_C
    for ch, b in table.items():
        if b == baud:
            return ch
    raise LocalProtocolError(f"{baud} Bd has no mode {mode} baud rate character")


def _ascii(data: bytes) -> str:
    return data.translate(_MASK).decode("ascii")


def _printable(text: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in text)


# ----------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestMessage:
    """6.3.1 ``/ ? device-address ! CR LF``; an empty address asks any meter."""

    address: str = ""

    def __post_init__(self) -> None:
        if not _ADDRESS_RE.match(self.address):
            raise LocalProtocolError(
                f"device address must be ≤32 of 0-9 A-Z a-z space: {self.address!r}"
            )

    def encode(self) -> bytes:
        return b"/?" + self.address.encode("ascii") + b"!\r\n"

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a request message.
        """
        text = _ascii(data)
        if not (text.startswith("/?") and text.endswith("!\r\n")):
            raise FramingError(f"not a request message: {text[:40]!r}", raw=data)
        address = text[2:-3]
        if not _ADDRESS_RE.match(address):
            raise FramingError(f"bad device address {address[:40]!r}", offset=2, raw=data)
        return cls(address=address)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentificationMessage:
    """6.3.2 ``/ X X X Z [\\W…] identification CR LF``.

    ``enhanced`` holds the enhanced identification characters W (``"2"`` announces
    mode E).  ``identification`` is what follows them, e.g. ``MT174-0001``.
    """

    manufacturer: str
    baud_char: str
    identification: str
    enhanced: tuple[str, ...] = ()

    MAX_LINE: ClassVar[int] = 128  # 16 ident characters per the standard; meters send more

    def __post_init__(self) -> None:
        if not _MANUFACTURER_RE.match(self.manufacturer):
            raise LocalProtocolError(f"manufacturer id must be 3 letters: {self.manufacturer!r}")
        if len(self.baud_char) != 1 or self.baud_char in "/!\\" or not _printable(self.baud_char):
            raise LocalProtocolError(f"bad baud rate character {self.baud_char!r}")
        if any(len(w) != 1 or not _printable(w) for w in self.enhanced):
            raise LocalProtocolError(f"bad enhanced identification {self.enhanced!r}")
        if not _printable(self.identification) or any(c in "/!" for c in self.identification):
            raise LocalProtocolError(f"bad identification {self.identification!r}")
        if self.identification.startswith("\\"):
            raise LocalProtocolError("identification must not start with '\\' (enhanced id)")

    @property
    def mode(self) -> Literal["A", "B", "C", "E"]:
        """The protocol mode the baud character announces (6.3.14).

        ``"E"`` means mode C with the mode E capability (``\\2``); such a meter is still
        read with a mode C data readout.  Mode D meters send ``'3'`` and look like mode C:
        the mode is only known from how the meter got to talk (push, no request).
        """
        if self.baud_char in BAUD_MODE_B or self.baud_char in _RESERVED_B:
            return "B"
        if self.baud_char in BAUD_MODE_C or self.baud_char in _RESERVED_C:
            return "E" if "2" in self.enhanced else "C"
        return "A"

    @property
    def baud(self) -> int | None:
        """Highest baud rate the meter offers; ``None`` for a reserved character."""
        if self.mode == "A":
            return INITIAL_BAUD
        return BAUD_MODE_B.get(self.baud_char) or BAUD_MODE_C.get(self.baud_char)

    @property
    def fast_reaction(self) -> bool:
        """An upper-case third manufacturer letter means the meter supports tr = 20 ms."""
        return self.manufacturer[2].isupper()

    def encode(self) -> bytes:
        enhanced = "".join("\\" + w for w in self.enhanced)
        text = f"/{self.manufacturer}{self.baud_char}{enhanced}{self.identification}\r\n"
        return text.encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not an identification message.
        """
        text = _ascii(data)
        if not text.startswith("/") or not text.endswith("\r\n") or len(text) < 7:
            raise FramingError(f"not an identification message: {text[:40]!r}", raw=data)
        if len(text) > cls.MAX_LINE:
            raise FramingError("identification message too long", raw=data[:64])
        body = text[1:-2]
        manufacturer, baud_char, rest = body[:3], body[3], body[4:]
        enhanced: list[str] = []
        while len(rest) >= 2 and rest[0] == "\\":
            enhanced.append(rest[1])
            rest = rest[2:]
        try:
            return cls(
                manufacturer=manufacturer,
                baud_char=baud_char,
                identification=rest,
                enhanced=tuple(enhanced),
            )
        except LocalProtocolError as exc:
            raise FramingError(f"bad identification message: {exc}", raw=data) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class AckOptionSelect:
    """6.3.3 ``ACK V Z Y CR LF``.

    V protocol control: ``0`` normal, ``1`` secondary, ``2`` HDLC (mode E).
    Z baud rate character (mode C/E table).  Y mode control: ``0`` data readout,
    ``1`` programming, ``2`` binary (HDLC), others manufacturer specific.
    """

    protocol_char: str = "0"
    baud_char: str
    mode_char: str = "0"

    def __post_init__(self) -> None:
        for name in ("protocol_char", "baud_char", "mode_char"):
            ch = getattr(self, name)
            if len(ch) != 1 or not ch.isascii() or not ch.isalnum():
                raise LocalProtocolError(f"{name} must be one digit or letter, got {ch!r}")

    @property
    def baud(self) -> int | None:
        return BAUD_MODE_C.get(self.baud_char)

    @property
    def is_hdlc(self) -> bool:
        """The option select switches to mode E (HDLC), which we do not speak."""
        return self.protocol_char == "2" or self.mode_char == "2"

    def encode(self) -> bytes:
        return bytes((ACK,)) + f"{self.protocol_char}{self.baud_char}{self.mode_char}\r\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not an acknowledgement/option select message.
        """
        m = data.translate(_MASK)
        if len(m) != 6 or m[0] != ACK or m[4:] != b"\r\n":
            raise FramingError("not an acknowledgement/option select message", raw=data)
        text = m[1:4].decode("ascii")
        try:
            return cls(protocol_char=text[0], baud_char=text[1], mode_char=text[2])
        except LocalProtocolError as exc:
            raise FramingError(f"bad option select: {exc}", offset=1, raw=data) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """6.3.5 a lone ``ACK`` (programming mode)."""

    def encode(self) -> bytes:
        return bytes((ACK,))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a lone ACK.
        """
        if data.translate(_MASK) != bytes((ACK,)):
            raise FramingError("not an ACK", raw=data)
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class Nak:
    """6.3.6 ``NAK``: repeat request (programming mode)."""

    def encode(self) -> bytes:
        return bytes((NAK,))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a lone NAK.
        """
        if data.translate(_MASK) != bytes((NAK,)):
            raise FramingError("not a NAK", raw=data)
        return cls()


# ---------------------------------------------------------------- data sets
@dataclass(frozen=True, slots=True, kw_only=True)
class DataSet:
    """6.5 ``address(value*unit)``.  ``address`` is ``None`` for a bare ``(value)``:
    the extra values of a multi-value set (``P.01(a)(b)(c)``) or a command operand.
    ``unit`` is ``None`` without ``*``; ``""`` for a ``*`` followed by nothing."""

    address: str | None
    value: str
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.address is not None and (
            not self.address
            or not _printable(self.address)
            or any(c in "()/!" for c in self.address)
        ):
            raise LocalProtocolError(f"bad data set address {self.address!r}")
        if not _printable(self.value) or any(c in "()*/!" for c in self.value):
            raise LocalProtocolError(f"bad data set value {self.value!r}")
        if self.unit is not None and (
            not _printable(self.unit) or any(c in "()/!" for c in self.unit)
        ):
            raise LocalProtocolError(f"bad data set unit {self.unit!r}")

    def encode(self) -> bytes:
        unit = "" if self.unit is None else "*" + self.unit
        return f"{self.address or ''}({self.value}{unit})".encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not exactly one data set.
        """
        sets = _parse_data_sets(_ascii(data), data)
        if len(sets) != 1:
            raise FramingError(f"expected one data set, found {len(sets)}", raw=data)
        return cls(address=sets[0].address, value=sets[0].value, unit=sets[0].unit)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataLine:
    """6.5 one data line (without its CR LF): one or more data sets."""

    sets: tuple[DataSet, ...]

    def encode(self) -> bytes:
        return b"".join(s.encode() for s in self.sets)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: the text is not a sequence of data sets.
        """
        return cls(sets=tuple(_parse_data_sets(_ascii(data), data)))


def _parse_data_sets(text: str, raw: bytes = b"") -> list[DataSet]:
    """Split ``a(v*u)(v2)b(v3)`` into data sets; offsets in errors are into ``text``."""
    sets: list[DataSet] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("(", i)
        if j < 0:
            if text[i:].strip():
                raise FramingError(
                    f"text outside a data set: {text[i : i + 40]!r}", offset=i, raw=raw
                )
            break
        k = text.find(")", j + 1)
        if k < 0:
            raise FramingError("data set without ')'", offset=j, raw=raw)
        address = text[i:j].strip() or None
        inner = text[j + 1 : k]
        value, star, unit = inner.partition("*")
        try:
            sets.append(DataSet(address=address, value=value, unit=unit if star else None))
        except LocalProtocolError as exc:
            raise FramingError(str(exc), offset=i, raw=raw) from exc
        i = k + 1
    return sets


# ----------------------------------------------------- STX / SOH messages
def _split_block(data: bytes, start_byte: int, what: str) -> tuple[bytes, bool]:
    """Check ``start … ETX|EOT BCC``; return the bytes between and whether EOT ended it.

    Raises:
        FramingError: delimiters missing.
        ChecksumError: BCC mismatch.
    """
    m = data.translate(_MASK)
    if len(m) < 3 or m[0] != start_byte or m[-2] not in (ETX, EOT):
        raise FramingError(f"not a {what}", raw=data)
    body = m[1:-2]
    if ETX in body or EOT in body:
        raise FramingError(f"{what}: ETX/EOT inside the block", raw=data)
    expected = bcc(m[1:-1])
    if expected != m[-1]:
        raise ChecksumError(
            f"{what}: BCC 0x{m[-1]:02X}, computed 0x{expected:02X}",
            expected=expected,
            got=m[-1],
            offset=len(m) - 1,
            raw=data,
        )
    return body, m[-2] == EOT


def _block(start_byte: int, body: bytes, partial: bool) -> bytes:
    tail = body + bytes((EOT if partial else ETX,))
    return bytes((start_byte,)) + tail + bytes((bcc(tail),))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadoutMessage:
    """6.3.4 data readout: ``STX`` data lines (each CR LF) ``! CR LF ETX BCC``."""

    lines: tuple[DataLine, ...]

    def data_block(self) -> bytes:
        return b"".join(line.encode() + b"\r\n" for line in self.lines) + b"!\r\n"

    def encode(self) -> bytes:
        return _block(STX, self.data_block(), False)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a readout data message.
        ChecksumError: BCC mismatch (``offset`` is the BCC byte's).
        """
        body, partial = _split_block(data, STX, "readout data message")
        if (
            partial
            or not body.endswith(b"!\r\n")
            or (len(body) > 3 and not body.endswith(b"\r\n!\r\n"))
        ):
            raise FramingError("readout data block must end with CR LF ! CR LF", raw=data)
        text = _ascii(body[:-3])
        lines = text.split("\r\n")[:-1] if text else []
        try:
            return cls(lines=tuple(DataLine.decode(line.encode()) for line in lines))
        except FramingError as exc:
            raise FramingError(str(exc), offset=1, raw=data) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerMessage:
    """6.3.8/6.3.9 programming-mode answer or error message ``STX data ETX|EOT BCC``.

    ``data`` keeps the block as sent (it may or may not end in CR LF); ``lines()``
    parses it.
    """

    data: str
    partial: bool = False

    def __post_init__(self) -> None:
        if not all(0x20 <= ord(c) < 0x7F or c in "\r\n" for c in self.data):
            raise LocalProtocolError("answer data must be printable ASCII")

    def lines(self) -> tuple[DataLine, ...]:
        """Raises:
        FramingError: the data is not data sets.
        """
        return tuple(DataLine.decode(line.encode()) for line in self.data.split("\r\n") if line)

    def encode(self) -> bytes:
        return _block(STX, self.data.encode("ascii"), self.partial)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not an STX…ETX|EOT BCC message.
        ChecksumError: BCC mismatch.
        """
        body, partial = _split_block(data, STX, "answer message")
        try:
            return cls(data=_ascii(body), partial=partial)
        except LocalProtocolError as exc:
            raise FramingError(str(exc), offset=1, raw=data) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandMessage:
    """6.3.7 ``SOH C D [STX data] ETX|EOT BCC``.

    C: ``P`` password, ``W`` write, ``R`` read, ``E`` execute, ``B`` exit (break).
    D: command type (``0``..``9``).  Break is ``CommandMessage(command="B",
    command_type="0")`` with no data.
    """

    command: str
    command_type: str
    data: str | None = None
    partial: bool = False

    def __post_init__(self) -> None:
        if len(self.command) != 1 or not self.command.isascii() or not self.command.isalpha():
            raise LocalProtocolError(f"bad command message identifier {self.command!r}")
        if len(self.command_type) != 1 or not _printable(self.command_type):
            raise LocalProtocolError(f"bad command type identifier {self.command_type!r}")
        if self.data is not None and not _printable(self.data):
            raise LocalProtocolError("command data must be printable ASCII")

    def data_set(self) -> DataSet:
        """The operand as a data set (``1.8.0(1)``, ``(1234567)``).

        Raises:
            FramingError: no data, or not one data set.
        """
        if self.data is None:
            raise FramingError(f"command {self.command}{self.command_type} carries no data")
        return DataSet.decode(self.data.encode("ascii"))

    def encode(self) -> bytes:
        body = f"{self.command}{self.command_type}".encode("ascii")
        if self.data is not None:
            body += bytes((STX,)) + self.data.encode("ascii")
        return _block(SOH, body, self.partial)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: not a command message.
        ChecksumError: BCC mismatch.
        """
        body, partial = _split_block(data, SOH, "command message")
        if len(body) < 2:
            raise FramingError("command message without command identifiers", raw=data)
        head, stx, rest = body.partition(bytes((STX,)))
        if len(head) != 2 or STX in rest:
            raise FramingError("command message: expected C D [STX data]", offset=1, raw=data)
        try:
            return cls(
                command=chr(head[0]),
                command_type=chr(head[1]),
                data=_ascii(rest) if stx else None,
                partial=partial,
            )
        except LocalProtocolError as exc:
            raise FramingError(str(exc), offset=1, raw=data) from exc


Message = (
    RequestMessage
    | IdentificationMessage
    | AckOptionSelect
    | Ack
    | Nak
    | ReadoutMessage
    | AnswerMessage
    | CommandMessage
)


def _decode_slash(data: bytes) -> Message:
    if data.translate(_MASK).startswith(b"/?"):
        return RequestMessage.decode(data)
    return IdentificationMessage.decode(data)


def _decode_ack(data: bytes) -> Message:
    return Ack.decode(data) if len(data) == 1 else AckOptionSelect.decode(data)


def _decode_stx(data: bytes) -> Message:
    m = data.translate(_MASK)
    if len(m) >= 5 and m[-5:-2] == b"!\r\n":
        return ReadoutMessage.decode(data)
    return AnswerMessage.decode(data)


_DECODERS = {
    SLASH: _decode_slash,
    ACK: _decode_ack,
    NAK: Nak.decode,
    STX: _decode_stx,
    SOH: CommandMessage.decode,
}


def decode_message(data: bytes) -> Message:
    """Decode exactly one message, dispatching on its first byte.

    Raises:
        FramingError: empty input or unknown first byte, or the message is malformed.
        ChecksumError: BCC mismatch.
    """
    if not data:
        raise FramingError("empty message")
    decoder = _DECODERS.get(data[0] & 0x7F)
    if decoder is None:
        raise FramingError(f"no IEC 62056-21 message starts with 0x{data[0]:02X}", raw=data[:16])
    return decoder(data)


# ------------------------------------------------- readout → MeterFrame
# Addresses whose values are identifiers, clock fields or flag words: they stay text
# so that "0272031312565" keeps its leading zero and "093012" stays a time of day.
_TEXT_VALUE_RE = re.compile(
    r"^(?:0\.0\.\d+|96\.1\.\d+|C\.1\.\d+|0\.9\.\d+|0\.2\.\d+|F\.F(?:\.\d+)?)$"
)
# meter_id preference (serial number registers), by their C.D.E part
_SERIAL_ADDRESSES = ("0.0.0", "C.1.0", "96.1.0")


def _short(reading_id: str) -> str:
    """``1-0:0.9.1*255`` → ``0.9.1``: the C.D.E part that identifies the quantity."""
    return reading_id.rpartition(":")[2].partition("*")[0]


def _json_value(reading_id: str, text: str) -> int | float | str:
    if _TEXT_VALUE_RE.match(_short(reading_id)) or not _NUMBER_RE.match(text):
        return text
    return float(text) if "." in text else int(text)


def _readings(sets: list[DataSet]) -> tuple[Reading, ...]:
    # A set without address continues the previous one (``P.01(a)(b)(c)``, or the
    # continuation lines of a load profile): its values join that reading.
    groups: list[tuple[str, list[DataSet]]] = []
    for s in sets:
        if s.address is None and groups:
            groups[-1][1].append(s)
        else:
            groups.append((normalise_id(s.address or ""), [s]))
    out = []
    for rid, members in groups:
        extra: tuple[tuple[str, object], ...] = ()
        if len(members) > 1:
            # tuples, not lists: a Reading stays hashable; json.dumps writes them as arrays
            values = tuple(_json_value(rid, m.value) for m in members)
            extra = (("values", values),)
            if any(m.unit for m in members[1:]):
                extra += (("units", tuple(m.unit or None for m in members)),)
        first = members[0]
        out.append(
            Reading(
                id=rid, value=_json_value(rid, first.value), unit=first.unit or None, extra=extra
            )
        )
    return tuple(out)


def _meter_id(readings: tuple[Reading, ...], ident: IdentificationMessage | None) -> str | None:
    by_short: dict[str, str] = {}
    for r in readings:
        by_short.setdefault(_short(r.id), str(r.value))
    for key in _SERIAL_ADDRESSES:
        if by_short.get(key, "").strip():
            return by_short[key].strip()
    if ident is not None and ident.identification.strip():
        return ident.identification.strip()
    return None


def _meter_time(readings: tuple[Reading, ...], tz: tzinfo | None) -> datetime | None:
    """0.9.2 date ``YYMMDD`` (or ``CYYMMDD``, C = century digit after 1900) and 0.9.1
    time ``hhmmss`` (or ``hhmm``), separators ignored; in the meter's zone ``tz``."""
    if tz is None:
        return None
    date = time = None
    for r in readings:
        short = _short(r.id)
        if short == "0.9.2" and date is None:
            date = re.sub(r"\D", "", str(r.value))
        elif short == "0.9.1" and time is None:
            time = re.sub(r"\D", "", str(r.value))
    if date is None or time is None:
        return None
    if len(date) == 7:
        year = 1900 + 100 * int(date[0]) + int(date[1:3])
        date = date[1:]
    elif len(date) == 6:
        year = 2000 + int(date[:2])
    else:
        return None
    if len(time) == 4:
        time += "00"
    if len(time) != 6:
        return None
    try:
        return datetime(
            year,
            int(date[2:4]),
            int(date[4:6]),
            int(time[:2]),
            int(time[2:4]),
            int(time[4:6]),
            tzinfo=tz,
        )
    except ValueError:
        return None


# ------------------------------------------------------------ the decoder
_BLANK = frozenset(b"\r\n\t \x00")
_STARTS = frozenset((SLASH, STX, SOH, ACK, NAK))
# what ends (ETX, EOT) or cuts short (STX, SOH, "/" at a line start) a data message;
# a command message legitimately holds an STX
_STX_END = re.compile(rb"[\x01-\x04]|\n/")
_SOH_END = re.compile(rb"[\x01\x03\x04]")
# control characters that cannot be part of a data line (CR, LF and TAB can)
_CTRL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(slots=True)
class _Pending:
    """An identification line waiting for its data message."""

    message: IdentificationMessage
    header: str
    raw: bytes
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _IdentSeen:
    """An identification line went by (internal: only the session needs it)."""

    message: IdentificationMessage
    header: str


_ScanEvent = MeterFrame | Discarded | _IdentSeen


@dataclass(slots=True)
class _Scan:
    """What one ``_feed`` call found."""

    events: list[_ScanEvent] = field(default_factory=list)


class ReadoutDecoder:
    """Finds every data readout in a byte stream (a capture, or a live port).

    A readout is an optional identification line, then ``STX`` data block ``! CR LF``
    ``ETX BCC``; meters that push in mode D without STX (EasyMeter Q3D and others) send
    the identification line, data lines and a ``!`` line, which is decoded too with
    ``checksum_ok=None``.  Everything else a capture of a dialog holds is recognised and
    skipped silently: the sign-on request and its echo, ACK/option select, ACK, NAK,
    programming commands and answers.  Other bytes are reported as
    ``Discarded("garbage")``, one event per run; a readout with a bad BCC as
    ``Discarded("checksum")``; a dialog switching to HDLC (mode E) as
    ``Discarded("unsupported")``; lines of a good readout that are not data sets as
    ``Discarded("framing")`` (the rest of the readout is kept).

    Timestamps: 0.9.1/0.9.2 are the meter's local clock without a zone.  Pass
    ``meter_tz`` (e.g. ``ZoneInfo("Europe/Berlin")``) to get an aware
    ``MeterFrame.timestamp``; without it the timestamp is ``None`` (the clock values stay
    in the readings).  ``meter_id`` is the value of 0.0.0, C.1.0 or 96.1.0 (first found,
    in that order), else the identification after the baud character.

    Memory is bounded by ``max_frame_bytes``: a frame that grows beyond it is discarded
    (``"overflow"``).  Decisions depend only on the bytes, never on how they were split
    across ``feed`` calls.
    """

    def __init__(self, *, meter_tz: tzinfo | None = None, max_frame_bytes: int = 65536) -> None:
        if max_frame_bytes < 256:
            raise LocalProtocolError("max_frame_bytes must be at least 256")
        self._tz = meter_tz
        self._max = max_frame_bytes
        self._raw = bytearray()  # bytes as received (for MeterFrame.raw / Discarded.raw)
        self._m = bytearray()  # the same bytes with bit 7 cleared (what we parse)
        self._pos = 0  # stream offset of self._raw[0]
        self._pending: _Pending | None = None
        self._garbage = bytearray()
        self._garbage_at = 0
        self._skip_hdlc = False
        self._resume = 0  # how far the frame at the head has been searched already

    @property
    def buffered(self) -> int:
        """Bytes held back (partial frame plus a pending garbage run)."""
        return len(self._raw) + len(self._garbage)

    @property
    def in_frame(self) -> bool:
        """A data message has started and is not complete yet."""
        i = 0
        while i < len(self._m) and self._m[i] in _BLANK:
            i += 1
        return i < len(self._m) and self._m[i] == STX

    def feed(self, data: bytes) -> list[MeterFrame | Discarded]:
        """Add bytes; return the readouts (and discarded input) completed by them."""
        return [e for e in self._feed(data) if not isinstance(e, _IdentSeen)]

    def feed_eof(self) -> list[MeterFrame | Discarded]:
        """The stream ended: report what is left over and reset."""
        return [e for e in self._feed(b"", eof=True) if not isinstance(e, _IdentSeen)]

    # -- internals ----------------------------------------------------------------
    def _feed(self, data: bytes, *, eof: bool = False) -> list[_ScanEvent]:
        self._raw += data
        self._m += data.translate(_MASK)
        scan = _Scan()
        while self._raw and self._step(scan, eof):
            pass
        if eof:
            self._flush_garbage(scan)
            self._pending = None
            self._skip_hdlc = False
        return scan.events

    def _consume(self, n: int) -> tuple[bytes, int]:
        raw = bytes(self._raw[:n])
        at = self._pos
        del self._raw[:n]
        del self._m[:n]
        self._pos += n
        self._resume = 0
        return raw, at

    def _to_garbage(self, n: int, scan: _Scan) -> None:
        raw, at = self._consume(n)
        if not self._garbage:
            self._garbage_at = at
        self._garbage += raw
        if len(self._garbage) >= 1024:
            self._flush_garbage(scan)

    def _flush_garbage(self, scan: _Scan) -> None:
        if self._garbage:
            raw = bytes(self._garbage)
            scan.events.append(
                Discarded(
                    reason="garbage",
                    error=FramingError(
                        f"{len(raw)} bytes that are no IEC 62056-21 message",
                        offset=self._garbage_at,
                        raw=raw[:64],
                    ),
                    raw=raw,
                    offset=self._garbage_at,
                )
            )
            self._garbage.clear()

    def _discard(
        self,
        scan: _Scan,
        reason: Literal["checksum", "overflow", "unsupported", "framing"],
        error: ProtocolError,
        raw: bytes,
        offset: int,
    ) -> None:
        self._flush_garbage(scan)
        scan.events.append(Discarded(reason=reason, error=error, raw=raw, offset=offset))

    def _step(self, scan: _Scan, eof: bool) -> bool:
        """Handle what starts at the buffer's head; False when more bytes are needed."""
        m = self._m
        b = m[0]
        if self._skip_hdlc and b != SLASH:
            # after a switch to HDLC everything up to the next sign-on is binary
            nxt = m.find(b"/")
            self._consume(nxt if nxt > 0 else len(m))
            return True
        if b in _BLANK:
            if self._garbage:
                self._to_garbage(1, scan)
            else:
                self._consume(1)
            return True
        if b == SLASH:
            return self._slash(scan, eof)
        if b == ACK:
            return self._ack(scan, eof)
        if b == NAK:
            self._flush_garbage(scan)
            self._consume(1)
            return True
        if b == STX:
            return self._stx(scan, eof)
        if b == SOH:
            return self._soh(scan, eof)
        if self._pending is not None and not self._garbage:
            if self._raw[0] == 0x7E and "2" in self._pending.message.enhanced:
                self._hdlc_switch(scan, b"")
                return True
            if 0x20 <= b < 0x7F:
                return self._stxless(scan, eof)
        # garbage: take everything up to the next byte that may start a message
        n = 1
        while n < len(m) and m[n] not in _STARTS:
            n += 1
        self._to_garbage(n, scan)
        return True

    def _line(self, limit: int, eof: bool) -> int | None:
        """Index of the LF ending the line at the head; -1: none within ``limit``;
        None: need more bytes."""
        lf = self._m.find(b"\n", 0, limit)
        if lf >= 0:
            return lf
        if len(self._m) >= limit or eof:
            return -1
        return None

    def _slash(self, scan: _Scan, eof: bool) -> bool:
        lf = self._line(IdentificationMessage.MAX_LINE, eof)
        if lf is None:
            return False
        line = bytes(self._m[: lf + 1]) if lf >= 0 else b""
        if line.startswith(b"/?") and line.endswith(b"!\r\n") and len(line) <= 37:
            # our own sign-on (or its echo on a half-duplex optical head): a new dialog
            self._flush_garbage(scan)
            self._consume(lf + 1)
            self._pending = None
            self._skip_hdlc = False
            return True
        if lf >= 0:
            if not line.endswith(b"\r\n"):
                line = line[:-1] + b"\r\n"  # tolerate a bare LF
            try:
                ident = IdentificationMessage.decode(line)
            except FramingError:
                ident = None
            if ident is not None:
                self._flush_garbage(scan)
                raw, at = self._consume(lf + 1)
                header = line[:-2].decode("ascii")
                self._pending = _Pending(message=ident, header=header, raw=raw, offset=at)
                self._skip_hdlc = False
                scan.events.append(_IdentSeen(message=ident, header=header))
                return True
        if self._skip_hdlc:
            self._consume(1)
        else:
            self._to_garbage(1, scan)
        return True

    def _ack(self, scan: _Scan, eof: bool) -> bool:
        m = self._m
        if (
            len(m) < 6
            and not eof
            and all(0x20 <= c < 0x7F for c in m[1:4])
            and (len(m) < 5 or m[4] == CR)
        ):
            return False  # may still become an option select
        self._flush_garbage(scan)
        if len(m) >= 6 and m[4:6] == b"\r\n":
            try:
                option = AckOptionSelect.decode(bytes(m[:6]))
            except FramingError:
                option = None
            if option is not None:
                raw, _ = self._consume(6)
                if option.is_hdlc:
                    self._hdlc_switch(scan, raw)
                return True
        self._consume(1)  # a lone ACK (programming mode)
        return True

    def _hdlc_switch(self, scan: _Scan, ack_raw: bytes) -> None:
        pending = self._pending
        offset = pending.offset if pending else self._pos - len(ack_raw)
        raw = (pending.raw if pending else b"") + ack_raw
        self._discard(
            scan,
            "unsupported",
            UnsupportedError(
                "IEC 62056-21 mode E (DLMS/HDLC) is not supported yet", offset=offset, raw=raw
            ),
            raw,
            offset,
        )
        self._pending = None
        self._skip_hdlc = True

    def _find_end(self, pattern: re.Pattern[bytes], eof: bool) -> tuple[int, bool] | None:
        """Find ETX/EOT of the block at the head within the size bound.

        Returns ``(index, True)`` for an ETX/EOT followed by its BCC, ``(index, False)``
        when the block is cut short by the start of another message at ``index`` (or by
        the bound / the end of the stream: index -1); None when more bytes are needed.
        """
        m = self._m
        limit = min(len(m), self._max)
        hit = pattern.search(m, max(1, self._resume), limit)
        if hit is not None:
            i = hit.start()
            c = m[i]
            if c == LF:  # "\n/": a new identification at the start of a line
                return i + 1, False
            if c in (STX, SOH):
                return i, False
            if i + 1 < len(m):
                return i, True
            if eof:
                return -1, False
            self._resume = i
            return None
        if len(m) >= self._max or eof:
            return -1, False
        self._resume = max(1, limit - 1)
        return None

    def _cut(self, scan: _Scan, cut: int, what: str) -> None:
        if cut < 0:
            n = min(len(self._m), self._max)
            reason: Literal["overflow", "framing"] = "overflow" if n >= self._max else "framing"
            msg = (
                f"{what} longer than {self._max} bytes"
                if reason == "overflow"
                else f"{what} cut off by end of stream"
            )
        else:
            n, reason, msg = cut, "framing", f"{what} cut off by the start of another message"
        raw, at = self._consume(n)
        self._discard(scan, reason, FramingError(msg, offset=at, raw=raw[:64]), raw, at)

    def _stx(self, scan: _Scan, eof: bool) -> bool:
        found = self._find_end(_STX_END, eof)
        if found is None:
            return False
        end, complete = found
        if not complete:
            self._cut(scan, end, "data message")
            return True
        self._flush_garbage(scan)
        masked = bytes(self._m[: end + 2])
        raw, at = self._consume(end + 2)
        body, got = masked[1:end], masked[end + 1]
        expected = bcc(masked[1 : end + 1])
        pending = self._pending
        is_readout = masked[end] == ETX and (body == b"!\r\n" or body.endswith(b"\n!\r\n"))
        if expected != got:
            start = pending.offset if (pending and is_readout) else at
            full = (pending.raw if (pending and is_readout) else b"") + raw
            self._discard(
                scan,
                "checksum",
                ChecksumError(
                    f"data message BCC 0x{got:02X}, computed 0x{expected:02X}",
                    expected=expected,
                    got=got,
                    offset=start,
                    raw=full[:64],
                ),
                full,
                start,
            )
            if is_readout:
                self._pending = None
            return True
        if not is_readout:
            return True  # a programming-mode answer: not a readout
        self._emit(scan, body[:-3], at + 1, raw, frame_offset=at, checksum_ok=True)
        return True

    def _stxless(self, scan: _Scan, eof: bool) -> bool:
        """Mode D push without STX/ETX/BCC: data lines up to a line starting with '!'."""
        m = self._m
        limit = min(len(m), self._max)
        i = self._resume  # start of the first line not checked yet
        while True:
            if i >= limit:
                break
            lf = m.find(b"\n", i, limit)
            bad = _CTRL.search(m, i, lf if lf >= 0 else limit)
            if m[i] == SLASH or bad is not None:
                # not a readout after all (noise at a baud change, or a push cut short by
                # the next one): what we looked at is garbage, the identification stays.
                # m[0] is printable, so the cut is never at 0.
                cut = i if m[i] == SLASH else bad.start() if bad is not None else i
                self._to_garbage(cut, scan)
                return True
            if lf < 0:
                break
            if m[i] == ord("!"):
                raw, at = self._consume(lf + 1)
                self._flush_garbage(scan)
                block = raw.translate(_MASK)[:i]
                self._emit(scan, block, at, raw, frame_offset=at, checksum_ok=None)
                return True
            i = lf + 1
        if len(m) >= self._max or eof:
            self._cut(scan, -1, "data block")
            self._pending = None
            return True
        self._resume = i
        return False

    def _emit(
        self,
        scan: _Scan,
        block: bytes,
        block_offset: int,
        raw: bytes,
        *,
        frame_offset: int,
        checksum_ok: bool | None,
    ) -> None:
        sets: list[DataSet] = []
        pos = 0
        for line in block.split(b"\n"):
            text = line.rstrip(b"\r").decode("ascii")
            try:
                sets.extend(_parse_data_sets(text))
            except FramingError as exc:
                at = block_offset + pos
                scan.events.append(
                    Discarded(
                        reason="framing",
                        error=FramingError(f"data line: {exc}", offset=at, raw=line[:64]),
                        raw=line,
                        offset=at,
                    )
                )
            pos += len(line) + 1
        readings = _readings(sets)
        pending = self._pending
        self._pending = None
        ident = pending.message if pending else None
        scan.events.append(
            MeterFrame(
                protocol=PROTOCOL,
                meter_id=_meter_id(readings, ident),
                timestamp=_meter_time(readings, self._tz),
                checksum_ok=checksum_ok,
                readings=readings,
                header=pending.header if pending else "",
                raw=(pending.raw if pending else b"") + raw,
                offset=pending.offset if pending else frame_offset,
            )
        )

    def _soh(self, scan: _Scan, eof: bool) -> bool:
        found = self._find_end(_SOH_END, eof)
        if found is None:
            return False
        end, complete = found
        if not complete:
            self._cut(scan, end, "command message")
            return True
        self._flush_garbage(scan)
        masked = bytes(self._m[: end + 2])
        raw, at = self._consume(end + 2)
        expected = bcc(masked[1 : end + 1])
        if expected != masked[end + 1]:
            self._discard(
                scan,
                "checksum",
                ChecksumError(
                    f"command message BCC 0x{masked[end + 1]:02X}, computed 0x{expected:02X}",
                    expected=expected,
                    got=masked[end + 1],
                    offset=at,
                    raw=raw[:64],
                ),
                raw,
                at,
            )
        return True


# ------------------------------------------------------------ client session
@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write these bytes to the meter port."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBaudrate:
    """Change the port's baud rate, **after** every byte sent before has left the UART
    (pyserial: ``port.flush()`` then ``port.baudrate = baud``)."""

    baud: int


Action = Send | SetBaudrate


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentReceived:
    """The meter identified itself (for logs and the meter's device info)."""

    identification: IdentificationMessage
    header: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Retrying:
    """Attempt ``attempt`` failed with ``error``; the next one starts now (after a
    timeout) or after a pause (after a bad BCC, see ``SessionState.PAUSE``)."""

    attempt: int
    error: GatewayError


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed:
    """The last attempt failed; the session is in ``ERROR``.

    ``error`` is a ``ReadTimeout`` when the meter stopped answering, a
    ``ChecksumError`` after bad readouts, an ``UnsupportedError`` for a reserved baud
    character in mode B.
    """

    error: GatewayError
    attempts: int


SessionEvent = (
    Send | SetBaudrate | IdentReceived | Retrying | SessionFailed | MeterFrame | Discarded
)


class SessionState(enum.Enum):
    IDLE = "idle"
    SIGN_ON_SENT = "sign_on_sent"  # request sent, waiting for the identification
    LISTENING = "listening"  # mode D: waiting for the meter's push
    WAIT_ACK_DELAY = "wait_ack_delay"  # mode C: identification in, waiting tr before ACK
    IDENT_RECEIVED = "ident_received"  # waiting for the data message to start
    READING = "reading"  # data message started (STX seen)
    PAUSE = "pause"  # a readout failed its BCC: waiting for the meter to reset
    DONE = "done"
    ERROR = "error"


_ACTIVE = (
    SessionState.SIGN_ON_SENT,
    SessionState.LISTENING,
    SessionState.IDENT_RECEIVED,
    SessionState.READING,
)


class ClientSession:
    """The gateway's side of one IEC 62056-21 data readout (sans-IO; time is passed in).

    Mode C (6.4.4): ``start`` asks for ``SetBaudrate(300)`` and ``Send(/?address!)``.
    When the identification arrives, the session waits the reaction time ``tr``
    (``reaction_time_s``; the standard requires 200 ms ≤ tr ≤ 1500 ms, 20 ms only for
    meters whose third manufacturer letter is upper case) as a deadline, then asks for
    ``Send(ACK 0 Z 0 CR LF)`` followed by ``SetBaudrate(Z)``.  The meter switches to
    the new rate once the acknowledgement has been received and answers after tr at the
    new rate, so the driver must apply ``SetBaudrate`` as soon as the ACK bytes have
    left the UART (drain first, ~200 ms at 300 Bd for the six bytes): switching earlier
    garbles the ACK, switching later than tr loses the start of the readout.  Z is the
    highest rate both the meter and ``max_baud`` allow.

    Mode A (6.4.2): no acknowledgement, the readout follows at 300 Bd.  Mode B (6.4.3):
    both sides switch to the rate of the baud character right after the identification,
    without acknowledgement.  Mode D (6.4.5): no request; the session listens at
    2400 Bd for the meter's push (set ``timeout_s`` above the push interval).  The mode
    the identification announces wins over the configured one, so a mode C meter
    configured as "A" is acknowledged at 300 Bd.

    The request and option select echoed by half-duplex optical heads are ignored, as is
    noise; bytes are read with their parity bit cleared.  ``timeout_s`` is an
    inactivity timeout (the standard's 1.5 s for tr and the inter-character time).  A
    timeout starts the dialog again at 300 Bd at once (the meter has fallen back to its
    initial state by then); a bad BCC does so after a pause of ``timeout_s`` (state
    ``PAUSE``), since the meter may still be at the higher rate.  Each retry comes with a
    ``Retrying`` event; after ``retries`` of them the session enters ``ERROR`` with a
    ``SessionFailed`` event.

    The driver loop: apply actions in order; pass received bytes to ``feed``; when
    ``deadline()`` passes without bytes, call ``on_timeout``; stop at ``DONE`` or
    ``ERROR``.
    """

    def __init__(
        self,
        *,
        mode: Literal["A", "B", "C", "D"] = "C",
        address: str = "",
        max_baud: int = 9600,
        reaction_time_s: float = 0.2,
        timeout_s: float = 1.5,
        retries: int = 3,
        meter_tz: tzinfo | None = None,
    ) -> None:
        """Raises:
        LocalProtocolError: a setting is out of range.
        """
        if mode not in ("A", "B", "C", "D"):
            raise LocalProtocolError(f"mode must be A, B, C or D, got {mode!r}")
        if max_baud < INITIAL_BAUD:
            raise LocalProtocolError(f"max_baud must be at least {INITIAL_BAUD}")
        if not 0.0 <= reaction_time_s <= 1.5:
            raise LocalProtocolError("reaction_time_s must be within 0..1.5 s (tr ≤ 1500 ms)")
        if timeout_s <= 0 or retries < 0:
            raise LocalProtocolError("timeout_s must be > 0 and retries ≥ 0")
        self._request = RequestMessage(address=address).encode()  # validates the address
        self.mode = mode
        self.max_baud = max_baud
        self.reaction_time_s = reaction_time_s
        self.timeout_s = timeout_s
        self.retries = retries
        self._tz = meter_tz
        self._state = SessionState.IDLE
        self._deadline: float | None = None
        self._attempt = 0
        self._baud = INITIAL_BAUD
        self._next_baud = INITIAL_BAUD
        self._decoder = ReadoutDecoder(meter_tz=meter_tz)
        self._ident: IdentificationMessage | None = None
        self._received = 0

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def baud(self) -> int:
        """The rate the port should be at now (after the last ``SetBaudrate``)."""
        return self._baud

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def identification(self) -> IdentificationMessage | None:
        return self._ident

    def deadline(self) -> float | None:
        """When ``on_timeout`` is due (same clock as ``now``); None when nothing waits."""
        return self._deadline

    def start(self, now: float) -> list[SessionEvent]:
        """Begin a readout.

        Raises:
            LocalProtocolError: a readout is already in progress.
        """
        if self._state not in (SessionState.IDLE, SessionState.DONE, SessionState.ERROR):
            raise LocalProtocolError(f"start() in state {self._state.name}")
        self._attempt = 0
        return self._begin(now)

    def _begin(self, now: float) -> list[SessionEvent]:
        self._attempt += 1
        self._decoder = ReadoutDecoder(meter_tz=self._tz)
        self._ident = None
        self._received = 0
        if self.mode == "D":
            self._baud = MODE_D_BAUD
            self._state = SessionState.LISTENING
            self._deadline = now + self.timeout_s
            return [SetBaudrate(baud=MODE_D_BAUD)]
        self._baud = INITIAL_BAUD
        self._state = SessionState.SIGN_ON_SENT
        self._deadline = (
            now + transmission_time_s(len(self._request), INITIAL_BAUD) + self.timeout_s
        )
        return [SetBaudrate(baud=INITIAL_BAUD), Send(data=self._request)]

    def feed(self, data: bytes, *, now: float) -> list[SessionEvent]:
        """Bytes from the meter port.

        Raises:
            LocalProtocolError: called before ``start`` or after the session failed.
        """
        if self._state in (SessionState.IDLE, SessionState.ERROR):
            raise LocalProtocolError(f"feed() in state {self._state.name}")
        if self._state in (SessionState.DONE, SessionState.PAUSE):
            return []  # stragglers after a readout (echo, filler) do not matter
        out: list[SessionEvent] = []
        if data:
            self._received += len(data)
            if self._state in _ACTIVE:
                self._deadline = now + self.timeout_s
        for item in self._decoder._feed(data):
            if self._state in (SessionState.DONE, SessionState.ERROR):
                break
            if isinstance(item, _IdentSeen):
                out += self._on_ident(item.message, item.header, now)
            elif isinstance(item, MeterFrame):
                self._state = SessionState.DONE
                self._deadline = None
                out.append(item)
            else:
                out.append(item)
                if item.reason == "checksum" and self._state in (
                    SessionState.IDENT_RECEIVED,
                    SessionState.READING,
                ):
                    # the rest of this chunk belongs to the failed attempt
                    out += self._fail(now, item.error, pause=True)
                    break
        if self._state is SessionState.IDENT_RECEIVED and self._decoder.in_frame:
            self._state = SessionState.READING
        return out

    def _on_ident(
        self, ident: IdentificationMessage, header: str, now: float
    ) -> list[SessionEvent]:
        if self._state not in (SessionState.SIGN_ON_SENT, SessionState.LISTENING):
            return []  # a second identification inside one dialog: keep the first
        self._ident = ident
        out: list[SessionEvent] = [IdentReceived(identification=ident, header=header)]
        if self.mode == "D":
            self._state = SessionState.IDENT_RECEIVED
            return out
        mode = ident.mode
        if mode == "B":
            baud = ident.baud
            if baud is None:
                return out + self._fail(
                    now,
                    UnsupportedError(f"mode B baud rate character {ident.baud_char!r} is reserved"),
                    final=True,
                )
            self._baud = baud
            self._state = SessionState.IDENT_RECEIVED
            return out + [SetBaudrate(baud=baud)]
        if mode == "A":
            self._state = SessionState.IDENT_RECEIVED
            return out
        offered = ident.baud or INITIAL_BAUD  # reserved '7'..'9': stay at 300 Bd
        limit = INITIAL_BAUD if self.mode == "A" else min(offered, self.max_baud)
        self._next_baud = max(b for b in BAUD_MODE_C.values() if b <= limit)
        self._state = SessionState.WAIT_ACK_DELAY
        self._deadline = now + self.reaction_time_s
        return out

    def on_timeout(self, *, now: float) -> list[SessionEvent]:
        """Call when ``deadline()`` has passed; early calls do nothing."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._state is SessionState.PAUSE:
            return self._begin(now)
        if self._state is SessionState.WAIT_ACK_DELAY:
            ack = AckOptionSelect(baud_char=baud_char_for(self._next_baud)).encode()
            self._baud = self._next_baud
            self._state = SessionState.IDENT_RECEIVED
            self._deadline = now + transmission_time_s(len(ack), INITIAL_BAUD) + self.timeout_s
            return [Send(data=ack), SetBaudrate(baud=self._next_baud)]
        if self._state in _ACTIVE:
            what = {
                SessionState.SIGN_ON_SENT: "no identification",
                SessionState.LISTENING: "no push",
                SessionState.IDENT_RECEIVED: "no data message",
                SessionState.READING: "data message incomplete",
            }[self._state]
            heard = "nothing at all" if self._received == 0 else f"{self._received} bytes"
            return self._fail(
                now,
                ReadTimeout(
                    f"{what} from the meter within {self.timeout_s:g} s"
                    f" at {self._baud} Bd (heard {heard})"
                ),
            )
        return []

    def _fail(
        self, now: float, error: GatewayError, *, final: bool = False, pause: bool = False
    ) -> list[SessionEvent]:
        if not final and self._attempt <= self.retries:
            failed = self._attempt
            if pause:
                # The meter has just sent at the higher rate and may not be listening at
                # 300 Bd yet; after timeout_s of silence (the standard's maximum reaction
                # and inter-character time) it has given up the dialog in any case.
                self._state = SessionState.PAUSE
                self._deadline = now + self.timeout_s
                return [Retrying(attempt=failed, error=error)]
            return [Retrying(attempt=failed, error=error), *self._begin(now)]
        self._state = SessionState.ERROR
        self._deadline = None
        return [SessionFailed(error=error, attempts=self._attempt)]
