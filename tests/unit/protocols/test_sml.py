"""SML 1.04 decoder on every capture in ../shared/vectors/sml, plus the quirks and the
error cases the captures do not show.

The JSON next to each capture holds sml-rs's decoding of the whole stream: one
entry per transport frame, either the messages (type, server id, list entries
with OBIS, raw value, scaler, unit code, status) or an sml-rs error:
``DiscardedBytes(n)`` (bytes thrown away: leading garbage, a frame cut short by
a new start sequence, a frame unfinished at the end) or ``InvalidMessage``
(``checksum_mismatch`` = (CRC as sent, CRC computed), ``end_esc_misaligned``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import ChecksumError, FramingError, LocalProtocolError, UnsupportedError
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.obis import ObisCode
from gateway.protocols.sml import (
    DLMS_UNITS,
    AttentionResponse,
    CloseResponse,
    GetListResponse,
    GetProcParameterResponse,
    ListEntry,
    OpenResponse,
    PeriodEntry,
    ProcParTree,
    SmlDecoder,
    SmlMessage,
    SmlTime,
    SmlTransportDecoder,
    TransportFrame,
    UnknownBody,
    crc16_kermit,
    crc16_x25,
    decode_file,
    encode_file,
    encode_transport,
    meter_frame,
    server_id_text,
)

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "sml" / "libsml_testing"
CAPTURES = sorted(VECTORS.glob("*.bin"))
BODY_TYPES = {"OpenResponse": OpenResponse, "GetListResponse": GetListResponse,
              "CloseResponse": CloseResponse}


def expected_frames(path: Path) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads(path.with_suffix(".json").read_text())["expected_frames"]
    return frames


def transport(data: bytes, **kwargs: Any) -> list[TransportFrame | Discarded]:
    decoder = SmlTransportDecoder(**kwargs)
    return decoder.feed(data) + decoder.feed_eof()


def decode(data: bytes, **kwargs: Any) -> list[MeterFrame | Discarded]:
    decoder = SmlDecoder(**kwargs)
    return decoder.feed(data) + decoder.feed_eof()


def only_frame(events: list[Any]) -> Any:
    assert len(events) == 1, events
    assert not isinstance(events[0], Discarded), events[0]
    return events[0]


def scaled(value: int, scaler: int | None) -> int | float:
    if not scaler:
        return value
    return value * 10**scaler if scaler > 0 else value / 10**-scaler


# ------------------------------------------------------------------ captures
def test_all_25_captures_are_here() -> None:
    assert len(CAPTURES) == 25


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_capture_transport_matches_sml_rs(path: Path) -> None:
    """Same frames and the same errors, at the same places, as sml-rs."""
    events = transport(path.read_bytes())
    expected = expected_frames(path)
    assert len(events) == len(expected)
    data = path.read_bytes()
    last = -1
    for event, exp in zip(events, expected, strict=True):
        assert event.offset > last
        last = event.offset
        assert data[event.offset : event.offset + len(event.raw)] == event.raw
        if "messages" in exp:
            assert isinstance(event, TransportFrame), event
            assert event.crc_variant == "x25"
            continue
        assert isinstance(event, Discarded), event
        assert event.error.offset == event.offset
        error = exp["error"]
        if "DiscardedBytes" in error:
            assert len(event.raw) == error["DiscardedBytes"]
            assert isinstance(event.error, FramingError)
            assert event.reason in ("garbage", "framing")
        else:
            assert isinstance(event.error, ChecksumError)
            assert event.reason == "checksum"
            assert [event.error.got, event.error.expected] == error["checksum_mismatch"]
            assert event.raw[-3] == error["num_padding_bytes"]
            off_grid = error["end_esc_misaligned"] == "true"
            assert ("off the 4-byte grid" in str(event.error)) is off_grid


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_capture_messages_match_sml_rs(path: Path) -> None:
    events = transport(path.read_bytes())
    for event, exp in zip(events, expected_frames(path), strict=True):
        if not isinstance(event, TransportFrame):
            continue
        messages = decode_file(event.payload)
        assert [type(m.body) for m in messages] == [BODY_TYPES[m["type"]] for m in exp["messages"]]
        assert all(m.crc_ok for m in messages)
        for message, exp_message in zip(messages, exp["messages"], strict=True):
            if not isinstance(message.body, GetListResponse):
                continue
            body = message.body
            assert body.server_id.hex() == exp_message["server_id_hex"]
            assert len(body.val_list) == len(exp_message["entries"])
            for entry, exp_entry in zip(body.val_list, exp_message["entries"], strict=True):
                assert ObisCode.from_bytes(entry.obj_name) == ObisCode.parse(exp_entry["obis"])
                if "value" in exp_entry:
                    assert entry.value == exp_entry["value"]
                else:
                    assert isinstance(entry.value, bytes)
                    assert entry.value.hex() == exp_entry["value_bytes_hex"]
                assert entry.scaler == exp_entry.get("scaler")
                assert entry.unit == exp_entry.get("unit")
                assert entry.status == exp_entry.get("status")


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_capture_readings(path: Path) -> None:
    """The MeterFrames: every entry a reading, scaled, with the unit's symbol."""
    events = decode(path.read_bytes())
    expected = expected_frames(path)
    assert len(events) == len(expected)
    for event, exp in zip(events, expected, strict=True):
        if "error" in exp:
            assert isinstance(event, Discarded)
            continue
        assert isinstance(event, MeterFrame), event
        assert event.protocol == "sml" and event.checksum_ok is True
        (exp_list,) = [m for m in exp["messages"] if m["type"] == "GetListResponse"]
        assert event.meter_id == server_id_text(bytes.fromhex(exp_list["server_id_hex"]))
        assert len(event.readings) == len(exp_list["entries"])
        for reading, exp_entry in zip(event.readings, exp_list["entries"], strict=True):
            assert reading.id == str(ObisCode.parse(exp_entry["obis"]))
            unit = exp_entry.get("unit")
            assert reading.unit == (DLMS_UNITS.get(unit) if unit is not None else None)
            if "value" in exp_entry:
                want = scaled(exp_entry["value"], exp_entry.get("scaler"))
                assert reading.value == want and type(reading.value) is type(want)
                if "scaled_value" in exp_entry:
                    assert reading.value == pytest.approx(exp_entry["scaled_value"], rel=1e-12)
            else:
                raw = bytes.fromhex(exp_entry["value_bytes_hex"])
                text = raw.decode("ascii") if raw.isascii() and raw.decode().isprintable() else raw.hex()
                assert reading.value == text
            assert dict(reading.extra).get("status") == exp_entry.get("status")
            assert reading.timestamp is None  # every valTime in the captures is a seconds index


