"""SML 1.04 (Smart Message Language) as German eHZ / EDL21 meters push it.

References: "SML - Smart Message Language, Version 1.04" (the spec that BSI
TR-03109-1 Anlage IV carries), cited below as SML 1.04 with the title of the
clause; IEC 62056-6-2 (DLMS/COSEM interface classes) for the unit codes;
IEC 62056-61 for OBIS; DIN 43863-5 for the meter identification number.

Implemented:

* SML transport protocol version 1 (SML 1.04, "SML-Transport-Protokoll
  Version 1"): a file is ``1B1B1B1B 01010101`` + data + ``00`` padding to a
  multiple of four bytes + ``1B1B1B1B 1A`` + the number of padding bytes + a
  CRC.  ``1B1B1B1B`` inside the data is sent twice.  The CRC is CRC-16/X-25
  over everything from the start sequence to the padding count, sent least
  significant byte first.
* Known deviations, each detected (a frame must match one of them exactly,
  nothing is accepted blindly):

  - Holley DTZ541 behind an RS-485 interface sends CRC-16/KERMIT (the same
    polynomial without the initial value and final XOR) most significant byte
    first.  :attr:`TransportFrame.crc_variant` says which CRC matched; the
    decoder can be restricted to one (``crc="x25"``).
  - Holley DTZ541 sends a list entry's ``valTime`` as a bare Unsigned32
    instead of the ``SML_Time`` choice; it is read as a seconds index (the
    values in the captures are a running counter, not a date).
  - Integers of 3, 5, 6 and 7 bytes (DZG, EMH), which the spec does not list
    but whose meaning is unambiguous.
  - Streams whose escape sequences are not where the 4-byte grid puts them:
    some senders escape ``1B1B1B1B`` wherever it occurs in the data, others
    only on the grid.  Both decode to the same data (see ``_scan_frame``).
    An end sequence off the grid means bytes were lost; the frame is refused.

* The SML file (SML 1.04, "SML_Message" and the message bodies): every
  ``SML_Message`` with its own CRC (``crc_ok``), the type-length fields of
  every length (multi-byte TL, lists of any size), octet strings, booleans,
  signed and unsigned integers of 1-8 bytes.  Bodies decoded: OpenResponse,
  CloseResponse, GetListResponse, GetProcParameterResponse, AttentionResponse;
  any other body is kept as :class:`UnknownBody` (tag + raw value tree).
* The mapping to :class:`gateway.model.MeterFrame`: one :class:`Reading` per
  GetList entry (in frame order) and per valued node of a GetProcParameter
  tree.  ``id`` is the OBIS code of ``objName`` (``A-B:C.D.E``, ``*F`` unless
  F is 255); ``value`` is the integer times 10**scaler (``int`` unless the
  scaler is negative), text for printable octet strings and lowercase hex for
  the others; ``unit`` is the symbol of the DLMS unit code (:data:`DLMS_UNITS`);
  ``timestamp`` is ``valTime`` where it is a date (a seconds index is
  relative to an unknown start and is not); ``extra`` holds ``status`` where
  the meter sends one.  ``meter_id`` is the server id: for the 10-byte
  DIN 43863-5 form (first byte 09 or 0A) the printed meter number, e.g.
  ``0A 01 445A47 00 0282225E`` -> ``1DZG0042082910`` (medium digit, FLAG
  manufacturer, fabrication block as two hex digits, serial as 8 decimal
  digits: this is how the meters print it in 1-0:0.0.0); printable ASCII ids
  as text; anything else as lowercase hex.  ``header`` is the three-letter
  FLAG manufacturer id where the file names one.

Not implemented: transport protocol version 2 (its escape sequences for
baud rate and timeouts are refused as invalid escapes), requests (the gateway only listens), GetProfilePack/List bodies
(kept as ``UnknownBody``), the fields of SML_TupelEntry (kept as a raw tree),
signature verification (signatures are kept as bytes), and the DZG
"negative power sent as Unsigned" firmware bug (no capture to test it on).

Events are :class:`MeterFrame` for good files and :class:`Discarded` for
everything thrown away.  ``Discarded(reason="garbage")`` is informational:
bytes outside any file (a port opened mid-file).  A CRC that
matches no known variant is ``reason="checksum"`` with
:class:`~gateway.errors.ChecksumError` (``expected`` = CRC-16/X-25 computed,
``got`` = the CRC as sent, read least significant byte first); a file cut
short by a new start sequence, an invalid escape, bad padding, an unknown
TL byte or a wrong structure is ``reason="framing"``; a file that carries no
value at all is ``reason="unsupported"``; a file without its end sequence
within ``max_frame`` bytes is ``reason="overflow"``.  Every error's
``offset`` is the position of the file's first byte in the stream.

Speed: :class:`SmlDecoder` is the gateway's hot path for SML.  A meter
repeats most list entries byte for byte from one file to the next, so the
decoder compares each entry's bytes with the previous file's entry at the
same place and reuses its (immutable) ListEntry and Reading; where only an
integer value moved, only that value is read.  ``decode_file`` +
``meter_frame`` give the same frames without any reuse (a property test
holds the two to each other).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Final, Literal, TypeAlias

from gateway.errors import ChecksumError, FramingError, LocalProtocolError, UnsupportedError
from gateway.model import MeterFrame, Reading, make_reading
from gateway.protocols._checks import crc16_kermit, crc16_x25
from gateway.protocols._events import Discarded, DiscardReason
from gateway.protocols.obis import ObisCode

__all__ = [
    "DLMS_UNITS",
    "AttentionResponse",
    "CloseResponse",
    "CrcVariant",
    "GetListResponse",
    "GetProcParameterResponse",
    "ListEntry",
    "OpenResponse",
    "PeriodEntry",
    "ProcParTree",
    "SmlBody",
    "SmlDecoder",
    "SmlEvent",
    "SmlMessage",
    "SmlTime",
    "SmlTransportDecoder",
    "SmlValue",
    "TransportEvent",
    "TransportFrame",
    "UnknownBody",
    "crc16_kermit",
    "crc16_x25",
    "decode_file",
    "encode_file",
    "encode_transport",
    "meter_frame",
    "server_id_text",
]

SmlEvent = MeterFrame | Discarded

# --------------------------------------------------------------------- units
#: DLMS unit codes (IEC 62056-6-2, the ``unit`` enumeration of the Register
#: class's scaler_unit) -> symbol.  255 ("count", no unit) and 254 ("other
#: unit") have no symbol; 0 is not a unit but DZG meters send it for text.
DLMS_UNITS: Final[Mapping[int, str]] = {
    1: "a",
    2: "mo",
    3: "wk",
    4: "d",
    5: "h",
    6: "min",
    7: "s",
    8: "°",
    9: "°C",
    10: "currency",
    11: "m",
    12: "m/s",
    13: "m³",
    14: "m³",  # corrected volume
    15: "m³/h",
    16: "m³/h",  # corrected volume flow
    17: "m³/d",
    18: "m³/d",  # corrected
    19: "L",
    20: "kg",
    21: "N",
    22: "Nm",
    23: "Pa",
    24: "bar",
    25: "J",
    26: "J/h",
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    34: "C",
    35: "V",
    36: "V/m",
    37: "F",
    38: "Ω",
    39: "Ωm²/m",
    40: "Wb",
    41: "T",
    42: "A/m",
    43: "H",
    44: "Hz",
    45: "1/(Wh)",  # active energy meter constant
    46: "1/(varh)",
    47: "1/(VAh)",
    48: "V²h",
    49: "A²h",
    50: "kg/s",
    51: "S",
    52: "K",
    53: "1/(V²h)",
    54: "1/(A²h)",
    55: "1/m³",
    56: "%",
    57: "Ah",
    60: "Wh/m³",
    61: "J/m³",
    62: "mol%",
    63: "g/m³",
    64: "Pa s",
    65: "J/kg",
    66: "g/cm²",
    67: "atm",
    70: "dBm",
    71: "dBµV",
    72: "dB",
}

# ----------------------------------------------------------------------- CRC
CrcVariant = Literal["x25", "kermit"]


# --------------------------------------------------------------------- values
SmlValue: TypeAlias = bool | int | bytes | None | tuple["SmlValue", ...]


class _EndOfMessage:
    """The ``endOfSmlMsg`` byte 0x00 as the TLV reader returns it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


_END: Final = _EndOfMessage()
# What the TLV reader produces: lists for SML lists, bytes for octet strings,
# None for an absent optional (TL 0x01), int/bool for numbers.
Tree: TypeAlias = list["Tree"] | bytes | int | bool | None | _EndOfMessage

_MAX_DEPTH: Final = 24  # nesting of lists; the deepest spec structure (trees of trees) stays far below
_MAX_TL_BYTES: Final = 4  # lengths up to 65535: no SML file comes near


class _Truncated(Exception):
    """Internal: the TLV reader ran past the end of the file (becomes FramingError)."""


# What a single-byte type-length field stands for, by its value, in the order
# of how often meters send them: absent optional, list, octet string,
# Unsigned8, wider unsigned, Integer8, wider signed, endOfSmlMsg, boolean,
# multi-byte TL, and the TL bytes no type has.
_NONE, _LIST, _OCTETS, _U8, _UINT, _I8, _INT, _EOM, _BOOL, _LONG, _INVALID = range(11)


