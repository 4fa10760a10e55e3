"""ACSE and xDLMS APDUs (IEC 62056-5-3 / Green Book ed. 9, clause 9; COSEMpdu ASN.1 of GB 8.3).

Every APDU is a frozen dataclass with ``encode()`` and ``decode(data)`` (``data`` is
exactly one APDU).  :func:`decode_apdu` picks the class by the first octet (and, for
GET/SET/ACTION, the second) through a dict registry.

Implemented:

* ACSE (BER, 9.4.2 / ISO 8650): AARQ, AARE, RLRQ, RLRE with application context
  name (LN/SN, with or without ciphering), calling/responding AP title,
  sender/responder ACSE requirements, mechanism name (lowest, LLS, HLS …, HLS-GMAC),
  calling/responding authentication value, result and result source diagnostic,
  user information (the xDLMS APDU it carries is kept as bytes: decode it with
  :func:`decode_apdu`, it may be ciphered).  Other ACSE fields are kept raw in
  ``extra`` and re-encoded.
* xDLMS InitiateRequest / InitiateResponse (with the conformance block), and
  ConfirmedServiceError.
* GET request normal / next / with-list; GET response normal / with-datablock /
  with-list.  SET request and response normal.  ACTION request and response normal.
  EventNotification, DataNotification (long-invoke-id-and-priority, the optional
  date-time in the standard form and in the ``09 0C`` / ``19`` forms some meters send,
  any notification body), ExceptionResponse.
* Selective access (``00`` absent, ``01 selector Data``) with helpers for the range
  (selector 1) and entry (selector 2) descriptors of profile generic buffers.
* Ciphered APDUs as containers (the cryptography is in :mod:`.security`):
  general-glo-ciphering (DB), general-ded-ciphering (DC), and the glo-/ded-
  service-specific APDUs (21, 28, 2E, C8-CF, 41, 48, 4E, D0-D7).

Not implemented (decoding raises :class:`~gateway.errors.UnsupportedError`): SET with
data blocks and with-list, ACTION with parameter blocks and with-list,
general-block-transfer (E0), general-ciphering (DD), general-signing (DF), ACCESS
(D9/DA), SN referencing (read/write/information report).  Malformed bytes raise
:class:`~gateway.errors.FramingError` with the offset within the APDU.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, Self

from gateway.errors import FramingError, LocalProtocolError, UnsupportedError
from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.axdr import Data, DataType, decode_length, encode_length
from gateway.protocols.obis import ObisCode

__all__ = [
    "AARE",
    "AARQ",
    "RLRE",
    "RLRQ",
    "ActionRequestNormal",
    "ActionResponseNormal",
    "ActionResult",
    "Apdu",
    "ApplicationContext",
    "AssociationResult",
    "AttributeWithSelection",
    "AuthenticationMechanism",
    "CaptureObjectDefinition",
    "ConfirmedServiceError",
    "Conformance",
    "CosemAttributeDescriptor",
    "CosemMethodDescriptor",
    "DataAccessResult",
    "DataNotification",
    "EntryDescriptor",
    "EventNotification",
    "ExceptionResponse",
    "GeneralDedCiphering",
    "GeneralGloCiphering",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithDataBlock",
    "GetResponseWithList",
    "InitiateRequest",
    "InitiateResponse",
    "RangeDescriptor",
    "SelectiveAccess",
    "ServiceCiphered",
    "SetRequestNormal",
    "SetResponseNormal",
    "decode_apdu",
    "invoke_id_and_priority",
]


# -------------------------------------------------------------- enumerations
class DataAccessResult(enum.IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(enum.IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


class ApplicationContext(enum.IntEnum):
    """Last arc of the application context name 2.16.756.5.8.1.x (9.4.2.2.2)."""

    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_CIPHERED = 3
    SHORT_NAME_CIPHERED = 4


class AuthenticationMechanism(enum.IntEnum):
    """Last arc of the mechanism name 2.16.756.5.8.2.x (9.4.2.2.3)."""

    LOWEST = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(enum.IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class Conformance(enum.IntFlag):
    """The xDLMS conformance block: bit n of the standard is mask ``1 << (23 - n)``."""

    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    DELTA_VALUE_ENCODING = 1 << 17
    RESERVED_SEVEN = 1 << 16
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << 15
    PRIORITY_MGMT_SUPPORTED = 1 << 14
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << 13
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << 12
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << 11
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0


def invoke_id_and_priority(invoke_id: int, *, confirmed: bool = True,
                           high_priority: bool = True) -> int:
    """The Invoke-Id-And-Priority octet: b0-3 invoke id, b6 confirmed, b7 high priority.

    Raises:
        LocalProtocolError: ``invoke_id`` is not 0..15.
    """
    if not 0 <= invoke_id <= 15:
        raise LocalProtocolError(f"invoke id must be 0..15, got {invoke_id}")
    return invoke_id | (0x40 if confirmed else 0) | (0x80 if high_priority else 0)


# ------------------------------------------------------------------- reader
class _Cursor:
    """Reads one APDU; every read checks the bounds (truncation is FramingError)."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def need(self, n: int, what: str) -> int:
        at = self.pos
        if at + n > self.end:
            raise FramingError(f"APDU ends inside {what}", offset=at)
        self.pos = at + n
        return at

    def u8(self, what: str) -> int:
        return self.data[self.need(1, what)]

    def u16(self, what: str) -> int:
        at = self.need(2, what)
        return int.from_bytes(self.data[at : at + 2], "big")

    def u32(self, what: str) -> int:
        at = self.need(4, what)
        return int.from_bytes(self.data[at : at + 4], "big")

    def i8(self, what: str) -> int:
        b = self.u8(what)
        return b - 256 if b > 127 else b

    def take(self, n: int, what: str) -> bytes:
        at = self.need(n, what)
        return self.data[at : at + n]

    def length(self) -> int:
        n, self.pos = decode_length(self.data, self.pos, self.end)
        return n

    def octets(self, what: str) -> bytes:
        return self.take(self.length(), what)

    def value(self) -> Data:
        d, self.pos = axdr.decode_data_at(self.data, self.pos, self.end)
        return d

    def boolean(self, what: str) -> bool:
        return self.u8(what) != 0

    def done(self) -> None:
        if self.pos != self.end:
            raise FramingError(f"{self.end - self.pos} octets after the APDU", offset=self.pos)