def test_a_dzg_reading_in_detail() -> None:
    frame = only_frame(decode((VECTORS / "DZG_DVS-7412.2_jmberg.bin").read_bytes()))
    assert frame.meter_id == "1DZG0042082910"
    assert frame.header == "DZG"
    assert frame.timestamp is None
    by_id = {r.id: r for r in frame.readings}
    assert by_id["1-0:1.8.0"].value == 5430157.7 and by_id["1-0:1.8.0"].unit == "Wh"
    assert by_id["1-0:1.8.0"].extra == (("status", 1835268),)
    assert by_id["1-0:16.7.0"].value == -299.12 and by_id["1-0:16.7.0"].unit == "W"
    assert by_id["1-0:96.50.1*1"].value == "DZG"
    assert by_id["1-0:96.1.0"].value == "0a01445a47000282225e"


def test_meter_number_form_agrees_with_what_the_meter_prints() -> None:
    """EasyMeter sends its printed number in 1-0:0.0.0: the server id decodes to the same."""
    events = decode((VECTORS / "EasyMeter_Q3A_A1064V1009.bin").read_bytes())
    frames = [e for e in events if isinstance(e, MeterFrame)]
    assert frames
    for frame in frames:
        printed = {r.id: r.value for r in frame.readings}["1-0:0.0.0"]
        assert frame.meter_id == printed == "1ESY1162232997"
        assert frame.header == "ESY"


def test_server_id_forms() -> None:
    assert server_id_text(bytes.fromhex("0a01484c5902000d6be6")) == "1HLY0200879590"
    assert server_id_text(bytes.fromhex("090149534b000403df63")) == "1ISK0067362659"  # ISKRA MT175
    assert server_id_text(b"02280816") == "02280816"  # EMH eHZ-GW: ASCII
    assert server_id_text(bytes.fromhex("01a815986480020102")) == "01a815986480020102"  # M-Bus style


