"""IEC 62056-21 properties: chunking never changes what the decoder finds, arbitrary
bytes never raise or grow the buffer without bound, messages round-trip."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.iec62056_21 import (
    AckOptionSelect,
    ClientSession,
    CommandMessage,
    DataLine,
    DataSet,
    IdentificationMessage,
    ReadoutDecoder,
    ReadoutMessage,
    RequestMessage,
    SessionState,
    decode_message,
)
from gateway.protocols.obis import normalise_id
from gateway.sim.iec62056_21 import LoadModel, MeterSession


def _parity(data: bytes) -> bytes:
    return bytes(b | 0x80 if b.bit_count() % 2 else b for b in data)


_meter_c = MeterSession(readings=LoadModel(obis_prefix=True))
_meter_e = MeterSession(manufacturer="ISK", identification="MT382-1000", enhanced=("2",))
_readout = _meter_c.readout(0.0)
_bad = _readout[:-1] + bytes((_readout[-1] ^ 0x21,))

# pieces a real capture is made of; hypothesis strings them together with noise
SEGMENTS = [
    b"/?!\r\n",
    _meter_c.identification.encode(),
    b"\x06050\r\n",
    _readout,
    _parity(_readout),
    _bad,
    _readout[: len(_readout) // 2],
    _meter_e.identification.encode() + b"\x06252\r\n" + b"\x7e\xa0\x07\x03\x21\x93\x0f\x01\x7e",
    b"/ESY5Q3DA1004 V3.04\r\n\r\n1-0:0.0.0*255(1336001560)\r\n1-0:1.8.0*255(00032549.5061662*kWh)\r\n!\r\n",
    CommandMessage(command="R", command_type="1", data="1.8.0()").encode(),
    b"\x15",
    b"\r\n",
]

segments = st.lists(
    st.one_of(st.sampled_from(SEGMENTS), st.binary(max_size=12)), min_size=1, max_size=12
).map(b"".join)


def _norm(events: list[MeterFrame | Discarded]) -> list[Any]:
    """Comparable form: exceptions compare by identity, so compare their content."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, Discarded):
            out.append(
                (
                    "discarded",
                    e.reason,
                    e.offset,
                    e.raw,
                    type(e.error),
                    e.error.offset,
                    str(e.error),
                )
            )
        else:
            out.append(e)
    return out


def _decode_in_chunks(data: bytes, cuts: list[int], max_frame: int) -> list[MeterFrame | Discarded]:
    dec = ReadoutDecoder(max_frame_bytes=max_frame)
    events: list[MeterFrame | Discarded] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        events += dec.feed(data[last:cut])
        last = cut
    events += dec.feed(data[last:])
    return events + dec.feed_eof()


@settings(max_examples=300)
@given(
    data=segments,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    max_frame=st.sampled_from([256, 65536]),
)
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int], max_frame: int) -> None:
    whole = _decode_in_chunks(data, [], max_frame)
    assert _norm(_decode_in_chunks(data, cuts, max_frame)) == _norm(whole)
    one_by_one = _decode_in_chunks(data, list(range(len(data))), max_frame)
    assert _norm(one_by_one) == _norm(whole)


@settings(max_examples=300)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(SEGMENTS)), max_size=30))
def test_arbitrary_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    dec = ReadoutDecoder(max_frame_bytes=256)
    fed = 0
    for chunk in chunks:
        for e in dec.feed(chunk):
            assert 0 <= e.offset <= fed + len(chunk)
            if isinstance(e, Discarded):
                assert isinstance(e.error, GatewayError)
        fed += len(chunk)
        assert dec.buffered < 256 + 1024
    dec.feed_eof()
    assert dec.buffered == 0


@settings(max_examples=200)
@given(
    steps=st.lists(
        st.tuples(st.binary(max_size=64), st.floats(min_value=0, max_value=3)), max_size=40
    ),
    mode=st.sampled_from(["A", "B", "C", "D"]),
)
def test_client_session_survives_garbage(steps: list[tuple[bytes, float]], mode: Any) -> None:
    sess = ClientSession(mode=mode, retries=2)
    now = 0.0
    sess.start(now)
    for data, dt in steps:
        now += dt
        if sess.state is SessionState.ERROR:
            break
        sess.feed(data, now=now)
        sess.on_timeout(now=now)
        deadline = sess.deadline()
        assert deadline is None or deadline > now or sess.state is SessionState.DONE
    # with nothing more from the meter the session ends, never waits forever
    for _ in range(20):
        deadline = sess.deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        sess.on_timeout(now=now)
    assert sess.state in (SessionState.DONE, SessionState.ERROR)


# ------------------------------------------------------------- round trips
_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
addresses = st.text(_printable.filter(lambda c: c not in "()/!"), min_size=1, max_size=16).filter(
    lambda a: a == a.strip()
)
values = st.text(_printable.filter(lambda c: c not in "()*/!"), max_size=32)
units = st.none() | st.text(_printable.filter(lambda c: c not in "()/!"), max_size=8)
data_sets = st.builds(DataSet, address=st.none() | addresses, value=values, unit=units)
data_lines = st.builds(DataLine, sets=st.lists(data_sets, max_size=4).map(tuple))


@given(ds=data_sets)
def test_data_set_round_trip(ds: DataSet) -> None:
    assert DataSet.decode(ds.encode()) == ds


@given(line=data_lines)
def test_data_line_round_trip(line: DataLine) -> None:
    assert DataLine.decode(line.encode()) == line


@given(lines=st.lists(data_lines, max_size=6))
def test_readout_round_trip_and_decoder(lines: list[DataLine]) -> None:
    msg = ReadoutMessage(lines=tuple(lines))
    data = msg.encode()
    assert ReadoutMessage.decode(data) == msg == decode_message(_parity(data))
    (frame,) = ReadoutDecoder().feed(data)
    assert isinstance(frame, MeterFrame) and frame.checksum_ok
    sets = [s for line in lines for s in line.sets]
    # sets without an address join the reading before them (unless nothing precedes)
    expected_ids = [
        normalise_id(s.address or "") for i, s in enumerate(sets) if s.address or i == 0
    ]
    assert [r.id for r in frame.readings] == expected_ids


idents = st.builds(
    IdentificationMessage,
    manufacturer=st.text(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
        min_size=3,
        max_size=3,
    ),
    baud_char=_printable.filter(lambda c: c not in "/!\\"),
    identification=st.text(_printable.filter(lambda c: c not in "/!"), max_size=16).filter(
        lambda s: not s.startswith("\\")
    ),
    enhanced=st.lists(st.sampled_from("0123456789@"), max_size=2).map(tuple),
)


@given(ident=idents)
def test_identification_round_trip(ident: IdentificationMessage) -> None:
    assert IdentificationMessage.decode(ident.encode()) == ident


@given(
    msg=st.one_of(
        st.builds(
            RequestMessage, address=st.text(st.sampled_from("0123456789ABCxyz "), max_size=32)
        ),
        st.builds(
            AckOptionSelect,
            protocol_char=st.sampled_from("012"),
            baud_char=st.sampled_from("0123456"),
            mode_char=st.sampled_from("0129A"),
        ),
        st.builds(
            CommandMessage,
            command=st.sampled_from("PWREB"),
            command_type=st.sampled_from("0123456789"),
            data=st.none() | st.text(_printable, max_size=40),
            partial=st.booleans(),
        ),
    )
)
def test_message_round_trip(msg: Any) -> None:
    assert decode_message(msg.encode()) == msg