def _header(data: bytes, tag: int, subtype: int | None, name: str) -> _Cursor:
    if not data or data[0] != tag:
        got = f"0x{data[0]:02X}" if data else "nothing"
        raise FramingError(f"{name} starts with 0x{tag:02X}, got {got}", offset=0)
    cur = _Cursor(data, 1)
    if subtype is not None:
        got_sub = cur.u8("the APDU subtype")
        if got_sub != subtype:
            raise FramingError(f"{name} has subtype {subtype}, got {got_sub}", offset=1)
    return cur


def _dar(code: int, at: int) -> DataAccessResult:
    try:
        return DataAccessResult(code)
    except ValueError:
        raise FramingError(f"unknown data-access-result {code}", offset=at) from None


def _action_result(code: int, at: int) -> ActionResult:
    try:
        return ActionResult(code)
    except ValueError:
        raise FramingError(f"unknown action-result {code}", offset=at) from None


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} must fit one octet, got {value}")
    return bytes((value,))


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{what} must fit 16 bits, got {value}")
    return value.to_bytes(2, "big")


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"{what} must fit 32 bits, got {value}")
    return value.to_bytes(4, "big")


def _i8(value: int, what: str) -> bytes:
    if not -128 <= value <= 127:
        raise LocalProtocolError(f"{what} must be -128..127, got {value}")
    return (value & 0xFF).to_bytes(1, "big")