def test_holley_dtz541_valtime_without_choice_tag() -> None:
    """The DTZ541-ZDBA sends valTime as a bare Unsigned32: read as a seconds index."""
    frame = next(e for e in transport((VECTORS / "HOLLEY_DTZ541-ZDBA.bin").read_bytes())
                 if isinstance(e, TransportFrame))
    body = decode_file(frame.payload)[1].body
    assert isinstance(body, GetListResponse)
    energy = [e for e in body.val_list if e.obj_name == ObisCode.parse("1-0:1.8.2").to_bytes()]
    assert energy[0].val_time == SmlTime(kind="sec_index", value=1347075)


# ----------------------------------------------------------------------- CRC
def test_crc_check_values() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the CRC catalogue's check values
    assert crc16_kermit(b"123456789") == 0x2189


def holley_payload() -> bytes:
    (frame,) = transport((VECTORS / "HOLLEY_DTZ541-BDBA_without_PIN.bin").read_bytes())
    assert isinstance(frame, TransportFrame)
    return frame.payload


def test_holley_kermit_crc_is_detected() -> None:
    payload = holley_payload()
    wire = encode_transport(payload, crc="kermit")
    assert wire[-2:] == crc16_kermit(wire[:-2]).to_bytes(2, "big")
    (frame,) = transport(wire)
    assert isinstance(frame, TransportFrame)
    assert frame.crc_variant == "kermit" and frame.payload == payload
    decoder = SmlDecoder()
    assert isinstance(only_frame(decoder.feed(wire)), MeterFrame)
    assert decoder.crc_variant == "kermit"


def test_crc_choice_restricts_the_variants() -> None:
    payload = holley_payload()
    kermit = encode_transport(payload, crc="kermit")
    x25 = encode_transport(payload)
    (refused,) = transport(kermit, crc="x25")
    assert isinstance(refused, Discarded) and isinstance(refused.error, ChecksumError)
    assert refused.error.expected == crc16_x25(kermit[:-2])
    (refused,) = transport(x25, crc="kermit")
    assert isinstance(refused, Discarded) and refused.reason == "checksum"
    assert isinstance(transport(kermit, crc="kermit")[0], TransportFrame)


def test_other_crc_byte_orders_are_not_accepted() -> None:
    payload = holley_payload()
    good = encode_transport(payload)
    for wrong in (good[:-2] + good[-2:][::-1],  # X-25 most significant byte first
                  good[:-2] + crc16_kermit(good[:-2]).to_bytes(2, "little"),  # KERMIT LSB first
                  good[:-2] + b"\x00\x00"):
        (event,) = transport(wrong)
        assert isinstance(event, Discarded) and event.reason == "checksum"


def test_message_crc_mismatch_is_reported_but_the_frame_kept() -> None:
    payload = bytearray(holley_payload())
    # The OpenResponse's crc16 field ("63 bf b2") follows its body; spoil it.
    at = payload.index(bytes.fromhex("63bfb2"))
    payload[at + 1] ^= 0xFF
    messages = decode_file(bytes(payload))
    assert [m.crc_ok for m in messages] == [False, True, True]
    frame = only_frame(decode(encode_transport(bytes(payload))))
    assert frame.checksum_ok is False and frame.readings


# ------------------------------------------------------------------ transport
# Small transport vectors from sml-rs's encoder tests (payloads that are not SML).
@pytest.mark.parametrize(
    ("payload", "wire"),
    [
        ("12345678", "1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b"),
        ("", "1b1b1b1b 01010101 1b1b1b1b 1a00c6e5"),
        ("123456", "1b1b1b1b 01010101 12345600 1b1b1b1b 1a0191a5"),
        ("121b1b1b1b", "1b1b1b1b 01010101 12 1b1b1b1b 1b1b1b1b 000000 1b1b1b1b 1a03be25"),
        ("121b1b1bFF", "1b1b1b1b 01010101 12 1b1b1bFF 000000 1b1b1b1b 1a0324d9"),
        ("12345678 12341b1b", "1b1b1b1b 01010101 12345678 12341b1b 1b1b1b1b 1a001ac5"),
    ],
)
def test_transport_vectors(payload: str, wire: str) -> None:
    data = bytes.fromhex(payload.replace(" ", ""))
    raw = bytes.fromhex(wire.replace(" ", ""))
    assert encode_transport(data) == raw
    (frame,) = transport(raw)
    assert isinstance(frame, TransportFrame) and frame.payload == data and frame.raw == raw


