"""The TCP/UDP wrapper (IEC 62056-47): header fields, the dlms-cosem UDP pushes, stream
reassembly and resynchronisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import FramingError, LocalProtocolError
from gateway.protocols._events import Discarded
from gateway.protocols.dlms.wrapper import (
    WrapperDecoder,
    WrapperEvent,
    WrapperFrame,
    WrapperReceived,
)

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
PUSHES = json.loads((VECTORS / "dlms_cosem" / "udp_wrapper_general_glo_ciphering.json")
                    .read_text())
FRAMES = [bytes.fromhex(c["wrapper_frame_hex"]) for c in PUSHES["cases"]]

GET = bytes.fromhex("C001C100080000010000FF0200")


def test_green_book_example() -> None:
    # DLMS_FACTS §2: public client 16 to management logical device 1, a GET request
    frame = WrapperFrame(source_wport=16, destination_wport=1, apdu=GET)
    raw = bytes.fromhex("0001" "0010" "0001" "000D") + GET
    assert frame.encode() == raw
    assert WrapperFrame.decode(raw) == frame


@pytest.mark.parametrize("case", range(len(PUSHES["cases"])))
def test_dlms_cosem_pushes_have_the_header_they_state(case: int) -> None:
    header = PUSHES["cases"][case]["wrapper_header"]
    frame = WrapperFrame.decode(FRAMES[case])
    assert header["version"] == 1
    assert (frame.source_wport, frame.destination_wport, len(frame.apdu)) == (
        header["source_wport"], header["destination_wport"], header["length"])
    assert frame.apdu[0] == 0xDB
    assert frame.encode() == FRAMES[case]


@pytest.mark.parametrize("hex_", ["0001000100", "0002000100010001DB", "00010001000100020F"])
def test_bad_pdus(hex_: str) -> None:
    with pytest.raises(FramingError):
        WrapperFrame.decode(bytes.fromhex(hex_))


def test_encoding_limits() -> None:
    with pytest.raises(LocalProtocolError):
        WrapperFrame(source_wport=70000, destination_wport=1, apdu=b"").encode()
    with pytest.raises(LocalProtocolError):
        WrapperFrame(source_wport=1, destination_wport=1, apdu=bytes(70000)).encode()


def summary(events: list[WrapperEvent]) -> list[tuple[object, ...]]:
    return [("frame", e.frame, e.offset) if isinstance(e, WrapperReceived)
            else (e.reason, str(e.error), e.raw, e.offset) for e in events]


def test_stream_split_anywhere_gives_the_same_pdus() -> None:
    stream = b"".join(FRAMES)
    decoder = WrapperDecoder()
    whole = decoder.feed(stream) + decoder.feed_eof()
    assert [e.frame.encode() for e in whole if isinstance(e, WrapperReceived)] == FRAMES
    for cut in (1, 7, 8, 9, 78, 100):
        decoder = WrapperDecoder()
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) + decoder.feed_eof()
        assert summary(events) == summary(whole)


def test_garbage_is_skipped_to_the_next_header() -> None:
    decoder = WrapperDecoder()
    events = decoder.feed(b"\x55\x55\x00" + FRAMES[0] + b"\x02\x03") + decoder.feed_eof()
    kinds = [type(e) for e in events]
    assert kinds == [Discarded, WrapperReceived, Discarded]
    received = events[1]
    assert isinstance(received, WrapperReceived) and received.offset == 3
    assert decoder.buffered == 0


def test_oversized_and_truncated_pdus() -> None:
    decoder = WrapperDecoder(max_apdu=10)
    events = decoder.feed(FRAMES[0])
    assert isinstance(events[0], Discarded) and "exceeds" in str(events[0].error)
    decoder = WrapperDecoder()
    assert decoder.feed(FRAMES[0][:20]) == []
    tail = decoder.feed_eof()
    assert len(tail) == 1 and isinstance(tail[0], Discarded) and tail[0].offset == 0
