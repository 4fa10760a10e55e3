"""A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 / Blue Book ed. 13, 4.1.5 table 2).

Every value is a :class:`Data`: a :class:`DataType` tag and a Python value.

=================================  ========================================
tag (type)                         ``Data.value``
=================================  ========================================
00 null-data, FF dont-care         ``None``
01 array, 02 structure             ``tuple[Data, ...]``
03 boolean                         ``bool`` (any non-zero octet is TRUE, as in BER;
                                   TRUE is encoded as ``01``)
04 bit-string                      :class:`BitString`
05 double-long … 15 long64-uns.    ``int`` (widths 1, 2, 4, 8; signed or not per tag)
0D bcd                             ``int`` (one octet, Integer8 as in the COSEMpdu ASN.1)
09 octet-string                    ``bytes``
0A visible-string, 0C utf8-string  ``str``
13 compact-array                   :class:`CompactArray`
16 enum                            ``int`` 0..255
17 float32, 18 float64             ``float`` (IEEE 754 big-endian)
19 date-time, 1A date, 1B time     :class:`CosemDateTime`, :class:`CosemDate`, :class:`CosemTime`
=================================  ========================================

Lengths (octet strings, arrays, structures) use the A-XDR length form: one octet below
0x80, otherwise ``0x80 | n`` followed by n length octets (clause 4 of IEC 61334-6; DLMS
uses up to 4).  The encoder always writes the shortest form, so ``encode(decode(b)) == b``
for every input that uses shortest lengths, which all meters seen so far do.

Date and time (Blue Book 4.1.6.1): the fields are kept exactly as sent, special values
included (year 0xFFFF, month 0xFD/0xFE "DST end/begin", day 0xFD/0xFE "2nd last/last day
of month", 0xFF "not specified", deviation 0x8000 "not specified"), so a date-time with
"don't care" fields round-trips; :meth:`CosemDateTime.to_datetime` turns a fully
specified one into an aware :class:`datetime.datetime`.  The deviation is the number of
minutes local time lags UTC (local = UTC - deviation: -60 is UTC+01:00), as the Blue Book
defines it and as Gurux and the meters in our captures use it.

Not supported: the long-form integer types of SN referencing, and ``delta`` types of
DLMS UA 1000-1 ed. 15 (tags 0x1C-0x20), which no meter we know of sends.  Decoding is
bounded: nesting deeper than :data:`MAX_DEPTH` and counts larger than the bytes left are
:class:`~gateway.errors.FramingError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone, tzinfo
from enum import IntEnum
from typing import Final, Self

from gateway.errors import FramingError, LocalProtocolError

__all__ = [
    "MAX_DEPTH",
    "BitString",
    "CompactArray",
    "CosemDate",
    "CosemDateTime",
    "CosemTime",
    "Data",
    "DataType",
    "DataValue",
    "TypeDescription",
    "array",
    "bit_string",
    "boolean",
    "date_time",
    "decode_data",
    "decode_data_at",
    "decode_length",
    "double_long",
    "double_long_unsigned",
    "encode_length",
    "enum",
    "float32",
    "float64",
    "integer",
    "long",
    "long64",
    "long64_unsigned",
    "long_unsigned",
    "null",
    "octet_string",
    "structure",
    "unsigned",
    "utf8_string",
    "visible_string",
]

MAX_DEPTH: Final = 48  # real data nests 4-6 deep; deeper is hostile input


class DataType(IntEnum):
    """The ``Data`` CHOICE tags (Blue Book table 2; 07, 08, 0B, 0E are unused)."""

    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


# tag -> (width in octets, signed) for the fixed-size integer types.
_INTS: Final[dict[DataType, tuple[int, bool]]] = {
    DataType.DOUBLE_LONG: (4, True),
    DataType.DOUBLE_LONG_UNSIGNED: (4, False),
    DataType.BCD: (1, True),
    DataType.INTEGER: (1, True),
    DataType.LONG: (2, True),
    DataType.UNSIGNED: (1, False),
    DataType.LONG_UNSIGNED: (2, False),
    DataType.LONG64: (8, True),
    DataType.LONG64_UNSIGNED: (8, False),
    DataType.ENUM: (1, False),
}


# ------------------------------------------------------------------ lengths
def encode_length(n: int) -> bytes:
    """The A-XDR length of ``n`` in its shortest form.

    Raises:
        LocalProtocolError: ``n`` is negative or needs more than 4 length octets.
    """
    if n < 0x80:
        if n < 0:
            raise LocalProtocolError(f"negative length {n}")
        return bytes((n,))
    width = (n.bit_length() + 7) // 8
    if width > 4:
        raise LocalProtocolError(f"length {n} needs more than 4 octets")
    return bytes((0x80 | width,)) + n.to_bytes(width, "big")


def decode_length(data: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """Read an A-XDR length at ``data[pos]``; returns ``(length, position after it)``.

    Raises:
        FramingError: the length is cut off, indefinite (0x80) or wider than 4 octets.
    """
    if end is None:
        end = len(data)
    if pos >= end:
        raise FramingError("data ends where a length was expected", offset=pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    width = first & 0x7F
    if not 1 <= width <= 4:
        raise FramingError(f"length octet 0x{first:02X} is not a valid A-XDR length", offset=pos)
    stop = pos + 1 + width
    if stop > end:
        raise FramingError("data ends inside a length", offset=pos)
    return int.from_bytes(data[pos + 1 : stop], "big"), stop


# ------------------------------------------------------------ value classes
@dataclass(frozen=True, slots=True, kw_only=True)
class BitString:
    """A bit-string: ``length`` bits, MSB of ``data[0]`` first (⌈length/8⌉ octets).

    Bits past ``length`` in the last octet are kept as sent (they should be 0).
    """

    length: int
    data: bytes

    @property
    def bits(self) -> str:
        """The bits as a string of ``0``/``1`` characters."""
        text = "".join(f"{b:08b}" for b in self.data)
        return text[: self.length]

    @classmethod
    def from_bits(cls, text: str) -> Self:
        """Build from a string of ``0``/``1`` characters.

        Raises:
            LocalProtocolError: ``text`` holds other characters.
        """
        if text.strip("01"):
            raise LocalProtocolError(f"not a bit string: {text[:40]!r}")
        padded = text + "0" * (-len(text) % 8)
        data = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
        return cls(length=len(text), data=data)


# Special values of the date and time fields (Blue Book 4.1.6.1).
YEAR_NOT_SPECIFIED: Final = 0xFFFF
NOT_SPECIFIED: Final = 0xFF
DST_END: Final = 0xFD  # month
DST_BEGIN: Final = 0xFE  # month
SECOND_LAST_DAY: Final = 0xFD  # day of month
LAST_DAY: Final = 0xFE  # day of month
DEVIATION_NOT_SPECIFIED: Final = -0x8000  # 0x8000 as the signed 16-bit value
# clock_status bits (Blue Book 4.1.6.1)
STATUS_INVALID: Final = 0x01
STATUS_DOUBTFUL: Final = 0x02
STATUS_DIFFERENT_BASE: Final = 0x04
STATUS_INVALID_STATUS: Final = 0x08
STATUS_DST_ACTIVE: Final = 0x80


def _date_ok(year: int, month: int, day: int) -> bool:
    return year != YEAR_NOT_SPECIFIED and 1 <= month <= 12 and 1 <= day <= 31


def _time_ok(hour: int, minute: int, second: int) -> bool:
    return hour < 24 and minute < 60 and second < 60


@dataclass(frozen=True, slots=True, kw_only=True)
class CosemDate:
    """A COSEM date (5 octets): year u16, month, day of month, day of week (1 = Monday)."""

    year: int = YEAR_NOT_SPECIFIED
    month: int = NOT_SPECIFIED
    day: int = NOT_SPECIFIED
    weekday: int = NOT_SPECIFIED

    def encode(self) -> bytes:
        """Raises:
        LocalProtocolError: a field is out of its octet range.
        """
        try:
            return struct.pack(">HBBB", self.year, self.month, self.day, self.weekday)
        except struct.error as exc:
            raise LocalProtocolError(f"date field out of range: {self}") from exc

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: ``data`` is not 5 octets.
        """
        if len(data) != 5:
            raise FramingError(f"a COSEM date is 5 octets, got {len(data)}")
        year, month, day, weekday = struct.unpack(">HBBB", data)
        return cls(year=year, month=month, day=day, weekday=weekday)