def test_escapes_only_on_the_grid_decode_the_same() -> None:
    """libsml-style senders double 1B1B1B1B only where it sits on the 4-byte grid."""
    data = bytes.fromhex("aabbccdd 1b1b1b1b 11 1b1b1b1b 22 1b1b1b 1b1b1b1b 1b1b1b1b 33".replace(" ", ""))
    grid = bytearray()
    for at in range(0, len(data), 4):
        block = data[at : at + 4]
        grid += block + block if block == b"\x1b" * 4 else block
    padding = -len(grid) % 4
    body = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" + grid + bytes(padding) + b"\x1b\x1b\x1b\x1b\x1a" + bytes([padding])
    raw = body + crc16_x25(body).to_bytes(2, "little")
    (frame,) = transport(raw)
    assert isinstance(frame, TransportFrame) and frame.payload == data
    (frame,) = transport(encode_transport(data))  # and the sml-rs style (every occurrence)
    assert isinstance(frame, TransportFrame) and frame.payload == data


def test_garbage_cut_frames_and_the_end_of_the_stream() -> None:
    good = encode_transport(holley_payload())
    cut = good[: len(good) // 2]
    events = transport(b"noise" + cut + good + good[:30])
    kinds = [(type(e).__name__, getattr(e, "reason", None), e.offset) for e in events]
    assert kinds == [
        ("Discarded", "garbage", 0),
        ("Discarded", "framing", 5),
        ("TransportFrame", None, 5 + len(cut)),
        ("Discarded", "framing", 5 + len(cut) + len(good)),
    ]
    assert "new start sequence" in str(events[1].error)  # type: ignore[union-attr]
    assert "stream ended" in str(events[3].error)  # type: ignore[union-attr]


def test_bad_padding_and_invalid_escapes_are_framing_errors() -> None:
    def frame(body: bytes) -> bytes:
        raw = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" + body
        return raw + crc16_x25(raw).to_bytes(2, "little")

    for body, reason in [
        (b"\x12\x34\x56\x00\x1b\x1b\x1b\x1b\x1a\x02", "bad padding"),  # one zero, two announced
        (b"\x12\x34\x56\x78\x1b\x1b\x1b\x1b\x1a\x04", "bad padding"),  # more than 3
        (b"\x12\x34\x56\x78\x1b\x1b\x1b\x1b\x02\x02\x02\x02", "invalid escape"),
    ]:
        events = transport(frame(body))
        assert isinstance(events[0], Discarded) and events[0].reason == "framing"
        assert reason in str(events[0].error)


def test_a_frame_without_end_is_cut_at_max_frame() -> None:
    data = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" + bytes(200)
    decoder = SmlTransportDecoder(max_frame=64)
    events = decoder.feed(data)
    assert decoder.buffered <= 64
    assert events[0].reason == "overflow" and events[0].offset == 0  # type: ignore[union-attr]
    assert all(isinstance(e, Discarded) for e in events + decoder.feed_eof())


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        SmlTransportDecoder(crc="crc32")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        SmlDecoder(max_frame=10)


# ---------------------------------------------------------------- SML files
def test_files_that_are_not_sml_are_framing_errors() -> None:
    for payload, words in [
        (b"\x75\x01", "expected an SML_Message"),
        (b"\x76\x01\x62\x00\x62\x00\x72\x63\x02\x01\x71\x01\x63\x00\x00\x01", "endOfSmlMsg"),
        (b"\x76\x05\x01", "ends inside"),
        (b"\x76\x01\x62\x00\x62\x00\x72\x63\x02\x01\x71\x21", "unknown type-length byte"),
        (b"\x76\x01\x62\x00\x62\x00\x72\x63\x07\x01\x72\x01\x01", "SML_GetList.Res"),
    ]:
        with pytest.raises(FramingError, match=words):
            decode_file(payload)
    (event,) = decode(encode_transport(b"\x75\x01\x01\x01\x01\x01"))
    assert isinstance(event, Discarded) and event.reason == "framing" and event.offset == 0


def test_a_file_without_values_is_unsupported() -> None:
    messages = (SmlMessage(transaction_id=b"\x01", body=CloseResponse()),)
    (event,) = decode(encode_transport(encode_file(messages)))
    assert isinstance(event, Discarded) and event.reason == "unsupported"
    assert isinstance(event.error, UnsupportedError) and "CloseResponse" in str(event.error)


def test_timestamps_become_reading_and_frame_times() -> None:
    obis = ObisCode.parse("1-0:1.8.0").to_bytes()
    local = SmlTime(kind="local_timestamp", value=1_700_000_000, local_offset_min=60,
                    season_offset_min=60)
    body = GetListResponse(
        server_id=b"\x0a\x01EMH\x00\x00\x00\x00\x07",
        act_sensor_time=SmlTime(kind="sec_index", value=5),
        act_gateway_time=SmlTime(kind="timestamp", value=1_700_000_100),
        val_list=(ListEntry(obj_name=obis, val_time=local, unit=30, scaler=3, value=12),),
    )
    messages = decode_file(encode_file([SmlMessage(transaction_id=b"\x01", body=body)]))
    assert messages[0].body == body
    frame = meter_frame(messages)
    assert frame is not None
    assert frame.timestamp == datetime(2023, 11, 14, 22, 15, tzinfo=UTC)
    (reading,) = frame.readings
    assert reading.value == 12000 and reading.unit == "Wh"
    assert reading.timestamp == datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2)))
    assert frame.meter_id == "1EMH0000000007"


