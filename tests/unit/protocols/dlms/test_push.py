"""DlmsPushDecoder: Nordic HDLC pushes, wrapper pushes with MYDUMMYGLOBALKEY, the Austrian
M-Bus-carried push, segmentation, the decryption reasons, replay, resynchronisation, and
``han-gateway decode --protocol dlms``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import ChecksumError, DecryptionError, LocalProtocolError, UnsupportedError
from gateway.model import MeterFrame, Reading
from gateway.protocols import dlms_gcm
from gateway.protocols._events import Discarded
from gateway.protocols.dlms import axdr, security
from gateway.protocols.dlms.apdu import (
    CosemAttributeDescriptor,
    DataNotification,
    EventNotification,
    GeneralGloCiphering,
)
from gateway.protocols.dlms.hdlc import (
    LLC_RESPONSE,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    control_i,
    control_u,
)
from gateway.protocols.dlms.push import DlmsEvent, DlmsPushDecoder
from gateway.protocols.dlms.wrapper import WrapperFrame
from gateway.protocols.obis import ObisCode

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
PUSHES = json.loads((VECTORS / "dlms_cosem" / "udp_wrapper_general_glo_ciphering.json")
                    .read_text())
WRAPPED = [bytes.fromhex(c["wrapper_frame_hex"]) for c in PUSHES["cases"]]
DUMMY_KEY = PUSHES["encryption_key_ascii"].encode()
BYTE_VECTORS = json.loads((VECTORS / "dlms_cosem" / "test_byte_vectors.json").read_text())
AMSHAN = {v: json.loads((VECTORS / "amshan" / f"{v}.json").read_text())
          for v in ("aidon", "kaifa", "kamstrup")}

# DLMS_FACTS §3: NOE Kaifa MA309, two M-Bus long frames, encryption only (SC 0x20)
AUSTRIA_KEY = bytes.fromhex("36C66639E48A8CA4D6BC8B282A793BBB")
AUSTRIA = bytes.fromhex(
    "68FAFA6853FF000167DB084B464D675000000981F8200000002388D5AB4F97515AAFC6B88D2F85DAA7A0E3C0C4"
    "0D004535C397C9D037AB7DBDA329107615444894A1A0DD7E85F02D496CECD3FF46AF5FB3C9229CFE8F3EE4606AB2"
    "E1F409F36AAD2E50900A4396FC6C2E083F373233A69616950758BFC7D63A9E9B6E99E21B2CBC2B934772CA51FD4D"
    "69830711CAB1F8CFF25F0A329337CBA51904F0CAED88D61968743C8454BA922EB00038182C22FE316D16F2A9F544D"
    "6F75D51A4E92A1C4EF8AB19A2B7FEAA32D0726C0ED80229AE6C0F7621A4209251ACE2B2BC66FF0327A653BB686C75"
    "6BE033C7A281F1D2A7E1FA31C3983E15F8FD16CC5787E6F5171668"
    "14146853FF110167419A3CFDA44BE438C96F0E38BF83D98316")
AUSTRIA_FRAMES = [AUSTRIA[:256], AUSTRIA[256:]]

METER = HdlcAddress(upper=1, lower=17)
CLIENT = HdlcAddress(upper=16)


def decode(data: bytes, **kwargs: Any) -> list[DlmsEvent]:
    decoder = DlmsPushDecoder(**kwargs)
    return decoder.feed(data) + decoder.feed_eof()


def frames(events: list[DlmsEvent]) -> list[MeterFrame]:
    return [e for e in events if isinstance(e, MeterFrame)]


def discards(events: list[DlmsEvent]) -> list[Discarded]:
    return [e for e in events if isinstance(e, Discarded)]


def reasons(events: list[DlmsEvent]) -> list[str]:
    return [getattr(e.error, "reason", e.reason) for e in discards(events)]


def values(frame: MeterFrame) -> dict[str, Any]:
    return {r.id: r.value for r in frame.readings}


def hdlc_push(info: bytes, *, ui: bool = True) -> bytes:
    control = control_u(FrameKind.UI) if ui else control_i(0, 0)
    return HdlcFrame(destination=CLIENT, source=METER, control=control, information=info).encode()


def summary(events: list[DlmsEvent]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, MeterFrame):
            out.append(("frame", e.to_json(), e.raw, e.offset, e.header))
        else:
            out.append((e.reason, type(e.error), str(e.error), e.error.offset, e.raw, e.offset))
    return out


# ------------------------------------------------------------- Nordic HDLC
@pytest.mark.parametrize(("vendor", "name"), [(v, n) for v, data in AMSHAN.items()
                                              for n in data["frames"] if not n.startswith("NOTIF")])
def test_every_nordic_push_in_an_hdlc_frame(vendor: str, name: str) -> None:
    info = bytes.fromhex(AMSHAN[vendor]["frames"][name])
    for ui in (True, False):  # Aidon and Kamstrup push UI frames, Kaifa I frames
        events = decode(hdlc_push(info, ui=ui))
        (frame,) = events
        assert isinstance(frame, MeterFrame)
        assert frame.protocol == "dlms" and frame.checksum_ok is True
        assert frame.offset == 0 and frame.raw == hdlc_push(info, ui=ui)
        power = [r for r in frame.readings if r.id.endswith(":1.7.0")]
        assert len(power) == 1 and power[0].unit == "W"


def test_real_aidon_ui_frame() -> None:
    raw = bytes.fromhex(BYTE_VECTORS["vectors"][40]["hex"])  # dlms-cosem's Aidon UI frame
    (frame,) = decode(raw)
    assert isinstance(frame, MeterFrame)
    got = values(frame)
    assert got["1-0:1.7.0"] == 1122 and got["1-0:32.7.0"] == 230.7
    assert got["0-0:1.0.0"] == "2019-12-16T07:59:40"
    assert frame.timestamp is None  # Aidon sends no UTC deviation
    assert decode(raw, meter_tz=timezone(timedelta(hours=1)))[0].timestamp == datetime(  # type: ignore[union-attr]
        2019, 12, 16, 7, 59, 40, tzinfo=timezone(timedelta(hours=1)))


def test_segmented_hdlc_push_is_joined() -> None:
    info = bytes.fromhex(AMSHAN["aidon"]["frames"]["se_list"])
    parts = [info[:200], info[200:400], info[400:]]
    raws = [HdlcFrame(destination=CLIENT, source=METER, control=control_u(FrameKind.UI),
                      information=part, segmented=i < 2).encode() for i, part in enumerate(parts)]
    events = decode(b"".join(raws))
    (frame,) = events
    assert isinstance(frame, MeterFrame)
    assert frame.raw == b"".join(raws) and frame.offset == 0
    assert values(frame) == values(frames(decode(hdlc_push(info)))[0])
    # a push whose last segment never comes is reported at the end of the stream
    tail = decode(raws[0])
    assert [d.reason for d in discards(tail)] == ["framing"]


def test_link_frames_are_ignored_and_other_apdus_unsupported() -> None:
    snrm = HdlcFrame(destination=METER, source=CLIENT, control=control_u(FrameKind.SNRM)).encode()
    get = hdlc_push(LLC_RESPONSE + bytes.fromhex("C401C1000600001391"), ui=False)
    events = decode(snrm + get)
    assert [d.reason for d in discards(events)] == ["unsupported"]
    assert discards(events)[0].offset == len(snrm)
    rej = HdlcFrame(destination=METER, source=CLIENT, control=0x19).encode()  # REJ
    assert [d.reason for d in discards(decode(rej))] == ["unsupported"]


def test_event_notification_push() -> None:
    event = EventNotification(
        attribute=CosemAttributeDescriptor(class_id=3, instance=ObisCode(1, 0, 1, 8, 0),
                                           attribute=2),
        value=axdr.double_long_unsigned(42))
    (frame,) = decode(hdlc_push(LLC_RESPONSE + event.encode()))
    assert isinstance(frame, MeterFrame)
    assert frame.readings == (Reading(id="1-0:1.8.0", value=42),)


# ---------------------------------------------------------- wrapper pushes
def test_wrapper_pushes_decrypt_with_mydummyglobalkey() -> None:
    events = decode(b"".join(WRAPPED), key=DUMMY_KEY, auth_key=DUMMY_KEY)
    got = frames(events)
    assert len(got) == len(WRAPPED) == 13 and not discards(events)
    offset = 0
    for frame, raw, case in zip(got, WRAPPED, PUSHES["cases"], strict=True):
        assert frame.meter_id == case["system_title_hex"]
        assert frame.offset == offset and frame.raw == raw
        assert frame.checksum_ok is True  # the GCM tag verified
        plain = DataNotification.decode(bytes.fromhex(case["expected_plaintext_apdu_hex"]))
        assert isinstance(plain.body.value, bytes)
        assert frame.readings == (Reading(id="body", value=plain.body.value.hex().upper()),)
        offset += len(raw)


def test_replayed_pushes_are_refused_and_counted() -> None:
    decoder = DlmsPushDecoder(key=DUMMY_KEY, auth_key=DUMMY_KEY)
    first = decoder.feed(b"".join(WRAPPED))
    assert len(frames(first)) == 13
    again = decoder.feed(WRAPPED[0] + WRAPPED[-1])
    assert [getattr(d.error, "reason", None) for d in discards(again)] == ["replay", "replay"]
    assert decoder.replays == 2
    # a forged, failing frame does not move the counter on
    fresh = DlmsPushDecoder(key=DUMMY_KEY, auth_key=DUMMY_KEY)
    forged = bytearray(WRAPPED[5])
    forged[-1] ^= 1
    assert reasons(fresh.feed(bytes(forged))) == ["wrong_key"]
    assert len(frames(fresh.feed(WRAPPED[5]))) == 1


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({}, "no_key"),
    ({"key": bytes(16), "auth_key": DUMMY_KEY}, "wrong_key"),
    ({"key": DUMMY_KEY, "auth_key": bytes(16)}, "wrong_key"),
    ({"key": DUMMY_KEY}, "no_key"),  # authenticated: the authentication key is needed
])
def test_key_problems_have_reasons(kwargs: dict[str, bytes], reason: str) -> None:
    events = decode(WRAPPED[0], **kwargs)
    (discarded,) = events
    assert isinstance(discarded, Discarded) and discarded.reason == "decryption"
    assert isinstance(discarded.error, DecryptionError) and discarded.error.reason == reason
    assert discarded.offset == 0 and discarded.raw == WRAPPED[0]


def _wrap_glo(security_control: int, ciphered: bytes, counter: int = 1) -> bytes:
    glo = GeneralGloCiphering(system_title=b"ABCDEFGH", security_control=security_control,
                              invocation_counter=counter, ciphered=ciphered)
    return WrapperFrame(source_wport=1, destination_wport=16, apdu=glo.encode()).encode()


def test_not_encrypted_compressed_and_truncated() -> None:
    notification = DataNotification(long_invoke_id_and_priority=1,
                                    body=axdr.unsigned(1)).encode()
    assert reasons(decode(_wrap_glo(0x00, notification), key=DUMMY_KEY)) == ["not_encrypted"]
    assert reasons(decode(_wrap_glo(0xB0, bytes(20)), key=DUMMY_KEY,
                          auth_key=DUMMY_KEY)) == ["compressed"]
    assert reasons(decode(_wrap_glo(0x30, bytes(5)), key=DUMMY_KEY,
                          auth_key=DUMMY_KEY)) == ["truncated"]
    glo = _wrap_glo(0x30, bytes(40))[8:]
    assert reasons(decode(glo[:30], key=DUMMY_KEY)) == ["truncated"]  # stream ends inside


def test_broadcast_key_and_ded_ciphering() -> None:
    notification = DataNotification(long_invoke_id_and_priority=1,
                                    body=axdr.unsigned(7)).encode()
    broadcast = bytes(range(16))
    raw = security.cipher_apdu(notification, kind="general-glo", security_control=0x70,
                               system_title=b"ABCDEFGH", invocation_counter=3, key=broadcast,
                               auth_key=DUMMY_KEY)
    assert reasons(decode(raw, key=DUMMY_KEY, auth_key=DUMMY_KEY)) == ["no_key"]
    (frame,) = decode(raw, key=DUMMY_KEY, auth_key=DUMMY_KEY, broadcast_key=broadcast)
    assert isinstance(frame, MeterFrame) and values(frame) == {"body": 7}
    ded = security.cipher_apdu(notification, kind="general-ded", security_control=0x30,
                               system_title=b"ABCDEFGH", invocation_counter=3, key=DUMMY_KEY,
                               auth_key=DUMMY_KEY)
    wrapped = WrapperFrame(source_wport=1, destination_wport=16, apdu=ded).encode()
    assert reasons(decode(wrapped, key=DUMMY_KEY, auth_key=DUMMY_KEY)) == ["no_key"]


def test_ciphered_dsmr_telegram_is_left_to_the_dsmr_decoder() -> None:
    raw = dlms_gcm.encrypt(b"/ISK5\\2M550T-1012\r\n\r\n!1234\r\n", key=DUMMY_KEY,
                           auth_key=DUMMY_KEY, system_title=b"SAGxxxxx", frame_counter=1)
    (discarded,) = decode(raw, key=DUMMY_KEY, auth_key=DUMMY_KEY)
    assert isinstance(discarded, Discarded) and isinstance(discarded.error, UnsupportedError)
    assert "dsmr" in str(discarded.error)


# --------------------------------------------------------- Austrian M-Bus
def test_austrian_mbus_push() -> None:
    (frame,) = decode(AUSTRIA, key=AUSTRIA_KEY)
    assert isinstance(frame, MeterFrame)
    assert frame.meter_id == "4B464D6750000009"  # the system title ("KFM" …)
    assert frame.timestamp == datetime(2021, 9, 27, 9, 47, 15, tzinfo=timezone(timedelta(hours=2)))
    assert frame.checksum_ok is True and frame.raw == AUSTRIA and frame.offset == 0
    got = {r.id: (r.value, r.unit) for r in frame.readings}
    assert got["1-0:1.8.0"] == (12937, "Wh")
    assert got["1-0:32.7.0"] == (233.7, "V")
    assert got["1-0:31.7.0"] == (0.0, "A")
    assert got["1-0:13.7.0"] == (1.0, None)  # power factor: scaler -3, unit "count"
    assert got["body.34"] == ("181220000009", None)  # the meter number, unnamed
    assert len([r for r in frame.readings if r.id.startswith("1-0:")]) == 11


def test_austrian_push_with_a_wrong_key_and_without_one() -> None:
    assert reasons(decode(AUSTRIA, key=bytes(16))) == ["wrong_key"]  # no tag: the APDU check
    assert reasons(decode(AUSTRIA)) == ["no_key"]


def test_mbus_segment_errors() -> None:
    first, last = AUSTRIA_FRAMES
    # the last segment alone
    events = decode(last, key=AUSTRIA_KEY)
    assert [d.reason for d in discards(events)] == ["framing"]
    # the first segment twice: the first partial APDU is dropped, the second completes
    events = decode(first + first + last, key=AUSTRIA_KEY)
    assert [type(e) for e in events] == [Discarded, MeterFrame]
    assert events[0].offset == 0 and events[1].offset == len(first)
    # a damaged checksum
    broken = bytearray(first)
    broken[-2] ^= 1
    events = decode(bytes(broken) + last, key=AUSTRIA_KEY)
    assert isinstance(events[0], Discarded) and isinstance(events[0].error, ChecksumError)
    # a plain M-Bus RSP_UD is not DLMS
    rsp_ud = bytes.fromhex("68 06 06 68 08 01 72 00 00 00 7B 16".replace(" ", ""))
    assert [d.reason for d in discards(decode(rsp_ud))] == ["unsupported"]
    # a stream that ends before the last segment
    assert [d.reason for d in discards(decode(first, key=AUSTRIA_KEY))] == ["framing"]


# ------------------------------------------------------------ the stream
def mixed_stream() -> bytes:
    aidon = hdlc_push(bytes.fromhex(AMSHAN["aidon"]["frames"]["no_list_3"]))
    kaifa = hdlc_push(bytes.fromhex(AMSHAN["kaifa"]["frames"]["se_list"]), ui=False)
    raw_glo = WrapperFrame.decode(WRAPPED[3]).apdu  # a bare general-glo-ciphering APDU
    return (b"\x00\x00junk" + aidon + b"\x7e\x7e" + WRAPPED[0] + AUSTRIA + b"\x68\x01"
            + kaifa + raw_glo + b"\xff" * 5)


def decode_mixed(chunks: list[bytes]) -> list[DlmsEvent]:
    # one key for all: AUSTRIA's frames use another, so they give wrong_key here
    decoder = DlmsPushDecoder(key=DUMMY_KEY, auth_key=DUMMY_KEY)
    events: list[DlmsEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.feed_eof()


def test_a_mixed_stream_is_sorted_out() -> None:
    stream = mixed_stream()
    events = decode_mixed([stream])
    kinds = [(type(e).__name__, e.reason if isinstance(e, Discarded) else e.meter_id)
             for e in events]
    assert kinds == [
        ("Discarded", "garbage"),
        ("MeterFrame", "7359992892587665"),
        ("MeterFrame", "2F19229199164103"),
        ("Discarded", "decryption"),
        ("Discarded", "garbage"),
        ("MeterFrame", "7340734073407340"),
        ("MeterFrame", "2F19229199164103"),
        ("Discarded", "garbage"),
    ]
    assert events[0].offset == 0 and events[1].offset == 6  # type: ignore[union-attr]
    austria = events[3]
    assert isinstance(austria, Discarded) and austria.offset == stream.index(AUSTRIA)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 255])
def test_any_chunking_gives_the_same_events(step: int) -> None:
    stream = mixed_stream()
    whole = summary(decode_mixed([stream]))
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    assert summary(decode_mixed(chunks)) == whole


def test_bounded_buffer_and_garbage() -> None:
    decoder = DlmsPushDecoder()
    events = decoder.feed(b"\x55" * 20_000)
    assert decoder.buffered == 0
    assert all(len(d.raw) <= 4096 for d in discards(events))
    with pytest.raises(LocalProtocolError):
        DlmsPushDecoder(key=b"short")
    with pytest.raises(LocalProtocolError):
        DlmsPushDecoder(max_frame=100)
    with pytest.raises(LocalProtocolError):
        DlmsPushDecoder(max_junk=1)


def test_oversized_segments_overflow() -> None:
    parts = [HdlcFrame(destination=CLIENT, source=METER, control=control_u(FrameKind.UI),
                       information=bytes(1000), segmented=True).encode() for _ in range(5)]
    events = decode(b"".join(parts), max_frame=2048)
    assert "overflow" in [d.reason for d in discards(events)]


# --------------------------------------------------------------------- CLI
def test_decode_cli_prints_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "wrapper.bin"
    capture.write_bytes(b"".join(WRAPPED))
    key = DUMMY_KEY.hex()
    assert main(["decode", "--protocol", "dlms", "--key", key, "--auth-key", key,
                 str(capture)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 13
    assert lines[0] == {"protocol": "dlms", "meter_id": "2F19229199164103", "timestamp": None,
                        "checksum_ok": True, "readings": [
                            {"id": "body", "unit": None,
                             "value": "125A8591360000000049000000110000000A5A8513D014800000000D"
                                      "0000000A0100"}]}


def test_decode_cli_wrong_key_goes_to_stderr(tmp_path: Path) -> None:
    capture = tmp_path / "austria.bin"
    capture.write_bytes(AUSTRIA)
    proc = subprocess.run([sys.executable, "-m", "gateway", "decode", "--protocol", "dlms",
                           "--key", "00" * 16, str(capture)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == b""
    error = json.loads(proc.stderr.decode().splitlines()[0])
    assert error["error"] == "DecryptionError" and error["offset"] == 0
    ok = subprocess.run([sys.executable, "-m", "gateway", "decode", "--protocol", "dlms",
                         "--key", AUSTRIA_KEY.hex(), "-"], input=AUSTRIA, capture_output=True,
                        timeout=60, check=False)
    assert ok.returncode == 0
    frame = json.loads(ok.stdout)
    assert frame["timestamp"] == "2021-09-27T09:47:15+02:00"
    assert {"id": "1-0:1.8.0", "value": 12937, "unit": "Wh"} in frame["readings"]
