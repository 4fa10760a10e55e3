"""DSMR / P1 properties: any split of a stream gives the same events, arbitrary or
damaged bytes never raise, hang or grow the buffer, and encryption round-trips."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DecryptionError, GatewayError
from gateway.model import MeterFrame
from gateway.protocols._checks import crc16_arc_table
from gateway.protocols._events import Discarded
from gateway.protocols.dsmr import DsmrDecoder, DsmrEvent, crc16_arc, encrypt_telegram

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors"
KEY = bytes.fromhex("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")  # sagemcom_t210dr_generated
AUTH_KEY = bytes.fromhex("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")

CAPTURES = [p.read_bytes() for p in sorted((VECTORS / "dsmr" / "dsmr_parser").glob("*.txt"))]
CAPTURES += [p.read_bytes() for p in sorted((VECTORS / "dsmr" / "lvzon").glob("*.txt"))]
CAPTURES.append(
    bytes.fromhex((VECTORS / "dsmr" / "sagemcom_t210dr_generated" / "frame.hex").read_text())
)
CAPTURES.append((VECTORS / "dsmr" / "smarty_openhab" / "frame.bin").read_bytes())  # wrong key here
STREAM = b"".join(CAPTURES)


def summary(event: DsmrEvent) -> tuple[object, ...]:
    if isinstance(event, MeterFrame):
        return ("frame", event)
    assert isinstance(event, Discarded)
    error = event.error
    return (event.reason, type(error), error.offset, str(error), event.raw, event.offset)


def run(chunks: list[bytes], max_frame: int = 16384) -> list[DsmrEvent]:
    decoder = DsmrDecoder(key=KEY, auth_key=AUTH_KEY, max_frame=max_frame)
    events: list[DsmrEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered <= max_frame
    return events + decoder.feed_eof()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


WHOLE = [summary(e) for e in run([STREAM])]


def test_the_stream_decodes_as_expected() -> None:
    kinds = [s[0] if s[0] != "frame" else "frame" for s in WHOLE]
    # lvzon 4.0/5.0 fail their CRC; the Smarty frame is for another key;
    # EasyMeter gateway trailers are garbage.
    assert kinds.count("checksum") == 2
    assert kinds.count("decryption") == 1
    assert kinds.count("frame") == len(CAPTURES) - 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert [summary(e) for e in run(split(STREAM, cuts))] == WHOLE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=30), st.integers(min_value=256, max_value=2048))
def test_any_split_with_a_small_buffer(cuts: list[int], max_frame: int) -> None:
    whole = [summary(e) for e in run([STREAM], max_frame)]
    assert [summary(e) for e in run(split(STREAM, cuts), max_frame)] == whole


def check_sane(events: list[DsmrEvent], data: bytes) -> None:
    last = -1
    for event in events:
        if isinstance(event, Discarded):
            assert isinstance(event.error, GatewayError)
            assert event.error.offset == event.offset
        assert 0 <= event.offset < len(data) and event.offset > last
        assert data[event.offset : event.offset + len(event.raw)] == event.raw
        last = event.offset


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    events = run(split(data, cuts), max_frame=512)
    check_sane(events, data)


fragments = st.one_of(
    st.sampled_from(CAPTURES),
    st.sampled_from([b"\r\n", b"/", b"!", b"\xdb\x08", b"/ISK5\\2M550T-1012\r\n", b"(", b")"]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(fragments, min_size=1, max_size=8).map(b"".join),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_damaged_captures_never_raise(
    data: bytes, flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    damaged = bytearray(data)
    for at, value in flips if damaged else []:
        damaged[at % len(damaged)] = value
    data = bytes(damaged)
    events = run(split(data, cuts), max_frame=4096)
    check_sane(events, data)
    assert [summary(e) for e in events] == [summary(e) for e in run([data], max_frame=4096)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_crc16_arc_matches_the_table(data: bytes) -> None:
    assert crc16_arc(data) == crc16_arc_table(data)


obis = st.tuples(
    st.integers(0, 1), st.integers(0, 9), st.integers(1, 99), st.integers(0, 99), st.integers(0, 9)
).map(lambda g: f"{g[0]}-{g[1]}:{g[2]}.{g[3]}.{g[4]}")
number = st.one_of(
    st.integers(0, 10**9).map(str),
    st.tuples(st.integers(0, 999999), st.integers(0, 999)).map(lambda t: f"{t[0]:06d}.{t[1]:03d}"),
)
unit = st.sampled_from(["", "kWh", "kW", "V", "A", "m3", "kvarh"])
line = st.tuples(obis, number, unit).filter(lambda t: t[0].split(":")[1] != "1.0.0")


def telegram(lines: list[tuple[str, str, str]]) -> bytes:
    body = "/TST5\\2test\r\n\r\n"
    body += "".join(f"{o}({v}*{u})\r\n" if u else f"{o}({v})\r\n" for o, v, u in lines)
    raw = (body + "!").encode()
    return raw + f"{crc16_arc_table(raw):04X}\r\n".encode()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(line, max_size=12), min_size=1, max_size=5),
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5, unique=True),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=16, max_size=16),
)
def test_encrypt_then_decode_round_trip(
    telegrams: list[list[tuple[str, str, str]]],
    counters: list[int],
    system_title: bytes,
    key: bytes,
) -> None:
    plaintexts = [telegram(t) for t in telegrams][: len(counters)]
    counters = sorted(counters)[: len(plaintexts)]
    wire = b"".join(
        encrypt_telegram(p, key=key, auth_key=AUTH_KEY, system_title=system_title, frame_counter=c)
        for p, c in zip(plaintexts, counters, strict=True)
    )
    decoder = DsmrDecoder(key=key, auth_key=AUTH_KEY)
    events = decoder.feed(wire) + decoder.feed_eof()
    plain = DsmrDecoder()
    expected = [e for p in plaintexts for e in plain.feed(p)]
    frames = [e for e in events if isinstance(e, MeterFrame) and e.checksum_ok]
    assert len(frames) == len(events) == len(expected)
    assert [f.readings for f in frames] == [
        e.readings for e in expected if isinstance(e, MeterFrame)
    ]
    # Replaying any of them is refused.
    replayed = decoder.feed(wire)
    assert len(replayed) == len(plaintexts)
    for event in replayed:
        assert isinstance(event, Discarded) and isinstance(event.error, DecryptionError)
        assert event.error.reason == "replay"