def test_proc_parameter_and_attention_responses() -> None:
    clock = ObisCode.parse("0-0:1.0.0").to_bytes()
    energy = ObisCode.parse("1-0:1.8.0").to_bytes()
    tree = ProcParTree(
        parameter_name=ObisCode.parse("1-0:98.1.0").to_bytes(),
        children=(
            ProcParTree(parameter_name=clock, value_tag=4,
                        value=SmlTime(kind="timestamp", value=1_700_000_000)),
            ProcParTree(parameter_name=energy, value_tag=2,
                        value=PeriodEntry(obj_name=energy, unit=30, scaler=-1, value=123456)),
            ProcParTree(parameter_name=b"name", value_tag=1, value=b"hello", children=()),
        ),
    )
    messages = (
        SmlMessage(transaction_id=b"\x07", group_no=1,
                   body=GetProcParameterResponse(server_id=b"\x0a\x01DZG\x00\x00\x00\x00\x01",
                                                 parameter_tree_path=(tree.parameter_name,),
                                                 parameter_tree=tree)),
        SmlMessage(transaction_id=b"\x08", body=AttentionResponse(
            server_id=b"srv", attention_no=bytes.fromhex("8181c7c7fd00"), attention_details=tree)),
        SmlMessage(transaction_id=b"\x09", body=UnknownBody(tag=0x0301, content=(1, b"x", None))),
    )
    assert decode_file(encode_file(messages)) == messages
    frame = only_frame(decode(encode_transport(encode_file(messages))))
    assert [(r.id, r.value, r.unit) for r in frame.readings] == [
        ("0-0:1.0.0", "2023-11-14T22:13:20+00:00", None),
        ("1-0:1.8.0", 12345.6, "Wh"),
        ("6e616d65", "hello", None),
    ]


def test_long_type_length_fields() -> None:
    """Octet strings past 14 bytes and lists past 15 elements need multi-byte TL fields."""
    entries = tuple(
        ListEntry(obj_name=bytes((1, 0, 1, 8, i, 255)), unit=30, scaler=-1, value=i * 1000)
        for i in range(20)
    ) + (ListEntry(obj_name=ObisCode.parse("129-129:199.130.5").to_bytes(), value=bytes(range(200))),)
    body = GetListResponse(server_id=b"x" * 17, val_list=entries)
    wire = encode_file([SmlMessage(transaction_id=b"t" * 300, body=body)])
    assert wire[0:4] == b"\x76\x81\x82\x0f"  # 300 bytes + a 3-byte TL = 303 = 0x12F
    assert decode_file(wire)[0].body == body
    frame = only_frame(decode(encode_transport(wire)))
    assert len(frame.readings) == 21 and frame.readings[-1].value == bytes(range(200)).hex()


# ------------------------------------------------------------------- decode CLI
def test_decode_cli_prints_one_line_per_frame(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "ISKRA_MT631-D2A51-V22-K0z_with_PIN.bin"
    assert main(["decode", "--protocol", "sml", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    frame = json.loads(lines[0])
    assert frame["protocol"] == "sml" and frame["meter_id"] == "1ISK0072657247"
    assert {"id": "1-0:1.8.0", "value": 16824856.5, "unit": "Wh", "status": 1835012} in frame["readings"]


def test_decode_cli_reports_errors_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "EasyMeter_Q3A_A1064V1009.bin"
    assert main(["decode", "--protocol", "sml", str(path)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 4
    errors = [json.loads(line) for line in captured.err.splitlines()]
    assert [e["error"] for e in errors] == ["FramingError", "ChecksumError", "ChecksumError",
                                            "ChecksumError", "FramingError"]
