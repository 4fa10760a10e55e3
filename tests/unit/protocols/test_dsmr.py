"""DSMR / P1 decoder on every capture in ../shared/vectors/dsmr (and the EasyMeter readouts).

Expected values come from the JSON next to each capture:

* ``generic_tokens`` / ``expected_tokens``: each data line's OBIS code and raw
  values, in telegram order.  ``expected_reading`` below states how such a
  line maps to a ``Reading`` (the decoder's JSON value mapping).
* ``expected_assertions``: dsmr_parser's own test assertions (attribute name,
  OBIS comment, expected value).  dsmr_parser gives ``None`` for ``()``, keeps
  "0002" as text and hex text messages undecoded, and takes UTC offsets from
  the tz database; the comparisons allow for exactly these differences.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.errors import (
    ChecksumError,
    DecryptionError,
    FramingError,
    GatewayError,
    LocalProtocolError,
)
from gateway.model import MeterFrame, Reading
from gateway.protocols import dlms_gcm
from gateway.protocols._checks import crc16_arc_table
from gateway.protocols._events import Discarded
from gateway.protocols.dsmr import DsmrDecoder, crc16_arc, encrypt_telegram, parse_timestamp
from gateway.protocols.obis import normalise_id

VECTORS = Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors"
DSMR = VECTORS / "dsmr"
EASYMETER = VECTORS / "iec62056_21" / "dsmr_parser_easymeter"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

PLAIN = sorted((DSMR / "dsmr_parser").glob("*.txt")) + sorted((DSMR / "lvzon").glob("*.txt"))
CIPHERED = [DSMR / "sagemcom_t210dr_generated", DSMR / "smarty_openhab"]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def decode_all(data: bytes, **kwargs: Any) -> list[MeterFrame | Discarded]:
    decoder = DsmrDecoder(**kwargs)
    return decoder.feed(data) + decoder.feed_eof()


def as_frame(event: MeterFrame | Discarded) -> MeterFrame:
    assert isinstance(event, MeterFrame), event
    return event


def as_discarded(event: MeterFrame | Discarded) -> Discarded:
    assert isinstance(event, Discarded), event
    return event


def decryption_reason(event: MeterFrame | Discarded) -> str:
    error = as_discarded(event).error
    assert isinstance(error, DecryptionError), error
    return error.reason


def only_frame(events: list[MeterFrame | Discarded]) -> MeterFrame:
    frames = [e for e in events if isinstance(e, MeterFrame)]
    assert len(frames) == 1, events
    return frames[0]


# ------------------------------------------------------------ value mapping
def flagged_time(text: str) -> datetime:
    """A DSMR timestamp decoded independently of the decoder."""
    naive = datetime.strptime(text[:12], "%y%m%d%H%M%S")
    flag = text[12:]
    if not flag:
        return naive.replace(tzinfo=AMSTERDAM)
    return naive.replace(tzinfo=timezone(timedelta(hours=1 if flag == "W" else 2)))


def valid_time(text: str) -> bool:
    try:
        flagged_time(text)
    except ValueError:
        return False
    return bool(re.fullmatch(r"\d{12}[WS]?", text))


def json_number(text: str) -> int | float | str:
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+\.\d+", text):
        return float(text)
    return text


def assert_same_value(actual: object, expected: object) -> None:
    assert actual == expected and type(actual) is type(expected), (actual, expected)


def check_single(reading: Reading, text: str, unit: str | None) -> None:
    assert reading.unit == unit
    cd = reading.id.split(":")[1].rsplit(".", 1)[0]
    if reading.id == "0-0:1.0.0":
        assert reading.value == flagged_time(text).isoformat()
    elif cd in ("96.1", "42.0", "0.0"):
        assert_same_value(reading.value, text)  # identifiers stay text, leading zeros and all
    elif cd == "96.13":
        # Text messages: hex decoded when it is printable ASCII.
        assert reading.value == text or (
            isinstance(reading.value, str) and reading.value.encode().hex().upper() == text
        )
    else:
        assert_same_value(reading.value, json_number(text))


def check_multi(reading: Reading, values: list[dict[str, Any]]) -> None:
    texts = [v["value"] for v in values]
    units = [v["unit"] for v in values]
    extra = dict(reading.extra)
    cde = reading.id.split(":")[1]
    if cde == "99.97.0":
        assert_same_value(reading.value, int(texts[0]))
        rows = list(zip(texts[2::2], texts[3::2], strict=True))
        assert extra["events"] == [
            {"end": flagged_time(end).isoformat(), "duration_s": int(duration)}
            for end, duration in rows
        ]
    elif cde == "98.1.0" and texts[1:3] == ["1-0:1.6.0", "1-0:1.6.0"]:
        assert_same_value(reading.value, int(texts[0]))
        cells = list(zip(texts[3::3], texts[4::3], values[5::3], strict=True))
        assert extra["events"] == [
            {
                "captured": flagged_time(captured).isoformat(),
                "occurred": flagged_time(occurred).isoformat() if valid_time(occurred) else None,
                "value": json_number(v["value"]),
                "unit": v["unit"],
            }
            for captured, occurred, v in cells
        ]
    elif cde == "24.3.0":
        # DSMR 2.2/3 gas: (capture time)(00)(60)(1)(0-1:24.2.1)(m3) then (value) on its own line
        assert_same_value(reading.value, json_number(texts[-1]))
        assert reading.unit == texts[5]
        assert reading.timestamp == flagged_time(texts[0])
    elif len(values) == 2 and valid_time(texts[0]):
        assert_same_value(reading.value, json_number(texts[1]))
        assert reading.unit == units[1]
        assert reading.timestamp == flagged_time(texts[0])
    else:
        assert_same_value(reading.value, json_number(texts[-1]))
        assert reading.unit == units[-1]
        assert len(extra["values"]) == len(values)
        for item, text, unit in zip(extra["values"], texts, units, strict=True):
            expected = flagged_time(text).isoformat() if valid_time(text) else json_number(text)
            assert item == {"value": expected, "unit": unit}


def check_tokens(frame: MeterFrame, tokens: dict[str, Any]) -> None:
    assert frame.header == "/" + tokens["header"]
    objects = tokens["objects"]
    assert [r.id for r in frame.readings] == [normalise_id(o["obis"]) for o in objects]
    for reading, obj in zip(frame.readings, objects, strict=True):
        values = obj["values"]
        if len(values) == 1:
            check_single(reading, values[0]["value"], values[0]["unit"])
        else:
            check_multi(reading, values)
    by_id = {r.id: r for r in frame.readings}
    if "0-0:1.0.0" in by_id:
        assert frame.timestamp is not None
        assert frame.timestamp.isoformat() == by_id["0-0:1.0.0"].value
    else:
        assert frame.timestamp is None


# dsmr_parser's OBIS comments that do not name the line the assertion is about
# (TELEGRAM_V5_EON_HU: all three fuse thresholds say 1-0:31.4.0).
OBIS_FIXES = {"FUSE_THRESHOLD_L2": "1-0:51.4.0", "FUSE_THRESHOLD_L3": "1-0:71.4.0"}


def find_reading(frame: MeterFrame, name: str, obis_comment: str) -> Reading:
    obis = OBIS_FIXES.get(name, obis_comment)
    exact = [r for r in frame.readings if r.id == obis]
    # Like dsmr_parser, match on C.D.E where the comment's A-B is wrong or
    # missing ("0-x:", "96.7.9", "1-0:96.7.21" for 0-0:96.7.21).
    cde = obis.split(":")[-1]
    loose = [r for r in frame.readings if r.id.split(":")[-1] == cde]
    return (exact or loose)[0]


def assert_same_instant(actual: datetime, expected_iso: str) -> None:
    expected = datetime.fromisoformat(expected_iso)
    if actual == expected:
        return
    # dsmr_parser takes the offset from the tz database and ignores the
    # meter's S/W flag; we follow the flag, as DSMR defines it.  They differ
    # only where the meter flags a time contrary to the calendar, e.g.
    # Fluvius "200305122139S" (5 March, flagged summer time).
    wall = expected.astimezone(AMSTERDAM).replace(tzinfo=None)
    assert actual.replace(tzinfo=None) == wall
    assert actual.utcoffset() != AMSTERDAM.utcoffset(wall)


def compare(actual: object, expected: object) -> None:
    if isinstance(expected, dict) and "decimal" in expected:
        assert isinstance(actual, int | float) and not isinstance(actual, bool)
        assert Decimal(str(actual)) == Decimal(expected["decimal"])
    elif isinstance(expected, dict) and "datetime" in expected:
        assert actual is not None
        when = actual if isinstance(actual, datetime) else datetime.fromisoformat(str(actual))
        assert_same_instant(when, expected["datetime"])
    elif expected is None:
        assert actual in ("", None)  # dsmr_parser: "()" is None; here an empty string
    elif isinstance(actual, int | float):
        assert Decimal(str(actual)) == Decimal(str(expected))  # "0002" is 2 here
    else:
        assert isinstance(actual, str)
        # Text messages are hex decoded here, kept as hex by dsmr_parser.
        assert str(expected) in (actual, actual.encode("ascii").hex().upper())


def check_assertions(frame: MeterFrame, assertions: list[dict[str, Any]]) -> None:
    for assertion in assertions:
        target, _, attribute = assertion["expr"].rpartition(".")
        name, _, index = target.partition("[")
        reading = find_reading(frame, name, assertion["obis_comment"])
        expected = assertion["expected"]
        if index:
            event = dict(reading.extra)["events"][int(index)]
            field = {"datetime": "captured"}.get(attribute, attribute)
            compare(event[field], expected)
        elif attribute == "unit":
            assert reading.unit == expected, assertion
        elif attribute == "datetime":
            compare(reading.timestamp, expected)
        else:
            compare(reading.value, expected)


# ---------------------------------------------------------- every capture
def test_every_vector_file_is_exercised() -> None:
    used = {p for p in PLAIN} | {p.with_suffix(".json") for p in PLAIN}
    for folder in CIPHERED:
        used |= set(folder.iterdir())
    used.add(DSMR / "README.md")
    assert {p for p in DSMR.rglob("*") if p.is_file()} == used
    assert {p.suffix for p in EASYMETER.iterdir()} == {".txt", ".json"}


@pytest.mark.parametrize("path", PLAIN, ids=_id)
def test_plain_capture(path: Path) -> None:
    data = path.read_bytes()
    expected = json.loads(path.with_suffix(".json").read_text())
    tokens = expected["generic_tokens"]
    events = decode_all(data)
    if tokens.get("crc_ok") is False:
        # lvzon 4.0/5.0: the CRC does not match the (hand-edited) content.
        assert len(events) == 1
        event = events[0]
        assert isinstance(event, Discarded) and event.reason == "checksum"
        assert isinstance(event.error, ChecksumError)
        assert event.error.got == int(tokens["crc_given"], 16)
        assert event.error.expected == int(tokens["crc_calculated"], 16)
        assert event.offset == event.error.offset == 0
        assert event.raw == data
        return
    frame = only_frame(events)
    assert frame.protocol == "dsmr"
    assert frame.offset == 0
    assert frame.raw == data[: len(frame.raw)]
    assert frame.checksum_ok is (True if tokens["crc_given"] else None)
    check_tokens(frame, tokens)
    check_assertions(frame, expected.get("expected_assertions", []))
    # Anything after the telegram is reported once, as garbage (EasyMeter
    # gateway lines), never as part of the frame.
    rest = data[len(frame.raw) :]
    discarded = [e for e in events if isinstance(e, Discarded)]
    if rest.strip(b"\r\n\xff"):
        assert [(e.reason, e.offset) for e in discarded] == [("garbage", len(frame.raw))]
    else:
        assert discarded == []


@pytest.mark.parametrize("path", [p for p in PLAIN if p.parent.name == "lvzon"], ids=_id)
def test_lvzon_content_without_its_bad_crc(path: Path) -> None:
    # The refused lvzon telegrams still parse to their recorded tokens once
    # the CRC is dropped (a DSMR 3 style "!" end line).
    data = path.read_bytes()
    tokens = json.loads(path.with_suffix(".json").read_text())["generic_tokens"]
    body = data[: data.rindex(b"!") + 1] + b"\r\n"
    frame = only_frame(decode_all(body))
    assert frame.checksum_ok is None
    check_tokens(frame, tokens)


@pytest.mark.parametrize("path", PLAIN, ids=_id)
def test_plain_capture_byte_by_byte(path: Path) -> None:
    data = path.read_bytes()
    decoder = DsmrDecoder()
    events = [e for i in range(len(data)) for e in decoder.feed(data[i : i + 1])]
    events += decoder.feed_eof()
    whole = decode_all(data)
    assert [summary(e) for e in events] == [summary(e) for e in whole]


@pytest.mark.parametrize("path", sorted(EASYMETER.glob("*.txt")), ids=_id)
def test_easymeter_readout(path: Path) -> None:
    data = path.read_bytes()
    tokens = json.loads(path.with_suffix(".json").read_text())["generic_tokens"]
    events = decode_all(data)
    frame = only_frame(events)
    assert frame.checksum_ok is None
    assert frame.meter_id == tokens["objects"][-1]["values"][0]["value"]  # 0-0:96.1.255
    check_tokens(frame, tokens)
    assert [e.reason for e in events if isinstance(e, Discarded)] == ["garbage"]


def test_easymeter_readouts_decode_back_to_back() -> None:
    # As the COM-1 gateway sends them: telegram, its trailer lines, 0xFF filler, next.
    parts = [p.read_bytes() for p in sorted(EASYMETER.glob("*.txt"))] * 2
    events = decode_all(b"".join(parts))
    frames = [e for e in events if isinstance(e, MeterFrame)]
    assert len(frames) == 4
    assert [f.offset for f in frames] == [sum(map(len, parts[:i])) for i in range(4)]


# ---------------------------------------------------------- encrypted P1
def ciphered_case(folder: Path) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    expected = json.loads((folder / "expected.json").read_text())
    frame = bytes.fromhex((folder / "frame.hex").read_text().strip())
    key = bytes.fromhex(expected["encryption_key_hex"])
    auth_key = bytes.fromhex(expected["authentication_key_hex"])
    return expected, frame, key, auth_key


@pytest.mark.parametrize("folder", CIPHERED, ids=lambda p: p.name)
def test_ciphered_capture(folder: Path) -> None:
    expected, frame, key, auth_key = ciphered_case(folder)
    assert len(frame) == expected["frame_len"]
    if (folder / "frame.bin").exists():
        assert (folder / "frame.bin").read_bytes() == frame
    glo = dlms_gcm.parse_frame(frame)
    assert glo.security_control == dlms_gcm.SECURITY_AUTH_ENC
    if "frame_counter" in expected:
        assert glo.system_title.hex().upper() == expected["system_title_hex"]
        assert glo.frame_counter == expected["frame_counter"]
        assert glo.tag.hex().upper() == expected["gcm_tag_hex"]
        assert len(glo.ciphertext) == expected["ciphertext_len"]
    plaintext = dlms_gcm.decrypt(glo, key=key, auth_key=auth_key)
    assert plaintext == (folder / expected["expected_plaintext_file"]).read_bytes()

    events = decode_all(frame, key=key, auth_key=auth_key)
    decoded = only_frame(events)
    assert events == [decoded]
    assert decoded.raw == frame and decoded.offset == 0
    tokens = expected["expected_tokens"]
    # The GCM tag is the integrity check; a non-matching inner CRC (the
    # published Smarty capture) is reported, not refused.
    assert decoded.checksum_ok is tokens["crc_ok"]
    check_tokens(decoded, tokens)
    check_assertions(decoded, expected.get("expected_assertions", []))


@pytest.mark.parametrize("folder", CIPHERED, ids=lambda p: p.name)
def test_ciphered_capture_refusals(folder: Path) -> None:
    _, frame, key, auth_key = ciphered_case(folder)

    def refusal(events: list[MeterFrame | Discarded]) -> DecryptionError:
        assert len(events) == 1
        event = events[0]
        assert isinstance(event, Discarded) and event.reason == "decryption"
        assert isinstance(event.error, DecryptionError)
        assert event.raw == frame
        return event.error

    wrong = bytes(b ^ 0x5A for b in key)
    error = refusal(decode_all(frame, key=wrong, auth_key=auth_key))
    assert error.reason == "wrong_key"
    assert refusal(decode_all(frame, auth_key=auth_key)).reason == "no_key"
    wrong_ak = refusal(decode_all(frame, key=key, auth_key=bytes(16)))
    assert wrong_ak.reason == "wrong_key"

    decoder = DsmrDecoder(key=key, auth_key=auth_key)
    first = decoder.feed(frame)
    assert isinstance(first[0], MeterFrame)
    replay = refusal(decoder.feed(frame))
    assert replay.reason == "replay"
    assert replay.offset == len(frame)
    for exc in (error, replay, wrong_ak):
        for secret in (key, wrong, auth_key):
            assert secret.hex() not in str(exc).lower()


def test_encrypt_telegram_round_trip_with_counter() -> None:
    plaintext = (DSMR / "dsmr_parser" / "TELEGRAM_V5.txt").read_bytes()
    key, auth_key = bytes(range(16)), bytes(range(16, 32))
    frames = [
        encrypt_telegram(
            plaintext, key=key, auth_key=auth_key, system_title=b"SAGgp\x01\xbdT", frame_counter=n
        )
        for n in (7, 8, 9, 9, 3, 10)
    ]
    events = decode_all(b"".join(frames), key=key, auth_key=auth_key)
    plain = only_frame(decode_all(plaintext))
    kinds = [e.readings if isinstance(e, MeterFrame) else decryption_reason(e) for e in events]
    assert kinds == [plain.readings] * 3 + ["replay", "replay", plain.readings]
    assert [e.offset for e in events] == [len(frames[0]) * i for i in range(6)]


def test_mixed_plain_and_ciphered_stream() -> None:
    v5 = (DSMR / "dsmr_parser" / "TELEGRAM_V5.txt").read_bytes()
    v4 = (DSMR / "dsmr_parser" / "TELEGRAM_V4_2.txt").read_bytes()
    key = bytes(16)
    ciphered = encrypt_telegram(v4, key=key, system_title=b"ABCDEFGH", frame_counter=1)
    events = decode_all(v5 + ciphered + v5, key=key)
    assert [type(e) for e in events] == [MeterFrame] * 3
    assert [e.offset for e in events] == [0, len(v5), len(v5) + len(ciphered)]
    assert as_frame(events[1]).header == "/KFM5KAIFA-METER"


def test_truncated_and_malformed_ciphered_frames() -> None:
    v5 = (DSMR / "dsmr_parser" / "TELEGRAM_V5.txt").read_bytes()
    key = bytes(16)
    ciphered = encrypt_telegram(v5, key=key, system_title=b"ABCDEFGH", frame_counter=1)

    events = decode_all(ciphered[:-5], key=key)
    assert [decryption_reason(e) for e in events] == ["truncated"]

    bad_length = ciphered[:10] + b"\x83" + ciphered[11:]  # a 3-byte BER length is not P1
    events = decode_all(bad_length + v5, key=key)
    assert isinstance(events[0], Discarded) and isinstance(events[0].error, DecryptionError)
    assert events[0].error.reason == "malformed" and events[0].offset == 0
    assert isinstance(events[-1], MeterFrame) and events[-1].offset == len(bad_length)

    too_short = ciphered[:10] + bytes((16,)) + ciphered[13:40]  # BER short form: 16 < 17
    events = decode_all(too_short, key=key)
    assert decryption_reason(events[0]) == "malformed"

    with pytest.raises(LocalProtocolError) as info:
        DsmrDecoder(key=b"\x11" * 15)
    assert "11" not in str(info.value)


def test_truncated_ciphered_frame_header_only_at_eof() -> None:
    events = decode_all(b"\xdb\x08SAG", key=bytes(16))
    assert [decryption_reason(e) for e in events] == ["truncated"]


# ------------------------------------------------------------ framing
V5 = (DSMR / "dsmr_parser" / "TELEGRAM_V5.txt").read_bytes()
V3 = (DSMR / "dsmr_parser" / "TELEGRAM_V3.txt").read_bytes()


def summary(event: MeterFrame | Discarded) -> tuple[object, ...]:
    if isinstance(event, MeterFrame):
        return ("frame", event)
    return (
        event.reason,
        type(event.error),
        event.error.offset,
        str(event.error),
        event.raw,
        event.offset,
    )


def test_tail_of_a_telegram_before_the_first_full_one() -> None:
    # A port opened mid-telegram: the tail is garbage, the next telegram decodes.
    tail = V5[500:]
    events = decode_all(tail + V5)
    assert [summary(e)[0] for e in events] == ["garbage", "frame"]
    garbage = events[0]
    assert isinstance(garbage, Discarded) and isinstance(garbage.error, FramingError)
    assert garbage.offset == 0 and garbage.raw == tail
    assert events[1].offset == len(tail)


def test_whitespace_between_telegrams_is_not_reported() -> None:
    events = decode_all(b"\r\n\x00" + V5 + b"\r\n\r\n" + V5)
    assert [e.offset for e in events if isinstance(e, MeterFrame)] == [3, 3 + len(V5) + 4]
    assert all(isinstance(e, MeterFrame) for e in events)


def test_telegram_cut_short_by_the_next() -> None:
    events = decode_all(V5[:300] + V5)
    assert [summary(e)[0] for e in events] == ["framing", "frame"]
    assert as_discarded(events[0]).raw == V5[:300]
    assert events[1].offset == 300


def test_bad_crc_is_a_checksum_discard_then_resync() -> None:
    bad = V5.replace(b"!6EEE", b"!6EEF")
    events = decode_all(bad + V5)
    assert isinstance(events[0], Discarded) and events[0].reason == "checksum"
    error = events[0].error
    assert isinstance(error, ChecksumError) and (error.expected, error.got) == (0x6EEE, 0x6EEF)
    assert isinstance(events[1], MeterFrame) and events[1].checksum_ok is True


def test_malformed_checksum_line() -> None:
    events = decode_all(V5.replace(b"!6EEE", b"!6EXE") + V5)
    assert summary(events[0])[0] == "framing"
    assert isinstance(events[-1], MeterFrame)


def test_overflow_is_bounded_and_resynchronises() -> None:
    decoder = DsmrDecoder(max_frame=512)
    endless = b"/ISK5\\2M550T-1012\r\n" + b"1-0:1.8.1(000004.426*kWh)\r\n" * 100
    events = decoder.feed(endless)
    assert decoder.buffered <= 512
    # The first 512 bytes overflow; the rest of the over-long telegram is
    # garbage, reported in runs of at most max_frame bytes.
    reasons = [as_discarded(e).reason for e in events]
    assert reasons[0] == "overflow" and set(reasons[1:]) == {"garbage"}
    assert all(len(as_discarded(e).raw) <= 512 for e in events)
    small = b"/XYZ5 test\r\n\r\n1-0:1.8.1(000004.426*kWh)\r\n!\r\n"
    events = decoder.feed(b"!1234\r\n" + small) + decoder.feed_eof()
    assert isinstance(events[-1], MeterFrame) and events[-1].readings[0].value == 4.426


def test_last_telegram_without_final_newline() -> None:
    assert isinstance(only_frame(decode_all(V5.rstrip(b"\r\n"))), MeterFrame)
    events = DsmrDecoder().feed(V5.rstrip(b"\r\n"))
    assert events == []  # more bytes could still belong to the CRC line


def test_lf_line_endings_and_header_only_telegram() -> None:
    frame = only_frame(decode_all(V3.replace(b"\r\n", b"\n")))
    assert len(frame.readings) == 16
    empty = only_frame(decode_all(b"/XYZ5 test\r\n\r\n!\r\n"))
    assert empty.readings == () and empty.header == "/XYZ5 test"


def test_incomplete_telegram_at_eof() -> None:
    events = decode_all(V5[:-20])
    assert [summary(e)[0] for e in events] == ["framing"]
    assert DsmrDecoder().feed(V5[:-20]) == []


def test_slash_in_noise_is_not_a_header() -> None:
    events = decode_all(b"abc/\x01\x02def\r\n" + V5)
    assert [summary(e)[0] for e in events] == ["garbage", "frame"]


# ------------------------------------------------------------ values
def test_meter_id_timestamp_and_header() -> None:
    frame = only_frame(decode_all((DSMR / "dsmr_parser" / "TELEGRAM_V5_TWO_MBUS.txt").read_bytes()))
    assert frame.meter_id == "E0044007382246019"
    assert frame.header == "/ISK5\\2M550T-1012"
    v4 = only_frame(decode_all((DSMR / "dsmr_parser" / "TELEGRAM_V4_2.txt").read_bytes()))
    assert v4.timestamp is not None and v4.timestamp.isoformat() == "2016-11-13T20:57:57+01:00"
    assert v4.meter_id == "3960221976967177082151037881335713"  # not printable: kept
    iskra = only_frame(decode_all((DSMR / "dsmr_parser" / "TELEGRAM_ISKRA_IE.txt").read_bytes()))
    assert iskra.header == "/ISk5\x02MIE5T-200" and iskra.meter_id == "09610"


def test_two_mbus_channels_carry_their_own_time() -> None:
    frame = only_frame(decode_all((DSMR / "dsmr_parser" / "TELEGRAM_V5_TWO_MBUS.txt").read_bytes()))
    by_id = {r.id: r for r in frame.readings}
    gas = by_id["0-2:24.2.1"]
    assert (gas.value, gas.unit) == (246.138, "m3")
    assert gas.timestamp is not None and gas.timestamp.isoformat() == "2020-04-26T22:30:01+02:00"
    # An unused channel reports the Unix epoch in CET: 1970, not 2070.
    unused = by_id["0-1:24.2.1"]
    assert unused.timestamp == datetime(1970, 1, 1, tzinfo=UTC)
    assert unused.to_json()["timestamp"] == "1970-01-01T01:00:00+01:00"


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("161113205757W", "2016-11-13T20:57:57+01:00"),
        ("200512135409S", "2020-05-12T13:54:09+02:00"),
        ("090212160000", "2009-02-12T16:00:00+01:00"),
        ("090712160000", "2009-07-12T16:00:00+02:00"),
        ("700101010000W", "1970-01-01T01:00:00+01:00"),
    ],
)
def test_parse_timestamp(text: str, iso: str) -> None:
    ts = parse_timestamp(text)
    assert ts is not None and ts.isoformat() == iso


@pytest.mark.parametrize(
    "text", ["632525252525W", "16111320575W", "161113205757X", "", "1611132057570"]
)
def test_parse_timestamp_rejects(text: str) -> None:
    assert parse_timestamp(text) is None


def test_odd_values_stay_text() -> None:
    lines = [
        "1-0:1.8.1(1_0*kWh)",
        "1-0:1.8.2(nan*kWh)",
        "1-0:2.8.1(1e5*kWh)",
        "1-0:2.8.2(-0.5*kW)",
        "1-0:1.7.0( 12 )",
        "1-0:2.7.0(" + "9" * 5000 + ")",
        "1-0:21.7.0(1.*kW)",
    ]
    telegram = "/TST5 test\r\n\r\n" + "\r\n".join(lines) + "\r\n!"
    raw = telegram.encode()
    raw += f"{crc16_arc_table(raw):04X}\r\n".encode()
    frame = only_frame(decode_all(raw))
    assert [r.value for r in frame.readings] == ["1_0", "nan", "1e5", -0.5, " 12 ", "9" * 5000, 1.0]


def test_generic_multi_value_line() -> None:
    telegram = b"/TST5 test\r\n\r\n0-0:96.99.1(1)(abc)(2.5*kW)\r\n!"
    frame = only_frame(decode_all(telegram + f"{crc16_arc_table(telegram):04X}\r\n".encode()))
    reading = frame.readings[0]
    assert (reading.value, reading.unit) == (2.5, "kW")
    assert reading.to_json()["values"] == [
        {"value": 1, "unit": None},
        {"value": "abc", "unit": None},
        {"value": 2.5, "unit": "kW"},
    ]


def test_crc16_arc_matches_the_table_implementation() -> None:
    for data in (b"", b"\x00", b"123456789", V5, V5 * 50):
        assert crc16_arc(data) == crc16_arc_table(data)
    assert crc16_arc(b"123456789") == 0xBB3D  # the CRC-16/ARC check value


def test_decoder_errors_are_gateway_errors() -> None:
    with pytest.raises(GatewayError):
        DsmrDecoder(max_frame=10)
    for event in decode_all(b"\xdb\x08" + bytes(20) + b"/" + bytes(300)):
        assert isinstance(as_discarded(event).error, GatewayError)