def _tl_codes() -> bytes:
    codes = bytearray([_INVALID]) * 256
    codes[0x00] = _EOM
    codes[0x01] = _NONE
    for tl in range(0x02, 0x10):
        codes[tl] = _OCTETS
    codes[0x42] = _BOOL
    codes[0x52] = _I8
    codes[0x62] = _U8
    for width in range(2, 9):  # Integer/Unsigned of 2-8 bytes (the spec lists 1, 2, 4, 8)
        codes[0x51 + width] = _INT
        codes[0x61 + width] = _UINT
    for tl in range(0x70, 0x80):
        codes[tl] = _LIST
    for tl in range(0x80, 0x100):
        codes[tl] = _LONG
    return bytes(codes)


_TL_CODES: Final = _tl_codes()


def _read_list(buf: bytes, pos: int, count: int, depth: int) -> tuple[list[Tree], int]:
    """Read ``count`` elements starting at ``pos``; return them and the position after.

    The hot loop of the decoder: scalars are read inline, only lists and
    multi-byte type-length fields cost a call (SML 1.04, "Type-Length-Field":
    bit 7 = another TL byte follows, bits 6-4 = type, bits 3-0 = length; for
    scalars the length counts the TL bytes too, for lists it is the number of
    elements).  Reading past the end raises IndexError or _Truncated, which
    the caller turns into FramingError.
    """
    if depth > _MAX_DEPTH:
        raise FramingError(f"lists nested deeper than {_MAX_DEPTH} at byte {pos}")
    items: list[Tree] = []
    append = items.append
    codes = _TL_CODES
    size = len(buf)
    for _ in range(count):
        tl = buf[pos]
        code = codes[tl]
        if code == _NONE:  # octet string of length 0: how SML says "optional value absent"
            append(None)
            pos += 1
        elif code == _LIST:
            sub, pos = _read_list(buf, pos + 1, tl & 0x0F, depth + 1)
            append(sub)
        elif code == _OCTETS:
            end = pos + (tl & 0x0F)
            if end > size:
                raise _Truncated
            append(buf[pos + 1 : end])
            pos = end
        elif code == _U8:
            append(buf[pos + 1])
            pos += 2
        elif code == _UINT:
            end = pos + (tl & 0x0F)
            if end > size:
                raise _Truncated
            append(int.from_bytes(buf[pos + 1 : end], "big"))
            pos = end
        elif code == _I8:
            value = buf[pos + 1]
            append(value - 256 if value & 0x80 else value)
            pos += 2
        elif code == _INT:
            end = pos + (tl & 0x0F)
            if end > size:
                raise _Truncated
            append(int.from_bytes(buf[pos + 1 : end], "big", signed=True))
            pos = end
        elif code == _EOM:
            append(_END)
            pos += 1
        elif code == _BOOL:
            append(buf[pos + 1] != 0)
            pos += 2
        elif code == _LONG:
            long_value, pos = _read_long(buf, pos, depth)
            append(long_value)
        else:
            raise FramingError(f"unknown type-length byte {tl:#04x} at byte {pos}")
    return items, pos


def _read_long(buf: bytes, pos: int, depth: int) -> tuple[Tree, int]:
    """An element whose type-length field spans several bytes."""
    tl = buf[pos]
    kind = tl & 0x70
    length = tl & 0x0F
    at = pos + 1
    while tl & 0x80:
        if at - pos >= _MAX_TL_BYTES:
            raise FramingError(f"type-length field longer than {_MAX_TL_BYTES} bytes at byte {pos}")
        tl = buf[at]
        at += 1
        if tl & 0x70:
            raise FramingError(f"bad type-length continuation byte {tl:#04x} at byte {at - 1}")
        length = (length << 4) | (tl & 0x0F)
    if kind == 0x70:
        items, end = _read_list(buf, at, length, depth + 1)
        return items, end
    end = pos + length
    if end < at:
        raise FramingError(f"length {length} shorter than its type-length field at byte {pos}")
    if end > len(buf):
        raise _Truncated
    data = buf[at:end]
    if kind == 0x00:
        return (data or None), end
    if kind in (0x50, 0x60) and 1 <= len(data) <= 8:
        return int.from_bytes(data, "big", signed=kind == 0x50), end
    if kind == 0x40 and len(data) == 1:
        return data[0] != 0, end
    raise FramingError(f"bad type-length field {buf[pos]:#04x} (length {length}) at byte {pos}")