@dataclass(frozen=True, slots=True, kw_only=True)
class CosemTime:
    """A COSEM time (4 octets): hour, minute, second, hundredths."""

    hour: int = NOT_SPECIFIED
    minute: int = NOT_SPECIFIED
    second: int = NOT_SPECIFIED
    hundredths: int = NOT_SPECIFIED

    def encode(self) -> bytes:
        """Raises:
        LocalProtocolError: a field is out of its octet range.
        """
        try:
            return struct.pack(">BBBB", self.hour, self.minute, self.second, self.hundredths)
        except struct.error as exc:
            raise LocalProtocolError(f"time field out of range: {self}") from exc

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: ``data`` is not 4 octets.
        """
        if len(data) != 4:
            raise FramingError(f"a COSEM time is 4 octets, got {len(data)}")
        hour, minute, second, hundredths = data
        return cls(hour=hour, minute=minute, second=second, hundredths=hundredths)


_DATE_TIME = struct.Struct(">HBBBBBBBhB")


@dataclass(frozen=True, slots=True, kw_only=True)
class CosemDateTime:
    """A COSEM date-time (12 octets), every field as sent.

    ``deviation`` is signed minutes (local = UTC - deviation), or
    :data:`DEVIATION_NOT_SPECIFIED`; ``clock_status`` 0xFF means "not specified".
    """

    year: int = YEAR_NOT_SPECIFIED
    month: int = NOT_SPECIFIED
    day: int = NOT_SPECIFIED
    weekday: int = NOT_SPECIFIED
    hour: int = NOT_SPECIFIED
    minute: int = NOT_SPECIFIED
    second: int = NOT_SPECIFIED
    hundredths: int = NOT_SPECIFIED
    deviation: int = DEVIATION_NOT_SPECIFIED
    clock_status: int = NOT_SPECIFIED

    def encode(self) -> bytes:
        """Raises:
        LocalProtocolError: a field is out of its octet range.
        """
        try:
            return _DATE_TIME.pack(
                self.year,
                self.month,
                self.day,
                self.weekday,
                self.hour,
                self.minute,
                self.second,
                self.hundredths,
                self.deviation,
                self.clock_status,
            )
        except struct.error as exc:
            raise LocalProtocolError(f"date-time field out of range: {self}") from exc

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises:
        FramingError: ``data`` is not 12 octets.
        """
        if len(data) != 12:
            raise FramingError(f"a COSEM date-time is 12 octets, got {len(data)}")
        y, mo, d, wd, h, mi, s, hs, dev, st = _DATE_TIME.unpack(data)
        return cls(
            year=y,
            month=mo,
            day=d,
            weekday=wd,
            hour=h,
            minute=mi,
            second=s,
            hundredths=hs,
            deviation=dev,
            clock_status=st,
        )

    @property
    def date(self) -> CosemDate:
        return CosemDate(year=self.year, month=self.month, day=self.day, weekday=self.weekday)

    @property
    def time(self) -> CosemTime:
        return CosemTime(
            hour=self.hour, minute=self.minute, second=self.second, hundredths=self.hundredths
        )

    @property
    def tz(self) -> tzinfo | None:
        """The UTC offset the deviation gives, ``None`` if not specified or out of range."""
        dev = self.deviation
        if dev == DEVIATION_NOT_SPECIFIED or not -720 <= dev <= 840:
            return None
        return _tz(-dev)

    def to_datetime(self, default_tz: tzinfo | None = None) -> datetime | None:
        """The instant as an aware datetime, or ``None`` if it is not one.

        ``None`` when a date or time field is "not specified" or special, or when the
        deviation is not specified and no ``default_tz`` (the meter's zone) is given.
        Hundredths 0xFF count as 0.
        """
        if not (_date_ok(self.year, self.month, self.day) and _time_ok(
            self.hour, self.minute, self.second
        )):
            return None
        tz = self.tz or default_tz
        if tz is None:
            return None
        micro = self.hundredths * 10_000 if self.hundredths < 100 else 0
        try:
            return datetime(
                self.year, self.month, self.day, self.hour, self.minute, self.second, micro,
                tzinfo=tz,
            )
        except ValueError:  # 31 February and the like
            return None

    def to_naive(self) -> datetime | None:
        """The wall-clock time without a zone (for meters that send no deviation)."""
        if not (_date_ok(self.year, self.month, self.day) and _time_ok(
            self.hour, self.minute, self.second
        )):
            return None
        micro = self.hundredths * 10_000 if self.hundredths < 100 else 0
        try:
            return datetime(
                self.year, self.month, self.day, self.hour, self.minute, self.second, micro
            )
        except ValueError:
            return None

    @classmethod
    def from_datetime(cls, when: datetime, *, clock_status: int = 0) -> Self:
        """A fully specified date-time; a naive ``when`` gets deviation "not specified".

        Raises:
            LocalProtocolError: the UTC offset is not a whole number of minutes.
        """
        offset = when.utcoffset()
        if offset is None:
            deviation = DEVIATION_NOT_SPECIFIED
        else:
            minutes, rest = divmod(offset, timedelta(minutes=1))
            if rest:
                raise LocalProtocolError("UTC offset is not a whole number of minutes")
            deviation = -minutes
            if when.dst():
                clock_status |= STATUS_DST_ACTIVE
        return cls(
            year=when.year,
            month=when.month,
            day=when.day,
            weekday=when.isoweekday(),
            hour=when.hour,
            minute=when.minute,
            second=when.second,
            hundredths=when.microsecond // 10_000,
            deviation=deviation,
            clock_status=clock_status,
        )


