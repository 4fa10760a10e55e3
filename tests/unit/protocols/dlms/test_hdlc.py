"""HDLC (IEC 62056-46): CRC, addresses, control fields, frames from the Green Book, real
meters and amshan's reader tests, the stream decoder, segments, SNRM/UA parameters and the
sans-IO link (client against server, in memory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import ChecksumError, FramingError, LocalProtocolError, UnsupportedError
from gateway.protocols._events import Discarded
from gateway.protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    ApduReceived,
    Connected,
    Disconnected,
    FrameKind,
    FrameReceived,
    HdlcAddress,
    HdlcEvent,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcLink,
    HdlcParameters,
    LinkEvent,
    LinkState,
    SegmentAssembler,
    control_i,
    control_s,
    control_u,
    crc16_x25,
    split_llc,
)

VECTORS = Path(__file__).resolve().parents[4].parent / "shared" / "vectors" / "dlms"
AMSHAN_HDLC = json.loads((VECTORS / "amshan" / "hdlc.json").read_text())

CLIENT = HdlcAddress(upper=16)
SERVER = HdlcAddress(upper=1, lower=17)


def summary(events: list[HdlcEvent]) -> list[tuple[object, ...]]:
    """Events as comparable tuples (exceptions compare by identity)."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, FrameReceived):
            out.append(("frame", e.frame, e.raw, e.offset))
        else:
            out.append((e.reason, type(e.error), str(e.error), e.error.offset, e.raw, e.offset))
    return out


def decode_all(data: bytes, **kwargs: bool) -> list[HdlcEvent]:
    decoder = HdlcFrameDecoder(**kwargs)
    return decoder.feed(data) + decoder.feed_eof()


def frames_of(events: list[HdlcEvent]) -> list[HdlcFrame]:
    return [e.frame for e in events if isinstance(e, FrameReceived)]


# ------------------------------------------------------------------- CRC
def test_crc16_x25_check_value_and_the_green_book_example() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the catalogue check value
    # GB9 8.4.1.5 / dlms-cosem TestCrc: over 03 3F the FCS octets are 5B EC
    assert crc16_x25(bytes.fromhex("033F")).to_bytes(2, "little") == bytes.fromhex("5BEC")


# ------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    ("address", "hex_"),
    [
        (HdlcAddress(upper=1), "03"),  # management client
        (HdlcAddress(upper=16), "21"),  # public client
        (HdlcAddress(upper=0b1001010), "95"),
        (HdlcAddress(upper=0b0100101), "4B"),
        (HdlcAddress(upper=1, lower=17), "0223"),
        (HdlcAddress(upper=0x1234, lower=0x3FFF), "4868FEFF"),  # GB9 8.4.2.2 example
        (HdlcAddress(upper=1, lower=2836), "00022C29"),  # a real UA (dlms-cosem #95)
        (HdlcAddress(upper=1, lower=17, size=4), "00020023"),
    ],
)
def test_addresses_encode_and_decode(address: HdlcAddress, hex_: str) -> None:
    raw = bytes.fromhex(hex_)
    assert address.encode() == raw
    assert HdlcAddress.decode(raw) == address


@pytest.mark.parametrize("hex_", ["", "02", "010203", "020202", "0303"])
def test_bad_addresses_are_framing_errors(hex_: str) -> None:
    with pytest.raises(FramingError):
        HdlcAddress.decode(bytes.fromhex(hex_))


@pytest.mark.parametrize("address", [HdlcAddress(upper=0x80, size=1),
                                     HdlcAddress(upper=1, lower=0x4000),
                                     HdlcAddress(upper=0x80, lower=1, size=2),
                                     HdlcAddress(upper=0x4000)])
def test_addresses_that_do_not_fit_are_refused(address: HdlcAddress) -> None:
    with pytest.raises(LocalProtocolError):
        address.encode()


# --------------------------------------------------------------- control
def test_control_fields() -> None:
    assert control_u(FrameKind.SNRM) == 0x93
    assert control_u(FrameKind.DISC) == 0x53
    assert control_u(FrameKind.UA) == 0x73
    assert control_u(FrameKind.DM) == 0x1F
    assert control_u(FrameKind.FRMR) == 0x97
    assert control_u(FrameKind.UI) == 0x13
    assert control_u(FrameKind.UI, final=False) == 0x03
    # client I frames after UA with window 1: 10 32 54 76 98 BA DC FE (DLMS_FACTS §1)
    assert [control_i(n, n) for n in range(8)] == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC,
                                                   0xFE]
    assert control_s(FrameKind.RR, 3) == 0x71
    assert control_s(FrameKind.RNR, 3) == 0x75
    with pytest.raises(LocalProtocolError):
        control_u(FrameKind.I)


