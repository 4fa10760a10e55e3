"""M-Bus properties: chunking never changes what the decoder finds, arbitrary bytes never
raise anything but gateway errors nor hang nor grow the buffer, and every message type
round-trips (decode(encode(x)) == x)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import MbusDecoder, SecondaryAddress, decode_frame, decode_response
from gateway.protocols.mbus.app import (
    CI_VARIABLE,
    DataRecord,
    Header,
    VariableDataResponse,
    decode_value,
    encode_bcd,
    encode_date_f,
    encode_date_g,
    readings,
)
from gateway.protocols.mbus.app import coding as coding_of
from gateway.protocols.mbus.link import (
    ControlFrame,
    FrameScanner,
    LongFrame,
    ShortFrame,
    SingleChar,
)
from gateway.protocols.mbus.master import MasterSession, SessionState

ROOT = Path(__file__).resolve().parents[2]
LIBMBUS = ROOT.parent / "shared" / "vectors" / "mbus" / "libmbus"
CAPTURES = [
    bytes.fromhex(json.loads(p.read_text())["frame_hex"])
    for folder in ("frames", "error_frames")
    for p in sorted((LIBMBUS / folder).glob("*.json"))
]
SEGMENTS = [
    *CAPTURES[:: max(1, len(CAPTURES) // 12)],
    b"\xe5",
    bytes.fromhex("10 7B 01 7C 16"),
    bytes.fromhex("68 00 00 68 08 16"),
    CAPTURES[0][:-2] + b"\x00\x16",  # bad check sum
    CAPTURES[1][:30],  # cut
]
streams = st.lists(
    st.one_of(st.sampled_from(SEGMENTS), st.binary(max_size=12)), min_size=1, max_size=10
).map(b"".join)


def _norm(events: list[MeterFrame | Discarded]) -> list[Any]:
    """Comparable form: exceptions compare by identity, so compare their content."""
    return [
        ("discarded", e.reason, e.offset, e.raw, type(e.error), e.error.offset, str(e.error))
        if isinstance(e, Discarded)
        else e
        for e in events
    ]


def _decode(data: bytes, cuts: list[int]) -> list[MeterFrame | Discarded]:
    dec = MbusDecoder()
    events: list[MeterFrame | Discarded] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        events += dec.feed(data[last:cut])
        last = cut
    events += dec.feed(data[last:])
    return events + dec.feed_eof()


@settings(max_examples=300)
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = _decode(data, [])
    assert _norm(_decode(data, cuts)) == _norm(whole)
    assert _norm(_decode(data, list(range(len(data))))) == _norm(whole)


@settings(max_examples=300)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(SEGMENTS)), max_size=30))
def test_arbitrary_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    dec = MbusDecoder()
    scanner = FrameScanner()
    fed = 0
    for chunk in chunks:
        for e in dec.feed(chunk):
            assert 0 <= e.offset <= fed + len(chunk)
            if isinstance(e, Discarded):
                assert isinstance(e.error, GatewayError)
        scanner.feed(chunk)
        fed += len(chunk)
        assert scanner.pending <= 261
    dec.feed_eof()
    scanner.feed_eof()
    assert scanner.pending == 0


@settings(max_examples=500)
@given(ci=st.sampled_from([0x70, 0x72, 0x73, 0x76, 0x77, 0x78, 0x7A, 0x51, 0xB8]),
       data=st.binary(max_size=252))  # fmt: skip
def test_arbitrary_application_data_raises_only_gateway_errors(ci: int, data: bytes) -> None:
    try:
        resp = decode_response(ci, data)
    except GatewayError:
        return
    if isinstance(resp, VariableDataResponse):
        readings([(r.coding, r.data) for r in resp.records], msb_first=resp.msb_first)
        for r in resp.records:
            decode_value(coding_of(r.coding), r.data)


# ------------------------------------------------------------- round trips
bytes_ = st.integers(min_value=0, max_value=255)
frames = st.one_of(
    st.just(SingleChar()),
    st.builds(ShortFrame, control=bytes_, address=bytes_),
    st.builds(ControlFrame, control=bytes_, address=bytes_, ci=bytes_),
    st.builds(
        LongFrame, control=bytes_, address=bytes_, ci=bytes_, data=st.binary(min_size=1, max_size=252)
    ),
)


@given(frame=frames)
def test_frame_round_trip(frame: Any) -> None:
    assert decode_frame(frame.encode()) == frame


ids = st.text(st.sampled_from("0123456789ABCDEF"), min_size=8, max_size=8)
addresses = st.builds(
    SecondaryAddress,
    id=ids,
    manufacturer=st.integers(min_value=0, max_value=0xFFFF),
    version=bytes_,
    medium=bytes_,
)


@given(a=addresses)
def test_secondary_address_round_trips(a: SecondaryAddress) -> None:
    assert SecondaryAddress.decode(a.encode()) == a
    assert SecondaryAddress.parse(a.hex) == a
    assert a.matches(a) and SecondaryAddress(id="FFFFFFFF").matches(a)
    # the letter form has no room for bit 15 of the manufacturer word (normally 0)
    if a.manufacturer < 0x8000 and all("A" <= c <= "Z" for c in a.manufacturer_code):
        assert SecondaryAddress.parse(f"{a.id}-{a.manufacturer_code}-{a.version:02X}-{a.medium:02X}") == a


@given(value=st.integers(min_value=-(10**7) + 1, max_value=10**8 - 1))
def test_bcd_round_trip(value: int) -> None:
    (r,) = readings([(b"\x0c\xfd\x17", encode_bcd(value, 4))])
    assert r.value == value


@given(
    year=st.integers(min_value=1981, max_value=2299),
    month=st.integers(min_value=1, max_value=12),
    day=st.integers(min_value=1, max_value=28),
    hour=st.integers(min_value=0, max_value=23),
    minute=st.integers(min_value=0, max_value=59),
)
def test_date_round_trip(year: int, month: int, day: int, hour: int, minute: int) -> None:
    (f,) = readings([(b"\x04\x6d", encode_date_f(year, month, day, hour, minute))])
    assert f.value == f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00"
    if year >= 2000 and year <= 2127:
        (g,) = readings([(b"\x02\x6c", encode_date_g(year, month, day))])
        assert g.value == f"{year:04d}-{month:02d}-{day:02d}"


_LENGTH = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 6, 7: 8, 8: 0, 9: 1, 10: 2, 11: 3, 12: 4, 14: 6}


@st.composite
def records(draw: st.DrawFn) -> DataRecord:
    """Any well-formed data record: DIF, ≤10 DIFEs, VIF (plain text too), ≤10 VIFEs, data."""
    field = draw(st.sampled_from([*_LENGTH, 13]))
    dif = draw(st.integers(0, 7)) << 4 | field
    difes = draw(st.lists(st.integers(0, 0x7F), max_size=10))
    if difes:
        dif |= 0x80
    dib = bytes([dif, *(d | 0x80 for d in difes[:-1]), *difes[-1:]])
    vif = draw(st.integers(0, 0x7F).filter(lambda v: v != 0x7F))
    vifes = draw(st.lists(st.integers(0, 0x7F), max_size=10))
    text = b""
    if vif == 0x7C:
        text = draw(st.binary(max_size=20))
        text = bytes([len(text)]) + text
    vib = bytes([vif | (0x80 if vifes else 0)]) + text
    vib += bytes([*(v | 0x80 for v in vifes[:-1]), *vifes[-1:]])
    if field == 13:
        lvar = draw(st.one_of(st.integers(0, 0xBF), st.integers(0xC0, 0xC9),
                              st.integers(0xE0, 0xEF), st.integers(0xF0, 0xF6)))  # fmt: skip
        size = {0xF5: 48, 0xF6: 64}.get(lvar) or (
            lvar if lvar <= 0xBF else lvar & 0x0F if lvar <= 0xDF else
            lvar - 0xE0 if lvar <= 0xEF else 4 * (lvar - 0xEC)
        )  # fmt: skip
        data = bytes([lvar]) + draw(st.binary(min_size=size, max_size=size))
    else:
        n = _LENGTH[field]
        data = draw(st.binary(min_size=n, max_size=n))
    return DataRecord(coding=dib + vib, data=data)


@settings(max_examples=300)
@given(
    address=addresses,
    recs=st.lists(records(), max_size=6),
    mfr=st.binary(max_size=8),
    more=st.booleans(),
)
def test_variable_data_round_trip(
    address: SecondaryAddress, recs: list[DataRecord], mfr: bytes, more: bool
) -> None:
    resp = VariableDataResponse(
        ci=CI_VARIABLE,
        header=Header(address=address, access_number=7, status=0, signature=0),
        records=tuple(recs),
        manufacturer_data=mfr,
        more_records_follow=more,
    )
    payload = resp.encode()
    if len(payload) > 252:
        return
    assert decode_response(CI_VARIABLE, payload) == resp
    frame = LongFrame(control=0x08, address=1, ci=CI_VARIABLE, data=payload).encode()
    (event,) = MbusDecoder().feed(frame)
    assert isinstance(event, MeterFrame)
    assert len([r for r in event.readings if r.id != "manufacturer_data"]) == len(recs)
    assert len({r.id for r in event.readings}) == len(event.readings)
    json.dumps([r.to_json() for r in event.readings])  # JSON-able, NaN never escapes


@settings(max_examples=200)
@given(
    steps=st.lists(st.tuples(st.binary(max_size=64), st.floats(min_value=0, max_value=0.5)), max_size=30),
    op=st.sampled_from(["read1", "readsec", "scanp", "scans"]),
)
def test_master_survives_garbage_and_always_ends(steps: list[tuple[bytes, float]], op: str) -> None:
    master = MasterSession(baud=9600, retries=1)
    now = 0.0
    if op == "read1":
        master.read(1, now=now)
    elif op == "readsec":
        master.read(SecondaryAddress(id="12345678"), now=now)
    elif op == "scanp":
        master.scan_primary(now=now, addresses=range(3))
    else:
        master.scan_secondary(now=now, mask=SecondaryAddress(id="1234567F"))
    for data, dt in steps:
        now += dt
        master.feed(data, now=now)
        master.on_timeout(now=now)
        deadline = master.deadline()
        assert deadline is None or deadline >= now
    for _ in range(10_000):  # silence from here on: the operation ends
        deadline = master.deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        master.on_timeout(now=now)
    assert master.state is SessionState.IDLE
