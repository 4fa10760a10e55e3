"""Wired M-Bus application layer (EN 13757-3): responses, data records, values.

Implemented (MBUS_FACTS §2-§7; the EN text itself was not available):

* CI field of slave responses: 72 variable data with the 12-byte header (secondary
  address, access number, status, signature/configuration word), 7A with the 4-byte
  short header, 78 without header, 76 = 72 in "mode 2" (multi-byte values MSB first),
  73/77 the legacy fixed data structure and 70 application error (raised as
  :class:`MbusApplicationError` with its code); the CI 52 selection payload is a
  :class:`SecondaryAddress` (wildcards included).
* Data records: DIF and up to 10 DIFEs (storage number, tariff, subunit, function),
  VIF and up to 10 VIFEs, the FB and FD extension tables, combinable VIFEs (record
  errors, "per" units, limits, durations, scaling and offset corrections, the 2013+
  7C phase extension, manufacturer VIFEs), plain-text VIFs (``7C``/``FC`` + length +
  reversed ASCII, read right after the VIF as libmbus, wmbusmeters and jMBus do),
  manufacturer-specific VIFs, the special DIFs 0F/1F (manufacturer data to the end,
  "more records follow") and 2F (idle filler).
* Every data type: integers of 8, 16, 24, 32, 48 and 64 bits (two's complement, type B),
  BCD of 2-12 digits (a high nibble F in the last byte = negative; any other A-F digit
  makes the value its hex text, as libmburs does), real32, variable length (text sent
  last character first, positive/negative BCD, binary), date/time types G, F, I and J.
* Values are scaled to the unit given (:mod:`tables`): ``raw × factor × 10^exp``;
  integers stay ``int`` where the exponent is ≥ 0.

Not implemented: encrypted payloads (the configuration word's mode bits are only
reported; a 2013+ meter sending mode 5 data would decode to nonsense, wired meters in the
field use the 1998 signature 0000), CI 71 alarm status, wireless transport layers, date/time
type K (FD 72 values are kept as raw numbers), compact profiles.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Self

from gateway.errors import FramingError, LocalProtocolError, RemoteProtocolError, UnsupportedError
from gateway.model import Reading, make_reading
from gateway.protocols.mbus import tables
from gateway.protocols.mbus.tables import VifInfo

__all__ = [
    "CI_APPLICATION_ERROR",
    "CI_FIXED",
    "CI_FIXED_MSB",
    "CI_VARIABLE",
    "CI_VARIABLE_MSB",
    "CI_VARIABLE_NO_HEADER",
    "CI_VARIABLE_SHORT",
    "Coding",
    "DataRecord",
    "FixedDataResponse",
    "Header",
    "MbusApplicationError",
    "RecordError",
    "Response",
    "SecondaryAddress",
    "VariableDataResponse",
    "coding",
    "decode_response",
    "encode_bcd",
    "encode_date_f",
    "encode_date_g",
    "readings",
]

CI_APPLICATION_ERROR: Final = 0x70
CI_VARIABLE: Final = 0x72
CI_FIXED: Final = 0x73
CI_VARIABLE_MSB: Final = 0x76
CI_FIXED_MSB: Final = 0x77
CI_VARIABLE_NO_HEADER: Final = 0x78
CI_VARIABLE_SHORT: Final = 0x7A
RESPONSE_CIS: Final = frozenset(
    {CI_APPLICATION_ERROR, CI_VARIABLE, CI_FIXED, CI_VARIABLE_MSB, CI_FIXED_MSB,
     CI_VARIABLE_NO_HEADER, CI_VARIABLE_SHORT}
)  # fmt: skip

MAX_DIFE: Final = 10  # EN 13757-3: at most 10 DIFEs and 10 VIFEs per record
MAX_VIFE: Final = 10


# ----------------------------------------------------------------- errors
class MbusApplicationError(RemoteProtocolError):
    """The slave answered with CI 70 "general application error".

    ``code`` is the error byte (``None`` when the frame carries none, which means
    "unspecified"); ``text`` names it (:data:`tables.APPLICATION_ERRORS`).
    """

    def __init__(self, message: str, *, code: int | None, offset: int = -1, raw: bytes = b"") -> None:
        self.code = code
        self.text = tables.APPLICATION_ERRORS.get(code if code is not None else 0, "reserved")
        super().__init__(message, offset=offset, raw=raw)


class RecordError(FramingError):
    """A variable data structure that cannot be parsed.

    ``kind`` is one of ``"premature_end"`` (the data ended inside a DIB, VIB, plain-text
    VIF or value), ``"too_many_dife"``, ``"too_many_vife"`` (more than 10),
    ``"reserved_dif"`` (special function 3F-7F in a response), ``"bad_lvar"``
    (variable length F7-FF), ``"short_header"`` or ``"fixed_length"``.
    """

    def __init__(self, message: str, *, kind: str, offset: int = -1, raw: bytes = b"") -> None:
        self.kind = kind
        super().__init__(message, offset=offset, raw=raw)


# ------------------------------------------------------- secondary address
_HEXDIGITS = re.compile(r"^[0-9A-Fa-f]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecondaryAddress:
    """Identification number, manufacturer, version and medium (header bytes 0-7).

    ``id`` is the 8-digit identification number as printed (most significant digit
    first; BCD on the wire, least significant byte first).  As a selection mask a digit
    ``F`` matches any digit, and ``0xFFFF``/``0xFF`` match any manufacturer, version
    or medium (MBUS_FACTS §3, "Selection").
    """

    id: str
    manufacturer: int = 0xFFFF
    version: int = 0xFF
    medium: int = 0xFF

    def __post_init__(self) -> None:
        if len(self.id) != 8 or not _HEXDIGITS.match(self.id) or self.id != self.id.upper():
            raise LocalProtocolError(f"secondary id must be 8 upper-case hex digits, got {self.id!r}")
        if not 0 <= self.manufacturer <= 0xFFFF:
            raise LocalProtocolError("manufacturer must be 0..0xFFFF")
        for name in ("version", "medium"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise LocalProtocolError(f"{name} must be 0..255")

    @property
    def manufacturer_code(self) -> str:
        """The three FLAG letters (``"???"`` for the wildcard)."""
        return "???" if self.manufacturer == 0xFFFF else tables.decode_manufacturer(self.manufacturer)

    @property
    def medium_name(self) -> str:
        return tables.medium_name(self.medium)

    @property
    def is_mask(self) -> bool:
        return "F" in self.id or 0xFFFF == self.manufacturer or 0xFF in (self.version, self.medium)

    @property
    def label(self) -> str:
        """``12345678-LUG-02-heat``: id, manufacturer, version (hex), medium slug.

        This is the decoder's ``meter_id``; :meth:`parse` reads it back.
        """
        return f"{self.id}-{self.manufacturer_code}-{self.version:02X}-{self.medium_name}"

    @property
    def hex(self) -> str:
        """libmbus' 16-hex-digit form: id, manufacturer word, version, medium."""
        return f"{self.id}{self.manufacturer:04X}{self.version:02X}{self.medium:02X}"

    def encode(self) -> bytes:
        return (
            bytes.fromhex(self.id)[::-1]
            + self.manufacturer.to_bytes(2, "little")
            + bytes((self.version, self.medium))
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """The 8 bytes of a header or a selection.

        Raises:
            FramingError: not 8 bytes.
        """
        if len(data) != 8:
            raise FramingError(f"a secondary address has 8 bytes, got {len(data)}", raw=bytes(data))
        return cls(
            id=data[3::-1].hex().upper(),
            manufacturer=data[4] | data[5] << 8,
            version=data[6],
            medium=data[7],
        )

    def matches(self, other: SecondaryAddress) -> bool:
        """Whether a slave with address ``other`` answers the selection ``self``."""
        for mine, theirs in zip(self.id, other.id, strict=True):
            if mine != "F" and mine != theirs:
                return False
        return (
            self.manufacturer in (0xFFFF, other.manufacturer)
            and self.version in (0xFF, other.version)
            and self.medium in (0xFF, other.medium)
        )

    @classmethod
    def parse(cls, text: str) -> Self:
        """``12345678`` (id only, rest wildcard; ``F`` digits are wildcards too),
        libmbus' ``1234567877A70204`` (16 hex digits) or ``12345678-LUG-02-heat``
        (:attr:`label`; the medium as a slug or two hex digits, ``*`` for any part).

        Raises:
            LocalProtocolError: none of these forms.
        """
        s = text.strip().upper()
        if len(s) == 8 and _HEXDIGITS.match(s):
            return cls(id=s)
        if len(s) == 16 and _HEXDIGITS.match(s):
            return cls(id=s[:8], manufacturer=int(s[8:12], 16), version=int(s[12:14], 16),
                       medium=int(s[14:16], 16))  # fmt: skip
        parts = text.strip().split("-")
        if len(parts) == 4 and len(parts[0]) == 8:
            ident, man, ver, med = parts
            try:
                manufacturer = 0xFFFF if man in ("*", "???") else tables.encode_manufacturer(man.upper())
                version = 0xFF if ver == "*" else int(ver, 16)
                if med == "*":
                    medium = 0xFF
                elif med.lower() in _MEDIUM_BY_NAME:
                    medium = _MEDIUM_BY_NAME[med.lower()]
                else:
                    medium = int(med, 16)
                return cls(id=ident.upper(), manufacturer=manufacturer, version=version, medium=medium)
            except ValueError as exc:
                raise LocalProtocolError(f"bad secondary address {text!r}: {exc}") from exc
        raise LocalProtocolError(
            f"bad secondary address {text!r}: expected 8 digits, 16 hex digits or ID-MAN-VV-MEDIUM"
        )


_MEDIUM_BY_NAME: Final = {name: code for code, name in tables.MEDIUM.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The data header of CI 72/76 (``address`` set) or 7A (``address`` None).

    ``status``: bits 1..0 application status (00 ok, 01 busy, 10 error, 11 alarm),
    bit 2 power low, bit 3 permanent error, bit 4 temporary error, 5-7 manufacturer
    specific.  ``signature``: the 1998 signature / 2013+ configuration word (0 = plain).
    """

    address: SecondaryAddress | None
    access_number: int
    status: int
    signature: int = 0

    def encode(self, *, msb_first: bool = False) -> bytes:
        tail = bytes((self.access_number, self.status)) + self.signature.to_bytes(
            2, "big" if msb_first else "little"
        )
        if self.address is None:
            return tail
        addr = self.address.encode()
        if msb_first:
            addr = addr[3::-1] + addr[5:3:-1] + addr[6:]
        return addr + tail


# ------------------------------------------------------------ data records
@dataclass(frozen=True, slots=True)
class Coding:
    """What a record's DIB + VIB say, computed once per distinct coding (cached).

    ``exponent``/``factor``/``additive``: ``value = (raw + additive) × factor × 10^exponent``.
    """

    data_field: int
    function: int
    storage: int
    tariff: int
    subunit: int
    quantity: str
    unit: str | None
    exponent: int
    factor: int
    additive: float
    kind: tables.Kind
    id: str
    qualifier: str
    error: str
    extra: tuple[tuple[str, object], ...]
    # The common case, precomputed: an integer or BCD number with a pure decimal scale.
    # value = raw × mul, or raw × mul / div when the exponent is negative.
    fast: bool = False
    mul: int = 1
    div: int = 1


_FUNCTIONS: Final = ("instantaneous", "max", "min", "error")
_FUNCTION_TAG: Final = ("", "_max", "_min", "_error")
# Data field -> value length in bytes (D variable: from the LVAR byte; F special).
_LENGTH: Final = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, -1, 6, -2)
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _SLUG.sub("_", text.lower()).strip("_")


def _make_coding(key: bytes) -> Coding:
    """Interpret a DIB + VIB (already checked for length by the record scanner)."""
    dif = key[0]
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    i = 1
    if dif & 0x80:
        n = 0
        while True:
            dife = key[i]
            i += 1
            storage |= (dife & 0x0F) << (1 + 4 * n)
            tariff |= ((dife >> 4) & 3) << (2 * n)
            subunit |= ((dife >> 6) & 1) << n
            n += 1
            if not dife & 0x80:
                break
    vif = key[i]
    i += 1
    code = vif & 0x7F
    chain = bool(vif & 0x80)
    tags: list[str] = []
    texts: list[str] = []
    error = ""
    info: VifInfo
    if code == 0x7C:
        length = key[i]
        text = key[i + 1 : i + 1 + length][::-1].decode("latin-1")
        i += 1 + length
        info = VifInfo("plain_text", text)
        tags.append(_slug(text) or "text")
    elif vif in (0xFB, 0xFD):
        ext = key[i]
        i += 1
        chain = bool(ext & 0x80)
        info = (tables.FD_TABLE if vif == 0xFD else tables.FB_TABLE)[ext & 0x7F]
    else:
        info = tables.PRIMARY_VIF[code]
        if code == 0x7F and chain:
            # A manufacturer-specific VIF: every VIFE after it is the manufacturer's too.
            tags.append(key[i:].hex())
            chain = False
    quantity, unit, exponent, factor, kind = info.quantity, info.unit, info.exponent, info.factor, info.kind
    additive = 0.0
    while chain:
        vife = key[i]
        i += 1
        chain = bool(vife & 0x80)
        v = tables.VIFE[vife & 0x7F]
        effect = v.effect
        if effect == "error":
            if vife & 0x7F:
                error = v.text
        elif effect == "scale":
            exponent += v.exponent
        elif effect == "offset":
            additive += 10.0**v.exponent
        elif effect == "ext7c":
            if chain:
                nxt = key[i]
                i += 1
                chain = bool(nxt & 0x80)
                tags.append(tables.VIFE_7C.get(nxt & 0x7F, f"x{nxt & 0x7F:02x}"))
        elif effect == "manufacturer":
            tags.append("m" + key[i:].hex())
            chain = False
        else:
            tags.append(v.tag)
            texts.append(v.text)
            if effect == "unit" and unit is not None:
                unit += v.unit
            elif effect == "date":
                kind, unit, exponent, factor = "date", None, 0, 1
            elif effect == "count":
                unit, exponent, factor = None, 0, 1
            elif effect == "duration":
                unit, exponent, factor = "s", 0, v.factor
    function = (dif >> 4) & 3
    rid = "_".join([quantity if code != 0x7C else "text", *tags]) + _FUNCTION_TAG[function]
    if storage:
        rid += f"_s{storage}"
    if tariff:
        rid += f"_t{tariff}"
    if subunit:
        rid += f"_u{subunit}"
    qualifier = ", ".join(texts)
    extra: list[tuple[str, object]] = [
        ("quantity", quantity),
        ("function", _FUNCTIONS[function]),
        ("storage", storage),
        ("tariff", tariff),
        ("subunit", subunit),
    ]
    if qualifier:
        extra.append(("qualifier", qualifier))
    if error:
        extra.append(("error", error))
    df = dif & 0x0F
    fast = kind == "number" and not additive and df in _FAST_FIELDS
    return Coding(
        data_field=df, function=function, storage=storage, tariff=tariff,
        subunit=subunit, quantity=quantity, unit=unit, exponent=exponent, factor=factor,
        additive=additive, kind=kind, id=rid, qualifier=qualifier, error=error,
        extra=tuple(extra), fast=fast,
        mul=factor * 10**exponent if exponent >= 0 else factor,
        div=10 ** (-exponent) if exponent < 0 else 1,
    )  # fmt: skip


_FAST_FIELDS: Final = frozenset({1, 2, 3, 4, 6, 7, 9, 10, 11, 12, 14})


_CODINGS: dict[bytes, Coding] = {}
_CODINGS_MAX: Final = 4096  # distinct DIB+VIB codings kept (a bus has a few hundred)


def coding(key: bytes) -> Coding:
    """The (cached) interpretation of a record's DIB + VIB bytes."""
    c = _CODINGS.get(key)
    if c is None:
        if len(_CODINGS) >= _CODINGS_MAX:
            _CODINGS.clear()
        c = _CODINGS[key] = _make_coding(key)
    return c


# ------------------------------------------------------------------ values
Value = int | float | str
_F32: Final = struct.Struct("<f")
_F32_CACHE: dict[bytes, tuple[float, int]] = {}


def _real32(data: bytes) -> tuple[float, int]:
    """The float32 as the shortest decimal that reads back as the same float32.

    Returns (value, significant digits): a float32 carries 6-9 significant digits, and
    printing its binary expansion (41.737434387207031) would claim precision the meter
    never had.
    """
    hit = _F32_CACHE.get(data)
    if hit is not None:
        return hit
    x: float = _F32.unpack(data)[0]
    out = (x, 17)
    if math.isfinite(x):
        for digits in range(6, 10):
            y = float(f"{x:.{digits}g}")
            if _F32.pack(y) == data:
                out = (y, digits)
                break
    if len(_F32_CACHE) > 4096:
        _F32_CACHE.clear()
    _F32_CACHE[data] = out
    return out


def _bcd(data: bytes) -> int | str:
    digits = data[::-1].hex()
    if digits.isdigit():
        return int(digits)
    if digits[0] == "f" and digits[1:].isdigit():
        return -int(digits[1:]) if len(digits) > 1 else 0
    return digits.upper()  # A-E digits: an error marker, not a number (libmburs)


def _year(lo: int, hi: int) -> int:
    return (lo >> 5) | ((hi >> 4) << 3)


def _century(year: int, hundred: int) -> int:
    # libmbus/libmburs: without hundred-year bits, 00-80 are 2000-2080, 81-99 1981-1999.
    if hundred == 0 and year <= 80:
        return 2000 + year
    return 1900 + 100 * hundred + year


def _date(data: bytes) -> tuple[str, bool]:
    """Type G (2 bytes), F (4), I (6) or J (3) as ISO-like text; (text, invalid)."""
    n = len(data)
    if n == 2:  # G: day/year-lo | month/year-hi
        b0, b1 = data
        return f"{2000 + _year(b0, b1):04d}-{b1 & 0x0F:02d}-{b0 & 0x1F:02d}", False
    if n == 4:  # F: minute+IV | hour+hundred-year+SU | G
        b0, b1, b2, b3 = data
        year = _century(_year(b2, b3), (b1 >> 5) & 3)
        text = f"{year:04d}-{b3 & 0x0F:02d}-{b2 & 0x1F:02d}T{b1 & 0x1F:02d}:{b0 & 0x3F:02d}:00"
        return text, bool(b0 & 0x80)
    if n == 6:  # I: second | minute+IV | hour+weekday | G | week
        b0, b1, b2, b3, b4 = data[:5]
        year = _century(_year(b3, b4), 0)
        text = (f"{year:04d}-{b4 & 0x0F:02d}-{b3 & 0x1F:02d}"
                f"T{b2 & 0x1F:02d}:{b1 & 0x3F:02d}:{b0 & 0x3F:02d}")  # fmt: skip
        return text, bool(b1 & 0x80)
    # J: time of day only (libmburs); FF FF FF = invalid
    b0, b1, b2 = data
    return f"{b2 & 0x1F:02d}:{b1 & 0x3F:02d}:{b0 & 0x3F:02d}", data == b"\xff\xff\xff"


def _variable(payload: bytes, lvar: int) -> Value:
    if lvar <= 0xBF:  # text, last character first
        return payload[::-1].decode("latin-1")
    if lvar <= 0xCF:
        return _bcd(payload) if payload else 0
    if lvar <= 0xDF:
        v = _bcd(payload) if payload else 0
        return -v if isinstance(v, int) else "-" + v
    return payload[::-1].hex(" ").upper()  # binary, shown most significant byte first


_DATE_LENGTHS: Final = frozenset({2, 3, 4, 6})


def decode_value(c: Coding, data: bytes, *, msb_first: bool = False) -> tuple[Value, bool]:
    """A record's value scaled to ``c.unit``; (value, invalid flag of a date/time)."""
    df = c.data_field
    if msb_first and df != 0x0D:
        data = data[::-1]
    if c.kind == "date" and df in (2, 3, 4, 6) and len(data) in _DATE_LENGTHS:
        return _date(data)
    raw: Value
    if df == 0x0D:
        raw = _variable(data[1:], data[0])
        if isinstance(raw, str):
            return raw, False
    elif df == 5:
        x, digits = _real32(data)
        if not math.isfinite(x):
            return str(x), False
        scaled = (x + c.additive) * c.factor * 10.0**c.exponent
        if scaled != x:
            scaled = float(f"{scaled:.{digits}g}")
        return scaled, False
    elif df in (0, 8):
        return "", False
    elif df >= 9:
        raw = _bcd(data)
        if isinstance(raw, str):
            return raw, False
    else:
        raw = int.from_bytes(data, "little", signed=True)
    if c.additive:
        return (raw + c.additive) * c.factor * 10.0**c.exponent, False
    if c.factor != 1:
        raw *= c.factor
    e = c.exponent
    if e >= 0:
        return raw * 10**e if e else raw, False
    return raw / 10 ** (-e), False


@dataclass(frozen=True, slots=True, kw_only=True)
class DataRecord:
    """One data record as sent: ``coding`` = DIB + VIB, ``data`` = the value bytes
    (including the LVAR byte of a variable-length value)."""

    coding: bytes
    data: bytes
    offset: int = field(default=-1, compare=False)  # first byte in the fed stream

    @property
    def info(self) -> Coding:
        return coding(self.coding)

    def value(self, *, msb_first: bool = False) -> Value:
        """The value scaled to ``info.unit`` (text for dates, strings and binary)."""
        return decode_value(self.info, self.data, msb_first=msb_first)[0]

    def encode(self) -> bytes:
        return self.coding + self.data


# --------------------------------------------------------- record scanner
def _scan(
    data: bytes, start: int, base: int
) -> tuple[list[tuple[bytes, bytes]], list[int], bytes, bool]:
    """Split a variable data structure into (coding, value bytes) pairs.

    Returns the records, their offsets, the manufacturer data after a 0F/1F DIF, and
    whether that DIF was 1F ("more records follow").  ``base`` is the stream offset of
    ``data[0]``.

    Raises:
        RecordError: premature end, too many DIFEs/VIFEs, a reserved DIF or LVAR.
    """
    out: list[tuple[bytes, bytes]] = []
    offsets: list[int] = []
    n = len(data)
    i = start
    while i < n:
        at = i
        dif = data[i]
        if dif & 0x0F == 0x0F:
            if dif == 0x2F:  # idle filler
                i += 1
                continue
            if dif in (0x0F, 0x1F):
                return out, offsets, data[i + 1 :], dif == 0x1F
            raise RecordError(
                f"special function DIF 0x{dif:02X} is reserved in a response",
                kind="reserved_dif", offset=base + i, raw=data[i : i + 8],
            )  # fmt: skip
        i += 1
        if dif & 0x80:
            count = 0
            while True:
                if i >= n:
                    raise RecordError("premature end of record in the DIFEs", kind="premature_end",
                                      offset=base + i, raw=data[at:i])  # fmt: skip
                dife = data[i]
                i += 1
                count += 1
                if count > MAX_DIFE:
                    raise RecordError(f"more than {MAX_DIFE} DIFEs", kind="too_many_dife",
                                      offset=base + i - 1, raw=data[at:i])  # fmt: skip
                if not dife & 0x80:
                    break
        if i >= n:
            raise RecordError("premature end of record: no VIF", kind="premature_end",
                              offset=base + i, raw=data[at:i])  # fmt: skip
        vif = data[i]
        i += 1
        if vif & 0x7F == 0x7C:
            if i >= n:
                raise RecordError("premature end of record in the plain-text VIF",
                                  kind="premature_end", offset=base + i, raw=data[at:i])  # fmt: skip
            length = data[i]
            if i + 1 + length > n:
                raise RecordError(
                    f"plain-text VIF of {length} characters runs past the end of the frame",
                    kind="premature_end", offset=base + i, raw=data[at : at + 16],
                )  # fmt: skip
            i += 1 + length
        if vif & 0x80:
            count = 0
            while True:
                if i >= n:
                    raise RecordError("premature end of record in the VIFEs", kind="premature_end",
                                      offset=base + i, raw=data[at:i])  # fmt: skip
                vife = data[i]
                i += 1
                count += 1
                if count > MAX_VIFE:
                    raise RecordError(f"more than {MAX_VIFE} VIFEs", kind="too_many_vife",
                                      offset=base + i - 1, raw=data[at:i])  # fmt: skip
                if not vife & 0x80:
                    break
        key = data[at:i]
        length = _LENGTH[dif & 0x0F]
        if length < 0:
            if i >= n:
                raise RecordError("premature end of record: no LVAR", kind="premature_end",
                                  offset=base + i, raw=data[at:i])  # fmt: skip
            lvar = data[i]
            if lvar <= 0xBF:
                size = lvar
            elif lvar <= 0xDF:
                size = lvar & 0x0F  # BCD: LVAR-C0/D0 bytes (MBUS_FACTS §8.1: M4, LR vs LM)
            elif lvar <= 0xEF:
                size = lvar - 0xE0
            elif lvar <= 0xF4:
                size = 4 * (lvar - 0xEC)
            elif lvar == 0xF5:
                size = 48
            elif lvar == 0xF6:
                size = 64
            else:
                raise RecordError(f"reserved LVAR 0x{lvar:02X}", kind="bad_lvar",
                                  offset=base + i, raw=data[at : i + 1])  # fmt: skip
            length = size + 1
        end = i + length
        if end > n:
            raise RecordError(
                f"premature end of data: record needs {length} byte(s), {n - i} left",
                kind="premature_end", offset=base + n, raw=data[at:n],
            )  # fmt: skip
        out.append((key, data[i:end]))
        offsets.append(base + at)
        i = end
    return out, offsets, b"", False


# --------------------------------------------------------------- responses
@dataclass(frozen=True, slots=True, kw_only=True)
class VariableDataResponse:
    """CI 72/76/7A/78: header (None for 78), data records, manufacturer data."""

    ci: int = CI_VARIABLE
    header: Header | None
    records: tuple[DataRecord, ...]
    manufacturer_data: bytes = b""
    more_records_follow: bool = False

    @property
    def msb_first(self) -> bool:
        return self.ci == CI_VARIABLE_MSB

    def encode(self) -> bytes:
        """The application data after the CI byte."""
        head = self.header.encode(msb_first=self.msb_first) if self.header is not None else b""
        body = b"".join(r.coding + r.data for r in self.records)
        if self.more_records_follow:
            body += b"\x1f" + self.manufacturer_data
        elif self.manufacturer_data:
            body += b"\x0f" + self.manufacturer_data
        return head + body


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedDataResponse:
    """CI 73/77: the legacy 16-byte fixed data structure (libmbus only, MBUS_FACTS §7)."""

    ci: int = CI_FIXED
    id: str
    access_number: int
    status: int  # bit 7: counters binary (else BCD); bit 6: stored (else actual) values
    unit1: int  # bits 7-6: medium bits 1-0; 5-0: unit of counter 1
    unit2: int  # bits 7-6: medium bits 3-2; 5-0: unit of counter 2
    counter1: bytes
    counter2: bytes

    @property
    def medium(self) -> str:
        return tables.FIXED_MEDIUM[(self.unit1 >> 6) | ((self.unit2 >> 6) << 2)]

    def encode(self) -> bytes:
        ident = bytes.fromhex(self.id)[::-1]
        c1, c2 = self.counter1, self.counter2
        if self.ci == CI_FIXED_MSB:
            ident, c1, c2 = ident[::-1], c1[::-1], c2[::-1]
        return ident + bytes((self.access_number, self.status, self.unit1, self.unit2)) + c1 + c2


Response = VariableDataResponse | FixedDataResponse


def decode_response(ci: int, data: bytes, *, offset: int = 0) -> Response:
    """Decode the application data of a RSP_UD (``data`` = the bytes after CI).

    ``offset`` is the stream position of ``data[0]`` (error offsets are relative to it).

    Raises:
        MbusApplicationError: CI 70, the slave reports an application error.
        RecordError: malformed header or records.
        UnsupportedError: a CI this decoder does not read.
    """
    if ci in _VARIABLE_CIS:
        header, pairs, offsets, mfr, more = parse_variable(ci, data, offset)
        return VariableDataResponse(
            ci=ci,
            header=header,
            records=tuple(
                DataRecord(coding=k, data=v, offset=o)
                for (k, v), o in zip(pairs, offsets, strict=True)
            ),
            manufacturer_data=mfr,
            more_records_follow=more,
        )
    if ci in (CI_FIXED, CI_FIXED_MSB):
        return _fixed(ci, data, offset)
    if ci == CI_APPLICATION_ERROR:
        raise application_error(data, offset)
    raise UnsupportedError(f"CI 0x{ci:02X} is not a wired M-Bus response this decoder reads",
                           offset=offset - 1, raw=bytes(data[:16]))  # fmt: skip


_VARIABLE_CIS: Final = frozenset({CI_VARIABLE, CI_VARIABLE_MSB, CI_VARIABLE_SHORT, CI_VARIABLE_NO_HEADER})


def parse_variable(
    ci: int, data: bytes, offset: int = 0
) -> tuple[Header | None, list[tuple[bytes, bytes]], list[int], bytes, bool]:
    """The fast path of :func:`decode_response` for CI 72/76/7A/78, without record objects:
    (header, (coding, value bytes) pairs, their offsets, manufacturer data, more records
    follow).

    Raises:
        RecordError: malformed header or records.
    """
    header, start = _header(ci, data, offset)
    return (header, *_scan(data, start, offset))


def application_error(data: bytes, offset: int) -> MbusApplicationError:
    code = data[0] if data else None
    text = tables.APPLICATION_ERRORS.get(code if code is not None else 0, "reserved")
    shown = f"0x{code:02X}" if code is not None else "(none)"
    return MbusApplicationError(f"application error {shown}: {text}", code=code, offset=offset,
                                raw=bytes(data[:16]))  # fmt: skip


def _header(ci: int, data: bytes, offset: int) -> tuple[Header | None, int]:
    if ci == CI_VARIABLE_NO_HEADER:
        return None, 0
    size = 4 if ci == CI_VARIABLE_SHORT else 12
    if len(data) < size:
        raise RecordError(f"CI 0x{ci:02X} needs a {size}-byte header, got {len(data)} byte(s)",
                          kind="short_header", offset=offset + len(data), raw=bytes(data))  # fmt: skip
    if ci == CI_VARIABLE_SHORT:
        return Header(address=None, access_number=data[0], status=data[1],
                      signature=data[2] | data[3] << 8), 4  # fmt: skip
    addr = bytes(data[:8])
    sig = data[10] | data[11] << 8
    if ci == CI_VARIABLE_MSB:
        addr = addr[3::-1] + addr[5:3:-1] + addr[6:]
        sig = data[11] | data[10] << 8
    address = _ADDRESSES.get(addr)
    if address is None:
        if len(_ADDRESSES) >= 4096:
            _ADDRESSES.clear()
        address = _ADDRESSES[addr] = SecondaryAddress.decode(addr)
    return Header(address=address, access_number=data[8], status=data[9], signature=sig), 12


_ADDRESSES: dict[bytes, SecondaryAddress] = {}  # meters repeat: skip re-validating the id


def _fixed(ci: int, data: bytes, offset: int) -> FixedDataResponse:
    if len(data) != 16:
        raise RecordError(f"a fixed data structure has 16 bytes, got {len(data)}",
                          kind="fixed_length", offset=offset, raw=bytes(data[:16]))  # fmt: skip
    ident, c1, c2 = data[:4], data[8:12], data[12:16]
    if ci == CI_FIXED_MSB:
        ident, c1, c2 = ident[::-1], c1[::-1], c2[::-1]
    return FixedDataResponse(
        ci=ci, id=ident[::-1].hex().upper(), access_number=data[4], status=data[5],
        unit1=data[6], unit2=data[7], counter1=bytes(c1), counter2=bytes(c2),
    )  # fmt: skip


# ---------------------------------------------------------------- readings
def readings(
    records: Iterable[tuple[bytes, bytes]], *, msb_first: bool = False
) -> tuple[Reading, ...]:
    """One :class:`Reading` per (coding, value bytes) record, in order.

    Ids come from the coding (see :func:`_make_coding`); a record whose id is already
    taken in this list gets ``_2``, ``_3`` … appended (meters that send the same coding
    several times, such as per-phase voltages without a phase VIFE).
    """
    out: list[Reading] = []
    append = out.append
    seen: dict[str, int] = {}
    seen_get = seen.get
    plans_get = _PLANS.get
    make = make_reading
    for key, data in records:
        plan = plans_get(key) or _plan(key)
        fast, df, mul, div, rid, unit, extra, c = plan
        value: Value
        if fast and not msb_first:
            # Inlined common case of decode_value (this loop is the decoder's hot path).
            raw: int | str
            if df < 8:
                raw = int.from_bytes(data, "little", signed=True)
            else:
                digits = data[::-1].hex()
                raw = int(digits) if digits.isdigit() else _bcd(data)
            if isinstance(raw, str):
                value = raw
            elif div == 1:
                value = raw * mul
            else:
                value = raw * mul / div
        else:
            value, invalid = decode_value(c, data, msb_first=msb_first)
            if invalid:
                extra = (*extra, ("invalid", True))
        count = seen_get(rid)
        if count is None:
            seen[rid] = 1
        else:
            seen[rid] = count = count + 1
            rid = f"{rid}_{count}"
        append(make(rid, value, unit, None, extra))
    return tuple(out)




# The coding's fields the hot loop needs, unpacked in one go (attribute access on a
# slotted dataclass costs more than a tuple unpack, and this runs once per record).
_Plan = tuple[bool, int, int, int, str, str | None, tuple[tuple[str, object], ...], Coding]
_PLANS: dict[bytes, _Plan] = {}


def _plan(key: bytes) -> _Plan:
    c = coding(key)
    if len(_PLANS) >= _CODINGS_MAX:
        _PLANS.clear()
    plan = _PLANS[key] = (c.fast, c.data_field, c.mul, c.div, c.id, c.unit, c.extra, c)
    return plan


def fixed_readings(resp: FixedDataResponse) -> tuple[Reading, ...]:
    """The two counters of a fixed data structure as readings (ids ``counter1``/``2``)."""
    binary = bool(resp.status & 0x80)
    storage = 1 if resp.status & 0x40 else 0
    out: list[Reading] = []
    first: VifInfo | None = None
    for n, (unit_byte, counter) in enumerate(((resp.unit1, resp.counter1), (resp.unit2, resp.counter2)), 1):
        info = tables.FIXED_UNIT[unit_byte & 0x3F]
        this_storage = storage
        if info.quantity == "historic" and first is not None:
            info, this_storage = first, 1  # "same unit as counter 1, historic value"
        first = first or info
        raw: Value = int.from_bytes(counter, "little") if binary else _bcd(counter)
        value: Value = raw
        if isinstance(raw, int) and info.exponent:
            value = raw * 10**info.exponent if info.exponent > 0 else raw / 10 ** (-info.exponent)
        out.append(Reading(
            id=f"counter{n}", value=value, unit=info.unit,
            extra=(("quantity", info.quantity), ("function", "instantaneous"),
                   ("storage", this_storage), ("tariff", 0), ("subunit", 0)),
        ))  # fmt: skip
    return tuple(out)


# ---------------------------------------------------------------- encoders
def encode_bcd(value: int, size: int) -> bytes:
    """``value`` as ``size`` BCD bytes, least significant first; negative values use the
    F high nibble of the last byte (so one digit fewer is available).

    Raises:
        LocalProtocolError: the value does not fit.
    """
    digits = str(abs(value))
    room = 2 * size - (1 if value < 0 else 0)
    if len(digits) > room:
        raise LocalProtocolError(f"{value} does not fit in {size} BCD bytes")
    text = digits.rjust(room, "0")
    if value < 0:
        text = "f" + text
    return bytes.fromhex(text)[::-1]


def encode_date_g(year: int, month: int, day: int) -> bytes:
    """Type G (date): day and year bits 0-2 | month and year bits 3-6; years 2000-2127."""
    y = year - 2000
    if not 0 <= y <= 127 or not 0 <= month <= 15 or not 0 <= day <= 31:
        raise LocalProtocolError(f"date {year}-{month}-{day} cannot be coded as type G")
    return bytes(((y & 7) << 5 | day, (y >> 3) << 4 | month))


def encode_date_f(
    year: int, month: int, day: int, hour: int, minute: int, *, summer: bool = False
) -> bytes:
    """Type F (date and time to the minute), the inverse of the decoder's century rule:
    2000-2080 and 1981-1999 without hundred-year bits, 2081-2299 with them."""
    if 2000 <= year <= 2080:
        hundred, yy = 0, year - 2000
    elif 1981 <= year <= 1999:
        hundred, yy = 0, year - 1900
    elif 2081 <= year <= 2299:
        hundred, yy = divmod(year - 1900, 100)
    else:
        raise LocalProtocolError(f"year {year} cannot be coded as type F")
    if not 0 <= hour <= 23 or not 0 <= minute <= 59:
        raise LocalProtocolError(f"time {hour}:{minute} is out of range")
    return bytes((minute, hour | hundred << 5 | (0x80 if summer else 0))) + encode_date_g(
        2000 + yy, month, day
    )
