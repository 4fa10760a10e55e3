"""M-Bus application layer: DIF/DIFE/VIF/VIFE, data types, dates, headers, ids, the CLI."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.cli import cmd_decode
from gateway.errors import LocalProtocolError, UnsupportedError
from gateway.model import MeterFrame, Reading
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import MbusDecoder, SecondaryAddress, decode_response
from gateway.protocols.mbus.app import (
    CI_FIXED,
    CI_VARIABLE,
    CI_VARIABLE_MSB,
    CI_VARIABLE_NO_HEADER,
    CI_VARIABLE_SHORT,
    FixedDataResponse,
    Header,
    RecordError,
    VariableDataResponse,
    encode_bcd,
    encode_date_f,
    encode_date_g,
)
from gateway.protocols.mbus.link import LongFrame
from gateway.protocols.mbus.tables import decode_manufacturer, encode_manufacturer

HEADER = "78563412 2D2C 01 02 55 00 0000"  # 12345678, KAM, version 1, electricity


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def frame(records: str, *, ci: int = CI_VARIABLE, header: str = HEADER) -> bytes:
    return LongFrame(control=0x08, address=1, ci=ci, data=h(header + records)).encode()


def decode(records: str, **kw: Any) -> MeterFrame:
    dec = MbusDecoder(meter_tz=kw.pop("tz", None))
    events = dec.feed(frame(records, **kw)) + dec.feed_eof()
    assert len(events) == 1 and isinstance(events[0], MeterFrame), events
    return events[0]


def one(records: str, **kw: Any) -> Reading:
    (r,) = decode(records, **kw).readings
    return r


def extra(r: Reading) -> dict[str, Any]:
    return dict(r.extra)


# ----------------------------------------------------------- DIF / DIFE
def test_dife_chain_builds_storage_tariff_and_subunit() -> None:
    # DIF C4: E, storage LSB 1, int32; DIFE 9B: E, tariff 1, storage 0xB; DIFE 62: subunit 1,
    # tariff 2, storage 2 -> storage = 1 | 0xB << 1 | 2 << 5 = 87, tariff = 1 | 2 << 2 = 9
    r = one("C4 9B 62 13 01000000")
    e = extra(r)
    assert (e["storage"], e["tariff"], e["subunit"]) == (87, 9, 2)
    assert r.id == "volume_s87_t9_u2" and r.value == 0.001


@pytest.mark.parametrize(
    ("dif", "function", "tag"), [("04", "instantaneous", ""), ("14", "max", "_max"),
                                  ("24", "min", "_min"), ("34", "error", "_error")]
)  # fmt: skip
def test_function_field(dif: str, function: str, tag: str) -> None:
    r = one(f"{dif} 03 0A000000")
    assert extra(r)["function"] == function and r.id == "energy" + tag and r.value == 10


# ------------------------------------------------------------ data types
@pytest.mark.parametrize(
    ("coding", "data", "value"),
    [
        ("01 FD 17", "FF", -1),  # int8, two's complement
        ("02 FD 17", "00 80", -32768),
        ("03 FD 17", "FF FF 7F", 8388607),
        ("06 FD 17", "01 00 00 00 00 80", -(2**47) + 1),
        ("07 FD 17", "FF FF FF FF FF FF FF FF", -1),
        ("09 FD 17", "42", 42),  # BCD 2
        ("0A FD 17", "34 12", 1234),
        ("0B FD 17", "56 34 12", 123456),
        ("0C FD 17", "78 56 34 12", 12345678),
        ("0E FD 17", "12 90 78 56 34 12", 123456789012),
        ("0A FD 17", "34 F2", -234),  # F high nibble in the last byte: negative
        ("0A FD 17", "3E 12", "123E"),  # other A-F digits: an error marker, kept as text
        ("05 FD 17", "00 00 20 41", 10.0),  # real32
        ("05 2B", "CD CC 4C 3E", 0.2),  # float32 0.2 shown as 0.2, not 0.200000003
        ("05 FD 17", "00 00 C0 7F", "nan"),
        ("0D FD 17", "03 43 42 41", "ABC"),  # text, last character first
        ("0D FD 17", "C2 34 12", 1234),  # LVAR C0+n: positive BCD of n bytes
        ("0D FD 17", "D2 34 12", -1234),  # LVAR D0+n: negative BCD
        ("0D FD 17", "E2 34 12", "12 34"),  # binary, most significant byte first
        ("0D FD 17", "F0" + " 00" * 16, " ".join(["00"] * 16)),  # F0: 16 bytes
        ("00 FD 17", "", ""),  # no data
    ],
)
def test_data_types(coding: str, data: str, value: object) -> None:
    assert one(coding + data).value == value


def test_scaling_keeps_integers_exact_and_applies_vife_corrections() -> None:
    assert one("04 06 05000000").value == 5000  # kWh -> Wh, an int
    assert one("04 13 39300000").value == 12.345  # l -> m³
    assert one("04 22 02000000").value == 7200  # hours -> seconds
    assert one("04 93 7D 02000000").value == 2  # VIFE 7D: × 10^3 on 10^-3 m³
    assert one("04 93 74 02000000").value == 2e-5  # VIFE 74: × 10^-2
    # 7B: + 10^0 × the VIF unit, the VIF's own scale (10^-3 m³) included
    assert one("04 93 7B 02000000").value == pytest.approx(0.003)


# --------------------------------------------------------- VIF tables
@pytest.mark.parametrize(
    ("coding", "quantity", "unit", "value"),
    [
        ("04 FB 00", "energy", "Wh", 100_000),  # FB 00: 0.1 MWh
        ("04 FB 09", "energy", "J", 10**9),  # FB 09: 1 GJ
        ("04 FB 1A", "relative_humidity", "%", 0.1),
        ("04 FD 48", "voltage", "V", 0.1),
        ("04 FD 5C", "current", "A", 1.0),
        ("04 FD 3A", "dimensionless", None, 1),
        ("04 FD 0E", "firmware_version", None, 1),
        ("04 FD 27", "storage_interval", "s", 86400),
        ("04 68", "pressure", "bar", 0.001),
        ("04 6E", "hca", None, 1),
        ("04 43", "volume_flow", "m³/min", 1e-4),
    ],
)
def test_extension_and_primary_tables(coding: str, quantity: str, unit: str | None, value: float) -> None:
    r = one(coding + " 01000000")
    assert extra(r)["quantity"] == quantity and r.unit == unit
    assert r.value == pytest.approx(value)


def test_combinable_vifes_change_the_id_and_meaning() -> None:
    per_hour = one("04 93 22 05000000")
    assert per_hour.id == "volume_per_hour" and per_hour.unit == "m³/h"
    assert extra(per_hour)["qualifier"] == "per hour"
    limit = one("04 AB 48 05000000")
    assert limit.id == "power_upper_limit" and limit.unit == "W"
    exceeds = one("04 AB 41 05000000")
    assert exceeds.id == "power_lower_limit_exceeds" and exceeds.unit is None
    duration = one("04 AB 5A 05000000")  # E101 1 0 10: upper, first, hours
    assert duration.id == "power_upper_limit_first_duration" and duration.value == 18000
    when = one("02 AB 39 8C11")  # start date of power: a type G date
    assert when.id == "power_start" and when.value == "2012-01-12"
    phase = one("02 FD C8 FC 02 FE08")  # FD 48 + 7C 02: voltage of L2 (2013+)
    assert phase.id == "voltage_l2" and phase.value == 230.2
    error = one("04 93 16 05000000")  # record error "data overflow": the id stays
    assert error.id == "volume" and extra(error)["error"] == "data overflow"


def test_plain_text_and_manufacturer_specific_vifs() -> None:
    text = one("02 FC 03 48 52 25 74 2215")  # "%RH" reversed, then VIFE 74 (10^-2)
    assert (text.id, text.unit, text.value) == ("text_rh", "%RH", 54.1)
    assert extra(text)["quantity"] == "plain_text"
    mfr = one("01 FF E1 FF 01 0D")  # VIF FF: every VIFE after it is the manufacturer's
    assert mfr.id == "manufacturer_specific_e1ff01" and mfr.value == 13
    mfr_vife = one("02 FD C8 FF 01 D108")  # FD 48 then VIFE FF: manufacturer VIFEs follow
    assert mfr_vife.id == "voltage_m01" and mfr_vife.value == 225.7


def test_special_dif_manufacturer_data_more_records_and_fillers() -> None:
    f = decode("2F 2F 04 13 01000000 2F 1F 01 02 03")
    assert [r.id for r in f.readings] == ["volume", "manufacturer_data"]
    assert f.readings[1].value == "01 02 03"
    resp = decode_response(CI_VARIABLE, h(HEADER + "04 13 01000000 1F"))
    assert isinstance(resp, VariableDataResponse) and resp.more_records_follow
    with pytest.raises(RecordError) as info:
        decode_response(CI_VARIABLE, h(HEADER + "3F 00"))
    assert info.value.kind == "reserved_dif"
    with pytest.raises(RecordError) as info:
        decode_response(CI_VARIABLE, h(HEADER + "0D 13 F8 00"))
    assert info.value.kind == "bad_lvar"


# ------------------------------------------------------------------ dates
@pytest.mark.parametrize(
    ("coding", "data", "value"),
    [
        ("02 6C", "8C 11", "2012-01-12"),  # type G (libmburs test vector)
        ("04 6D", "0B 0B CD 13", "2014-03-13T11:11:00"),  # type F (libmburs)
        ("04 6D", "10 09 05 C5", "1996-05-05T09:16:00"),  # 96 without hundred bits: 1996
        ("04 6D", "00 20 01 01", "2000-01-01T00:00:00"),  # hundred-year bits 01: 2000
        ("06 6D", "1E 2D 2E 8C 11 00", "2012-01-12T14:45:30"),  # type I
        ("03 6D", "1E 2D 0E", "14:45:30"),  # type J (time of day)
    ],
)
def test_date_time_types(coding: str, data: str, value: str) -> None:
    r = one(coding + data)
    assert r.value == value and "invalid" not in extra(r)


def test_invalid_bit_is_flagged_and_meter_time_needs_a_zone() -> None:
    r = one("04 6D 8B 0B CD 13")
    assert r.value == "2014-03-13T11:11:00" and extra(r)["invalid"] is True
    tz = ZoneInfo("Europe/Berlin")
    assert decode("04 6D 0B 0B CD 13", tz=tz).timestamp == datetime(2014, 3, 13, 11, 11, tzinfo=tz)
    assert decode("04 6D 0B 0B CD 13").timestamp is None  # local time without zone: unknown
    assert decode("04 6D 8B 0B CD 13", tz=tz).timestamp is None  # IV set: no meter time


def test_date_encoders_round_trip() -> None:
    assert encode_date_g(2012, 1, 12) == h("8C 11")
    assert encode_date_f(2014, 3, 13, 11, 11) == h("0B 0B CD 13")
    assert encode_bcd(1234, 2) == h("34 12") and encode_bcd(-234, 2) == h("34 F2")
    with pytest.raises(LocalProtocolError):
        encode_bcd(12345, 2)


# ------------------------------------------------------------- CI, headers
def test_short_header_no_header_and_mode_2() -> None:
    short = decode("04 13 01000000", ci=CI_VARIABLE_SHORT, header="2A 00 0000")
    assert short.meter_id is None and short.readings[0].value == 0.001
    none = decode("04 13 01000000", ci=CI_VARIABLE_NO_HEADER, header="")
    assert none.readings[0].id == "volume"
    # CI 76: multi-byte values most significant byte first, the header too
    msb = decode("04 13 00000102", ci=CI_VARIABLE_MSB, header="12345678 2C2D 01 02 55 00 0000")
    assert msb.meter_id == "12345678-KAM-01-electricity"
    assert msb.readings[0].value == 0.258  # 0x0102


def test_header_fields_and_secondary_address() -> None:
    resp = decode_response(CI_VARIABLE, h(HEADER + "04 13 01000000"))
    assert isinstance(resp, VariableDataResponse)
    assert resp.header == Header(
        address=SecondaryAddress(id="12345678", manufacturer=0x2C2D, version=1, medium=2),
        access_number=0x55, status=0, signature=0,
    )  # fmt: skip
    assert resp.encode() == h(HEADER + "04 13 01000000")
    a = resp.header.address
    assert a is not None and a.label == "12345678-KAM-01-electricity" and a.hex == "123456782C2D0102"
    assert SecondaryAddress.parse(a.label) == a == SecondaryAddress.parse(a.hex)
    assert SecondaryAddress.parse("12345678-KAM-01-02") == a
    mask = SecondaryAddress.parse("1234FFFF")
    assert mask.is_mask and mask.matches(a) and not SecondaryAddress.parse("1235FFFF").matches(a)
    with pytest.raises(LocalProtocolError):
        SecondaryAddress.parse("1234")


def test_manufacturer_codes() -> None:
    assert decode_manufacturer(0x4D82) == "SLB" and encode_manufacturer("PAD") == 0x4024
    assert decode_manufacturer(encode_manufacturer("LUG")) == "LUG"


def test_fixed_data_structure() -> None:
    data = h("93929190 10 00 05 69 31650000 69000000")
    resp = decode_response(CI_FIXED, data)
    assert isinstance(resp, FixedDataResponse) and resp.medium == "heat"
    assert resp.encode() == data
    f = decode("", ci=CI_FIXED, header="93929190 10 00 05 69 31650000 69000000")
    assert f.meter_id == "90919293-heat"
    assert [(r.id, r.value, r.unit) for r in f.readings] == [
        ("counter1", 6531000, "Wh"), ("counter2", 0.069, "m³")
    ]


def test_application_error_and_unknown_ci() -> None:
    dec = MbusDecoder()
    (ev,) = dec.feed(LongFrame(control=0x08, address=1, ci=0x70, data=b"\x08").encode())
    assert isinstance(ev, Discarded) and "application busy" in str(ev.error)
    with pytest.raises(UnsupportedError):
        decode_response(0x7C, b"\x00")


def test_master_frames_and_acks_in_a_capture_are_not_data() -> None:
    dec = MbusDecoder()
    stream = h("10 5B 01 5C 16 E5") + frame("04 13 01000000")
    events = dec.feed(stream) + dec.feed_eof()
    assert [type(e).__name__ for e in events] == ["MeterFrame"]
    assert isinstance(events[0], MeterFrame) and events[0].offset == 6


# -------------------------------------------------------------------- CLI
def test_decode_cli_writes_one_json_line_per_frame(tmp_path: Path) -> None:
    capture = tmp_path / "bus.bin"
    bad = bytearray(frame("04 13 02000000"))
    bad[-2] ^= 1
    capture.write_bytes(frame("04 13 01000000") + bytes(bad) + frame("04 13 03000000"))
    out, err = io.StringIO(), io.StringIO()
    assert cmd_decode("mbus", str(capture), key=None, auth_key=None, out=out, err=err) == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["readings"][0]["value"] for line in lines] == [0.001, 0.003]
    assert lines[0]["protocol"] == "mbus" and lines[0]["meter_id"] == "12345678-KAM-01-electricity"
    (problem,) = [json.loads(line) for line in err.getvalue().splitlines()]
    assert problem["error"] == "ChecksumError" and problem["offset"] == len(bad)
