"""M-Bus link layer: frame formats, check sums, C field builders, the stream scanner."""

from __future__ import annotations

import pytest

from gateway.errors import ChecksumError, FramingError, LocalProtocolError
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import SecondaryAddress
from gateway.protocols.mbus.link import (
    ControlFrame,
    FrameScanner,
    LongFrame,
    ShortFrame,
    SingleChar,
    baud_switch,
    checksum,
    decode_frame,
    req_ud1,
    req_ud2,
    snd_nke,
    snd_ud,
)
from gateway.protocols.mbus.master import select_frame


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# Examples from MBUS_FACTS §1/§3 (check sums computed there, cross-checked here).
@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (req_ud2(1, fcb=False), "10 5B 01 5C 16"),
        (req_ud2(1, fcb=True), "10 7B 01 7C 16"),
        (req_ud1(1, fcb=True), "10 7A 01 7B 16"),
        (snd_nke(0xFD), "10 40 FD 3D 16"),
        (snd_ud(0xFE, 0x51, h("01 7A 08")), "68 06 06 68 53 FE 51 01 7A 08 25 16"),
        (baud_switch(1, 9600), "68 03 03 68 53 01 BD 11 16"),
        (select_frame(SecondaryAddress(id="12345678")),
         "68 0B 0B 68 53 FD 52 78 56 34 12 FF FF FF FF B2 16"),
    ],
)  # fmt: skip
def test_builders_match_the_published_examples(frame: object, wire: str) -> None:
    encoded = frame.encode()  # type: ignore[attr-defined]
    assert encoded == h(wire)
    assert decode_frame(encoded) == frame


def test_frame_classes_round_trip_and_report_direction() -> None:
    assert decode_frame(b"\xe5") == SingleChar()
    rsp = LongFrame(control=0x08, address=5, ci=0x72, data=bytes(range(12)))
    assert decode_frame(rsp.encode()) == rsp and not rsp.from_master
    ctl = ControlFrame(control=0x53, address=5, ci=0xB8)
    assert isinstance(decode_frame(ctl.encode()), ControlFrame) and ctl.from_master
    assert ShortFrame(control=0x40, address=3).from_master


def test_check_sum_is_the_byte_sum() -> None:
    assert checksum(h("08 01 72")) == 0x7B
    assert checksum(bytes([0xFF] * 3)) == 0xFD


@pytest.mark.parametrize(
    ("wire", "error", "offset"),
    [
        ("10 5B 01 5D 16", ChecksumError, 3),
        ("68 03 03 68 53 01 BD 12 16", ChecksumError, 7),
        ("68 03 04 68 53 01 BD 11 16", FramingError, 0),
        ("68 00 00 68 08 16", FramingError, 1),
        ("68 03 03 68 53 01 BD 11 17", FramingError, 8),
        ("68 04 04 68 53 01 BD 11 16", FramingError, 8),
        ("E6", FramingError, 0),
    ],
)
def test_malformed_frames_raise_typed_errors(wire: str, error: type[Exception], offset: int) -> None:
    with pytest.raises(error) as info:
        decode_frame(h(wire))
    assert info.value.offset == offset  # type: ignore[attr-defined]


def test_checksum_error_carries_both_sums() -> None:
    with pytest.raises(ChecksumError) as info:
        decode_frame(h("10 5B 01 5D 16"))
    assert (info.value.expected, info.value.got) == (0x5C, 0x5D)


def test_builders_refuse_bad_fields() -> None:
    with pytest.raises(LocalProtocolError):
        ShortFrame(control=0x5B, address=256)
    with pytest.raises(LocalProtocolError):
        snd_ud(1, 0x51, bytes(253))
    with pytest.raises(LocalProtocolError):
        baud_switch(1, 115200)
    with pytest.raises(LocalProtocolError):
        ControlFrame(control=0x53, address=1, ci=0xB8, data=b"\x00")


# ------------------------------------------------------------------ scanner
RSP = LongFrame(control=0x08, address=1, ci=0x72, data=bytes(12)).encode()


def scan_all(data: bytes, chunk: int | None = None) -> list[object]:
    sc = FrameScanner()
    out: list[object] = []
    if chunk is None:
        out += sc.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += sc.feed(data[i : i + chunk])
    out += sc.feed_eof()
    return out


def test_scanner_splits_a_stream_and_gives_offsets_and_bytes() -> None:
    stream = b"\xe5" + req_ud2(1, fcb=True).encode() + RSP
    items = scan_all(stream)
    assert [(type(f).__name__, at) for f, at, _raw in items] == [  # type: ignore[misc]
        ("SingleChar", 0), ("ShortFrame", 1), ("LongFrame", 6)
    ]
    assert items[2][2] == RSP  # type: ignore[index]


def test_scanner_resynchronises_after_garbage_and_bad_frames() -> None:
    bad_sum = RSP[:-2] + bytes([(RSP[-2] + 1) & 0xFF]) + b"\x16"
    broken = h("68 05 06 68")  # length bytes differ
    stream = b"\x00\x01\x02" + RSP + bad_sum + broken + RSP + b"\x99"
    items = scan_all(stream)
    kinds = [i.reason if isinstance(i, Discarded) else type(i[0]).__name__ for i in items]
    assert kinds == ["garbage", "LongFrame", "checksum", "framing", "LongFrame", "garbage"]
    framing = items[3]
    assert isinstance(framing, Discarded) and framing.offset == 3 + 2 * len(RSP)
    assert framing.raw == broken
    assert isinstance(items[2], Discarded) and isinstance(items[2].error, ChecksumError)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50])
def test_scanner_gives_the_same_events_for_any_chunking(chunk: int) -> None:
    stream = b"\x00" + RSP + b"\xe5\x10\x5b" + RSP + h("68 00 00 68 08 16") + RSP[:20]

    def norm(items: list[object]) -> list[object]:
        return [
            (i.reason, i.offset, i.raw, str(i.error)) if isinstance(i, Discarded) else i
            for i in items
        ]

    assert norm(scan_all(stream, chunk)) == norm(scan_all(stream))


def test_scanner_reports_a_frame_cut_by_the_end_of_the_stream() -> None:
    items = scan_all(RSP[:-3])
    assert len(items) == 1 and isinstance(items[0], Discarded) and items[0].reason == "framing"
    assert "ended inside a frame" in str(items[0].error)


def test_scanner_holds_at_most_one_frame() -> None:
    sc = FrameScanner()
    sc.feed(h("68 FF FF 68") + bytes(100))
    assert sc.pending == 104 and sc.needed == 255 + 6 - 104
    sc.feed(bytes(100_000))  # nothing ends it: garbage, reported in bounded pieces
    assert sc.pending == 0


def test_garbage_can_be_flushed_at_once_for_the_master() -> None:
    sc = FrameScanner()
    assert sc.feed(b"\xa5\xe4\x00") == []  # the decoder waits for the next frame start
    (flushed,) = sc.flush_garbage()
    assert isinstance(flushed, Discarded) and flushed.raw == b"\xa5\xe4\x00"