# ---------------------------------------------------------------- structures
TimeKind = Literal["sec_index", "timestamp", "local_timestamp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmlTime:
    """SML_Time (SML 1.04, "SML_Time"): a seconds index or a Unix time.

    ``value`` is seconds: since an unknown start for ``sec_index``, since
    1970-01-01 UTC for the two timestamps.  A local timestamp adds the
    meter's offsets to UTC in minutes.
    """

    kind: TimeKind
    value: int
    local_offset_min: int = 0
    season_offset_min: int = 0

    def as_datetime(self) -> datetime | None:
        """The time as an aware datetime; ``None`` for a seconds index or an impossible date."""
        if self.kind == "sec_index":
            return None
        offset = timedelta(minutes=self.local_offset_min + self.season_offset_min)
        try:
            zone = timezone(offset) if offset else UTC
            return datetime.fromtimestamp(self.value, zone)
        except (ValueError, OverflowError, OSError):
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListEntry:
    """SML_ListEntry: one value of a GetListResponse (SML 1.04, "SML_GetList.Res")."""

    obj_name: bytes
    status: int | None = None
    val_time: SmlTime | None = None
    unit: int | None = None
    scaler: int | None = None
    value: SmlValue = None
    value_signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeriodEntry:
    """SML_PeriodEntry: a value in a parameter tree."""

    obj_name: bytes
    unit: int | None = None
    scaler: int | None = None
    value: SmlValue = None
    value_signature: bytes | None = None


ProcParValue: TypeAlias = SmlValue | SmlTime | PeriodEntry


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcParTree:
    """SML_Tree: a parameter name, an optional value and optional children.

    ``value_tag`` is the SML_ProcParValue choice: 1 value, 2 period entry,
    3 tuple entry (kept as a raw tree), 4 time; 0 when there is no value.
    """

    parameter_name: bytes
    value_tag: int = 0
    value: ProcParValue = None
    children: tuple[ProcParTree, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenResponse:
    """SML_PublicOpen.Res: the first message of a file a meter pushes."""

    tag: ClassVar[int] = 0x0101
    codepage: bytes | None = None
    client_id: bytes | None = None
    req_file_id: bytes
    server_id: bytes
    ref_time: SmlTime | None = None
    sml_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseResponse:
    """SML_PublicClose.Res: the last message of a file."""

    tag: ClassVar[int] = 0x0201
    global_signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetProcParameterResponse:
    """SML_GetProcParameter.Res: a parameter tree (answers to requests, rare in push mode)."""

    tag: ClassVar[int] = 0x0501
    server_id: bytes
    parameter_tree_path: tuple[bytes, ...]
    parameter_tree: ProcParTree


@dataclass(frozen=True, slots=True, kw_only=True)
class GetListResponse:
    """SML_GetList.Res: the values; what an eHZ / EDL21 pushes every 1-4 s."""

    tag: ClassVar[int] = 0x0701
    client_id: bytes | None = None
    server_id: bytes
    list_name: bytes | None = None
    act_sensor_time: SmlTime | None = None
    val_list: tuple[ListEntry, ...]
    list_signature: bytes | None = None
    act_gateway_time: SmlTime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentionResponse:
    """SML_Attention.Res: an error or hint number (``attention_no``, an OBIS-like code)."""

    tag: ClassVar[int] = 0xFF01
    server_id: bytes
    attention_no: bytes
    attention_msg: bytes | None = None
    attention_details: ProcParTree | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownBody:
    """A message body this codec does not decode: its choice tag and raw value."""

    tag: int
    content: SmlValue = None


SmlBody: TypeAlias = (
    OpenResponse
    | CloseResponse
    | GetListResponse
    | GetProcParameterResponse
    | AttentionResponse
    | UnknownBody
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmlMessage:
    """SML_Message (SML 1.04, "SML_Message").

    ``crc_ok`` says whether the message's own crc16 (CRC-16/X-25 over the
    message from its first TL byte up to the crc16 field, its Unsigned16
    holding the CRC least significant byte first, as the transport CRC is
    sent) matched.
    """

    transaction_id: bytes
    group_no: int = 0
    abort_on_error: int = 0
    body: SmlBody
    crc_ok: bool = True


# -------------------------------------------------------- tree -> structures
def _bad(what: str, value: object) -> FramingError:
    text = repr(value)
    return FramingError(f"{what}: unexpected {text[:60]}")


def _octets(v: Tree, what: str) -> bytes:
    if isinstance(v, bytes):
        return v
    raise _bad(what, v)


def _opt_octets(v: Tree, what: str) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    raise _bad(what, v)


def _int(v: Tree, what: str) -> int:
    if type(v) is int:
        return v
    raise _bad(what, v)


def _opt_int(v: Tree, what: str) -> int | None:
    if v is None or type(v) is int:
        return v
    raise _bad(what, v)


def _items(v: Tree, n: int, what: str) -> list[Tree]:
    if isinstance(v, list) and len(v) == n:
        return v
    raise _bad(f"{what} (a list of {n})", v)


def _value(v: Tree) -> SmlValue:
    """SML_Value: a scalar, or a list (SML_ListType) kept as a tuple tree."""
    if isinstance(v, list):
        return tuple(_value(x) for x in v)
    if isinstance(v, _EndOfMessage):
        raise _bad("value", v)
    return v


_TIME_KINDS: Final[Mapping[int, TimeKind]] = {1: "sec_index", 2: "timestamp", 3: "local_timestamp"}


def _time(v: Tree, what: str) -> SmlTime | None:
    if v is None:
        return None
    if type(v) is int:
        # Holley DTZ541: valTime as a bare Unsigned32, no choice tag.
        return SmlTime(kind="sec_index", value=v)
    if isinstance(v, list) and len(v) == 2 and type(v[0]) is int:
        kind = _TIME_KINDS.get(v[0])
        x = v[1]
        if kind == "sec_index" and type(x) is int:
            return SmlTime(kind="sec_index", value=x)
        if kind == "timestamp" and type(x) is int:
            return SmlTime(kind="timestamp", value=x)
        # SML_TimestampLocal (tag 3; taken under tag 2 too, where a list can
        # only be this): timestamp, localOffset (min), seasonTimeOffset (min).
        if kind is not None and kind != "sec_index" and isinstance(x, list) and len(x) == 3:
            ts, local, season = x
            if type(ts) is int and type(local) is int and type(season) is int:
                return SmlTime(
                    kind="local_timestamp", value=ts, local_offset_min=local, season_offset_min=season
                )
    raise _bad(what, v)


def _scaler(v: Tree) -> int | None:
    scaler = _opt_int(v, "scaler")
    # Integer8 by the spec; anything wider would make 10**scaler a DoS.
    if scaler is not None and not -128 <= scaler <= 127:
        raise FramingError(f"scaler {scaler} outside Integer8")
    return scaler


def _slot_setters(cls: type[Any], names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of a frozen slotted dataclass, if its fields are exactly ``names``.

    Building such an object through ``object.__new__`` and the slots'
    descriptors costs a third of its ``__init__`` (which goes through
    ``object.__setattr__`` per field).  The makers below fall back to the
    real constructor if the class ever changes shape.
    """
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        return ()
    return tuple(getattr(cls, name).__set__ for name in names)


def _entry_maker() -> Callable[..., ListEntry]:
    names = ("obj_name", "status", "val_time", "unit", "scaler", "value", "value_signature")
    setters = _slot_setters(ListEntry, names)
    if not setters:
        return lambda *values: ListEntry(**dict(zip(names, values, strict=True)))
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6 = setters

    def make(
        obj_name: bytes,
        status: int | None,
        val_time: SmlTime | None,
        unit: int | None,
        scaler: int | None,
        value: SmlValue,
        signature: bytes | None,
    ) -> ListEntry:
        entry: ListEntry = new(ListEntry)
        s0(entry, obj_name)
        s1(entry, status)
        s2(entry, val_time)
        s3(entry, unit)
        s4(entry, scaler)
        s5(entry, value)
        s6(entry, signature)
        return entry

    return make


def _time_maker() -> Callable[[TimeKind, int], SmlTime]:
    names = ("kind", "value", "local_offset_min", "season_offset_min")
    setters = _slot_setters(SmlTime, names)
    if not setters:
        return lambda kind, value: SmlTime(kind=kind, value=value)
    new = object.__new__
    s0, s1, s2, s3 = setters

    def make(kind: TimeKind, value: int) -> SmlTime:
        t: SmlTime = new(SmlTime)
        s0(t, kind)
        s1(t, value)
        s2(t, 0)
        s3(t, 0)
        return t

    return make


def _message_maker() -> Callable[[bytes, int, int, SmlBody, bool], SmlMessage]:
    names = ("transaction_id", "group_no", "abort_on_error", "body", "crc_ok")
    setters = _slot_setters(SmlMessage, names)
    if not setters:
        return lambda tid, group, abort, body, ok: SmlMessage(
            transaction_id=tid, group_no=group, abort_on_error=abort, body=body, crc_ok=ok
        )
    new = object.__new__
    s0, s1, s2, s3, s4 = setters

    def make(tid: bytes, group: int, abort: int, body: SmlBody, ok: bool) -> SmlMessage:
        message: SmlMessage = new(SmlMessage)
        s0(message, tid)
        s1(message, group)
        s2(message, abort)
        s3(message, body)
        s4(message, ok)
        return message

    return make


_new_entry: Final = _entry_maker()
_new_time: Final = _time_maker()
_new_message: Final = _message_maker()


def _list_entry(v: Tree) -> ListEntry:
    if type(v) is list and len(v) == 7:
        # Fast path: the shapes every meter sends, checked inline.
        obj_name, status, val_time, unit, scaler, value, signature = v
        if (
            type(obj_name) is bytes
            and (status is None or type(status) is int)
            and (unit is None or type(unit) is int)
            and (scaler is None or (type(scaler) is int and -128 <= scaler <= 127))
            and (signature is None or type(signature) is bytes)
            and (value is None or type(value) in (int, bytes, bool))
        ):
            if val_time is not None:
                if type(val_time) is list and len(val_time) == 2 and val_time[0] == 1:
                    secs = val_time[1]
                    time = _new_time("sec_index", secs) if type(secs) is int else _time(val_time, "valTime")
                else:
                    time = _time(val_time, "valTime")
            else:
                time = None
            return _new_entry(obj_name, status, time, unit, scaler, value, signature)
    obj_name, status, val_time, unit, scaler, value, signature = _items(v, 7, "SML_ListEntry")
    return ListEntry(
        obj_name=_octets(obj_name, "objName"),
        status=_opt_int(status, "status"),
        val_time=_time(val_time, "valTime"),
        unit=_opt_int(unit, "unit"),
        scaler=_scaler(scaler),
        value=_value(value),
        value_signature=_opt_octets(signature, "valueSignature"),
    )


def _period_entry(v: Tree) -> PeriodEntry:
    obj_name, unit, scaler, value, signature = _items(v, 5, "SML_PeriodEntry")
    return PeriodEntry(
        obj_name=_octets(obj_name, "objName"),
        unit=_opt_int(unit, "unit"),
        scaler=_scaler(scaler),
        value=_value(value),
        value_signature=_opt_octets(signature, "valueSignature"),
    )


def _tree(v: Tree) -> ProcParTree:
    name, value, children = _items(v, 3, "SML_Tree")
    tag = 0
    par: ProcParValue = None
    if value is not None:
        tag_tree, content = _items(value, 2, "SML_ProcParValue")
        tag = _int(tag_tree, "SML_ProcParValue tag")
        if tag == 1:
            par = _value(content)
        elif tag == 2:
            par = _period_entry(content)
        elif tag == 4:
            par = _time(content, "SML_ProcParValue time")
        else:
            par = _value(content)  # 3: SML_TupelEntry and anything newer, raw
    kids: tuple[ProcParTree, ...] | None = None
    if children is not None:
        if not isinstance(children, list):
            raise _bad("child_List", children)
        kids = tuple(_tree(c) for c in children)
    return ProcParTree(
        parameter_name=_octets(name, "parameterName"), value_tag=tag, value=par, children=kids
    )


def _open_response(v: Tree) -> OpenResponse:
    codepage, client_id, req_file_id, server_id, ref_time, version = _items(
        v, 6, "SML_PublicOpen.Res"
    )
    return OpenResponse(
        codepage=_opt_octets(codepage, "codepage"),
        client_id=_opt_octets(client_id, "clientId"),
        req_file_id=_octets(req_file_id, "reqFileId"),
        server_id=_octets(server_id, "serverId"),
        ref_time=_time(ref_time, "refTime"),
        sml_version=_opt_int(version, "smlVersion"),
    )


def _close_response(v: Tree) -> CloseResponse:
    (signature,) = _items(v, 1, "SML_PublicClose.Res")
    return CloseResponse(global_signature=_opt_octets(signature, "globalSignature"))


def _get_list_response(v: Tree) -> GetListResponse:
    client_id, server_id, list_name, sensor_time, val_list, signature, gateway_time = _items(
        v, 7, "SML_GetList.Res"
    )
    if not isinstance(val_list, list):
        raise _bad("valList", val_list)
    return GetListResponse(
        client_id=_opt_octets(client_id, "clientId"),
        server_id=_octets(server_id, "serverId"),
        list_name=_opt_octets(list_name, "listName"),
        act_sensor_time=_time(sensor_time, "actSensorTime"),
        val_list=tuple(_list_entry(e) for e in val_list),
        list_signature=_opt_octets(signature, "listSignature"),
        act_gateway_time=_time(gateway_time, "actGatewayTime"),
    )


def _get_proc_parameter_response(v: Tree) -> GetProcParameterResponse:
    server_id, path, tree = _items(v, 3, "SML_GetProcParameter.Res")
    if not isinstance(path, list):
        raise _bad("parameterTreePath", path)
    return GetProcParameterResponse(
        server_id=_octets(server_id, "serverId"),
        parameter_tree_path=tuple(_octets(p, "parameterTreePath") for p in path),
        parameter_tree=_tree(tree),
    )


def _attention_response(v: Tree) -> AttentionResponse:
    server_id, number, message, details = _items(v, 4, "SML_Attention.Res")
    return AttentionResponse(
        server_id=_octets(server_id, "serverId"),
        attention_no=_octets(number, "attentionNo"),
        attention_msg=_opt_octets(message, "attentionMsg"),
        attention_details=None if details is None else _tree(details),
    )


# Message body choice tags (SML 1.04, "SML_MessageBody") -> decoder.
_BODY_DECODERS: Final[Mapping[int, Callable[[Tree], SmlBody]]] = {
    OpenResponse.tag: _open_response,
    CloseResponse.tag: _close_response,
    GetProcParameterResponse.tag: _get_proc_parameter_response,
    GetListResponse.tag: _get_list_response,
    AttentionResponse.tag: _attention_response,
}


def _swap16(x: int) -> int:
    return ((x & 0xFF) << 8) | (x >> 8)


def _skip(buf: bytes, pos: int, depth: int) -> int:
    """The position after the element at ``pos``, without decoding it."""
    tl = buf[pos]
    if tl & 0x80:
        _, end = _read_long(buf, pos, depth)
        return end
    if tl & 0x70 == 0x70:
        if depth > _MAX_DEPTH:
            raise FramingError(f"lists nested deeper than {_MAX_DEPTH} at byte {pos}")
        pos += 1
        for _ in range(tl & 0x0F):
            pos = _skip(buf, pos, depth + 1)
        return pos
    return pos + ((tl & 0x0F) or 1)  # 0x00 (endOfSmlMsg) is one byte


# One list entry as last seen: its bytes, the ListEntry, and, where its value is
# a short-form integer, the bytes before the value, the value's TL byte and
# the bytes after it (b"" when not).
_Seen = tuple[bytes, ListEntry, bytes, int, bytes]


class _EntryCache:
    """The list entries of the previous file, in order, with their bytes.

    A meter repeats most entries byte for byte from one file to the next, in
    the same order (server id, manufacturer, key, registers that did not
    move).  Where the bytes at the position of entry ``i`` start with the
    bytes entry ``i`` had last time, the entry is the same (an element's
    value depends on its own bytes only), so the ListEntry (immutable) is
    taken from here without decoding.  Where only the integer value moved
    (same bytes before it, same TL byte, same bytes after it), only the value
    is read.  One file's entries bound it.
    """

    __slots__ = ("current", "previous")

    def __init__(self) -> None:
        self.previous: list[_Seen] = []
        self.current: list[_Seen] = []

    def rotate(self) -> None:
        self.previous = self.current
        self.current = []


# The GetListResponse body with its choice tag as Unsigned16 or Unsigned32.
_GET_LIST_BODIES: Final = (b"\x72\x63\x07\x01\x77", b"\x72\x65\x00\x00\x07\x01\x77")
_SHORT_INTS: Final = frozenset(range(0x52, 0x5A)) | frozenset(range(0x62, 0x6A))


_UNSPLIT: Final = -1  # value_tl of an entry whose bytes were not split around the value yet


def _split(seen: _Seen) -> _Seen:
    """``seen`` with its bytes split around an integer value (value_tl 0 if there is none).

    Done only once an entry's bytes changed, so a decoder that never sees a
    second file (or entries that never change) does not pay for it.
    """
    key, entry = seen[0], seen[1]
    if type(entry.value) is int and key[0] == 0x77:
        at = 1
        for _ in range(5):  # objName, status, valTime, unit, scaler
            at = _skip(key, at, 5)
        tl = key[at]
        if tl in _SHORT_INTS:
            return key, entry, key[:at], tl, key[at + (tl & 0x0F) :]
    return key, entry, b"", 0, b""


def _get_list_cached(buf: bytes, pos: int, cache: _EntryCache) -> tuple[GetListResponse, int]:
    """Decode a GetListResponse's seven fields at ``pos``, list entries through ``cache``."""
    head, pos = _read_list(buf, pos, 4, 3)
    tl = buf[pos]
    if tl & 0xF0 == 0x70:
        count = tl & 0x0F
        pos += 1
    elif tl & 0xF0 == 0xF0 and buf[pos + 1] & 0xF0 == 0x00:  # up to 255 entries
        count = (tl & 0x0F) << 4 | buf[pos + 1]
        pos += 2
    else:
        (val_list,), _ = _read_list(buf, pos, 1, 3)
        raise _bad("valList", val_list)
    previous = cache.previous
    current = cache.current
    known = len(previous)
    entries: list[ListEntry] = []
    for index in range(count):
        if index < known:
            seen = previous[index]
            key, entry, prefix, value_tl, suffix = seen
            if buf.startswith(key, pos):
                current.append(seen)
                entries.append(entry)
                pos += len(key)
                continue
            if value_tl == _UNSPLIT:
                key, entry, prefix, value_tl, suffix = _split(seen)
            at = pos + len(prefix)
            if value_tl and buf.startswith(prefix, pos) and buf[at] == value_tl:
                value_end = at + (value_tl & 0x0F)
                if buf.startswith(suffix, value_end):
                    value = int.from_bytes(buf[at + 1 : value_end], "big", signed=value_tl < 0x60)
                    entry = _new_entry(entry.obj_name, entry.status, entry.val_time, entry.unit,
                                       entry.scaler, value, entry.value_signature)
                    end = value_end + len(suffix)
                    current.append((buf[pos:end], entry, prefix, value_tl, suffix))
                    entries.append(entry)
                    pos = end
                    continue
        if buf[pos] == 0x77:  # the list of seven, read without a level of nesting
            tree: Tree
            tree, end = _read_list(buf, pos + 1, 7, 5)
        else:
            (tree,), end = _read_list(buf, pos, 1, 4)
        entry = _list_entry(tree)
        current.append((buf[pos:end], entry, b"", _UNSPLIT, b""))
        entries.append(entry)
        pos = end
    (signature, gateway_time), pos = _read_list(buf, pos, 2, 3)
    client_id, server_id, list_name, sensor_time = head
    body = GetListResponse(
        client_id=_opt_octets(client_id, "clientId"),
        server_id=_octets(server_id, "serverId"),
        list_name=_opt_octets(list_name, "listName"),
        act_sensor_time=_time(sensor_time, "actSensorTime"),
        val_list=tuple(entries),
        list_signature=_opt_octets(signature, "listSignature"),
        act_gateway_time=_time(gateway_time, "actGatewayTime"),
    )
    return body, pos


def decode_file(payload: bytes) -> tuple[SmlMessage, ...]:
    """Decode the messages of one SML file (the transport frame's data, padding removed).

    0x00 bytes between and after messages are skipped (some meters pad with them).

    Raises:
        FramingError: the bytes are not a sequence of SML messages; the
            message says at which byte of ``payload``.
    """
    return _decode_checked(bytes(payload), None)


def _decode_checked(payload: bytes, cache: _EntryCache | None) -> tuple[SmlMessage, ...]:
    try:
        return _decode_file(payload, cache)
    except (_Truncated, IndexError):
        raise FramingError(
            f"SML file ends inside an element ({len(payload)} bytes)", raw=payload
        ) from None
    except RecursionError:  # pragma: no cover - _MAX_DEPTH keeps the stack far from the limit
        raise FramingError("SML file nested too deeply", raw=payload) from None


def _decode_file(buf: bytes, cache: _EntryCache | None) -> tuple[SmlMessage, ...]:
    messages: list[SmlMessage] = []
    n = len(buf)
    pos = 0
    while pos < n:
        start = pos
        tl = buf[pos]
        if tl == 0x00:
            pos += 1
            continue
        if tl != 0x76:
            raise FramingError(f"expected an SML_Message (a list of 6) at byte {pos}, got {tl:#04x}")
        head, pos = _read_list(buf, pos + 1, 3, 1)
        transaction_id, group_no, abort_on_error = head
        body: SmlBody
        try:
            if cache is not None and buf.startswith(_GET_LIST_BODIES, pos):
                body, pos = _get_list_cached(buf, buf.index(0x77, pos) + 1, cache)
            else:
                (body_tree,), pos = _read_list(buf, pos, 1, 1)
                tag_tree, content = _items(body_tree, 2, "SML_MessageBody")
                tag = _int(tag_tree, "SML_MessageBody tag")
                decode = _BODY_DECODERS.get(tag)
                body = decode(content) if decode else UnknownBody(tag=tag, content=_value(content))
        except FramingError as exc:
            raise FramingError(f"message at byte {start}: {exc}") from None
        crc_at = pos
        if buf[pos] == 0x63:  # Unsigned16, as every meter sends it
            crc = buf[pos + 1] << 8 | buf[pos + 2]
            pos += 3
        else:
            (crc_tree,), pos = _read_list(buf, pos, 1, 1)
            crc = _int(crc_tree, "crc16")
        if buf[pos] != 0x00:
            raise FramingError(f"endOfSmlMsg (0x00) missing at byte {pos}")
        pos += 1
        messages.append(
            _new_message(
                _octets(transaction_id, "transactionId"),
                _int(group_no, "groupNo"),
                _int(abort_on_error, "abortOnError"),
                body,
                crc == _swap16(crc16_x25(buf[start:crc_at])),
            )
        )
    return tuple(messages)


# ------------------------------------------------------------------ encoding
def _tl(out: bytearray, kind: int, length: int) -> None:
    """Append a type-length field; ``length`` as the spec counts it for ``kind``."""
    if length < 16:
        out.append(kind | length)
        return
    nibbles = []
    while length:
        nibbles.append(length & 0x0F)
        length >>= 4
    nibbles.reverse()
    out.append(0x80 | kind | nibbles[0])
    out.extend(0x80 | x for x in nibbles[1:-1])
    out.append(nibbles[-1])


def _put_octets(out: bytearray, data: bytes | None) -> None:
    if data is None or not data:
        out.append(0x01)
        return
    size = len(data) + 1
    extra = 0
    while size + extra >= 16 ** (extra + 1):  # the TL bytes count towards the length
        extra += 1
    _tl(out, 0x00, size + extra)
    out += data


def _put_int(out: bytearray, value: int, *, signed: bool, width: int = 0) -> None:
    """An integer; ``width`` 0 means the smallest of 1, 2, 4, 8 bytes that holds it."""
    widths = (width,) if width else (1, 2, 4, 8)
    for w in widths:
        try:
            data = value.to_bytes(w, "big", signed=signed)
        except OverflowError:
            continue
        out.append((0x50 if signed else 0x60) | (w + 1))
        out += data
        return
    raise LocalProtocolError(f"{value} does not fit an SML {'Integer' if signed else 'Unsigned'}")


def _put_opt_uint(out: bytearray, value: int | None, width: int = 0) -> None:
    if value is None:
        out.append(0x01)
    else:
        _put_int(out, value, signed=False, width=width)


def _put_value(out: bytearray, value: SmlValue) -> None:
    if value is None:
        out.append(0x01)
    elif isinstance(value, bool):
        out += b"\x42\x01" if value else b"\x42\x00"
    elif isinstance(value, int):
        _put_int(out, value, signed=value < 0)
    elif isinstance(value, bytes):
        _put_octets(out, value)
    else:
        _tl(out, 0x70, len(value))
        for item in value:
            _put_value(out, item)


def _put_time(out: bytearray, t: SmlTime | None) -> None:
    if t is None:
        out.append(0x01)
        return
    out.append(0x72)
    if t.kind == "local_timestamp":
        out += b"\x62\x03\x73"
        _put_int(out, t.value, signed=False, width=4)
        _put_int(out, t.local_offset_min, signed=True, width=2)
        _put_int(out, t.season_offset_min, signed=True, width=2)
        return
    out += b"\x62\x01" if t.kind == "sec_index" else b"\x62\x02"
    _put_int(out, t.value, signed=False, width=4)


def _put_scaler(out: bytearray, scaler: int | None) -> None:
    if scaler is None:
        out.append(0x01)
    else:
        _put_int(out, scaler, signed=True, width=1)


def _put_tree(out: bytearray, tree: ProcParTree) -> None:
    out.append(0x73)
    _put_octets(out, tree.parameter_name)
    if tree.value_tag == 0:
        out.append(0x01)
    else:
        out.append(0x72)
        _put_int(out, tree.value_tag, signed=False, width=1)
        value = tree.value
        if isinstance(value, PeriodEntry):
            out.append(0x75)
            _put_octets(out, value.obj_name)
            _put_opt_uint(out, value.unit, 1)
            _put_scaler(out, value.scaler)
            _put_value(out, value.value)
            _put_octets(out, value.value_signature)
        elif isinstance(value, SmlTime):
            _put_time(out, value)
        else:
            _put_value(out, value)
    if tree.children is None:
        out.append(0x01)
    else:
        _tl(out, 0x70, len(tree.children))
        for child in tree.children:
            _put_tree(out, child)


def _put_body(out: bytearray, body: SmlBody) -> None:
    out.append(0x72)
    _put_int(out, body.tag, signed=False, width=4 if body.tag > 0xFFFF else 2)
    if isinstance(body, OpenResponse):
        out.append(0x76)
        _put_octets(out, body.codepage)
        _put_octets(out, body.client_id)
        _put_octets(out, body.req_file_id)
        _put_octets(out, body.server_id)
        _put_time(out, body.ref_time)
        _put_opt_uint(out, body.sml_version, 1)
    elif isinstance(body, CloseResponse):
        out.append(0x71)
        _put_octets(out, body.global_signature)
    elif isinstance(body, GetListResponse):
        out.append(0x77)
        _put_octets(out, body.client_id)
        _put_octets(out, body.server_id)
        _put_octets(out, body.list_name)
        _put_time(out, body.act_sensor_time)
        _tl(out, 0x70, len(body.val_list))
        for e in body.val_list:
            out.append(0x77)
            _put_octets(out, e.obj_name)
            _put_opt_uint(out, e.status)
            _put_time(out, e.val_time)
            _put_opt_uint(out, e.unit, 1)
            _put_scaler(out, e.scaler)
            _put_value(out, e.value)
            _put_octets(out, e.value_signature)
        _put_octets(out, body.list_signature)
        _put_time(out, body.act_gateway_time)
    elif isinstance(body, GetProcParameterResponse):
        out.append(0x73)
        _put_octets(out, body.server_id)
        _tl(out, 0x70, len(body.parameter_tree_path))
        for p in body.parameter_tree_path:
            _put_octets(out, p)
        _put_tree(out, body.parameter_tree)
    elif isinstance(body, AttentionResponse):
        out.append(0x74)
        _put_octets(out, body.server_id)
        _put_octets(out, body.attention_no)
        _put_octets(out, body.attention_msg)
        if body.attention_details is None:
            out.append(0x01)
        else:
            _put_tree(out, body.attention_details)
    else:
        _put_value(out, body.content)


def encode_file(messages: Iterable[SmlMessage]) -> bytes:
    """The bytes of an SML file holding ``messages``, each with its CRC16 and end byte.

    ``crc_ok`` is not encoded: every message gets a correct CRC.

    Raises:
        LocalProtocolError: a number does not fit its SML type.
    """
    out = bytearray()
    for m in messages:
        start = len(out)
        out.append(0x76)
        _put_octets(out, m.transaction_id)
        _put_int(out, m.group_no, signed=False, width=1)
        _put_int(out, m.abort_on_error, signed=False, width=1)
        _put_body(out, m.body)
        crc = _swap16(crc16_x25(out[start:]))
        out.append(0x63)
        out += crc.to_bytes(2, "big")
        out.append(0x00)
    return bytes(out)


_ESC: Final = b"\x1b\x1b\x1b\x1b"
_START: Final = _ESC + b"\x01\x01\x01\x01"
_START_PAYLOAD: Final = b"\x01\x01\x01\x01"


def encode_transport(payload: bytes, *, crc: CrcVariant = "x25") -> bytes:
    """Wrap an SML file in transport protocol version 1 (escapes, padding, CRC).

    ``1B1B1B1B`` in the data is doubled wherever it occurs (which a decoder
    that only looks on the 4-byte grid reads the same way, see
    ``_scan_frame``).  ``crc="kermit"`` writes the Holley DTZ541 variant.
    """
    data = bytes(payload).replace(_ESC, _ESC + _ESC)
    padding = -len(data) % 4
    out = bytearray(_START)
    out += data
    out += bytes(padding)
    out += _ESC
    out.append(0x1A)
    out.append(padding)
    if crc == "kermit":
        out += crc16_kermit(out).to_bytes(2, "big")
    else:
        out += crc16_x25(out).to_bytes(2, "little")
    return bytes(out)


# ----------------------------------------------------------------- transport
@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFrame:
    """One transport frame whose CRC matched: the SML file in it and where it was."""

    payload: bytes  # escapes undone, padding removed
    raw: bytes  # the frame as received, start to CRC
    offset: int  # position of the start sequence in the fed stream
    crc_variant: CrcVariant


TransportEvent = TransportFrame | Discarded
_CRC_CHOICES: Final[Mapping[str, tuple[CrcVariant, ...]]] = {
    "auto": ("x25", "kermit"),
    "x25": ("x25",),
    "kermit": ("kermit",),
}


class SmlTransportDecoder:
    """Incremental transport-protocol-v1 decoder: bytes in, SML files out.

    ``crc`` picks the accepted CRC variants (``"auto"``: X-25, else the Holley
    KERMIT variant).  Any split of a stream into ``feed`` calls yields the same
    events.  The buffer never holds more than ``max_frame`` bytes between calls.
    """

    def __init__(
        self, *, crc: Literal["auto", "x25", "kermit"] = "auto", max_frame: int = 16384
    ) -> None:
        """Create a decoder.

        Raises:
            LocalProtocolError: an unknown ``crc`` choice, or ``max_frame`` < 64.
        """
        if crc not in _CRC_CHOICES:
            raise LocalProtocolError(f"crc must be one of {', '.join(_CRC_CHOICES)}, not {crc!r}")
        if max_frame < 64:
            raise LocalProtocolError("max_frame must be at least 64")
        self._variants = _CRC_CHOICES[crc]
        self._max_frame = max_frame
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self._in_frame = False  # a start sequence at self._buf[0] is being followed
        self._frame_start = 0  # where that frame starts while _scan_frame runs
        self._scan = 0  # where the escape search in the pending frame resumes (from its start)
        self._escapes: list[int] = []  # doubled 1B1B1B1B in the pending frame (from its start)
        self._junk_start = -1
        self._junk = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (or a possible start sequence)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[TransportEvent]:
        """Add bytes; return the frames completed and the input discarded so far.

        Never raises for any input: malformed bytes become ``Discarded`` events.
        """
        events: list[TransportEvent] = []
        step = self._max_frame
        for at in range(0, len(data), step) if len(data) > step else (0,):
            self._buf += data[at : at + step]
            self._process(events, final=False)
        return events

    def feed_eof(self) -> list[TransportEvent]:
        """Report what is left at the end of the stream; the decoder can then take a new one."""
        events: list[TransportEvent] = []
        self._process(events, final=True)
        self._flush_junk(events)
        return events

    # ------------------------------------------------------------ internals
    def _process(self, events: list[TransportEvent], *, final: bool) -> None:
        buf = self._buf
        pos = 0
        while True:
            if not self._in_frame:
                start = buf.find(_START, pos)
                if start < 0:
                    keep = 0 if final else _start_prefix(buf, pos)
                    self._add_junk(events, pos, len(buf) - keep)
                    pos = len(buf) - keep
                    break
                self._add_junk(events, pos, start)
                self._flush_junk(events)
                pos = start
                self._in_frame = True
                self._scan = 8
                self._escapes = []
            nxt = self._scan_frame(events, pos, final)
            if nxt < 0:
                pos = self._frame_start  # a new start sequence may have replaced the frame
                break
            pos = nxt
            self._in_frame = False
        if pos:
            del buf[:pos]
            self._base += pos

    def _add_junk(self, events: list[TransportEvent], start: int, end: int) -> None:
        # Runs are cut at max_frame bytes so that reporting does not depend
        # on how the stream was split.
        while start < end:
            if self._junk_start < 0:
                self._junk_start = self._base + start
            take = min(end - start, self._max_frame - len(self._junk))
            self._junk += self._buf[start : start + take]
            start += take
            if len(self._junk) >= self._max_frame:
                self._flush_junk(events)

    def _flush_junk(self, events: list[TransportEvent]) -> None:
        if self._junk_start < 0:
            return
        raw = bytes(self._junk)
        error = FramingError(
            f"{len(raw)} bytes outside any SML frame", offset=self._junk_start, raw=raw
        )
        events.append(Discarded(reason="garbage", error=error, raw=raw, offset=self._junk_start))
        self._junk_start = -1
        self._junk = bytearray()

    def _discard(
        self,
        events: list[TransportEvent],
        reason: DiscardReason,
        message: str,
        start: int,
        end: int,
    ) -> None:
        raw = bytes(self._buf[start:end])
        offset = self._base + start
        error = FramingError(message, offset=offset, raw=raw)
        events.append(Discarded(reason=reason, error=error, raw=raw, offset=offset))

    def _scan_frame(self, events: list[TransportEvent], s: int, final: bool) -> int:
        """Follow the frame whose start sequence is at ``s``.

        Returns the index after the frame once it is decided (an event was
        emitted), -1 when more bytes are needed.

        Escape sequences belong on the 4-byte grid that starts at the start
        sequence (libsml reads nothing else), but some senders double a
        ``1B1B1B1B`` of the data wherever it occurs.  Within a run of 1B
        bytes it does not matter which four are dropped, so the scan takes
        any ``1B1B1B1B 1B1B1B1B`` as an escaped one, and otherwise skips 1B
        bytes off the grid until the run reaches it: ``…12341B1B 1B1B1B1B
        1A…`` is data ending in 1B1B, then the end sequence.
        """
        buf = self._buf
        n = len(buf)
        self._frame_start = s
        limit = min(n, s + self._max_frame)
        i = s + self._scan
        while True:
            p = buf.find(_ESC, i, limit)
            if p < 0:
                if limit - s >= self._max_frame:
                    cut = self._overflow_cut(s)
                    message = f"no end sequence within {self._max_frame} bytes"
                    self._discard(events, "overflow", message, s, cut)
                    return cut
                if final:
                    self._discard(events, "framing", "stream ended inside an SML frame", s, n)
                    return n
                self._scan = max(i, n - 3) - s
                return -1
            if p + 8 > s + self._max_frame:
                # Decided on the window alone (not on how many bytes are buffered),
                # so the result cannot depend on how the stream was split.
                cut = self._overflow_cut(s)
                message = f"no end sequence within {self._max_frame} bytes"
                self._discard(events, "overflow", message, s, cut)
                return cut
            if p + 8 > n:
                if final:
                    self._discard(events, "framing", "stream ended inside an SML frame", s, n)
                    return n
                self._scan = p - s
                return -1
            on_grid = not (p - s) & 3
            if buf.startswith(_ESC, p + 4):
                self._escapes.append(p - s)
                i = p + 8
                continue
            if buf.startswith(_START_PAYLOAD, p + 4):
                # A new file begins: bytes of this one were lost.
                self._discard(events, "framing", "SML frame cut short by a new start sequence", s, p)
                s = self._frame_start = p
                self._scan = 8
                self._escapes = []
                limit = min(n, s + self._max_frame)
                i = s + 8
                continue
            if buf[p + 4] == 0x1A:
                return self._end(events, s, p, on_grid)
            if not on_grid:
                i = p + 1
                continue
            esc = bytes(buf[p + 4 : p + 8]).hex()
            self._discard(events, "framing", f"invalid escape sequence 1b1b1b1b {esc}", s, p + 8)
            return p + 8

    def _overflow_cut(self, s: int) -> int:
        """Where an overflowing frame starting at ``s`` is cut.

        A function of the stream's content only (never of how far the scan had
        got when the bytes ran out), so that any split of the input gives the
        same events: keep the last 7 bytes of the window, where a start
        sequence may begin, but never cut inside an escape already consumed.
        """
        consumed = s + (self._escapes[-1] + 8 if self._escapes else 8)
        return max(consumed, s + self._max_frame - 7)

    def _end(self, events: list[TransportEvent], s: int, p: int, on_grid: bool) -> int:
        """The end sequence of the frame starting at ``s`` is at ``p``: check and emit it."""
        buf = self._buf
        end = p + 8
        raw = bytes(buf[s:end])
        offset = self._base + s
        x25 = crc16_x25(raw[:-2])
        variant: CrcVariant | None = None
        for candidate in self._variants:
            if candidate == "x25":
                if raw[-2] | raw[-1] << 8 == x25:
                    variant = "x25"
                    break
            elif raw[-2] << 8 | raw[-1] == crc16_kermit(raw[:-2]):
                variant = "kermit"
                break
        got = raw[-2] | raw[-1] << 8
        if variant is None:
            where = "" if on_grid else " (end sequence off the 4-byte grid: bytes were lost)"
            error = ChecksumError(
                f"CRC {got:04X} in SML frame, {x25:04X} computed{where}",
                expected=x25,
                got=got,
                offset=offset,
                raw=raw,
            )
            events.append(Discarded(reason="checksum", error=error, raw=raw, offset=offset))
            return end
        if not on_grid:
            self._discard(events, "framing", "end sequence off the 4-byte grid", s, end)
            return end
        padding = raw[-3]
        data_end = p - padding
        if padding > 3 or data_end < s + 8 or buf[data_end:p].count(0) != padding:
            self._discard(events, "framing", f"bad padding ({padding} bytes)", s, end)
            return end
        if self._escapes:
            parts = []
            at = s + 8
            for rel in self._escapes:
                parts.append(buf[at : s + rel + 4])
                at = s + rel + 8
            parts.append(buf[at:data_end])
            payload = b"".join(parts)
        else:
            payload = bytes(buf[s + 8 : data_end])
        events.append(TransportFrame(payload=payload, raw=raw, offset=offset, crc_variant=variant))
        return end


def _start_prefix(buf: bytearray, pos: int) -> int:
    """Length of the longest tail of ``buf[pos:]`` that could begin a start sequence."""
    for k in range(min(len(_START) - 1, len(buf) - pos), 0, -1):
        if buf.endswith(_START[:k]):
            return k
    return 0


# ------------------------------------------------------------------- mapping
_Extra: TypeAlias = tuple[tuple[str, Any], ...]


_UNIT_OR_NONE: Final[Mapping[int | None, str]] = {k: v for k, v in DLMS_UNITS.items()}
_ID_CACHE: dict[bytes, str] = {}


def _reading_id(obj_name: bytes) -> str:
    rid = _ID_CACHE.get(obj_name)
    if rid is None:
        rid = str(ObisCode.from_bytes(obj_name)) if len(obj_name) == 6 else obj_name.hex()
        if len(_ID_CACHE) < 4096:
            _ID_CACHE[obj_name] = rid
    return rid


def _text(data: bytes) -> str:
    """Printable ASCII as text, anything else as lowercase hex."""
    if data and data.isascii():
        text = data.decode("ascii")
        if text.isprintable():
            return text
    return data.hex()


_POW10: Final[tuple[int, ...]] = tuple(10**k for k in range(129))  # scalers are Integer8 (checked on decoding)


def _json_value(value: SmlValue, scaler: int | None) -> int | float | str | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not scaler:
            return value
        if scaler > 0:
            return value * _POW10[scaler]
        # Exact integers divided by an exact power of ten: the correctly
        # rounded float, i.e. the decimal the meter meant (54301577 -> 5430157.7).
        return value / _POW10[-scaler]
    if isinstance(value, bytes):
        return _text(value)
    if value is None:
        return ""
    return _text(_flatten(value))


def _flatten(value: tuple[SmlValue, ...]) -> bytes:
    out = bytearray()
    _put_value(out, value)
    return bytes(out)


def server_id_text(server_id: bytes) -> str:
    """The meter number a server id stands for (see the module docstring)."""
    sid = server_id
    if (
        len(sid) == 10
        and sid[0] in (0x09, 0x0A)
        and sid[1] < 16
        and sid[2:5].isalpha()
        and sid[2:5].isupper()
    ):
        serial = int.from_bytes(sid[6:10], "big")
        return f"{sid[1]:X}{sid[2:5].decode('ascii')}{sid[5]:02X}{serial:08d}"
    return _text(sid)


# OBIS codes whose value names the manufacturer (FLAG id): 129-129:199.130.3
# (EDL21) and 1-0:96.50.1*1 (FNN "Hersteller-Kennung").
_MANUFACTURER_IDS: Final = (b"\x81\x81\xc7\x82\x03\xff", b"\x01\x00\x60\x32\x01\x01")


def _flag(server_id: bytes | None, entries: Sequence[ListEntry]) -> str:
    for e in entries:
        if e.obj_name in _MANUFACTURER_IDS and isinstance(e.value, bytes):
            text = e.value[:3]
            if len(text) == 3 and text.isalpha():
                return text.decode("ascii").upper()
    if server_id is not None and len(server_id) == 10 and server_id[0] in (0x09, 0x0A):
        text = server_id[2:5]
        if text.isalpha():
            return text.decode("ascii").upper()
    return ""


def _entry_reading(e: ListEntry) -> Reading:
    val_time = e.val_time
    ts = None if val_time is None or val_time.kind == "sec_index" else val_time.as_datetime()
    status = e.status
    rid = _ID_CACHE.get(e.obj_name) or _reading_id(e.obj_name)
    return make_reading(
        rid,
        _json_value(e.value, e.scaler),
        _UNIT_OR_NONE.get(e.unit),  # no unit code: None
        ts,
        () if status is None else (("status", status),),
    )


def _tree_readings(tree: ProcParTree, out: list[Reading]) -> None:
    value = tree.value
    if tree.value_tag == 2 and isinstance(value, PeriodEntry):
        unit = DLMS_UNITS.get(value.unit) if value.unit is not None else None
        out.append(
            make_reading(
                _reading_id(value.obj_name), _json_value(value.value, value.scaler), unit, None, ()
            )
        )
    elif tree.value_tag == 4 and isinstance(value, SmlTime):
        when = value.as_datetime()
        text: int | str = value.value if when is None else when.isoformat()
        out.append(make_reading(_reading_id(tree.parameter_name), text, None, None, ()))
    elif tree.value_tag == 1 and not isinstance(value, (SmlTime, PeriodEntry)):
        out.append(
            make_reading(_reading_id(tree.parameter_name), _json_value(value, None), None, None, ())
        )
    for child in tree.children or ():
        _tree_readings(child, out)


class _ReadingCache:
    """The readings of the previous file, in order, with the ListEntry each came from.

    The entry cache hands out the very same ListEntry object for an
    unchanged entry, whose reading is then the previous one (Reading is
    immutable too); for an entry whose value alone moved it shares every
    other field object with its predecessor, so only the value is mapped.
    """

    __slots__ = ("current", "previous")

    def __init__(self) -> None:
        self.previous: list[tuple[ListEntry, Reading]] = []
        self.current: list[tuple[ListEntry, Reading]] = []

    def readings(self, entries: Sequence[ListEntry]) -> list[Reading]:
        previous = self.previous
        current = self.current
        known = len(previous)
        out: list[Reading] = []
        for e in entries:
            index = len(current)
            if index < known:
                last, reading = previous[index]
                if last is e:
                    current.append((e, reading))
                    out.append(reading)
                    continue
                if (
                    last.obj_name is e.obj_name
                    and last.scaler is e.scaler
                    and last.unit is e.unit
                    and last.status is e.status
                    and last.val_time is e.val_time
                ):
                    reading = make_reading(
                        reading.id,
                        _json_value(e.value, e.scaler),
                        reading.unit,
                        reading.timestamp,
                        reading.extra,
                    )
                    current.append((e, reading))
                    out.append(reading)
                    continue
            reading = _entry_reading(e)
            current.append((e, reading))
            out.append(reading)
        return out

    def rotate(self) -> None:
        self.previous = self.current
        self.current = []


def meter_frame(
    messages: Sequence[SmlMessage], *, raw: bytes = b"", offset: int = 0
) -> MeterFrame | None:
    """Map decoded messages to a :class:`MeterFrame`; ``None`` if they carry no value.

    ``checksum_ok`` is false when a message CRC did not match (the transport
    CRC did, so the content is what the meter sent).
    """
    return _meter_frame(messages, raw, offset, None)


def _meter_frame(
    messages: Sequence[SmlMessage], raw: bytes, offset: int, cache: _ReadingCache | None
) -> MeterFrame | None:
    readings: list[Reading] = []
    server_id: bytes | None = None
    timestamp: datetime | None = None
    entries: list[ListEntry] = []
    for m in messages:
        body = m.body
        if isinstance(body, GetListResponse):
            if server_id is None:
                server_id = body.server_id
            entries += body.val_list
            if cache is None:
                readings += [_entry_reading(e) for e in body.val_list]
            else:
                readings += cache.readings(body.val_list)
            for t in (body.act_gateway_time, body.act_sensor_time):
                if timestamp is None and t is not None and t.kind != "sec_index":
                    timestamp = t.as_datetime()
        elif isinstance(body, GetProcParameterResponse):
            if server_id is None:
                server_id = body.server_id
            _tree_readings(body.parameter_tree, readings)
    if not readings:
        return None
    if server_id is None:
        for m in messages:
            if isinstance(m.body, OpenResponse):
                server_id = m.body.server_id
                break
    for m in messages:
        body = m.body
        ref = body.ref_time if isinstance(body, OpenResponse) else None
        if timestamp is None and ref is not None and ref.kind != "sec_index":
            timestamp = ref.as_datetime()
    return MeterFrame(
        protocol="sml",
        meter_id=server_id_text(server_id) if server_id else None,
        timestamp=timestamp,
        checksum_ok=all(m.crc_ok for m in messages),
        readings=tuple(readings),
        header=_flag(server_id, entries),
        raw=raw,
        offset=offset,
    )


# ------------------------------------------------------------- file template
_CONST, _FREE, _VALUE = range(3)  # roles of a leaf's value octets in a _FileTemplate


class _FileTemplate:
    """The last file of a meter, as a template for its next one.

    A meter sends the same file every second or so with a dozen octets changed: the
    transaction ids, second indexes, a few register values and the CRCs (SML 1.04,
    consecutive eHZ files differ in 12-25 of ~300 octets).  Built from a file that
    was decoded in full, the template holds its octets, where each leaf value is and
    what it means for the frame: *free* (transaction ids, the request file id, second
    indexes, the close signature: nothing in a MeterFrame comes from them), a list
    entry's integer *value* (its reading is ``_json_value(value, scaler)``, as
    :class:`_ReadingCache` maps it), the message CRCs (checked again), and *constant*
    for everything else: TL octets, server ids, OBIS names, units, scalers, statuses,
    real timestamps.  A file of the same length whose constant octets are all the
    same (one regular expression checks them, in C) has the same structure and the
    same meaning but for those values, so its frame is the last one with the values
    and CRC results updated.  Anything else (a constant that changed, another
    length, a file with other message types) returns None and the caller decodes
    the file in full.
    """

    __slots__ = ("_crcs", "_frame", "_match", "_payload", "_readings", "_values", "length")

    def __init__(self, payload: bytes, frame: MeterFrame,
                 spans: list[tuple[int, int, int]], values: list[_Tracked],
                 crcs: list[tuple[int, int]]) -> None:
        parts: list[bytes] = []
        prev = 0
        for start, end, _role in spans:
            parts.append(re.escape(payload[prev:start]))
            parts.append(b".{%d}" % (end - start))
            prev = end
        parts.append(re.escape(payload[prev:]))
        self.length = len(payload)
        self._match = re.compile(b"".join(parts), re.DOTALL).fullmatch
        self._payload = payload
        self._frame = frame
        self._readings = list(frame.readings)
        # (reading index, value span, scaler, status span); a span: (start, end, signed)
        self._values = values
        self._crcs = crcs  # (message start, position of its CRC's TL octet)

    @classmethod
    def build(cls, payload: bytes, messages: Sequence[SmlMessage],
              frame: MeterFrame) -> _FileTemplate | None:
        """The template of a file decoded in full, or None for files it does not cover
        (message bodies other than open, get-list and close responses, long list
        forms it does not walk)."""
        try:
            walked = _walk_file(payload, messages)
        except (IndexError, FramingError, _Truncated):
            return None
        if walked is None:
            return None
        spans, values, crcs = walked
        if len(values) and max(v[0] for v in values) >= len(frame.readings):
            return None
        entries = sum(len(m.body.val_list) for m in messages
                      if isinstance(m.body, GetListResponse))
        if entries != len(frame.readings):
            return None
        return cls(payload, frame, spans, values, crcs)

    def frame(self, payload: bytes, raw: bytes, offset: int) -> MeterFrame | None:
        """The frame of ``payload`` if it fits the template, else None."""
        if len(payload) != self.length or self._match(payload) is None:
            return None
        base = self._payload
        readings = self._readings
        changed = False
        for index, value, scaler, status in self._values:
            new_value = new_status = None
            if value is not None:
                start, end, signed = value
                if payload[start:end] != base[start:end]:
                    new_value = _json_value(
                        int.from_bytes(payload[start:end], "big", signed=signed), scaler)
            if status is not None:
                start, end, signed = status
                if payload[start:end] != base[start:end]:
                    new_status = int.from_bytes(payload[start:end], "big", signed=signed)
            if new_value is None and new_status is None:
                continue
            if not changed:
                readings = list(readings)
                changed = True
            old = readings[index]
            # as _entry_reading makes it (the extra holds the status alone)
            readings[index] = make_reading(
                old.id, old.value if new_value is None else new_value, old.unit, old.timestamp,
                old.extra if new_status is None else (("status", new_status),))
        crc_ok = True
        for start, crc_at in self._crcs:
            if payload[crc_at + 1] << 8 | payload[crc_at + 2] != _swap16(
                    crc16_x25(payload[start:crc_at])):
                crc_ok = False
        self._payload = payload
        self._readings = readings
        last = self._frame
        return MeterFrame(protocol="sml", meter_id=last.meter_id, timestamp=last.timestamp,
                          checksum_ok=crc_ok, readings=tuple(readings), header=last.header,
                          raw=raw, offset=offset)


_Tracked = tuple[int, tuple[int, int, bool] | None, int | None, tuple[int, int, bool] | None]


def _walk_file(buf: bytes, messages: Sequence[SmlMessage]) -> tuple[
        list[tuple[int, int, int]], list[_Tracked], list[tuple[int, int]]] | None:
    """The variable spans of a file (see :class:`_FileTemplate`): (start, end, role) of
    every free or value leaf, the value leaves with their reading, the CRC positions.
    None where the file is not of the covered kind."""
    spans: list[tuple[int, int, int]] = []
    values: list[_Tracked] = []
    crcs: list[tuple[int, int]] = []
    n = len(buf)

    def leaf(pos: int, role: int) -> int:
        tl = buf[pos]
        if tl & 0x80 or tl & 0x70 == 0x70 or role == _CONST:
            return _skip(buf, pos, 1)
        size = tl & 0x0F
        if size > 1:
            spans.append((pos + 1, pos + size, role))
        return pos + (size or 1)

    def time(pos: int) -> int:
        # SML_Time: list of 2 {choice, value}; a second index (choice 1) is free, as
        # is a bare integer (Holley DTZ541), which _time reads as a second index too
        if buf[pos] == 0x72 and buf[pos + 1] == 0x62 and buf[pos + 2] == 0x01:
            return leaf(pos + 3, _FREE)
        if buf[pos] & 0xF0 in (0x50, 0x60):
            return leaf(pos, _FREE)
        return _skip(buf, pos, 1)

    def count(pos: int) -> tuple[int, int]:
        tl = buf[pos]
        if tl & 0xF0 == 0x70:
            return tl & 0x0F, pos + 1
        if tl & 0xF0 == 0xF0 and buf[pos + 1] & 0xF0 == 0x00:
            return (tl & 0x0F) << 4 | buf[pos + 1], pos + 2
        return -1, pos

    pos = 0
    reading = 0
    for message in messages:
        while pos < n and buf[pos] == 0x00:
            pos += 1
        if pos >= n or buf[pos] != 0x76:
            return None
        start = pos
        pos = leaf(pos + 1, _FREE)  # transactionId
        pos = leaf(pos, _CONST)  # groupNo
        pos = leaf(pos, _CONST)  # abortOnError
        if buf[pos] != 0x72:
            return None
        pos = leaf(pos + 1, _CONST)  # the body's tag
        body = message.body
        if isinstance(body, OpenResponse):
            if buf[pos] != 0x76:
                return None
            pos = leaf(pos + 1, _CONST)  # codepage
            pos = leaf(pos, _CONST)  # clientId
            pos = leaf(pos, _FREE)  # reqFileId
            pos = leaf(pos, _CONST)  # serverId
            pos = time(pos)  # refTime
            pos = leaf(pos, _CONST)  # smlVersion
        elif isinstance(body, CloseResponse):
            if buf[pos] != 0x71:
                return None
            pos = leaf(pos + 1, _FREE)  # globalSignature
        elif isinstance(body, GetListResponse):
            if buf[pos] != 0x77:
                return None
            pos += 1
            for _ in range(3):  # clientId, serverId, listName
                pos = leaf(pos, _CONST)
            pos = time(pos)  # actSensorTime
            entries, pos = count(pos)
            if entries != len(body.val_list):
                return None
            for entry in body.val_list:
                if buf[pos] != 0x77:
                    return None
                pos += 1
                pos = leaf(pos, _CONST)  # objName
                tl = buf[pos]
                status: tuple[int, int, bool] | None = None
                if tl & 0xF0 in (0x50, 0x60) and tl & 0x0F > 1 and entry.status is not None:
                    # status words toggle bits from file to file (EMH eHZ): tracked
                    status = (pos + 1, pos + (tl & 0x0F), tl < 0x60)
                    spans.append((pos + 1, pos + (tl & 0x0F), _VALUE))
                    pos += tl & 0x0F
                else:
                    pos = leaf(pos, _CONST)  # status
                pos = time(pos)  # valTime
                pos = leaf(pos, _CONST)  # unit
                pos = leaf(pos, _CONST)  # scaler
                tl = buf[pos]
                value: tuple[int, int, bool] | None = None
                if tl & 0xF0 in (0x50, 0x60) and tl & 0x0F > 1 \
                        and isinstance(entry.value, int) and not isinstance(entry.value, bool):
                    value = (pos + 1, pos + (tl & 0x0F), tl < 0x60)
                    spans.append((pos + 1, pos + (tl & 0x0F), _VALUE))
                    pos += tl & 0x0F
                else:
                    pos = leaf(pos, _CONST)
                if value is not None or status is not None:
                    values.append((reading, value, entry.scaler, status))
                pos = leaf(pos, _CONST)  # valueSignature
                reading += 1
            pos = leaf(pos, _CONST)  # listSignature
            pos = time(pos)  # actGatewayTime
        else:
            return None
        if buf[pos] != 0x63:
            return None
        crcs.append((start, pos))
        spans.append((pos + 1, pos + 3, _FREE))
        pos += 3
        if buf[pos] != 0x00:
            return None
        pos += 1
    if any(b != 0 for b in buf[pos:]):
        return None
    return spans, values, crcs


# ------------------------------------------------------------------- decoder
class SmlDecoder:
    """Incremental SML decoder: bytes in, :class:`MeterFrame` / :class:`Discarded` out.

    ``crc`` and ``max_frame`` as for :class:`SmlTransportDecoder`.  Any split
    of a stream into ``feed`` calls yields the same events.
    """

    def __init__(
        self, *, crc: Literal["auto", "x25", "kermit"] = "auto", max_frame: int = 16384
    ) -> None:
        """Create a decoder.

        Raises:
            LocalProtocolError: an unknown ``crc`` choice, or ``max_frame`` < 64.
        """
        self._transport = SmlTransportDecoder(crc=crc, max_frame=max_frame)
        #: the CRC variant of the last good frame (``None`` before the first)
        self.crc_variant: CrcVariant | None = None
        self._entries = _EntryCache()
        self._readings = _ReadingCache()
        self._template: _FileTemplate | None = None
        # the last file decoded in full, to build a template from once a next file of
        # the same length comes (a decoder that sees one file never pays for it)
        self._last_file: tuple[bytes, tuple[SmlMessage, ...], MeterFrame] | None = None
        self._templates_built = 0
        self._template_hits = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return self._transport.buffered

    def feed(self, data: bytes) -> list[SmlEvent]:
        """Add bytes; return the frames completed and the input discarded so far.

        Never raises for any input: malformed bytes become ``Discarded`` events.
        """
        return [self._map(ev) for ev in self._transport.feed(data)]

    def feed_eof(self) -> list[SmlEvent]:
        """Report what is left at the end of the stream; the decoder can then take a new one."""
        return [self._map(ev) for ev in self._transport.feed_eof()]

    def _map(self, ev: TransportEvent) -> SmlEvent:
        if isinstance(ev, Discarded):
            return ev
        template = self._template
        last = self._last_file
        if last is not None and len(last[0]) == len(ev.payload) and (
                template is None or template.length != len(ev.payload)) and (
                self._templates_built < 8 or self._templates_built <= 2 * self._template_hits):
            # a meter whose files never fit a template stops paying for one after a while
            self._templates_built += 1
            template = self._template = _FileTemplate.build(*last)
        self._last_file = None
        if template is not None:
            fast = template.frame(ev.payload, ev.raw, ev.offset)
            if fast is not None:
                self._template_hits += 1
                self.crc_variant = ev.crc_variant
                return fast
            self._template = None  # the next file gets one built from this one
        try:
            messages = _decode_checked(ev.payload, self._entries)
        except FramingError as exc:
            error = FramingError(f"bad SML file: {exc}", offset=ev.offset, raw=ev.raw)
            return Discarded(reason="framing", error=error, raw=ev.raw, offset=ev.offset)
        finally:
            self._entries.rotate()
        frame = _meter_frame(messages, ev.raw, ev.offset, self._readings)
        self._readings.rotate()
        if frame is None:
            kinds = ", ".join(type(m.body).__name__ for m in messages) or "no messages"
            unsupported = UnsupportedError(
                f"SML file without values ({kinds})", offset=ev.offset, raw=ev.raw
            )
            return Discarded(reason="unsupported", error=unsupported, raw=ev.raw, offset=ev.offset)
        self.crc_variant = ev.crc_variant
        self._last_file = (bytes(ev.payload), messages, frame)
        return frame
