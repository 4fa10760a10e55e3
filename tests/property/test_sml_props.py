"""SML properties: any split of a stream gives the same events; arbitrary or damaged
bytes never raise anything but gateway errors, never hang and never grow the buffer;
decode(encode(x)) == x for messages and transport frames; the cached hot path of
SmlDecoder gives what the plain decode_file + meter_frame give; the simulator's
files decode and its registers never go down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.sml import (
    AttentionResponse,
    CloseResponse,
    GetListResponse,
    GetProcParameterResponse,
    ListEntry,
    OpenResponse,
    PeriodEntry,
    ProcParTree,
    SmlDecoder,
    SmlEvent,
    SmlMessage,
    SmlTime,
    SmlTransportDecoder,
    SmlValue,
    TransportFrame,
    UnknownBody,
    crc16_kermit,
    crc16_x25,
    decode_file,
    encode_file,
    encode_transport,
    meter_frame,
)
from gateway.sim.sml import SmlSimulator

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "sml" / "libsml_testing"
CAPTURES = [p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))]
STREAM = b"".join(CAPTURES)


def summary(event: SmlEvent) -> tuple[object, ...]:
    if isinstance(event, MeterFrame):
        return ("frame", event)
    error = event.error
    return (event.reason, type(error), error.offset, str(error), event.raw, event.offset)


def run(chunks: list[bytes], max_frame: int = 16384) -> list[SmlEvent]:
    decoder = SmlDecoder(max_frame=max_frame)
    events: list[SmlEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered <= max_frame
    return events + decoder.feed_eof()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


WHOLE = [summary(e) for e in run([STREAM])]


def test_the_stream_decodes_as_expected() -> None:
    kinds = [s[0] for s in WHOLE]
    assert kinds.count("frame") == 155  # as in the unit tests, capture by capture
    # The five of the unit tests, and one more where the unfinished last frame of the
    # EMH mME40 capture runs into the EasyMeter capture's leading bytes.
    assert kinds.count("checksum") == 6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert [summary(e) for e in run(split(STREAM, cuts))] == WHOLE


def test_byte_by_byte_gives_the_same_events() -> None:
    data = b"".join(CAPTURES[:3])
    whole = [summary(e) for e in run([data])]
    assert [summary(e) for e in run([data[i : i + 1] for i in range(len(data))])] == whole


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=30), st.integers(min_value=64, max_value=1024))
def test_any_split_with_a_small_buffer(cuts: list[int], max_frame: int) -> None:
    whole = [summary(e) for e in run([STREAM], max_frame)]
    assert [summary(e) for e in run(split(STREAM, cuts), max_frame)] == whole


def check_sane(events: list[SmlEvent], data: bytes) -> None:
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
    events = run(split(data, cuts), max_frame=256)
    check_sane(events, data)


START, END = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01", b"\x1b\x1b\x1b\x1b\x1a"
fragments = st.one_of(
    st.sampled_from(CAPTURES),
    st.sampled_from([START, END, b"\x1b\x1b\x1b\x1b", b"\x1b", b"\x00", b"\x76", b"\x77\x07"]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(fragments, min_size=1, max_size=6).map(b"".join),
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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_files_raise_only_framing_errors(payload: bytes) -> None:
    """decode_file on any bytes: messages or FramingError (which is a GatewayError)."""
    try:
        messages = decode_file(payload)
    except GatewayError:
        return
    meter_frame(messages)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_crcs_match_a_bitwise_reference(data: bytes) -> None:
    def reference(crc: int) -> int:
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        return crc

    assert crc16_x25(data) == reference(0xFFFF) ^ 0xFFFF
    assert crc16_kermit(data) == reference(0)


# ---------------------------------------------------------------- round trip
octets = st.binary(min_size=1, max_size=40) | st.sampled_from(
    [b"\x1b" * 4, b"\x1b" * 9, b"\x01\x1b\x1b\x1b\x1b\x1a\x00", bytes(300)]
)
opt_octets = st.none() | octets
obj_names = st.binary(min_size=6, max_size=6) | st.binary(min_size=1, max_size=12)
u8 = st.integers(0, 255)
scalars: st.SearchStrategy[SmlValue] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    octets,
)
values: st.SearchStrategy[SmlValue] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8
)
times = st.one_of(
    st.builds(SmlTime, kind=st.sampled_from(["sec_index", "timestamp"]), value=st.integers(0, 2**32 - 1)),
    st.builds(
        SmlTime,
        kind=st.just("local_timestamp"),
        value=st.integers(0, 2**32 - 1),
        local_offset_min=st.integers(-(2**15), 2**15 - 1),
        season_offset_min=st.integers(-(2**15), 2**15 - 1),
    ),
)
opt_times = st.none() | times
scalers = st.none() | st.integers(-128, 127)
entries = st.builds(
    ListEntry,
    obj_name=obj_names,
    status=st.none() | st.integers(0, 2**64 - 1),
    val_time=opt_times,
    unit=st.none() | u8,
    scaler=scalers,
    value=values,
    value_signature=opt_octets,
)
period_entries = st.builds(
    PeriodEntry, obj_name=obj_names, unit=st.none() | u8, scaler=scalers, value=values,
    value_signature=opt_octets,
)
leaf_trees = st.one_of(
    st.builds(ProcParTree, parameter_name=octets),
    st.builds(ProcParTree, parameter_name=octets, value_tag=st.just(1), value=values),
    st.builds(ProcParTree, parameter_name=octets, value_tag=st.just(2), value=period_entries),
    st.builds(ProcParTree, parameter_name=octets, value_tag=st.just(4), value=times),
)
trees = st.recursive(
    leaf_trees,
    lambda inner: st.builds(
        ProcParTree,
        parameter_name=octets,
        children=st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=6,
)
known_tags = {0x0101, 0x0201, 0x0501, 0x0701, 0xFF01}
bodies = st.one_of(
    st.builds(OpenResponse, codepage=opt_octets, client_id=opt_octets, req_file_id=octets,
              server_id=octets, ref_time=opt_times, sml_version=st.none() | u8),
    st.builds(CloseResponse, global_signature=opt_octets),
    st.builds(GetListResponse, client_id=opt_octets, server_id=octets, list_name=opt_octets,
              act_sensor_time=opt_times, val_list=st.lists(entries, max_size=20).map(tuple),
              list_signature=opt_octets, act_gateway_time=opt_times),
    st.builds(GetProcParameterResponse, server_id=octets,
              parameter_tree_path=st.lists(octets, max_size=3).map(tuple), parameter_tree=trees),
    st.builds(AttentionResponse, server_id=octets, attention_no=octets, attention_msg=opt_octets,
              attention_details=st.none() | trees),
    st.builds(UnknownBody, tag=st.integers(0, 2**32 - 1).filter(lambda t: t not in known_tags),
              content=values),
)
messages = st.lists(
    st.builds(SmlMessage, transaction_id=octets, group_no=u8, abort_on_error=u8, body=bodies),
    min_size=1,
    max_size=4,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_decode_of_encode_is_identity(msgs: tuple[SmlMessage, ...]) -> None:
    assert decode_file(encode_file(msgs)) == msgs


@settings(max_examples=200, deadline=None)
@given(messages, st.sampled_from(["x25", "kermit"]), st.binary(max_size=30),
       st.lists(st.integers(min_value=0), max_size=6))
def test_transport_round_trip_in_any_chunks(
    msgs: tuple[SmlMessage, ...], crc: Any, noise: bytes, cuts: list[int]
) -> None:
    payload = encode_file(msgs)
    wire = encode_transport(payload, crc=crc)
    stream = noise.replace(b"\x1b", b"") + wire + wire
    decoder = SmlTransportDecoder()
    events: list[Any] = []
    for chunk in split(stream, cuts):
        events += decoder.feed(chunk)
    events += decoder.feed_eof()
    frames = [e for e in events if isinstance(e, TransportFrame)]
    assert [(f.payload, f.crc_variant) for f in frames] == [(payload, crc)] * 2
    # The stream decoder (with its caches) maps exactly as decode_file + meter_frame.
    expected = meter_frame(msgs)
    mapped = SmlDecoder().feed(stream)
    got = [e for e in mapped if not isinstance(e, Discarded)]
    if expected is None:
        assert got == []
    else:
        assert [dict(f.to_json(), raw=None) for f in got] == [  # type: ignore[union-attr]
            dict(expected.to_json(), raw=None)
        ] * 2


def test_cached_decoding_equals_plain_decoding_on_the_captures() -> None:
    frames = [e for e in SmlTransportDecoder().feed(STREAM) if isinstance(e, TransportFrame)]
    plain = [meter_frame(decode_file(f.payload), raw=f.raw, offset=f.offset) for f in frames]
    cached = [e for e in SmlDecoder().feed(STREAM) if isinstance(e, MeterFrame)]
    assert cached == plain


def _plain(stream: bytes) -> list[tuple[object, ...]]:
    """What decode_file + meter_frame make of each file of ``stream`` (no caches, no
    templates), in the shape of :func:`summary`."""
    out: list[tuple[object, ...]] = []
    for ev in SmlTransportDecoder().feed(stream):
        if not isinstance(ev, TransportFrame):
            continue
        try:
            frame = meter_frame(decode_file(ev.payload), raw=ev.raw, offset=ev.offset)
        except GatewayError:
            out.append(("framing",))
            continue
        out.append(("frame", frame) if frame is not None else ("unsupported",))
    return out


def _mapped(stream: bytes) -> list[tuple[object, ...]]:
    return [("frame", e) if isinstance(e, MeterFrame) else (e.reason,)
            for e in SmlDecoder().feed(stream)
            if isinstance(e, MeterFrame) or e.reason in ("framing", "unsupported")]


def _same_length_pairs() -> list[tuple[bytes, bytes]]:
    pairs = []
    for capture in CAPTURES:
        payloads = [e.payload for e in SmlTransportDecoder().feed(capture)
                    if isinstance(e, TransportFrame)]
        pairs += [(a, b) for a, b in zip(payloads, payloads[1:], strict=False) if len(a) == len(b)]
    return pairs


PAIRS = _same_length_pairs()


def test_the_file_template_gives_what_the_plain_decode_gives_on_simulated_streams() -> None:
    for variant in ("ehz", "edl21"):
        sim = SmlSimulator(variant, seed=3)  # type: ignore[arg-type]
        now = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
        stream = b"".join(sim.file(now + timedelta(seconds=i)) for i in range(120))
        assert _mapped(stream) == _plain(stream)
        decoder = SmlDecoder()
        decoder.feed(stream)
        assert decoder._template_hits > 100  # the template was used, not only built


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PAIRS), st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                                        min_size=1, max_size=4), st.integers(1, 3))
def test_the_file_template_gives_what_the_plain_decode_gives_on_changed_files(
    pair: tuple[bytes, bytes], changes: list[tuple[int, int]], repeats: int
) -> None:
    """The next files of a meter with any octets changed (the transport CRC made right,
    so they reach the SML layer): a value, a transaction id, a CRC, or a constant the
    template must refuse; a changed file may come several times."""
    first, second = pair
    changed = bytearray(second)
    for at, value in changes:
        changed[at % len(changed)] = value
    files = [first, second] + [bytes(changed)] * repeats + [second]
    stream = b"".join(encode_transport(f) for f in files)
    assert _mapped(stream) == _plain(stream)


# ------------------------------------------------------------------ simulator
@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["ehz", "edl21"]),
    st.sampled_from(["x25", "kermit"]),
    st.integers(0, 2**16),
    st.floats(0, 10_000),
    st.lists(st.integers(1, 4 * 3600), min_size=2, max_size=12),
)
def test_simulator_files_decode_and_registers_never_go_down(
    variant: Any, crc: Any, seed: int, pv_peak_w: float, steps: list[int]
) -> None:
    sim = SmlSimulator(variant, seed=seed, pv_peak_w=pv_peak_w, crc=crc)
    decoder = SmlDecoder()
    now = datetime(2026, 6, 21, 4, 0, tzinfo=UTC)
    previous: dict[str, float] = {}
    for step in steps:
        now += timedelta(seconds=step)
        (frame,) = decoder.feed(sim.file(now))
        assert isinstance(frame, MeterFrame) and frame.checksum_ok
        assert decoder.crc_variant == crc
        registers = {r.id: r.value for r in frame.readings if ".8." in r.id}
        assert {"1-0:1.8.0", "1-0:2.8.0"} <= set(registers)
        for rid, value in registers.items():
            assert isinstance(value, float)
            assert value >= previous.get(rid, 0.0)
            previous[rid] = value