_TZ_CACHE: dict[int, timezone] = {}


def tz_of(minutes: int) -> timezone:
    """The fixed-offset zone ``minutes`` east of UTC (cached: meters use a handful)."""
    return _tz(minutes)


def _tz(minutes: int) -> timezone:
    tz = _TZ_CACHE.get(minutes)
    if tz is None:
        tz = _TZ_CACHE[minutes] = timezone(timedelta(minutes=minutes))
    return tz


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeDescription:
    """The element type of a compact-array (Blue Book 4.1.5, ``TypeDescription``).

    A simple type has only ``type``; an array has ``count`` elements of ``items[0]``;
    a structure has one description per member in ``items``.
    """

    type: DataType
    count: int = 0
    items: tuple[TypeDescription, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactArray:
    """A compact-array: the common element description and the elements.

    Each element is a :class:`Data` of the described type (its members untagged on
    the wire, tagged here).
    """

    description: TypeDescription
    items: tuple[Data, ...]


DataValue = (
    None
    | bool
    | int
    | float
    | bytes
    | str
    | BitString
    | CosemDateTime
    | CosemDate
    | CosemTime
    | CompactArray
    | tuple["Data", ...]
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    """One COSEM value: its A-XDR ``type`` tag and its ``value`` (see the module table)."""

    type: DataType
    value: DataValue

    def encode(self) -> bytes:
        """The A-XDR encoding (tag first).

        Raises:
            LocalProtocolError: the value does not fit its type.
        """
        out = bytearray()
        _encode(self, out, 0)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Data:
        """Decode exactly one value that fills ``data``.

        Raises:
            FramingError: malformed, truncated, or followed by more bytes.
        """
        return decode_data(data)

    @property
    def items(self) -> tuple[Data, ...]:
        """The members of an array or structure (and a compact-array's elements).

        Raises:
            LocalProtocolError: this value is not an array, structure or compact-array.
        """
        value = self.value
        if isinstance(value, tuple):
            return value
        if isinstance(value, CompactArray):
            return value.items
        raise LocalProtocolError(f"{self.type.name} has no items")


# -------------------------------------------------------------- fast making
# Decoding builds thousands of Data.  A frozen dataclass __init__ goes through
# object.__setattr__ once per field; setting the two slots through their descriptors
# is the same without the detour, at a third of the cost.  That is only right while
# Data has exactly these fields and no __post_init__, which the check below enforces.
if tuple(f.name for f in fields(Data)) != ("type", "value") or hasattr(Data, "__post_init__"):
    raise RuntimeError("Data changed shape: update the fast constructor in axdr.py")
_NEW: Final[Callable[[type[Data]], Data]] = object.__new__
_SET_TYPE: Final[Callable[[Data, DataType], None]] = getattr(Data, "type").__set__  # noqa: B009
_SET_VALUE: Final[Callable[[Data, DataValue], None]] = getattr(Data, "value").__set__  # noqa: B009


def _make(kind: DataType, value: DataValue) -> Data:
    d = _NEW(Data)
    _SET_TYPE(d, kind)
    _SET_VALUE(d, value)
    return d


_TYPES: Final[tuple[DataType | None, ...]] = tuple(
    DataType(t) if t in DataType._value2member_map_ else None for t in range(256)
)
# tag octet -> (type, width, signed) for the fixed-size integers, else None
FIXED_INT_TAGS: Final[tuple[tuple[DataType, int, bool] | None, ...]] = tuple(
    (DataType(t), *_INTS[DataType(t)]) if t in _INTS else None for t in range(256)
)
_FIXED_INTS: Final = FIXED_INT_TAGS


# ------------------------------------------------------------------ decoding
def decode_data(data: bytes) -> Data:
    """Decode exactly one value that fills ``data``.

    Raises:
        FramingError: malformed, truncated, or followed by more bytes.
    """
    value, pos = _decode(data, 0, len(data), 0)
    if pos != len(data):
        raise FramingError(f"{len(data) - pos} bytes after the data", offset=pos)
    return value


def decode_data_at(data: bytes, pos: int = 0, end: int | None = None) -> tuple[Data, int]:
    """Decode one value at ``data[pos]``; returns it and the position after it.

    Raises:
        FramingError: malformed or truncated.
    """
    return _decode(data, pos, len(data) if end is None else end, 0)


def _truncated(what: str, pos: int) -> FramingError:
    return FramingError(f"data ends inside {what}", offset=pos)


def _decode(buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    if pos >= end:
        raise _truncated("a value (no tag)", pos)
    tag = buf[pos]
    kind = _TYPES[tag]
    if kind is None:
        raise FramingError(f"unknown data type tag 0x{tag:02X}", offset=pos)
    return _VALUE_DECODERS[kind](kind, buf, pos + 1, end, depth)


def _dec_none(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    return _make(kind, None), pos


def _dec_int(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    width, signed = _INTS[kind]
    stop = pos + width
    if stop > end:
        raise _truncated(kind.name.lower(), pos)
    return _make(kind, int.from_bytes(buf[pos:stop], "big", signed=signed)), stop


def _dec_u8(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    # unsigned and enum, the most common one-octet types: no slice needed
    if pos >= end:
        raise _truncated(kind.name.lower(), pos)
    return _make(kind, buf[pos]), pos + 1


def _dec_bool(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    if pos >= end:
        raise _truncated("boolean", pos)
    return _make(kind, buf[pos] != 0), pos + 1


def _dec_octets(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    first = buf[pos] if pos < end else 0x100
    if first < 0x80:
        n, pos = first, pos + 1
    else:
        n, pos = decode_length(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise _truncated(kind.name.lower(), pos)
    return _make(kind, buf[pos:stop]), stop


def _dec_text(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    start = pos
    n, pos = decode_length(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise _truncated(kind.name.lower(), pos)
    raw = buf[pos:stop]
    try:
        # visible-string is ISO 646 in the standard, but meters put Latin-1 in it
        # (and the decode must never fail): Latin-1 maps every octet.
        text = raw.decode("utf-8") if kind is DataType.UTF8_STRING else raw.decode("latin-1")
    except UnicodeDecodeError as exc:
        raise FramingError("utf8-string is not valid UTF-8", offset=start) from exc
    return _make(kind, text), stop


def _dec_bits(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    bits, pos = decode_length(buf, pos, end)
    stop = pos + (bits + 7) // 8
    if stop > end:
        raise _truncated("bit-string", pos)
    return _make(kind, BitString(length=bits, data=buf[pos:stop])), stop


def _dec_float(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    width = 4 if kind is DataType.FLOAT32 else 8
    stop = pos + width
    if stop > end:
        raise _truncated(kind.name.lower(), pos)
    (value,) = struct.unpack(">f" if width == 4 else ">d", buf[pos:stop])
    return _make(kind, value), stop


def _dec_date_time(
    kind: DataType, buf: bytes, pos: int, end: int, depth: int
) -> tuple[Data, int]:
    stop = pos + 12
    if stop > end:
        raise _truncated("date-time", pos)
    return _make(kind, CosemDateTime.decode(buf[pos:stop])), stop


def _dec_date(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    stop = pos + 5
    if stop > end:
        raise _truncated("date", pos)
    return _make(kind, CosemDate.decode(buf[pos:stop])), stop


def _dec_time(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    stop = pos + 4
    if stop > end:
        raise _truncated("time", pos)
    return _make(kind, CosemTime.decode(buf[pos:stop])), stop


def _dec_sequence(
    kind: DataType, buf: bytes, pos: int, end: int, depth: int
) -> tuple[Data, int]:
    if depth >= MAX_DEPTH:
        raise FramingError(f"data nested deeper than {MAX_DEPTH}", offset=pos)
    first = buf[pos] if pos < end else 0x100
    if first < 0x80:
        count, pos = first, pos + 1
    else:
        count, pos = decode_length(buf, pos, end)
    if count > end - pos:  # every member takes at least its tag octet
        raise FramingError(f"{kind.name.lower()} of {count} members in {end - pos} bytes",
                           offset=pos)
    items: list[Data] = []
    append = items.append
    decoders = _VALUE_DECODERS
    types = _TYPES
    fixed = _FIXED_INTS
    make = _make
    new, set_type, set_value = _NEW, _SET_TYPE, _SET_VALUE
    from_bytes = int.from_bytes
    depth += 1
    # The loop inlines the fixed-size integers and short octet strings, which make
    # up nearly every member of a push list: a third of the time of a call each.
    for _ in range(count):
        if pos >= end:
            raise _truncated(kind.name.lower(), pos)
        tag = buf[pos]
        spec = fixed[tag]
        if spec is not None:
            sub, width, signed = spec
            stop = pos + 1 + width
            if stop > end:
                raise _truncated(sub.name.lower(), pos + 1)
            item = new(Data)
            set_type(item, sub)
            set_value(item, from_bytes(buf[pos + 1 : stop], "big", signed=signed))
            append(item)
            pos = stop
            continue
        if tag == 0x09 and pos + 1 < end and buf[pos + 1] < 0x80:
            stop = pos + 2 + buf[pos + 1]
            if stop > end:
                raise _truncated("octet_string", pos + 2)
            item = new(Data)
            set_type(item, DataType.OCTET_STRING)
            set_value(item, buf[pos + 2 : stop])
            append(item)
            pos = stop
            continue
        other = types[tag]
        if other is None:
            raise FramingError(f"unknown data type tag 0x{tag:02X}", offset=pos)
        item, pos = decoders[other](other, buf, pos + 1, end, depth)
        append(item)
    return make(kind, tuple(items)), pos


def _dec_description(buf: bytes, pos: int, end: int, depth: int) -> tuple[TypeDescription, int]:
    if depth >= MAX_DEPTH:
        raise FramingError(f"type description nested deeper than {MAX_DEPTH}", offset=pos)
    if pos >= end:
        raise _truncated("a type description", pos)
    kind = _TYPES[buf[pos]]
    if kind is None or kind is DataType.COMPACT_ARRAY:
        raise FramingError(f"bad type description tag 0x{buf[pos]:02X}", offset=pos)
    pos += 1
    if kind is DataType.ARRAY:
        if pos + 2 > end:
            raise _truncated("a type description", pos)
        count = int.from_bytes(buf[pos : pos + 2], "big")
        element, pos = _dec_description(buf, pos + 2, end, depth + 1)
        if count and _fixed_size(element) == 0:
            # Elements that take no bytes: the count alone would set the work
            # (65535 x 65535 nested nulls), not the input's length.
            raise FramingError("array description of zero-size elements", offset=pos)
        return TypeDescription(type=kind, count=count, items=(element,)), pos
    if kind is DataType.STRUCTURE:
        n, pos = decode_length(buf, pos, end)
        if n > end - pos:
            raise FramingError(f"structure description of {n} members in {end - pos} bytes",
                               offset=pos)
        members = []
        for _ in range(n):
            member, pos = _dec_description(buf, pos, end, depth + 1)
            members.append(member)
        return TypeDescription(type=kind, items=tuple(members)), pos
    return TypeDescription(type=kind), pos


def _fixed_size(desc: TypeDescription) -> int | None:
    """Encoded size of an untagged element of ``desc``, if it does not vary."""
    kind = desc.type
    if kind in _INTS:
        return _INTS[kind][0]
    sizes = {
        DataType.NULL_DATA: 0,
        DataType.DONT_CARE: 0,
        DataType.BOOLEAN: 1,
        DataType.FLOAT32: 4,
        DataType.FLOAT64: 8,
        DataType.DATE_TIME: 12,
        DataType.DATE: 5,
        DataType.TIME: 4,
    }
    if kind in sizes:
        return sizes[kind]
    if kind is DataType.ARRAY:
        inner = _fixed_size(desc.items[0])
        return None if inner is None else inner * desc.count
    if kind is DataType.STRUCTURE:
        total = 0
        for member in desc.items:
            size = _fixed_size(member)
            if size is None:
                return None
            total += size
        return total
    return None


def _dec_untagged(
    desc: TypeDescription, buf: bytes, pos: int, end: int, depth: int
) -> tuple[Data, int]:
    kind = desc.type
    if depth >= MAX_DEPTH:
        raise FramingError(f"data nested deeper than {MAX_DEPTH}", offset=pos)
    if kind is DataType.ARRAY:
        items = []
        for _ in range(desc.count):
            item, pos = _dec_untagged(desc.items[0], buf, pos, end, depth + 1)
            items.append(item)
        return _make(kind, tuple(items)), pos
    if kind is DataType.STRUCTURE:
        members = []
        for member_desc in desc.items:
            item, pos = _dec_untagged(member_desc, buf, pos, end, depth + 1)
            members.append(item)
        return _make(kind, tuple(members)), pos
    return _VALUE_DECODERS[kind](kind, buf, pos, end, depth)


def _dec_compact(kind: DataType, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    desc, pos = _dec_description(buf, pos, end, depth + 1)
    n, pos = decode_length(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise _truncated("compact-array contents", pos)
    if n and _fixed_size(desc) == 0:
        raise FramingError("compact-array of zero-size elements with contents", offset=pos)
    items = []
    while pos < stop:
        item, pos = _dec_untagged(desc, buf, pos, stop, depth + 1)
        items.append(item)
    return _make(kind, CompactArray(description=desc, items=tuple(items))), stop


_Decoder = Callable[[DataType, bytes, int, int, int], tuple[Data, int]]
_VALUE_DECODERS: Final[dict[DataType, _Decoder]] = {
    DataType.NULL_DATA: _dec_none,
    DataType.DONT_CARE: _dec_none,
    DataType.ARRAY: _dec_sequence,
    DataType.STRUCTURE: _dec_sequence,
    DataType.BOOLEAN: _dec_bool,
    DataType.BIT_STRING: _dec_bits,
    DataType.OCTET_STRING: _dec_octets,
    DataType.VISIBLE_STRING: _dec_text,
    DataType.UTF8_STRING: _dec_text,
    DataType.COMPACT_ARRAY: _dec_compact,
    DataType.FLOAT32: _dec_float,
    DataType.FLOAT64: _dec_float,
    DataType.DATE_TIME: _dec_date_time,
    DataType.DATE: _dec_date,
    DataType.TIME: _dec_time,
    **{t: _dec_int for t in _INTS},
    DataType.UNSIGNED: _dec_u8,
    DataType.ENUM: _dec_u8,
}


# ------------------------------------------------------------------ encoding
def _bad(d: Data, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{d.type.name} {why}: {d.value!r:.60}")


def _encode(d: Data, out: bytearray, depth: int) -> None:
    out.append(d.type)
    _encode_untagged(d, out, depth)


def _encode_untagged(d: Data, out: bytearray, depth: int) -> None:
    kind = d.type
    value = d.value
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"data nested deeper than {MAX_DEPTH}")
    if kind in _INTS:
        width, signed = _INTS[kind]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(d, "needs an int")
        try:
            out += value.to_bytes(width, "big", signed=signed)
        except OverflowError:
            raise _bad(d, "is out of range") from None
    elif kind in (DataType.NULL_DATA, DataType.DONT_CARE):
        if value is not None:
            raise _bad(d, "takes no value")
    elif kind in (DataType.ARRAY, DataType.STRUCTURE):
        if not isinstance(value, tuple):
            raise _bad(d, "needs a tuple of Data")
        out += encode_length(len(value))
        for item in value:
            if not isinstance(item, Data):
                raise _bad(d, "members must be Data")
            _encode(item, out, depth + 1)
    elif kind is DataType.BOOLEAN:
        if not isinstance(value, bool):
            raise _bad(d, "needs a bool")
        out.append(1 if value else 0)
    elif kind is DataType.OCTET_STRING:
        if not isinstance(value, bytes | bytearray):
            raise _bad(d, "needs bytes")
        out += encode_length(len(value))
        out += value
    elif kind in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        if not isinstance(value, str):
            raise _bad(d, "needs a str")
        try:
            raw = value.encode("utf-8" if kind is DataType.UTF8_STRING else "latin-1")
        except UnicodeEncodeError:
            raise _bad(d, "has characters outside Latin-1") from None
        out += encode_length(len(raw))
        out += raw
    elif kind is DataType.BIT_STRING:
        if not isinstance(value, BitString) or len(value.data) != (value.length + 7) // 8:
            raise _bad(d, "needs a BitString with ⌈length/8⌉ octets")
        out += encode_length(value.length)
        out += value.data
    elif kind in (DataType.FLOAT32, DataType.FLOAT64):
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise _bad(d, "needs a float")
        try:
            out += struct.pack(">f" if kind is DataType.FLOAT32 else ">d", value)
        except (OverflowError, struct.error):
            raise _bad(d, "is out of range") from None
    elif kind is DataType.DATE_TIME:
        if not isinstance(value, CosemDateTime):
            raise _bad(d, "needs a CosemDateTime")
        out += value.encode()
    elif kind is DataType.DATE:
        if not isinstance(value, CosemDate):
            raise _bad(d, "needs a CosemDate")
        out += value.encode()
    elif kind is DataType.TIME:
        if not isinstance(value, CosemTime):
            raise _bad(d, "needs a CosemTime")
        out += value.encode()
    elif kind is DataType.COMPACT_ARRAY:
        if not isinstance(value, CompactArray):
            raise _bad(d, "needs a CompactArray")
        _encode_description(value.description, out, depth + 1)
        contents = bytearray()
        for item in value.items:
            _encode_conforming(item, value.description, contents, depth + 1)
        out += encode_length(len(contents))
        out += contents
    else:  # pragma: no cover - every DataType is handled above
        raise _bad(d, "cannot be encoded")


def _encode_description(desc: TypeDescription, out: bytearray, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"type description nested deeper than {MAX_DEPTH}")
    if desc.type is DataType.COMPACT_ARRAY:
        raise LocalProtocolError("a compact-array cannot describe a compact-array")
    out.append(desc.type)
    if desc.type is DataType.ARRAY:
        if len(desc.items) != 1 or not 0 <= desc.count <= 0xFFFF:
            raise LocalProtocolError("an array description has one element type, count ≤ 65535")
        out += desc.count.to_bytes(2, "big")
        _encode_description(desc.items[0], out, depth + 1)
    elif desc.type is DataType.STRUCTURE:
        out += encode_length(len(desc.items))
        for member in desc.items:
            _encode_description(member, out, depth + 1)


def _encode_conforming(item: Data, desc: TypeDescription, out: bytearray, depth: int) -> None:
    if item.type is not desc.type:
        raise LocalProtocolError(
            f"compact-array element is {item.type.name}, described as {desc.type.name}"
        )
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"data nested deeper than {MAX_DEPTH}")
    if desc.type is DataType.ARRAY:
        members = item.items
        if len(members) != desc.count:
            raise LocalProtocolError(f"array element has {len(members)} of {desc.count} members")
        for member in members:
            _encode_conforming(member, desc.items[0], out, depth + 1)
    elif desc.type is DataType.STRUCTURE:
        members = item.items
        if len(members) != len(desc.items):
            raise LocalProtocolError("structure element does not match its description")
        for member, member_desc in zip(members, desc.items, strict=True):
            _encode_conforming(member, member_desc, out, depth + 1)
    else:
        _encode_untagged(item, out, depth)


# ------------------------------------------------------------- constructors
def null() -> Data:
    return Data(type=DataType.NULL_DATA, value=None)


def array(*items: Data) -> Data:
    return Data(type=DataType.ARRAY, value=tuple(items))


def structure(*items: Data) -> Data:
    return Data(type=DataType.STRUCTURE, value=tuple(items))


def boolean(value: bool) -> Data:
    return Data(type=DataType.BOOLEAN, value=value)


def bit_string(bits: str) -> Data:
    return Data(type=DataType.BIT_STRING, value=BitString.from_bits(bits))


def double_long(value: int) -> Data:
    return Data(type=DataType.DOUBLE_LONG, value=value)


def double_long_unsigned(value: int) -> Data:
    return Data(type=DataType.DOUBLE_LONG_UNSIGNED, value=value)


def octet_string(value: bytes) -> Data:
    return Data(type=DataType.OCTET_STRING, value=bytes(value))


def visible_string(value: str) -> Data:
    return Data(type=DataType.VISIBLE_STRING, value=value)


def utf8_string(value: str) -> Data:
    return Data(type=DataType.UTF8_STRING, value=value)


def integer(value: int) -> Data:
    return Data(type=DataType.INTEGER, value=value)


def long(value: int) -> Data:
    return Data(type=DataType.LONG, value=value)


def unsigned(value: int) -> Data:
    return Data(type=DataType.UNSIGNED, value=value)


def long_unsigned(value: int) -> Data:
    return Data(type=DataType.LONG_UNSIGNED, value=value)


def long64(value: int) -> Data:
    return Data(type=DataType.LONG64, value=value)


def long64_unsigned(value: int) -> Data:
    return Data(type=DataType.LONG64_UNSIGNED, value=value)


def enum(value: int) -> Data:
    return Data(type=DataType.ENUM, value=value)


def float32(value: float) -> Data:
    return Data(type=DataType.FLOAT32, value=value)


def float64(value: float) -> Data:
    return Data(type=DataType.FLOAT64, value=value)


def date_time(value: CosemDateTime | datetime) -> Data:
    """A date-time value (tag 0x19); a ``datetime`` is converted first."""
    if isinstance(value, datetime):
        value = CosemDateTime.from_datetime(value)
    return Data(type=DataType.DATE_TIME, value=value)