def test_i_frame_sequence_numbers() -> None:
    # dlms-cosem TestInformationControlField: 0x30 is N(R)=1, N(S)=0, final
    frame = HdlcFrame(destination=CLIENT, source=SERVER, control=0x30)
    assert (frame.kind, frame.receive_sequence, frame.send_sequence, frame.poll_final) == (
        FrameKind.I, 1, 0, True)
    rr = HdlcFrame(destination=CLIENT, source=SERVER, control=0x71)
    assert (rr.kind, rr.receive_sequence, rr.send_sequence) == (FrameKind.RR, 3, None)
    ua = HdlcFrame(destination=CLIENT, source=SERVER, control=0x73)
    assert (ua.kind, ua.receive_sequence) == (FrameKind.UA, None)
    with pytest.raises(UnsupportedError):
        _ = HdlcFrame(destination=CLIENT, source=SERVER, control=0x09).kind  # REJ


# ---------------------------------------------------------------- frames
FRAMES = {
    # DLMS_FACTS §1: SNRM, AARQ and GET clock.time from the Green Book / a public repo
    "snrm": ("7EA0070321930F017E", FrameKind.SNRM, HdlcAddress(upper=1), HdlcAddress(upper=16),
             ""),
    "aarq": ("7EA02B032110FBAFE6E600601DA109060760857405080101BE10040E01000000065F1F0400007E1F"
             + "04B0CAEA7E", FrameKind.I, HdlcAddress(upper=1), HdlcAddress(upper=16),
             "E6E600601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0"),
    "get": ("7EA0190321326FD8E6E600C001C100080000010000FF0200601A7E", FrameKind.I,
            HdlcAddress(upper=1), HdlcAddress(upper=16),
            "E6E600C001C100080000010000FF0200"),
    # a real meter's UA (dlms-cosem issue #95)
    "ua": ("7EA0230300022C29732813818014050200F2060200F20704000000010804000000010CF77E",
           FrameKind.UA, HdlcAddress(upper=1), HdlcAddress(upper=1, lower=2836),
           "818014050200F2060200F2070400000001080400000001"),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_reference_frames_decode_and_encode(name: str) -> None:
    hex_, kind, dest, source, info = FRAMES[name]
    raw = bytes.fromhex(hex_)
    frame = HdlcFrame.decode(raw)
    assert (frame.kind, frame.destination, frame.source) == (kind, dest, source)
    assert frame.information == bytes.fromhex(info)
    assert not frame.segmented
    assert frame.encode() == raw


def test_the_0x7e_inside_a_frame_is_data_not_a_flag() -> None:
    raw = bytes.fromhex(FRAMES["aarq"][0])
    assert 0x7E in raw[1:-1]  # the conformance block 007E1F
    assert frames_of(decode_all(raw)) == [HdlcFrame.decode(raw)]


def test_checksum_errors_carry_expected_and_got() -> None:
    raw = bytearray.fromhex(FRAMES["get"][0])
    raw[-4] ^= 0x01  # last information octet: FCS breaks
    with pytest.raises(ChecksumError) as info:
        HdlcFrame.decode(bytes(raw))
    assert info.value.got == 0x1A60 and info.value.expected != info.value.got
    header = bytearray.fromhex(FRAMES["get"][0])
    header[3] ^= 0x02  # source address: HCS breaks
    with pytest.raises(ChecksumError, match="HCS"):
        HdlcFrame.decode(bytes(header))


@pytest.mark.parametrize("hex_", ["7E666666667E",  # dlms-cosem TestHdlcFrameValidation
                                  "7EA0080102011037",  # no closing flag
                                  "7EB00703219300007E",  # format type 0xB
                                  "7EA0090321930F017E"])  # length field 9, frame 7
def test_malformed_frames_are_framing_errors(hex_: str) -> None:
    with pytest.raises(FramingError):
        HdlcFrame.decode(bytes.fromhex(hex_))


def test_segmented_frame_and_encoding_limits() -> None:
    frame = HdlcFrame(destination=CLIENT, source=SERVER, control=control_i(0, 1),
                      information=b"\x01" * 10, segmented=True)
    raw = frame.encode()
    assert raw[1] == 0xA8  # S bit
    assert HdlcFrame.decode(raw) == frame
    with pytest.raises(LocalProtocolError):
        HdlcFrame(destination=CLIENT, source=SERVER, control=0x10, information=bytes(2040)).encode()
    with pytest.raises(LocalProtocolError):
        HdlcFrame(destination=CLIENT, source=SERVER, control=0x100).encode()


def test_llc_header() -> None:
    assert split_llc(LLC_COMMAND + b"\xc0") == (LLC_COMMAND, b"\xc0")
    assert split_llc(LLC_RESPONSE + b"\x0f") == (LLC_RESPONSE, b"\x0f")
    assert split_llc(b"\x0f\x00") == (b"", b"\x0f\x00")  # no LLC
    assert split_llc(b"\xe6\xe7") == (b"", b"\xe6\xe7")


# ------------------------------------------------------- amshan reader tests
AMSHAN_FRAMES = {name: bytes.fromhex(h) for name, h in AMSHAN_HDLC["frames"].items()}


def _amshan_case(test: str) -> dict[str, object]:
    matches = [t for t in AMSHAN_HDLC["tests"] if t["test"] == test]
    assert matches, test
    return matches[0]  # type: ignore[no-any-return]


def _expected_frames(case: dict[str, object]) -> int:
    other = case["expected_other"]
    assert isinstance(other, list)
    counts = [e["expected"] for e in other if e["expr"] == "len(frames)"]
    assert len(counts) == 1
    return int(counts[0])


READER_TESTS = [  # amshan HdlcFrameReader tests: (test, octet stuffing on?)
    ("test_frame_with_escape_character", False),
    ("test_frame_with_control_character_in_content", False),
    ("test_start_read_in_frame", False),
    ("test_empty_info_frame", False),
    ("test_too_short_frame_is_discarded", False),
    ("test_abort_sequence", False),
    ("test_single_flag_sequences_between_frames", False),
    ("test_two_flag_sequences_between_frames", False),
    ("test_many_flag_sequences_between_frames", False),
    ("test_stuffed_frame_short_info", True),
    ("test_too_long_frame_is_discarded", False),
]


@pytest.mark.parametrize(("test", "stuffing"), READER_TESTS)
def test_amshan_reader_cases(test: str, stuffing: bool) -> None:
    case = _amshan_case(test)
    inline = case["inline_frames_hex"]
    assert isinstance(inline, list)
    feeds = [bytes.fromhex(h) for h in inline if h.lower().startswith(("7e", "c3", "06"))]
    if test == "test_too_long_frame_is_discarded":
        feeds = [feeds[0] + bytes(2048)]  # amshan appends MAX_FRAME_LENGTH zero octets
    if test == "test_stuffed_frame_short_info":
        feeds = feeds[:1]  # the second "inline" value is the expected information
    assert feeds
    expected = _expected_frames(case)
    for feed in feeds:
        frames = frames_of(decode_all(feed, byte_stuffing=stuffing))
        assert len(frames) == expected
        if test == "test_stuffed_frame_short_info":
            assert frames[0].information == bytes.fromhex("7e7d03")  # unstuffed
        elif expected and test != "test_empty_info_frame":
            names = case["frames"]
            assert isinstance(names, list)
            assert frames[0].information == AMSHAN_FRAMES[names[-1] if "sequences" not in test
                                                          else "FRAME_SHORT_INFO"][8:-2]


def test_amshan_header_and_frame_tests() -> None:
    # TestHdlcFrameHeader / TestHdlcFrame: the information starts at octet 8 of
    # FRAME_SHORT_INFO, control 0x10 (16); FRAME_EMPTY_INFO has no information.
    short = HdlcFrame.decode_body(AMSHAN_FRAMES["FRAME_SHORT_INFO"])
    assert short.control == 16 and short.information == AMSHAN_FRAMES["FRAME_SHORT_INFO"][8:-2]
    assert short.destination == HdlcAddress(upper=0) and short.source == HdlcAddress(upper=1,
                                                                                    lower=0)
    empty = HdlcFrame.decode_body(AMSHAN_FRAMES["FRAME_EMPTY_INFO"])
    assert empty.information == b""
    for name in ("FRAME_WITH_ESCAPE_CHARACTER_IN_INFO", "FRAME_WITH_FLAG_SEQUENCE_CHARACTER_IN_INFO"):
        body = AMSHAN_FRAMES[name]
        frame = HdlcFrame.decode_body(body)
        assert frame.information == body[8:-2]
        assert frame.encode() == b"\x7e" + body + b"\x7e"
    with pytest.raises(FramingError):
        HdlcFrame.decode_body(b"")
    covered = {t for t, _ in READER_TESTS} | {
        "test_empty_frame", "test_read_byte", "test_read_including_frame_format",
        "test_read_including_destination_address", "test_read_including_halve_source_address",
        "test_read_including_source_address", "test_read_including_control",
        "test_read_halve_header_check_sequence", "test_read_header_check_sequence",
        "test_short_info_frame",
    }
    assert {t["test"] for t in AMSHAN_HDLC["tests"]} == covered


# --------------------------------------------------------- stream decoder
def test_frames_sharing_flags_noise_and_offsets() -> None:
    snrm = bytes.fromhex(FRAMES["snrm"][0])
    get = bytes.fromhex(FRAMES["get"][0])
    stream = b"noise" + snrm + get[1:] + b"\x7e\x7e" + get + b"tail"
    events = decode_all(stream)
    kinds = [(type(e).__name__, e.offset) for e in events]
    assert kinds == [("Discarded", 0), ("FrameReceived", 5),
                     ("FrameReceived", 5 + len(snrm) - 1), ("FrameReceived", stream.index(get, 30)),
                     ("Discarded", len(stream) - 4)]
    assert [e.reason for e in events if isinstance(e, Discarded)] == ["garbage", "garbage"]


def test_a_false_start_does_not_hide_the_next_frame() -> None:
    # 7E A7 FF claims 2047 octets; its header check fails at once and the real frame
    # right after it is found without waiting for 2 KiB.
    get = bytes.fromhex(FRAMES["get"][0])
    decoder = HdlcFrameDecoder()
    events = decoder.feed(b"\x7e\xa7\xff\x03\x21\x10\x00\x00" + get)
    assert [type(e) for e in events] == [Discarded, FrameReceived]
    assert events[0].reason == "checksum"  # type: ignore[union-attr]
    assert decoder.buffered == 1  # only the closing flag is kept


def test_a_damaged_frame_is_reported_once_and_the_next_one_found() -> None:
    get = bytearray.fromhex(FRAMES["get"][0])
    get[-3] ^= 0xFF
    good = bytes.fromhex(FRAMES["snrm"][0])
    events = decode_all(bytes(get) + good)
    assert [type(e) for e in events] == [Discarded, FrameReceived]
    bad = events[0]
    assert isinstance(bad, Discarded) and isinstance(bad.error, ChecksumError)
    assert bad.raw == bytes(get) and bad.offset == 0


def test_stream_end_inside_a_frame() -> None:
    get = bytes.fromhex(FRAMES["get"][0])
    decoder = HdlcFrameDecoder()
    assert decoder.feed(get[:10]) == []
    events = decoder.feed_eof()
    assert len(events) == 1 and isinstance(events[0], Discarded)
    assert events[0].reason == "framing" and events[0].offset == 0
    assert decoder.buffered == 0
    # the decoder takes a new stream; offsets go on
    later = decoder.feed(get)
    assert isinstance(later[0], FrameReceived) and later[0].offset == 10


def test_byte_at_a_time_gives_the_same_events() -> None:
    stream = b"xx" + bytes.fromhex(FRAMES["aarq"][0] + FRAMES["ua"][0]) + b"\x00\x7e\xa0"
    whole = decode_all(stream)
    decoder = HdlcFrameDecoder()
    pieces: list[HdlcEvent] = []
    for b in stream:
        pieces += decoder.feed(bytes((b,)))
    assert summary(pieces + decoder.feed_eof()) == summary(whole)


def test_long_garbage_is_reported_in_bounded_pieces() -> None:
    events = decode_all(b"\x55" * 10_000)
    assert all(isinstance(e, Discarded) and len(e.raw) <= 4096 for e in events)
    assert sum(len(e.raw) for e in events if isinstance(e, Discarded)) == 10_000
    with pytest.raises(LocalProtocolError):
        HdlcFrameDecoder(max_junk=1)


def test_stuffed_mode_aborts_and_overflow() -> None:
    body = bytes.fromhex(FRAMES["snrm"][0])[1:-1]
    assert frames_of(decode_all(b"\x7e" + body + b"\x7d\x7e", byte_stuffing=True)) == []
    decoder = HdlcFrameDecoder(byte_stuffing=True)
    events = decoder.feed(b"\x7e" + b"\x11" * 5000)
    assert [e.reason for e in events if isinstance(e, Discarded)] == ["overflow"]


# -------------------------------------------------------------- segments
def test_segment_assembler() -> None:
    assembler = SegmentAssembler(max_size=100)
    first = HdlcFrame(destination=CLIENT, source=SERVER, control=0x13, information=b"ab",
                      segmented=True)
    last = HdlcFrame(destination=CLIENT, source=SERVER, control=0x13, information=b"cd")
    assert assembler.add(first) is None and assembler.pending
    assert assembler.add(last) == b"abcd" and not assembler.pending
    assert assembler.add(last) == b"cd"
    big = HdlcFrame(destination=CLIENT, source=SERVER, control=0x13, information=bytes(60),
                    segmented=True)
    assembler.add(big)
    with pytest.raises(FramingError):
        assembler.add(big)
    assert not assembler.pending


# ------------------------------------------------------------ parameters
def test_parameters_of_a_real_ua_and_dlms_cosems_ua() -> None:
    real = HdlcParameters.decode(bytes.fromhex("818014050200F2060200F20704000000010804000000"
                                               "01"))
    assert real == HdlcParameters(max_info_tx=242, max_info_rx=242, window_tx=1, window_rx=1)
    info = bytes.fromhex("81801205019A06019A070400000001080400000001")
    params = HdlcParameters.decode(info)
    assert params == HdlcParameters(max_info_tx=410 - 256, max_info_rx=154)
    assert params.encode() == info
    assert HdlcParameters.decode(b"") == HdlcParameters()  # absent: 128 octets, window 1
    assert HdlcParameters(max_info_tx=1024).encode()[3:7] == bytes.fromhex("05020400")


@pytest.mark.parametrize("hex_", ["8180", "818005050100", "8280020501", "81800305039A"])
def test_bad_parameter_fields(hex_: str) -> None:
    with pytest.raises(FramingError):
        HdlcParameters.decode(bytes.fromhex(hex_))


def test_parameter_values_out_of_range_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        HdlcParameters(window_tx=8).encode()
    with pytest.raises(LocalProtocolError):
        HdlcParameters(max_info_rx=0).encode()


# ------------------------------------------------------------------ link
def pump(first: HdlcLink, second: HdlcLink, frames: list[bytes]) -> dict[str, list[LinkEvent]]:
    """Deliver frames back and forth until nobody has anything to send."""
    seen: dict[str, list[LinkEvent]] = {"client": [], "server": []}
    sender, receiver = first, second
    while frames:
        replies: list[bytes] = []
        for frame in frames:
            events, out = receiver.receive(frame)
            seen[receiver.role] += events
            replies += out
        frames = replies
        sender, receiver = receiver, sender
    return seen


def connected_pair(client_tx: int = 128, server_tx: int = 128) -> tuple[HdlcLink, HdlcLink]:
    client = HdlcLink(role="client", client=CLIENT, server=SERVER,
                      parameters=HdlcParameters(max_info_tx=client_tx, max_info_rx=client_tx))
    server = HdlcLink(role="server", client=CLIENT, server=SERVER,
                      parameters=HdlcParameters(max_info_tx=server_tx, max_info_rx=server_tx))
    seen = pump(client, server, [client.connect()])
    assert isinstance(seen["server"][0], Connected) and isinstance(seen["client"][0], Connected)
    return client, server


def test_link_negotiates_the_smaller_lengths() -> None:
    client, server = connected_pair(client_tx=40, server_tx=100)
    assert client.parameters.max_info_tx == 40 and client.parameters.max_info_rx == 40
    assert server.parameters.max_info_tx == 40 and server.parameters.max_info_rx == 40
    assert client.state is LinkState.CONNECTED is server.state


def test_link_request_and_segmented_response() -> None:
    client, server = connected_pair(client_tx=32, server_tx=32)
    request = bytes(range(20))
    first = client.send(request)
    assert HdlcFrame.decode(first).information == LLC_COMMAND + request
    seen = pump(client, server, [first])
    assert seen["server"] == [ApduReceived(apdu=request)]
    response = bytes(range(100))
    frames_sent: list[bytes] = []
    out = [server.send(response)]
    while out:
        frames_sent += out
        events, replies = client.receive(out[0])
        out = []
        for reply in replies:
            assert HdlcFrame.decode(reply).kind is FrameKind.RR  # the client pulls each segment
            _, out = server.receive(reply)
    decoded = [HdlcFrame.decode(f) for f in frames_sent]
    assert [f.segmented for f in decoded] == [True, True, True, False]
    assert b"".join(f.information for f in decoded) == LLC_RESPONSE + response
    assert events == [ApduReceived(apdu=response)]
    # the sequence numbers went on: another request and answer work
    seen = pump(client, server, [client.send(b"\xc0\x01")])
    assert seen["server"] == [ApduReceived(apdu=b"\xc0\x01")]
    seen = pump(server, client, [server.send(b"\xc4\x01")])
    assert seen["client"] == [ApduReceived(apdu=b"\xc4\x01")]


def test_link_segmented_request() -> None:
    client, server = connected_pair(client_tx=16, server_tx=128)
    request = bytes(range(50))
    seen = pump(client, server, [client.send(request)])
    assert seen["server"] == [ApduReceived(apdu=request)]


def test_link_out_of_sequence_frame_is_refused_and_rr_asks_again() -> None:
    _, server = connected_pair()
    wrong = HdlcFrame(destination=SERVER, source=CLIENT, control=control_i(3, 0),
                      information=LLC_COMMAND + b"\xc0").encode()
    events, replies = server.receive(wrong)
    assert len(events) == 1 and isinstance(events[0], Discarded)
    rr = HdlcFrame.decode(replies[0])
    assert (rr.kind, rr.receive_sequence) == (FrameKind.RR, 0)


def test_link_repeats_a_lost_frame_when_asked() -> None:
    client, _ = connected_pair()
    sent = client.send(b"\xc0\x01")
    ask_again = HdlcFrame(destination=CLIENT, source=SERVER,
                          control=control_s(FrameKind.RR, 0)).encode()
    _, replies = client.receive(ask_again)
    assert replies == [sent]


def test_link_acknowledge_without_data() -> None:
    client, server = connected_pair()
    pump(client, server, [client.send(b"\xc0\x01")])
    rr = HdlcFrame.decode(server.acknowledge())
    assert (rr.kind, rr.receive_sequence, rr.destination) == (FrameKind.RR, 1, CLIENT)
    with pytest.raises(LocalProtocolError):
        HdlcLink(role="server", client=CLIENT, server=SERVER).acknowledge()


def test_link_disconnect_and_dm() -> None:
    client, server = connected_pair()
    seen = pump(client, server, [client.disconnect()])
    assert seen["server"] == [Disconnected(by_peer=True)]
    assert seen["client"] == [Disconnected(by_peer=False)]
    # DISC again while disconnected: the server answers DM
    _, replies = server.receive(HdlcFrame(destination=SERVER, source=CLIENT,
                                          control=control_u(FrameKind.DISC)).encode())
    assert HdlcFrame.decode(replies[0]).kind is FrameKind.DM
    # an I frame while disconnected: DM too
    _, replies = server.receive(HdlcFrame(destination=SERVER, source=CLIENT,
                                          control=control_i(0, 0), information=b"x").encode())
    assert HdlcFrame.decode(replies[0]).kind is FrameKind.DM


def test_link_misuse_and_other_stations() -> None:
    client = HdlcLink(role="client", client=CLIENT, server=SERVER)
    with pytest.raises(LocalProtocolError):
        client.send(b"\xc0")
    server = HdlcLink(role="server", client=CLIENT, server=SERVER)
    with pytest.raises(LocalProtocolError):
        server.connect()
    with pytest.raises(LocalProtocolError):
        server.disconnect()
    with pytest.raises(LocalProtocolError):
        HdlcLink(role="peer", client=CLIENT, server=SERVER)  # type: ignore[arg-type]
    other = HdlcFrame(destination=HdlcAddress(upper=2), source=CLIENT,
                      control=control_u(FrameKind.SNRM)).encode()
    assert server.receive(other) == ([], [])
    client.connect()
    with pytest.raises(LocalProtocolError):
        client.connect()


def test_link_dm_from_the_server_disconnects_the_client() -> None:
    client = HdlcLink(role="client", client=CLIENT, server=SERVER)
    client.connect()
    dm = HdlcFrame(destination=CLIENT, source=SERVER, control=control_u(FrameKind.DM)).encode()
    events, _ = client.receive(dm)
    assert events == [Disconnected(by_peer=True)] and client.state is LinkState.DISCONNECTED


def test_link_passes_ui_pushes_through() -> None:
    client, _ = connected_pair()
    push = HdlcFrame(destination=CLIENT, source=SERVER, control=control_u(FrameKind.UI),
                     information=LLC_RESPONSE + b"\x0f\x00").encode()
    events, replies = client.receive(push)
    assert events == [ApduReceived(apdu=b"\x0f\x00")] and replies == []
