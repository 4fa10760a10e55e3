"""A-XDR Data: every COSEM type, lengths, date-time special values, limits, and the
A-XDR vectors of dlms-cosem's tests (decode then encode gives the same bytes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import FramingError, LocalProtocolError
from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.axdr import (
    BitString,
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
    decode_data,
    decode_data_at,
    decode_length,
    encode_length,
)

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
BYTE_VECTORS = json.loads((VECTORS / "dlms_cosem" / "test_byte_vectors.json").read_text())[
    "vectors"
]


def vector(index: int, test: str) -> bytes:
    entry = BYTE_VECTORS[index]
    assert entry["test"] == test  # the file's order is what these indexes rely on
    return bytes.fromhex(entry["hex"])


# ------------------------------------------------------------- every type
CASES = [
    ("00", axdr.null()),
    ("FF", Data(type=DataType.DONT_CARE, value=None)),
    ("0300", axdr.boolean(False)),
    ("0301", axdr.boolean(True)),
    ("040C5A50", axdr.bit_string("010110100101")),
    ("0580000000", axdr.double_long(-(2**31))),
    ("057FFFFFFF", axdr.double_long(2**31 - 1)),
    ("06FFFFFFFF", axdr.double_long_unsigned(2**32 - 1)),
    ("0903414243", axdr.octet_string(b"ABC")),
    ("0A0548454C4C4F", axdr.visible_string("HELLO")),
    ("0C02C3A9", axdr.utf8_string("é")),
    ("0D99", Data(type=DataType.BCD, value=-103)),
    ("0F80", axdr.integer(-128)),
    ("0F7F", axdr.integer(127)),
    ("108000", axdr.long(-32768)),
    ("11FF", axdr.unsigned(255)),
    ("12FFFF", axdr.long_unsigned(65535)),
    ("148000000000000000", axdr.long64(-(2**63))),
    ("15FFFFFFFFFFFFFFFF", axdr.long64_unsigned(2**64 - 1)),
    ("1616", axdr.enum(22)),
    ("173F800000", axdr.float32(1.0)),  # DLMS_FACTS §6
    ("18C00921FB54442D18", axdr.float64(-3.141592653589793)),
    ("1907E5091B01092F0F00FF8880",
     axdr.date_time(CosemDateTime(year=2021, month=9, day=27, weekday=1, hour=9, minute=47,
                                  second=15, hundredths=0, deviation=-120, clock_status=0x80))),
    ("1AFFFFFEFDFF", Data(type=DataType.DATE, value=CosemDate(month=0xFE, day=0xFD))),
    ("1B0C1EFFFF", Data(type=DataType.TIME, value=CosemTime(hour=12, minute=30))),
    ("010211011102", axdr.array(axdr.unsigned(1), axdr.unsigned(2))),
    ("02020FFD1623", axdr.structure(axdr.integer(-3), axdr.enum(35))),
    ("0100", axdr.array()),
]


@pytest.mark.parametrize(("hex_", "value"), CASES, ids=[c[1].type.name + c[0][:6] for c in CASES])
def test_every_type_encodes_and_decodes(hex_: str, value: Data) -> None:
    raw = bytes.fromhex(hex_)
    assert value.encode() == raw
    assert decode_data(raw) == value
    assert Data.decode(raw) == value


def test_every_data_type_is_covered_by_the_cases() -> None:
    covered = {c[1].type for c in CASES} | {DataType.COMPACT_ARRAY}
    assert covered == set(DataType)


def test_long_octet_string_and_array_use_the_long_length_form() -> None:
    value = axdr.octet_string(bytes(300))
    raw = value.encode()
    assert raw[:4] == bytes.fromhex("0982012C")
    assert decode_data(raw) == value
    many = axdr.array(*(axdr.unsigned(i & 0xFF) for i in range(200)))
    assert many.encode()[:3] == bytes.fromhex("0181C8")
    assert decode_data(many.encode()) == many


def test_compact_array_of_structures() -> None:
    # compact-array of structure{long-unsigned, double-long-unsigned}: the type once,
    # then the members untagged (Blue Book 4.1.5).
    raw = bytes.fromhex("13" "02021206" "0C" "000100000002" "000300000004")
    value = decode_data(raw)
    assert value.type is DataType.COMPACT_ARRAY
    assert isinstance(value.value, CompactArray)
    assert value.value.description == TypeDescription(
        type=DataType.STRUCTURE,
        items=(TypeDescription(type=DataType.LONG_UNSIGNED),
               TypeDescription(type=DataType.DOUBLE_LONG_UNSIGNED)),
    )
    assert [[m.value for m in row.items] for row in value.items] == [[1, 2], [3, 4]]
    assert value.encode() == raw


def test_compact_array_of_arrays_and_strings() -> None:
    desc = TypeDescription(type=DataType.ARRAY, count=2,
                           items=(TypeDescription(type=DataType.OCTET_STRING),))
    value = Data(type=DataType.COMPACT_ARRAY, value=CompactArray(description=desc, items=(
        axdr.array(axdr.octet_string(b"a"), axdr.octet_string(b"bc")),
    )))
    raw = value.encode()
    assert raw == bytes.fromhex("13" "01000209" "05" "0161" "026263")
    assert decode_data(raw) == value


def test_compact_array_element_must_match_its_description() -> None:
    desc = TypeDescription(type=DataType.UNSIGNED)
    bad = Data(type=DataType.COMPACT_ARRAY,
               value=CompactArray(description=desc, items=(axdr.long(1),)))
    with pytest.raises(LocalProtocolError):
        bad.encode()


# -------------------------------------------------------------- lengths
@pytest.mark.parametrize(("n", "hex_"), [(0, "00"), (0x7F, "7F"), (0x80, "8180"),
                                          (0xFF, "81FF"), (0x100, "820100"),
                                          (0x10000, "83010000"), (2**32 - 1, "84FFFFFFFF")])
def test_lengths_use_the_shortest_form(n: int, hex_: str) -> None:
    assert encode_length(n) == bytes.fromhex(hex_)
    assert decode_length(bytes.fromhex(hex_), 0) == (n, len(hex_) // 2)


@pytest.mark.parametrize("hex_", ["80", "85", "82FF", ""])
def test_bad_lengths_are_framing_errors(hex_: str) -> None:
    with pytest.raises(FramingError):
        decode_length(bytes.fromhex(hex_), 0)


def test_too_long_a_length_is_refused_on_encoding() -> None:
    with pytest.raises(LocalProtocolError):
        encode_length(2**32)
    with pytest.raises(LocalProtocolError):
        encode_length(-1)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("hex_", "offset"),
    [
        ("", 0),  # nothing
        ("07", 0),  # unused tag
        ("0601", 1),  # double-long-unsigned cut off
        ("0905AB", 2),  # octet-string shorter than its length
        ("02031101", 2),  # structure of 3 in 2 octets
        ("020111", 3),  # unsigned missing in a structure
        ("110100", 2),  # trailing octet
        ("1907E5", 1),  # date-time cut off
        ("0C02FFFE", 1),  # invalid UTF-8
    ],
)
def test_malformed_data_is_a_framing_error_with_its_offset(hex_: str, offset: int) -> None:
    with pytest.raises(FramingError) as info:
        decode_data(bytes.fromhex(hex_))
    assert info.value.offset == offset


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    raw = b"\x02\x01" * 5000 + b"\x00"
    with pytest.raises(FramingError, match="nested deeper"):
        decode_data(raw)
    deep = axdr.null()
    for _ in range(axdr.MAX_DEPTH + 1):
        deep = axdr.structure(deep)
    with pytest.raises(LocalProtocolError):
        deep.encode()


def test_compact_array_of_zero_size_elements_is_refused() -> None:
    # an array description of 65535 nulls: the count alone would set the work
    with pytest.raises(FramingError):
        decode_data(bytes.fromhex("13" "01FFFF00" "01" "00"))
    with pytest.raises(FramingError):
        decode_data(bytes.fromhex("13" "00" "01" "00"))


@pytest.mark.parametrize(
    "value",
    [
        axdr.unsigned(256),
        axdr.integer(-129),
        axdr.long_unsigned(-1),
        Data(type=DataType.UNSIGNED, value=True),
        Data(type=DataType.OCTET_STRING, value="text"),
        Data(type=DataType.VISIBLE_STRING, value="日本"),
        Data(type=DataType.NULL_DATA, value=0),
        Data(type=DataType.STRUCTURE, value=[axdr.null()]),
        Data(type=DataType.BIT_STRING, value=BitString(length=9, data=b"\x00")),
        Data(type=DataType.DATE_TIME, value=CosemDateTime(month=256)),
        Data(type=DataType.FLOAT32, value=1e300),
        Data(type=DataType.BOOLEAN, value=1),
    ],
)
def test_values_that_do_not_fit_their_type_are_refused(value: Data) -> None:
    with pytest.raises(LocalProtocolError):
        value.encode()


def test_items_of_a_scalar_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        _ = axdr.unsigned(1).items


def test_decode_data_at_reports_where_it_stopped() -> None:
    raw = bytes.fromhex("1101" "1202AB")
    first, pos = decode_data_at(raw, 0)
    second, end = decode_data_at(raw, pos)
    assert (first.value, second.value, end) == (1, 0x2AB, 5)


# ------------------------------------------------------------ date-time
def test_date_time_with_deviation_is_an_aware_datetime() -> None:
    # NOE Austria: deviation FF88 (-120) is UTC+02:00, status 0x80 = DST (DLMS_FACTS §6)
    stamp = CosemDateTime.decode(bytes.fromhex("07E5091B01092F0F00FF8880"))
    assert stamp.to_datetime() == datetime(2021, 9, 27, 9, 47, 15,
                                           tzinfo=timezone(timedelta(hours=2)))
    assert stamp.clock_status & axdr.STATUS_DST_ACTIVE


def test_date_time_without_deviation_needs_the_meter_zone() -> None:
    stamp = CosemDateTime.decode(bytes.fromhex("07E30C1001073B28FF8000FF"))
    assert stamp.deviation == axdr.DEVIATION_NOT_SPECIFIED
    assert stamp.to_datetime() is None
    assert stamp.to_naive() == datetime(2019, 12, 16, 7, 59, 40)
    oslo = ZoneInfo("Europe/Oslo")
    assert stamp.to_datetime(oslo) == datetime(2019, 12, 16, 7, 59, 40, tzinfo=oslo)


@pytest.mark.parametrize(
    "hex_",
    [
        "FFFF0C1001073B28FF8000FF",  # year not specified
        "07E3FE1001073B28FF8000FF",  # month: DST begin
        "07E30CFD01073B28FF8000FF",  # day: second last of the month
        "07E30C10FFFF3B28FF8000FF",  # hour not specified
        "07E3021E01073B28FF800000",  # 30 February
    ],
)
def test_special_and_impossible_date_times_are_kept_but_not_instants(hex_: str) -> None:
    raw = bytes.fromhex(hex_)
    stamp = CosemDateTime.decode(raw)
    assert stamp.encode() == raw
    assert stamp.to_datetime(UTC) is None


def test_date_time_from_datetime_round_trips() -> None:
    when = datetime(2024, 7, 1, 12, 30, 5, 250_000, tzinfo=ZoneInfo("Europe/Vienna"))
    stamp = CosemDateTime.from_datetime(when)
    assert (stamp.deviation, stamp.weekday, stamp.hundredths) == (-120, 1, 25)
    assert stamp.clock_status == axdr.STATUS_DST_ACTIVE
    assert stamp.to_datetime() == when
    assert CosemDateTime.decode(stamp.encode()) == stamp
    naive = CosemDateTime.from_datetime(datetime(2024, 1, 1))
    assert naive.deviation == axdr.DEVIATION_NOT_SPECIFIED
    with pytest.raises(LocalProtocolError):
        CosemDateTime.from_datetime(datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30))))


def test_date_and_time_parts() -> None:
    stamp = CosemDateTime.decode(bytes.fromhex("07E5091B01092F0F00FF8880"))
    assert stamp.date == CosemDate(year=2021, month=9, day=27, weekday=1)
    assert stamp.time == CosemTime(hour=9, minute=47, second=15, hundredths=0)
    with pytest.raises(FramingError):
        CosemDateTime.decode(b"\x00" * 11)
    with pytest.raises(FramingError):
        CosemDate.decode(b"\x00" * 4)
    with pytest.raises(FramingError):
        CosemTime.decode(b"\x00" * 5)


def test_bit_string_bits() -> None:
    bits = BitString.from_bits("1000000001")
    assert bits == BitString(length=10, data=b"\x80\x40")
    assert bits.bits == "1000000001"
    with pytest.raises(LocalProtocolError):
        BitString.from_bits("10x")


# --------------------------------------------------- dlms-cosem A-XDR vectors
def test_load_profile_get_data_result_vector() -> None:
    # TestAxdrDecoder: a Get-Data-Result choice 0 then an array of 24 hourly
    # structures {date-time octet-string, status, value}.
    raw = vector(9, "TestAxdrDecoder")
    assert raw[0] == 0  # get-data-result: data
    value, end = decode_data_at(raw, 1)
    assert end == len(raw) == 555
    rows = value.items
    assert len(rows) == 24 and all(len(r.items) == 3 for r in rows)
    first = rows[0].items
    assert CosemDateTime.decode(first[0].value).to_naive() == datetime(2018, 2, 12)  # type: ignore[arg-type]
    assert (first[1].type, first[2].type) == (DataType.UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED)
    assert first[2].value == 100000
    assert value.encode() == raw[1:]


def test_lte_quality_of_service_vector() -> None:
    raw = vector(10, "test_lte_monitoring_quality_of_service")
    value = decode_data(raw)
    assert [m.value for m in value.items] == [720, 3240, 18, 30, -64]
    assert value.encode() == raw


def test_gsm_cell_info_vector() -> None:
    raw = vector(11, "test_gsm_diagnistics_cell_info")
    value = decode_data(raw)
    assert [m.type for m in value.items] == [
        DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG_UNSIGNED, DataType.UNSIGNED,
        DataType.UNSIGNED, DataType.LONG_UNSIGNED, DataType.LONG_UNSIGNED, DataType.LONG_UNSIGNED,
    ]
    assert value.encode() == raw


def test_profile_buffer_vector() -> None:
    raw = vector(41, "test_parse_buffer")
    value = decode_data(raw)
    assert len(value.items) == 4
    row = value.items[0].items
    assert CosemDateTime.decode(row[0].value).deviation == -60  # type: ignore[arg-type]
    assert [m.value for m in row[1:]] == [6, 1517, 1620]
    assert value.encode() == raw