# -------------------------------------------------------------- descriptors
@dataclass(frozen=True, slots=True, kw_only=True)
class CosemAttributeDescriptor:
    """class-id (u16), instance-id (logical name), attribute-id (Integer8)."""

    class_id: int
    instance: ObisCode
    attribute: int

    def encode(self) -> bytes:
        return (_u16(self.class_id, "class id") + self.instance.to_bytes()
                + _i8(self.attribute, "attribute id"))

    @classmethod
    def _read(cls, cur: _Cursor) -> Self:
        class_id = cur.u16("a class id")
        at = cur.need(6, "a logical name")
        instance = ObisCode.from_bytes(cur.data[at : at + 6])
        return cls(class_id=class_id, instance=instance, attribute=cur.i8("an attribute id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class CosemMethodDescriptor:
    """class-id (u16), instance-id (logical name), method-id (Integer8)."""

    class_id: int
    instance: ObisCode
    method: int

    def encode(self) -> bytes:
        return (_u16(self.class_id, "class id") + self.instance.to_bytes()
                + _i8(self.method, "method id"))

    @classmethod
    def _read(cls, cur: _Cursor) -> Self:
        class_id = cur.u16("a class id")
        at = cur.need(6, "a logical name")
        instance = ObisCode.from_bytes(cur.data[at : at + 6])
        return cls(class_id=class_id, instance=instance, method=cur.i8("a method id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectiveAccess:
    """Selective-Access-Descriptor: access-selector and access-parameters."""

    selector: int
    parameters: Data

    def encode(self) -> bytes:
        """``selector Data`` (the ``01`` "present" octet is the APDU's business)."""
        return _u8(self.selector, "access selector") + self.parameters.encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode ``selector Data`` filling ``data``.

        Raises:
            FramingError: malformed.
        """
        cur = _Cursor(data)
        access = cls._read(cur)
        cur.done()
        return access

    @classmethod
    def _read(cls, cur: _Cursor) -> Self:
        selector = cur.u8("an access selector")
        return cls(selector=selector, parameters=cur.value())


def _read_access(cur: _Cursor) -> SelectiveAccess | None:
    at = cur.pos
    flag = cur.u8("the access-selection flag")
    if flag == 0:
        return None
    if flag != 1:
        raise FramingError(f"access-selection flag {flag} is not 0 or 1", offset=at)
    return SelectiveAccess._read(cur)


def _access_bytes(access: SelectiveAccess | None) -> bytes:
    return b"\x00" if access is None else b"\x01" + access.encode()


def _read_get_data_result(cur: _Cursor) -> Data | DataAccessResult:
    at = cur.pos
    choice = cur.u8("a get-data-result")
    if choice == 0:
        return cur.value()
    if choice == 1:
        code_at = cur.pos
        return _dar(cur.u8("a data-access-result"), code_at)
    raise FramingError(f"get-data-result choice {choice} is not 0 or 1", offset=at)


def _get_data_result_bytes(result: Data | DataAccessResult) -> bytes:
    if isinstance(result, Data):
        return b"\x00" + result.encode()
    return b"\x01" + _u8(int(result), "data-access-result")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureObjectDefinition:
    """A profile generic capture object: ``{class, logical name, attribute, data index}``."""

    class_id: int
    instance: ObisCode
    attribute: int
    data_index: int = 0

    def to_data(self) -> Data:
        return axdr.structure(
            axdr.long_unsigned(self.class_id),
            axdr.octet_string(self.instance.to_bytes()),
            axdr.integer(self.attribute),
            axdr.long_unsigned(self.data_index),
        )

    @classmethod
    def from_data(cls, data: Data) -> Self:
        """Raises:
        FramingError: ``data`` is not a capture object definition structure.
        """
        items = data.value
        if data.type is not DataType.STRUCTURE or not isinstance(items, tuple) or len(items) != 4:
            raise FramingError("a capture object definition is a structure of 4")
        class_id, instance, attribute, index = (i.value for i in items)
        if not (isinstance(class_id, int) and isinstance(instance, bytes)
                and isinstance(attribute, int) and isinstance(index, int)):
            raise FramingError("capture object definition members have the wrong types")
        return cls(class_id=class_id, instance=ObisCode.from_bytes(instance),
                   attribute=attribute, data_index=index)


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeDescriptor:
    """Selective access by range (selector 1) to a profile generic buffer.

    ``from_value``/``to_value`` are usually date-times as 12-octet octet strings
    (``axdr.octet_string(CosemDateTime.from_datetime(t).encode())``) restricting on
    the clock (class 8, 0-0:1.0.0.255, attribute 2); ``columns`` empty = all columns.
    """

    restricting_object: CaptureObjectDefinition
    from_value: Data
    to_value: Data
    columns: tuple[CaptureObjectDefinition, ...] = ()

    SELECTOR: ClassVar[int] = 1

    def to_access(self) -> SelectiveAccess:
        return SelectiveAccess(
            selector=self.SELECTOR,
            parameters=axdr.structure(
                self.restricting_object.to_data(),
                self.from_value,
                self.to_value,
                axdr.array(*(c.to_data() for c in self.columns)),
            ),
        )

    @classmethod
    def from_access(cls, access: SelectiveAccess) -> Self:
        """Raises:
        FramingError: not a selector 1 range descriptor.
        """
        items = access.parameters.value
        if access.selector != cls.SELECTOR or not isinstance(items, tuple) or len(items) != 4:
            raise FramingError("not a range descriptor (selector 1, structure of 4)")
        columns = items[3].value
        if not isinstance(columns, tuple):
            raise FramingError("range descriptor columns are not an array")
        return cls(
            restricting_object=CaptureObjectDefinition.from_data(items[0]),
            from_value=items[1],
            to_value=items[2],
            columns=tuple(CaptureObjectDefinition.from_data(c) for c in columns),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryDescriptor:
    """Selective access by entry (selector 2): rows and columns, 1-based, 0 = last."""

    from_entry: int = 1
    to_entry: int = 0
    from_column: int = 1
    to_column: int = 0

    SELECTOR: ClassVar[int] = 2

    def to_access(self) -> SelectiveAccess:
        return SelectiveAccess(
            selector=self.SELECTOR,
            parameters=axdr.structure(
                axdr.double_long_unsigned(self.from_entry),
                axdr.double_long_unsigned(self.to_entry),
                axdr.long_unsigned(self.from_column),
                axdr.long_unsigned(self.to_column),
            ),
        )

    @classmethod
    def from_access(cls, access: SelectiveAccess) -> Self:
        """Raises:
        FramingError: not a selector 2 entry descriptor.
        """
        items = access.parameters.value
        if access.selector != cls.SELECTOR or not isinstance(items, tuple) or len(items) != 4:
            raise FramingError("not an entry descriptor (selector 2, structure of 4)")
        values = [i.value for i in items]
        if not all(isinstance(v, int) for v in values):
            raise FramingError("entry descriptor members are not integers")
        a, b, c, d = (int(v) for v in values if isinstance(v, int))
        return cls(from_entry=a, to_entry=b, from_column=c, to_column=d)


# -------------------------------------------------------------------- GET
class _Confirmed:
    """Invoke-Id-And-Priority accessors shared by the GET/SET/ACTION APDUs."""

    __slots__ = ()
    invoke_id_and_priority: int

    @property
    def invoke_id(self) -> int:
        return self.invoke_id_and_priority & 0x0F


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequestNormal(_Confirmed):
    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None = None
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC0
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + self.attribute.encode() + _access_bytes(self.access))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        attribute = CosemAttributeDescriptor._read(cur)
        access = _read_access(cur)
        cur.done()
        return cls(attribute=attribute, access=access, invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequestNext(_Confirmed):
    """Asks for the block after ``block_number`` (the last one received)."""

    block_number: int
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC0
    SUBTYPE: ClassVar[int] = 2

    def encode(self) -> bytes:
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + _u32(self.block_number, "block number"))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        block = cur.u32("the block number")
        cur.done()
        return cls(block_number=block, invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeWithSelection:
    attribute: CosemAttributeDescriptor
    access: SelectiveAccess | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequestWithList(_Confirmed):
    attributes: tuple[AttributeWithSelection, ...]
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC0
    SUBTYPE: ClassVar[int] = 3

    def encode(self) -> bytes:
        out = bytearray((self.TAG, self.SUBTYPE))
        out += _u8(self.invoke_id_and_priority, "invoke id")
        out += encode_length(len(self.attributes))
        for item in self.attributes:
            out += item.attribute.encode() + _access_bytes(item.access)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        count = cur.length()
        if count > cur.end - cur.pos:
            raise FramingError(f"list of {count} attributes in {cur.end - cur.pos} octets",
                               offset=cur.pos)
        items = []
        for _ in range(count):
            attribute = CosemAttributeDescriptor._read(cur)
            items.append(AttributeWithSelection(attribute=attribute, access=_read_access(cur)))
        cur.done()
        return cls(attributes=tuple(items), invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetResponseNormal(_Confirmed):
    result: Data | DataAccessResult
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC4
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + _get_data_result_bytes(self.result))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        result = _read_get_data_result(cur)
        cur.done()
        return cls(result=result, invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetResponseWithDataBlock(_Confirmed):
    """One block of a long GET (9.3.5): ``result`` is the raw A-XDR part, or a DAR.

    Join the raw parts of blocks 1..n (the last has ``last_block``) and decode the whole
    with :func:`~gateway.protocols.dlms.axdr.decode_data`.
    """

    last_block: bool
    block_number: int
    result: bytes | DataAccessResult
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC4
    SUBTYPE: ClassVar[int] = 2

    def encode(self) -> bytes:
        out = bytearray((self.TAG, self.SUBTYPE))
        out += _u8(self.invoke_id_and_priority, "invoke id")
        out.append(1 if self.last_block else 0)
        out += _u32(self.block_number, "block number")
        if isinstance(self.result, bytes):
            out += b"\x00" + encode_length(len(self.result)) + self.result
        else:
            out += b"\x01" + _u8(int(self.result), "data-access-result")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        last = cur.boolean("last-block")
        block = cur.u32("the block number")
        at = cur.pos
        choice = cur.u8("the block result")
        result: bytes | DataAccessResult
        if choice == 0:
            result = cur.octets("the raw data")
        elif choice == 1:
            code_at = cur.pos
            result = _dar(cur.u8("a data-access-result"), code_at)
        else:
            raise FramingError(f"block result choice {choice} is not 0 or 1", offset=at)
        cur.done()
        return cls(last_block=last, block_number=block, result=result,
                   invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetResponseWithList(_Confirmed):
    results: tuple[Data | DataAccessResult, ...]
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC4
    SUBTYPE: ClassVar[int] = 3

    def encode(self) -> bytes:
        out = bytearray((self.TAG, self.SUBTYPE))
        out += _u8(self.invoke_id_and_priority, "invoke id")
        out += encode_length(len(self.results))
        for result in self.results:
            out += _get_data_result_bytes(result)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        count = cur.length()
        if count > cur.end - cur.pos:
            raise FramingError(f"list of {count} results in {cur.end - cur.pos} octets",
                               offset=cur.pos)
        results = tuple(_read_get_data_result(cur) for _ in range(count))
        cur.done()
        return cls(results=results, invoke_id_and_priority=iip)


# -------------------------------------------------------------------- SET
@dataclass(frozen=True, slots=True, kw_only=True)
class SetRequestNormal(_Confirmed):
    attribute: CosemAttributeDescriptor
    value: Data
    access: SelectiveAccess | None = None
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC1
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + self.attribute.encode() + _access_bytes(self.access) + self.value.encode())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        attribute = CosemAttributeDescriptor._read(cur)
        access = _read_access(cur)
        value = cur.value()
        cur.done()
        return cls(attribute=attribute, value=value, access=access, invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetResponseNormal(_Confirmed):
    result: DataAccessResult
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC5
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + _u8(int(self.result), "data-access-result"))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        at = cur.pos
        result = _dar(cur.u8("the result"), at)
        cur.done()
        return cls(result=result, invoke_id_and_priority=iip)


# ----------------------------------------------------------------- ACTION
@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequestNormal(_Confirmed):
    method: CosemMethodDescriptor
    parameters: Data | None = None
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC3
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        params = b"\x00" if self.parameters is None else b"\x01" + self.parameters.encode()
        return (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
                + self.method.encode() + params)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        method = CosemMethodDescriptor._read(cur)
        at = cur.pos
        flag = cur.u8("the parameters flag")
        if flag not in (0, 1):
            raise FramingError(f"parameters flag {flag} is not 0 or 1", offset=at)
        params = cur.value() if flag else None
        cur.done()
        return cls(method=method, parameters=params, invoke_id_and_priority=iip)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResponseNormal(_Confirmed):
    result: ActionResult
    return_parameters: Data | DataAccessResult | None = None
    invoke_id_and_priority: int = 0xC1

    TAG: ClassVar[int] = 0xC7
    SUBTYPE: ClassVar[int] = 1

    def encode(self) -> bytes:
        out = (bytes((self.TAG, self.SUBTYPE)) + _u8(self.invoke_id_and_priority, "invoke id")
               + _u8(int(self.result), "action-result"))
        if self.return_parameters is None:
            return out + b"\x00"
        return out + b"\x01" + _get_data_result_bytes(self.return_parameters)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, cls.SUBTYPE, cls.__name__)
        iip = cur.u8("the invoke id")
        at = cur.pos
        result = _action_result(cur.u8("the action result"), at)
        at = cur.pos
        flag = cur.u8("the return parameters flag")
        if flag not in (0, 1):
            raise FramingError(f"return parameters flag {flag} is not 0 or 1", offset=at)
        params = _read_get_data_result(cur) if flag else None
        cur.done()
        return cls(result=result, return_parameters=params, invoke_id_and_priority=iip)


# ----------------------------------------------------- notifications, errors
DateTimeForm = Literal["octet-string", "data-octet-string", "data-date-time"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DataNotification:
    """DataNotification (0x0F): long-invoke-id-and-priority, date-time, body.

    ``date_time`` holds the date-time octets as sent (``b""`` when absent, 12 octets
    normally).  ``date_time_form`` records how it was sent: ``"octet-string"`` is the
    standard A-XDR ``OCTET STRING`` (length ``00`` or ``0C``); some meters (Kaifa in
    Norway) send a tagged Data octet-string ``09 0C …`` or date-time ``19 …`` instead.
    Long-Invoke-Id-And-Priority: b0-23 id, b28 self-descriptive, b29 break-on-error,
    b30 confirmed, b31 high priority.
    """

    long_invoke_id_and_priority: int
    body: Data
    date_time: bytes = b""
    date_time_form: DateTimeForm = "octet-string"

    TAG: ClassVar[int] = 0x0F

    @property
    def timestamp(self) -> axdr.CosemDateTime | None:
        if len(self.date_time) != 12:
            return None
        return axdr.CosemDateTime.decode(self.date_time)

    def encode(self) -> bytes:
        out = bytearray((self.TAG,))
        out += _u32(self.long_invoke_id_and_priority, "long invoke id")
        form = self.date_time_form
        if form == "octet-string":
            out += encode_length(len(self.date_time)) + self.date_time
        elif form == "data-octet-string":
            out += b"\x09" + encode_length(len(self.date_time)) + self.date_time
        else:
            if len(self.date_time) != 12:
                raise LocalProtocolError("a tagged date-time is 12 octets")
            out += b"\x19" + self.date_time
        out += self.body.encode()
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        iip = cur.u32("the long invoke id")
        if cur.pos + 1 < cur.end and data[cur.pos] == 0x09 and data[cur.pos + 1] == 0x0C:
            # A Data octet-string where an OCTET STRING belongs (a 9-octet date-time
            # does not exist, so "09 0C" is this form).
            cur.pos += 1
            form: DateTimeForm = "data-octet-string"
            stamp = cur.octets("the date-time")
        elif cur.pos < cur.end and data[cur.pos] == 0x19:
            cur.pos += 1
            form = "data-date-time"
            stamp = cur.take(12, "the date-time")
        else:
            form = "octet-string"
            stamp = cur.octets("the date-time")
        body = cur.value()
        cur.done()
        return cls(long_invoke_id_and_priority=iip, body=body, date_time=stamp,
                   date_time_form=form)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventNotification:
    """EventNotificationRequest (0xC2): optional time, attribute, value."""

    attribute: CosemAttributeDescriptor
    value: Data
    time: bytes | None = None

    TAG: ClassVar[int] = 0xC2

    def encode(self) -> bytes:
        time = b"\x00" if self.time is None else b"\x01" + encode_length(len(self.time)) + self.time
        return bytes((self.TAG,)) + time + self.attribute.encode() + self.value.encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        at = cur.pos
        flag = cur.u8("the time flag")
        if flag not in (0, 1):
            raise FramingError(f"time flag {flag} is not 0 or 1", offset=at)
        time = cur.octets("the time") if flag else None
        attribute = CosemAttributeDescriptor._read(cur)
        value = cur.value()
        cur.done()
        return cls(attribute=attribute, value=value, time=time)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExceptionResponse:
    """ExceptionResponse (0xD8).

    ``state_error``: 1 service-not-allowed, 2 service-unknown.  ``service_error``: 1
    operation-not-possible, 2 service-not-supported, 3 other-reason, 4 pdu-too-long,
    5 deciphering-error, 6 invocation-counter-error (then ``invocation_counter`` is the
    counter the server expects).
    """

    state_error: int
    service_error: int
    invocation_counter: int | None = None

    TAG: ClassVar[int] = 0xD8

    def encode(self) -> bytes:
        out = bytes((self.TAG,)) + _u8(self.state_error, "state error") + _u8(
            self.service_error, "service error")
        if self.service_error == 6:
            out += _u32(self.invocation_counter or 0, "invocation counter")
        return out

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        state = cur.u8("the state error")
        service = cur.u8("the service error")
        counter = cur.u32("the invocation counter") if service == 6 else None
        cur.done()
        return cls(state_error=state, service_error=service, invocation_counter=counter)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmedServiceError:
    """ConfirmedServiceError (0x0E): which service failed (1 initiate, 2 get-status, …),
    the ServiceError choice (0 application-reference … 6 initiate …) and its value
    (for initiate: 0 other, 1 dlms-version-too-low, 2 incompatible-conformance,
    3 pdu-size-too-short, 4 refused-by-the-VDE-handler)."""

    service: int
    error_type: int
    error_value: int

    TAG: ClassVar[int] = 0x0E

    def encode(self) -> bytes:
        return bytes((self.TAG,)) + _u8(self.service, "service") + _u8(
            self.error_type, "error type") + _u8(self.error_value, "error value")

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        service = cur.u8("the service")
        error_type = cur.u8("the error type")
        value = cur.u8("the error value")
        cur.done()
        return cls(service=service, error_type=error_type, error_value=value)


# --------------------------------------------------------------- initiate
def _conformance_bytes(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFF:
        raise LocalProtocolError("the conformance block is 24 bits")
    return b"\x5f\x1f\x04\x00" + value.to_bytes(3, "big")


def _read_conformance(cur: _Cursor) -> int:
    at = cur.pos
    data = cur.data
    # [APPLICATION 31] IMPLICIT BIT STRING: 5F 1F 04 00 + 24 bits.  Some HDLC meters
    # send a single 5F octet for the tag; accept it on the way in.
    if cur.pos + 1 < cur.end and data[cur.pos] == 0x5F and data[cur.pos + 1] == 0x1F:
        cur.pos += 2
    elif cur.pos < cur.end and data[cur.pos] == 0x5F:
        cur.pos += 1
    else:
        raise FramingError("conformance block tag 5F 1F missing", offset=at)
    if cur.u8("the conformance length") != 4 or cur.u8("the unused bits") != 0:
        raise FramingError("conformance block is not a 24-bit BIT STRING", offset=at)
    at = cur.need(3, "the conformance block")
    return int.from_bytes(data[at : at + 3], "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiateRequest:
    """xDLMS InitiateRequest (0x01), carried in the AARQ user-information."""

    proposed_conformance: int
    client_max_receive_pdu_size: int = 0xFFFF
    proposed_dlms_version: int = 6
    dedicated_key: bytes | None = None
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None

    TAG: ClassVar[int] = 0x01

    def encode(self) -> bytes:
        out = bytearray((self.TAG,))
        if self.dedicated_key is None:
            out.append(0)
        else:
            out += b"\x01" + encode_length(len(self.dedicated_key)) + self.dedicated_key
        # response-allowed BOOLEAN DEFAULT TRUE: "00" means the default
        out += b"\x00" if self.response_allowed else b"\x01\x00"
        if self.proposed_quality_of_service is None:
            out.append(0)
        else:
            out += b"\x01" + _i8(self.proposed_quality_of_service, "quality of service")
        out += _u8(self.proposed_dlms_version, "DLMS version")
        out += _conformance_bytes(self.proposed_conformance)
        out += _u16(self.client_max_receive_pdu_size, "max receive PDU size")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        key = cur.octets("the dedicated key") if _flag(cur, "dedicated-key") else None
        allowed = cur.boolean("response-allowed") if _flag(cur, "response-allowed") else True
        qos = cur.i8("the quality of service") if _flag(cur, "quality-of-service") else None
        version = cur.u8("the DLMS version")
        conformance = _read_conformance(cur)
        size = cur.u16("the max receive PDU size")
        cur.done()
        return cls(proposed_conformance=conformance, client_max_receive_pdu_size=size,
                   proposed_dlms_version=version, dedicated_key=key,
                   response_allowed=allowed, proposed_quality_of_service=qos)


def _flag(cur: _Cursor, what: str) -> bool:
    at = cur.pos
    flag = cur.u8(f"the {what} flag")
    if flag not in (0, 1):
        raise FramingError(f"{what} flag {flag} is not 0 or 1", offset=at)
    return flag == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiateResponse:
    """xDLMS InitiateResponse (0x08); ``vaa_name`` 0x0007 for LN, 0xFA00 for SN."""

    negotiated_conformance: int
    server_max_receive_pdu_size: int
    negotiated_dlms_version: int = 6
    negotiated_quality_of_service: int | None = None
    vaa_name: int = 0x0007

    TAG: ClassVar[int] = 0x08

    def encode(self) -> bytes:
        out = bytearray((self.TAG,))
        if self.negotiated_quality_of_service is None:
            out.append(0)
        else:
            out += b"\x01" + _i8(self.negotiated_quality_of_service, "quality of service")
        out += _u8(self.negotiated_dlms_version, "DLMS version")
        out += _conformance_bytes(self.negotiated_conformance)
        out += _u16(self.server_max_receive_pdu_size, "max receive PDU size")
        out += _u16(self.vaa_name, "VAA name")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        cur = _header(data, cls.TAG, None, cls.__name__)
        qos = cur.i8("the quality of service") if _flag(cur, "quality-of-service") else None
        version = cur.u8("the DLMS version")
        conformance = _read_conformance(cur)
        size = cur.u16("the max receive PDU size")
        vaa = cur.u16("the VAA name")
        cur.done()
        return cls(negotiated_conformance=conformance, server_max_receive_pdu_size=size,
                   negotiated_dlms_version=version, negotiated_quality_of_service=qos,
                   vaa_name=vaa)


# --------------------------------------------------------------- ciphered
@dataclass(frozen=True, slots=True, kw_only=True)
class GeneralGloCiphering:
    """general-glo-ciphering (0xDB): ``DB 08 system-title length SC IC ciphered``.

    ``ciphered`` is everything after the invocation counter (ciphertext and, when the
    security control says "authenticated", the 12-octet tag).
    """

    system_title: bytes
    security_control: int
    invocation_counter: int
    ciphered: bytes

    TAG: ClassVar[int] = 0xDB

    def encode(self) -> bytes:
        content = (_u8(self.security_control, "security control")
                   + _u32(self.invocation_counter, "invocation counter") + self.ciphered)
        return (bytes((self.TAG,)) + encode_length(len(self.system_title)) + self.system_title
                + encode_length(len(content)) + content)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        # Read directly rather than through a cursor: every encrypted push passes here.
        if not data or data[0] != cls.TAG:
            raise FramingError(f"{cls.__name__} starts with 0x{cls.TAG:02X}", offset=0)
        n = len(data)
        title_len, pos = decode_length(data, 1, n)
        stop = pos + title_len
        if stop > n:
            raise FramingError("APDU ends inside the system title", offset=pos)
        length, pos = decode_length(data, stop, n)
        end = pos + length
        if end > n:
            raise FramingError("APDU ends inside the ciphered content", offset=pos)
        if end < n:
            raise FramingError(f"{n - end} octets after the APDU", offset=end)
        if length < 5:
            raise FramingError("ciphered content shorter than its security header", offset=pos)
        return cls(system_title=data[stop - title_len : stop],
                   security_control=data[pos],
                   invocation_counter=int.from_bytes(data[pos + 1 : pos + 5], "big"),
                   ciphered=data[pos + 5 : end])


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneralDedCiphering(GeneralGloCiphering):
    """general-ded-ciphering (0xDC): the same layout, dedicated key."""

    TAG: ClassVar[int] = 0xDC


def _split_ciphered(content: bytes, at: int) -> tuple[int, int, bytes]:
    if len(content) < 5:
        raise FramingError("ciphered content shorter than its security header", offset=at)
    return content[0], int.from_bytes(content[1:5], "big"), content[5:]


# glo- and ded- service-specific tags (COSEMpdu ASN.1) -> the plain APDU tag
GLO_TAGS: Final = {0x21: 0x01, 0x28: 0x08, 0x2E: 0x0E, 0xC8: 0xC0, 0xC9: 0xC1, 0xCA: 0xC2,
                   0xCB: 0xC3, 0xCC: 0xC4, 0xCD: 0xC5, 0xCF: 0xC7}
DED_TAGS: Final = {0x41: 0x01, 0x48: 0x08, 0x4E: 0x0E, 0xD0: 0xC0, 0xD1: 0xC1, 0xD2: 0xC2,
                   0xD3: 0xC3, 0xD4: 0xC4, 0xD5: 0xC5, 0xD7: 0xC7}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceCiphered:
    """A glo-/ded- service-specific ciphered APDU: ``tag length SC IC ciphered``.

    The system title is not in the APDU: it is the peer's AP title from the
    AARQ/AARE.  ``plain_tag`` is the tag of the APDU inside.
    """

    tag: int
    security_control: int
    invocation_counter: int
    ciphered: bytes

    @property
    def dedicated(self) -> bool:
        return self.tag in DED_TAGS

    @property
    def plain_tag(self) -> int:
        return GLO_TAGS.get(self.tag) or DED_TAGS[self.tag]

    def encode(self) -> bytes:
        if self.tag not in GLO_TAGS and self.tag not in DED_TAGS:
            raise LocalProtocolError(f"0x{self.tag:02X} is not a service-specific cipher tag")
        content = (_u8(self.security_control, "security control")
                   + _u32(self.invocation_counter, "invocation counter") + self.ciphered)
        return bytes((self.tag,)) + encode_length(len(content)) + content

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if not data or (data[0] not in GLO_TAGS and data[0] not in DED_TAGS):
            raise FramingError("not a service-specific ciphered APDU", offset=0)
        cur = _Cursor(data, 1)
        content = cur.octets("the ciphered content")
        cur.done()
        sc, ic, rest = _split_ciphered(content, cur.end - len(content))
        return cls(tag=data[0], security_control=sc, invocation_counter=ic, ciphered=rest)


# -------------------------------------------------------------------- ACSE
_APP_CONTEXT_PREFIX: Final = bytes.fromhex("608574050801")  # 2.16.756.5.8.1
_MECHANISM_PREFIX: Final = bytes.fromhex("608574050802")  # 2.16.756.5.8.2


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    raise LocalProtocolError(f"BER length {n} is too long for an ACSE APDU")


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _ber_length(len(content)) + content


def _read_tlvs(data: bytes, start: int, end: int) -> list[tuple[int, bytes, int]]:
    """BER elements in ``data[start:end]`` as (tag, content, offset)."""
    out = []
    pos = start
    while pos < end:
        at = pos
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise FramingError(f"multi-octet BER tag 0x{tag:02X} in an ACSE APDU", offset=at)
        pos += 1
        if pos >= end:
            raise FramingError("ACSE element ends before its length", offset=at)
        first = data[pos]
        pos += 1
        if first < 0x80:
            n = first
        elif first in (0x81, 0x82):
            width = first - 0x80
            if pos + width > end:
                raise FramingError("ACSE element length is cut off", offset=at)
            n = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            raise FramingError(f"BER length octet 0x{first:02X} is not supported", offset=at)
        if pos + n > end:
            raise FramingError("ACSE element is cut off", offset=at)
        out.append((tag, data[pos : pos + n], at))
        pos += n
    return out


def _acse_body(data: bytes, tag: int, name: str) -> list[tuple[int, bytes, int]]:
    if not data or data[0] != tag:
        raise FramingError(f"{name} starts with 0x{tag:02X}", offset=0)
    elements = _read_tlvs(data, 0, len(data))
    if len(elements) != 1:
        raise FramingError(f"{len(data) - len(elements[0][1])} octets after the {name}",
                           offset=0)
    return _read_tlvs(elements[0][1], 0, len(elements[0][1]))


def _oid_arc(content: bytes, prefix: bytes, what: str, at: int) -> int:
    # [n] { OBJECT IDENTIFIER } or [n] IMPLICIT OBJECT IDENTIFIER
    if content[:1] == b"\x06":
        inner = _read_tlvs(content, 0, len(content))
        if len(inner) != 1:
            raise FramingError(f"bad {what}", offset=at)
        content = inner[0][1]
    if len(content) != len(prefix) + 1 or not content.startswith(prefix):
        raise UnsupportedError(f"{what} {content.hex()} is not a DLMS one")
    return content[-1]


def _app_context_bytes(context: int) -> bytes:
    """The content of the application-context-name element: ``06 07 <OID>``."""
    return _tlv(0x06, _APP_CONTEXT_PREFIX + _u8(context, "application context"))


def _octet_string_in(content: bytes, what: str, at: int) -> bytes:
    inner = _read_tlvs(content, 0, len(content))
    if len(inner) != 1 or inner[0][0] != 0x04:
        raise FramingError(f"{what} is not an OCTET STRING", offset=at)
    return inner[0][1]


def _auth_value(content: bytes, at: int) -> bytes:
    inner = _read_tlvs(content, 0, len(content))
    if len(inner) != 1 or inner[0][0] != 0x80:  # charstring [0]
        raise UnsupportedError("authentication value is not a charstring")
    return inner[0][1]


def _integer_in(content: bytes, what: str, at: int) -> int:
    inner = _read_tlvs(content, 0, len(content))
    if len(inner) != 1 or inner[0][0] != 0x02 or not inner[0][1]:
        raise FramingError(f"{what} is not an INTEGER", offset=at)
    return int.from_bytes(inner[0][1], "big", signed=True)


_ACSE_REQUIREMENTS: Final = b"\x07\x80"  # BIT STRING, 7 unused bits: authentication


def _assemble(tag: int, elements: list[tuple[int, bytes]]) -> bytes:
    # The ACSE fields are context tags in ascending order (ISO 8650 SEQUENCE).
    body = b"".join(_tlv(t, c) for t, c in sorted(elements, key=lambda e: e[0] & 0x1F))
    return _tlv(tag, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class AARQ:
    """A-ASSOCIATE request (0x60).

    ``user_information``: the xDLMS APDU carried in user-information (an
    :class:`InitiateRequest`, or a glo-/ded-ciphered one), as bytes.  ``extra``: other
    ACSE fields as (tag octet, content), kept for re-encoding.
    """

    application_context: int = ApplicationContext.LOGICAL_NAME
    calling_ap_title: bytes | None = None
    acse_requirements: bool = False
    mechanism: int | None = None
    authentication_value: bytes | None = None
    user_information: bytes | None = None
    extra: tuple[tuple[int, bytes], ...] = ()

    TAG: ClassVar[int] = 0x60

    def encode(self) -> bytes:
        elements: list[tuple[int, bytes]] = [
            (0xA1, _app_context_bytes(self.application_context))
        ]
        if self.calling_ap_title is not None:
            elements.append((0xA6, _tlv(0x04, self.calling_ap_title)))
        if self.acse_requirements:
            elements.append((0x8A, _ACSE_REQUIREMENTS))
        if self.mechanism is not None:
            elements.append((0x8B, _MECHANISM_PREFIX + _u8(self.mechanism, "mechanism")))
        if self.authentication_value is not None:
            elements.append((0xAC, _tlv(0x80, self.authentication_value)))
        if self.user_information is not None:
            elements.append((0xBE, _tlv(0x04, self.user_information)))
        elements.extend(self.extra)
        return _assemble(self.TAG, elements)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        context: int | None = None
        title = auth = user = None
        mechanism: int | None = None
        requirements = False
        extra = []
        for tag, content, at in _acse_body(data, cls.TAG, cls.__name__):
            if tag == 0xA1:
                context = _oid_arc(content, _APP_CONTEXT_PREFIX, "application context", at)
            elif tag == 0xA6:
                title = _octet_string_in(content, "calling AP title", at)
            elif tag == 0x8A:
                requirements = bool(content[1:2]) and bool(content[1] & 0x80)
            elif tag == 0x8B:
                mechanism = _oid_arc(content, _MECHANISM_PREFIX, "mechanism name", at)
            elif tag == 0xAC:
                auth = _auth_value(content, at)
            elif tag == 0xBE:
                user = _octet_string_in(content, "user information", at)
            else:
                extra.append((tag, content))
        if context is None:
            raise FramingError("AARQ without an application context name", offset=0)
        return cls(application_context=context, calling_ap_title=title,
                   acse_requirements=requirements, mechanism=mechanism,
                   authentication_value=auth, user_information=user, extra=tuple(extra))


@dataclass(frozen=True, slots=True, kw_only=True)
class AARE:
    """A-ASSOCIATE response (0x61).

    ``diagnostic`` is the result-source-diagnostic value, from the ACSE service user
    (``diagnostic_source="user"``: 0 null, 1 no-reason, 2 application-context-name not
    supported, …, 11 mechanism not recognised, 12 mechanism required, 13 authentication
    failure, 14 authentication required) or provider (1 no-reason, 2 no common ACSE
    version).
    """

    result: int = AssociationResult.ACCEPTED
    diagnostic: int = 0
    diagnostic_source: Literal["user", "provider"] = "user"
    application_context: int = ApplicationContext.LOGICAL_NAME
    responding_ap_title: bytes | None = None
    acse_requirements: bool = False
    mechanism: int | None = None
    authentication_value: bytes | None = None
    user_information: bytes | None = None
    extra: tuple[tuple[int, bytes], ...] = ()

    TAG: ClassVar[int] = 0x61

    def encode(self) -> bytes:
        source = 0xA1 if self.diagnostic_source == "user" else 0xA2
        elements: list[tuple[int, bytes]] = [
            (0xA1, _app_context_bytes(self.application_context)),
            (0xA2, _tlv(0x02, _u8(self.result, "association result"))),
            (0xA3, _tlv(source, _tlv(0x02, _u8(self.diagnostic, "diagnostic")))),
        ]
        if self.responding_ap_title is not None:
            elements.append((0xA4, _tlv(0x04, self.responding_ap_title)))
        if self.acse_requirements:
            elements.append((0x88, _ACSE_REQUIREMENTS))
        if self.mechanism is not None:
            elements.append((0x89, _MECHANISM_PREFIX + _u8(self.mechanism, "mechanism")))
        if self.authentication_value is not None:
            elements.append((0xAA, _tlv(0x80, self.authentication_value)))
        if self.user_information is not None:
            elements.append((0xBE, _tlv(0x04, self.user_information)))
        elements.extend(self.extra)
        return _assemble(self.TAG, elements)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        context: int | None = None
        result: int | None = None
        diagnostic = 0
        source: Literal["user", "provider"] = "user"
        title = auth = user = None
        mechanism: int | None = None
        requirements = False
        extra = []
        for tag, content, at in _acse_body(data, cls.TAG, cls.__name__):
            if tag == 0xA1:
                context = _oid_arc(content, _APP_CONTEXT_PREFIX, "application context", at)
            elif tag == 0xA2:
                result = _integer_in(content, "association result", at)
            elif tag == 0xA3:
                inner = _read_tlvs(content, 0, len(content))
                if len(inner) != 1 or inner[0][0] not in (0xA1, 0xA2):
                    raise FramingError("bad result-source-diagnostic", offset=at)
                source = "user" if inner[0][0] == 0xA1 else "provider"
                diagnostic = _integer_in(inner[0][1], "diagnostic", at)
            elif tag == 0xA4:
                title = _octet_string_in(content, "responding AP title", at)
            elif tag == 0x88:
                requirements = bool(content[1:2]) and bool(content[1] & 0x80)
            elif tag == 0x89:
                mechanism = _oid_arc(content, _MECHANISM_PREFIX, "mechanism name", at)
            elif tag == 0xAA:
                auth = _auth_value(content, at)
            elif tag == 0xBE:
                user = _octet_string_in(content, "user information", at)
            else:
                extra.append((tag, content))
        if context is None or result is None:
            raise FramingError("AARE without application context or result", offset=0)
        return cls(result=result, diagnostic=diagnostic, diagnostic_source=source,
                   application_context=context, responding_ap_title=title,
                   acse_requirements=requirements, mechanism=mechanism,
                   authentication_value=auth, user_information=user, extra=tuple(extra))


@dataclass(frozen=True, slots=True, kw_only=True)
class RLRQ:
    """A-RELEASE request (0x62); ``reason`` 0 normal, 1 urgent, 30 user-defined."""

    reason: int | None = 0
    user_information: bytes | None = None

    TAG: ClassVar[int] = 0x62

    def encode(self) -> bytes:
        elements: list[tuple[int, bytes]] = []
        if self.reason is not None:
            elements.append((0x80, _u8(self.reason, "release reason")))
        if self.user_information is not None:
            elements.append((0xBE, _tlv(0x04, self.user_information)))
        return _assemble(self.TAG, elements)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reason: int | None = None
        user = None
        for tag, content, at in _acse_body(data, cls.TAG, cls.__name__):
            if tag == 0x80 and len(content) == 1:
                reason = content[0]
            elif tag == 0xBE:
                user = _octet_string_in(content, "user information", at)
            else:
                raise FramingError(f"unexpected element 0x{tag:02X} in {cls.__name__}", offset=at)
        return cls(reason=reason, user_information=user)


@dataclass(frozen=True, slots=True, kw_only=True)
class RLRE(RLRQ):
    """A-RELEASE response (0x63); ``reason`` 0 normal, 1 not-finished, 30 user-defined."""

    TAG: ClassVar[int] = 0x63


# ------------------------------------------------------------------ registry
Apdu = (
    AARQ | AARE | RLRQ | RLRE | InitiateRequest | InitiateResponse | ConfirmedServiceError
    | DataNotification | EventNotification | ExceptionResponse
    | GetRequestNormal | GetRequestNext | GetRequestWithList
    | GetResponseNormal | GetResponseWithDataBlock | GetResponseWithList
    | SetRequestNormal | SetResponseNormal | ActionRequestNormal | ActionResponseNormal
    | GeneralGloCiphering | GeneralDedCiphering | ServiceCiphered
)

_Decoder = Callable[[bytes], Apdu]

# first octet -> decoder
_BY_TAG: Final[dict[int, _Decoder]] = {
    cls.TAG: cls.decode
    for cls in (AARQ, AARE, RLRQ, RLRE, InitiateRequest, InitiateResponse, ConfirmedServiceError,
                DataNotification, EventNotification, ExceptionResponse, GeneralGloCiphering,
                GeneralDedCiphering)
}
_BY_TAG.update({tag: ServiceCiphered.decode for tag in (*GLO_TAGS, *DED_TAGS)})

# (tag, subtype) -> decoder for GET/SET/ACTION
_BY_SUBTYPE: Final[dict[tuple[int, int], _Decoder]] = {
    (cls.TAG, cls.SUBTYPE): cls.decode
    for cls in (GetRequestNormal, GetRequestNext, GetRequestWithList, GetResponseNormal,
                GetResponseWithDataBlock, GetResponseWithList, SetRequestNormal,
                SetResponseNormal, ActionRequestNormal, ActionResponseNormal)
}
# subtypes the standard defines and we do not implement, per tag
_UNIMPLEMENTED: Final[dict[int, frozenset[int]]] = {
    0xC0: frozenset(),
    0xC4: frozenset(),
    0xC1: frozenset({2, 3, 4, 5}),
    0xC5: frozenset({2, 3, 4, 5}),
    0xC3: frozenset({2, 3, 4, 5, 6}),
    0xC7: frozenset({2, 3, 4}),
}
_UNSUPPORTED_TAGS: Final = {
    0xE0: "general-block-transfer",
    0xDD: "general-ciphering",
    0xDF: "general-signing",
    0xD9: "access-request",
    0xDA: "access-response",
    0x05: "readRequest (SN)",
    0x06: "writeRequest (SN)",
    0x0C: "readResponse (SN)",
    0x0D: "writeResponse (SN)",
    0x16: "unconfirmedWriteRequest (SN)",
    0x18: "informationReportRequest (SN)",
}


def decode_apdu(data: bytes) -> Apdu:
    """Decode one APDU (any type above) that fills ``data``.

    Raises:
        FramingError: an unknown tag or subtype, or malformed/truncated/trailing bytes.
        UnsupportedError: a defined APDU type this module does not implement.
    """
    if not data:
        raise FramingError("empty APDU")
    tag = data[0]
    decoder = _BY_TAG.get(tag)
    if decoder is not None:
        return decoder(data)
    if tag in _UNIMPLEMENTED:
        if len(data) < 2:
            raise FramingError("APDU ends before its subtype", offset=1)
        decoder = _BY_SUBTYPE.get((tag, data[1]))
        if decoder is not None:
            return decoder(data)
        if data[1] in _UNIMPLEMENTED[tag]:
            raise UnsupportedError(f"APDU 0x{tag:02X} subtype {data[1]} is not implemented")
        raise FramingError(f"APDU 0x{tag:02X} has no subtype {data[1]}", offset=1)
    if tag in _UNSUPPORTED_TAGS:
        raise UnsupportedError(f"{_UNSUPPORTED_TAGS[tag]} (0x{tag:02X}) is not implemented")
    raise FramingError(f"unknown APDU tag 0x{tag:02X}", offset=0)
