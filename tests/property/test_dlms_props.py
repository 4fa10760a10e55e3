"""DLMS/COSEM properties: any split of a stream gives the same events (HDLC and push
decoders); arbitrary bytes into every decoder raise only gateway.errors and keep buffers
bounded; A-XDR data, APDUs and ciphering round-trip."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError, ProtocolError
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.dlms import axdr, security
from gateway.protocols.dlms.apdu import (
    AARE,
    AARQ,
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    AttributeWithSelection,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    DataNotification,
    ExceptionResponse,
    GeneralGloCiphering,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    InitiateRequest,
    InitiateResponse,
    SelectiveAccess,
    ServiceCiphered,
    SetRequestNormal,
    decode_apdu,
)
from gateway.protocols.dlms.axdr import (
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
    decode_data,
)
from gateway.protocols.dlms.cosem import PushLayout, fast_push_content, push_content
from gateway.protocols.dlms.hdlc import (
    FrameKind,
    FrameReceived,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcLink,
    HdlcParameters,
    control_u,
)
from gateway.protocols.dlms.push import DlmsEvent, DlmsPushDecoder
from gateway.protocols.dlms.wrapper import WrapperDecoder, WrapperFrame
from gateway.protocols.obis import ObisCode

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "dlms"
PUSHES = json.loads((VECTORS / "dlms_cosem" / "udp_wrapper_general_glo_ciphering.json")
                    .read_text())
KEY = PUSHES["encryption_key_ascii"].encode()
WRAPPED = [bytes.fromhex(c["wrapper_frame_hex"]) for c in PUSHES["cases"]]
BYTE_VECTORS = [bytes.fromhex(v["hex"]) for v in json.loads(
    (VECTORS / "dlms_cosem" / "test_byte_vectors.json").read_text())["vectors"]]
AMSHAN = [bytes.fromhex(h) for v in ("aidon", "kaifa", "kamstrup")
          for n, h in json.loads((VECTORS / "amshan" / f"{v}.json").read_text())["frames"].items()
          if not n.startswith("NOTIF")]
CLIENT = HdlcAddress(upper=16)
METER = HdlcAddress(upper=1, lower=17)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def summary(events: list[Any]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, MeterFrame):
            out.append(("frame", e.to_json(), e.raw, e.offset))
        elif isinstance(e, FrameReceived):
            out.append(("hdlc", e.frame, e.raw, e.offset))
        else:
            assert isinstance(e, Discarded)
            out.append((e.reason, type(e.error), str(e.error), e.error.offset, e.raw, e.offset))
    return out


# --------------------------------------------------------------- streams
HDLC_STREAM = (b"\x00noise" + b"".join(
    HdlcFrame(destination=CLIENT, source=METER, control=control_u(FrameKind.UI),
              information=info).encode() for info in AMSHAN)
    + BYTE_VECTORS[36] + BYTE_VECTORS[38] + b"\x7e\xa0\x07" + BYTE_VECTORS[40] + b"\x7e")
PUSH_STREAM = HDLC_STREAM + b"".join(WRAPPED[:4]) + WrapperFrame.decode(WRAPPED[4]).apdu + b"\x68"


def _stuff(frame: bytes) -> bytes:
    """ISO/IEC 13239 octet stuffing of a frame's body (flags kept)."""
    body = frame[1:-1].replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")
    return b"\x7e" + body + b"\x7e"


STUFFED_STREAM = b"xx" + b"".join(_stuff(HdlcFrame(
    destination=CLIENT, source=METER, control=control_u(FrameKind.UI), information=info
).encode()) for info in AMSHAN[:6]) + b"\x7e\x7d\x7e" + b"\x11" * 4200 + _stuff(BYTE_VECTORS[36])


def run_hdlc(chunks: list[bytes], *, stuffing: bool = False) -> list[Any]:
    decoder = HdlcFrameDecoder(byte_stuffing=stuffing)
    events: list[Any] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered <= 2 * 2049 + len(chunk)
    return events + decoder.feed_eof()


def run_push(chunks: list[bytes]) -> list[DlmsEvent]:
    decoder = DlmsPushDecoder(key=KEY, auth_key=KEY)
    events: list[DlmsEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered <= 65536 + 16
    return events + decoder.feed_eof()


HDLC_WHOLE = summary(run_hdlc([HDLC_STREAM]))
STUFFED_WHOLE = summary(run_hdlc([STUFFED_STREAM], stuffing=True))
PUSH_WHOLE = summary(run_push([PUSH_STREAM]))


def test_the_streams_decode_as_expected() -> None:
    assert [s[0] for s in HDLC_WHOLE].count("hdlc") == len(AMSHAN) + 3
    assert [s[0] for s in PUSH_WHOLE].count("frame") == len(AMSHAN) + 1 + 5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_hdlc_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert summary(run_hdlc(split(HDLC_STREAM, cuts))) == HDLC_WHOLE


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_stuffed_hdlc_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert [s[0] for s in STUFFED_WHOLE].count("hdlc") == 7
    assert summary(run_hdlc(split(STUFFED_STREAM, cuts), stuffing=True)) == STUFFED_WHOLE


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_push_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert summary(run_push(split(PUSH_STREAM, cuts))) == PUSH_WHOLE


def _check_offsets(events: list[Any], size: int) -> None:
    for e in events:
        offset = e.offset
        assert 0 <= offset < max(size, 1)
        if isinstance(e, Discarded):
            assert isinstance(e.error, ProtocolError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.booleans())
def test_arbitrary_bytes_into_the_hdlc_decoder(data: bytes, stuffing: bool) -> None:
    decoder = HdlcFrameDecoder(byte_stuffing=stuffing)
    events = decoder.feed(data) + decoder.feed_eof()
    assert decoder.buffered == 0
    _check_offsets(events, len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_into_the_push_decoder(data: bytes) -> None:
    decoder = DlmsPushDecoder(key=KEY, auth_key=KEY, max_frame=4096)
    events = decoder.feed(data) + decoder.feed_eof()
    assert decoder.buffered == 0
    _check_offsets(events, len(data))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([HDLC_STREAM, PUSH_STREAM]), st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8))
def test_damaged_streams_never_raise(stream: bytes, damage: list[tuple[int, int]]) -> None:
    data = bytearray(stream)
    for where, value in damage:
        data[where % len(data)] = value
    events = run_push([bytes(data)])
    _check_offsets(events, len(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_into_the_wrapper_decoder_and_the_link(data: bytes) -> None:
    wrapper = WrapperDecoder()
    events = wrapper.feed(data) + wrapper.feed_eof()
    assert wrapper.buffered == 0
    _check_offsets(events, len(data))
    for role in ("client", "server"):
        link = HdlcLink(role=role, client=CLIENT, server=METER)  # type: ignore[arg-type]
        link.receive(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_every_message_decoder(data: bytes) -> None:
    for decoder in (decode_apdu, decode_data, HdlcFrame.decode, HdlcFrame.decode_body,
                    WrapperFrame.decode, HdlcParameters.decode, SelectiveAccess.decode,
                    CosemDateTime.decode, HdlcAddress.decode):
        try:
            decoder(data)
        except GatewayError:
            pass


# ------------------------------------------------------------------- A-XDR
def _float32() -> st.SearchStrategy[float]:
    return st.floats(width=32, allow_nan=False).map(
        lambda f: struct.unpack(">f", struct.pack(">f", f))[0])


_SIMPLE: st.SearchStrategy[Data] = st.one_of(
    st.just(axdr.null()),
    st.just(Data(type=DataType.DONT_CARE, value=None)),
    st.booleans().map(axdr.boolean),
    st.binary(max_size=300).map(axdr.octet_string),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=40).map(axdr.visible_string),
    st.text(max_size=20).map(axdr.utf8_string),
    st.integers(-128, 127).map(axdr.integer),
    st.integers(-128, 127).map(lambda v: Data(type=DataType.BCD, value=v)),
    st.integers(-(2**15), 2**15 - 1).map(axdr.long),
    st.integers(0, 255).map(axdr.unsigned),
    st.integers(0, 2**16 - 1).map(axdr.long_unsigned),
    st.integers(-(2**31), 2**31 - 1).map(axdr.double_long),
    st.integers(0, 2**32 - 1).map(axdr.double_long_unsigned),
    st.integers(-(2**63), 2**63 - 1).map(axdr.long64),
    st.integers(0, 2**64 - 1).map(axdr.long64_unsigned),
    st.integers(0, 255).map(axdr.enum),
    _float32().map(axdr.float32),
    st.floats(allow_nan=False).map(axdr.float64),
    st.text(alphabet="01", max_size=70).map(axdr.bit_string),
    st.binary(min_size=12, max_size=12).map(lambda b: axdr.date_time(CosemDateTime.decode(b))),
    st.binary(min_size=5, max_size=5).map(lambda b: Data(type=DataType.DATE,
                                                           value=CosemDate.decode(b))),
    st.binary(min_size=4, max_size=4).map(lambda b: Data(type=DataType.TIME,
                                                           value=CosemTime.decode(b))),
)

_COMPACT = st.lists(st.integers(0, 2**16 - 1), max_size=20).map(
    lambda values: Data(type=DataType.COMPACT_ARRAY, value=CompactArray(
        description=TypeDescription(type=DataType.STRUCTURE, items=(
            TypeDescription(type=DataType.LONG_UNSIGNED), TypeDescription(type=DataType.BOOLEAN))),
        items=tuple(axdr.structure(axdr.long_unsigned(v), axdr.boolean(v % 2 == 0))
                    for v in values))))

DATA: st.SearchStrategy[Data] = st.recursive(
    st.one_of(_SIMPLE, _COMPACT),
    lambda children: st.one_of(
        st.lists(children, max_size=6).map(lambda items: axdr.array(*items)),
        st.lists(children, max_size=6).map(lambda items: axdr.structure(*items)),
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(DATA)
def test_axdr_round_trips(value: Data) -> None:
    raw = value.encode()
    assert decode_data(raw) == value
    assert decode_data(raw).encode() == raw


@settings(max_examples=300, deadline=None)
@given(DATA)
def test_push_content_maps_any_body(value: Data) -> None:
    content = push_content(value)
    for reading in content.readings:
        assert isinstance(reading.value, int | float | str)
    _fast_equals_general(value)


def _fast_equals_general(body: Data) -> None:
    raw = body.encode()
    fast = fast_push_content(raw, 0)
    if fast is not None:
        content, end = fast
        assert end == len(raw)
        assert content == push_content(body)


_LEAVES = st.one_of(
    st.integers(0, 2**32 - 1).map(axdr.double_long_unsigned),
    st.integers(-(2**15), 2**15 - 1).map(axdr.long),
    st.integers(0, 2**16 - 1).map(axdr.long_unsigned),
    st.integers(0, 255).map(axdr.enum),
    st.binary(max_size=20).map(axdr.octet_string),
    st.sampled_from([b"KFM_001", b"AIDON_V0001", bytes(6), bytes.fromhex("07E5091B01092F0F00FF8880")])
    .map(axdr.octet_string),
    st.text(alphabet="AZaz09_", max_size=16).map(axdr.visible_string),
    st.just(axdr.null()),
    st.binary(min_size=12, max_size=12).map(lambda b: axdr.date_time(CosemDateTime.decode(b))),
)
_OBIS_CODES = st.sampled_from([ObisCode(1, 0, 1, 7, 0), ObisCode(1, 1, 31, 7, 0),
                               ObisCode(1, 0, 0, 2, 129), ObisCode(0, 0, 96, 1, 0),
                               ObisCode(0, 0, 42, 0, 0), ObisCode(0, 1, 1, 0, 0),
                               ObisCode(1, 0, 1, 8, 0), ObisCode(0, 0, 96, 1, 7)]) | st.tuples(
    *[st.integers(0, 255)] * 6).map(lambda t: ObisCode(*t))
_SCALER = st.tuples(st.integers(-128, 127), st.integers(0, 255)).map(
    lambda t: axdr.structure(axdr.integer(t[0]), axdr.enum(t[1])))


def _struct_item(draw: Any) -> Data:
    members = [axdr.octet_string(draw(_OBIS_CODES).to_bytes()), draw(_LEAVES)]
    if draw(st.booleans()):
        members.append(draw(_SCALER))
    return axdr.structure(*members)


@st.composite
def _aidon_bodies(draw: Any) -> Data:
    items = [_struct_item(draw) for _ in range(draw(st.integers(0, 8)))]
    return (axdr.array if draw(st.booleans()) else axdr.structure)(*items)


@st.composite
def _flat_bodies(draw: Any) -> Data:
    items: list[Data] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            items += [axdr.octet_string(draw(_OBIS_CODES).to_bytes()), draw(_LEAVES)]
            if draw(st.booleans()):
                items.append(draw(_SCALER))
        elif kind == 1:
            items.append(draw(_LEAVES))
        elif kind == 2:
            items.append(draw(_SCALER))
        else:
            items.append(_struct_item(draw))
    return axdr.structure(*items)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_aidon_bodies(), _flat_bodies(), _LEAVES))
def test_the_fast_path_gives_what_the_general_one_gives(body: Data) -> None:
    _fast_equals_general(body)


def _same_layout(body: Data, draw: Any) -> Data:
    """``body`` with new values of the same types and lengths in its leaves (what the
    next push of the same list looks like), now and then a leaf of another size."""
    value = body.value
    if isinstance(value, tuple):
        return Data(type=body.type, value=tuple(_same_layout(i, draw) for i in value))
    if isinstance(value, bool) or not isinstance(value, int | bytes | str):
        return body
    if draw(st.integers(0, 9)) == 0:
        return draw(_LEAVES)  # maybe another type or length: the layout must refuse it
    if isinstance(value, int):
        lo, hi = {DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1), DataType.LONG: (-(2**15), 2**15 - 1),
                  DataType.LONG_UNSIGNED: (0, 2**16 - 1), DataType.ENUM: (0, 255),
                  DataType.INTEGER: (-128, 127)}.get(body.type, (value, value))
        return Data(type=body.type, value=draw(st.sampled_from([value, lo, hi])
                                               | st.integers(lo, hi)))
    if isinstance(value, bytes):
        if len(value) == 6 and draw(st.booleans()):
            return body  # an OBIS code, mostly kept
        return Data(type=body.type, value=draw(st.binary(min_size=len(value), max_size=len(value))))
    return Data(type=body.type, value=draw(st.text(alphabet="AZaz09_", min_size=len(value),
                                                   max_size=len(value))))


@settings(max_examples=500, deadline=None)
@given(st.one_of(_aidon_bodies(), _flat_bodies()), st.data())
def test_a_compiled_layout_gives_what_the_general_path_gives(body: Data, data: Any) -> None:
    raw = body.encode()
    layout = PushLayout.compile(raw, 0)
    if layout is None:
        assert fast_push_content(raw, 0) is None or fast_push_content(raw, 0)[1] != len(raw)
        return
    assert layout.content(raw, 0, b"", None) == push_content(body)
    for _ in range(3):  # the next pushes: same layout, new values (or not quite)
        nxt = _same_layout(body, data.draw)
        got = layout.content(nxt.encode(), 0, b"", None)
        if got is not None:
            assert got == push_content(nxt)
        else:
            assert nxt.encode() != raw


# -------------------------------------------------------------------- APDUs
OBIS = st.tuples(*[st.integers(0, 255)] * 6).map(lambda t: ObisCode(*t))
IIP = st.integers(0, 255)
ATTRIBUTE = st.builds(CosemAttributeDescriptor, class_id=st.integers(0, 0xFFFF), instance=OBIS,
                      attribute=st.integers(-128, 127))
ACCESS = st.none() | st.builds(SelectiveAccess, selector=st.integers(0, 255), parameters=DATA)
RESULT = DATA | st.sampled_from(DataAccessResult)
OCTETS = st.binary(max_size=40)

APDUS = st.one_of(
    st.builds(GetRequestNormal, attribute=ATTRIBUTE, access=ACCESS, invoke_id_and_priority=IIP),
    st.builds(GetRequestNext, block_number=st.integers(0, 2**32 - 1), invoke_id_and_priority=IIP),
    st.builds(GetRequestWithList, attributes=st.lists(st.builds(
        AttributeWithSelection, attribute=ATTRIBUTE, access=ACCESS), max_size=4).map(tuple),
        invoke_id_and_priority=IIP),
    st.builds(GetResponseNormal, result=RESULT, invoke_id_and_priority=IIP),
    st.builds(GetResponseWithDataBlock, last_block=st.booleans(),
              block_number=st.integers(0, 2**32 - 1),
              result=st.binary(max_size=300) | st.sampled_from(DataAccessResult),
              invoke_id_and_priority=IIP),
    st.builds(GetResponseWithList, results=st.lists(RESULT, max_size=4).map(tuple),
              invoke_id_and_priority=IIP),
    st.builds(SetRequestNormal, attribute=ATTRIBUTE, value=DATA, access=ACCESS,
              invoke_id_and_priority=IIP),
    st.builds(ActionRequestNormal, method=st.builds(
        CosemMethodDescriptor, class_id=st.integers(0, 0xFFFF), instance=OBIS,
        method=st.integers(-128, 127)), parameters=st.none() | DATA, invoke_id_and_priority=IIP),
    st.builds(ActionResponseNormal, result=st.sampled_from(ActionResult),
              return_parameters=st.none() | RESULT, invoke_id_and_priority=IIP),
    st.builds(DataNotification, long_invoke_id_and_priority=st.integers(0, 2**32 - 1),
              body=DATA, date_time=st.sampled_from([b"", bytes(12), bytes.fromhex(
                  "07E5091B01092F0F00FF8880")]),
              date_time_form=st.just("octet-string")),
    st.builds(DataNotification, long_invoke_id_and_priority=st.integers(0, 2**32 - 1),
              body=DATA, date_time=st.binary(min_size=12, max_size=12),
              date_time_form=st.sampled_from(["data-octet-string", "data-date-time"])),
    st.builds(ExceptionResponse, state_error=st.integers(0, 255),
              service_error=st.integers(0, 5) | st.just(7)),
    st.builds(ExceptionResponse, state_error=st.integers(0, 255), service_error=st.just(6),
              invocation_counter=st.integers(0, 2**32 - 1)),
    st.builds(InitiateRequest, proposed_conformance=st.integers(0, 2**24 - 1),
              client_max_receive_pdu_size=st.integers(0, 0xFFFF),
              proposed_dlms_version=st.integers(0, 255), dedicated_key=st.none() | OCTETS,
              response_allowed=st.booleans(),
              proposed_quality_of_service=st.none() | st.integers(-128, 127)),
    st.builds(InitiateResponse, negotiated_conformance=st.integers(0, 2**24 - 1),
              server_max_receive_pdu_size=st.integers(0, 0xFFFF),
              negotiated_quality_of_service=st.none() | st.integers(-128, 127),
              vaa_name=st.integers(0, 0xFFFF)),
    st.builds(AARQ, application_context=st.integers(1, 4), calling_ap_title=st.none() | OCTETS,
              acse_requirements=st.booleans(), mechanism=st.none() | st.integers(0, 7),
              authentication_value=st.none() | OCTETS, user_information=st.none() | OCTETS),
    st.builds(AARE, result=st.integers(0, 2), diagnostic=st.integers(0, 14),
              diagnostic_source=st.sampled_from(["user", "provider"]),
              application_context=st.integers(1, 4), responding_ap_title=st.none() | OCTETS,
              acse_requirements=st.booleans(), mechanism=st.none() | st.integers(0, 7),
              authentication_value=st.none() | OCTETS, user_information=st.none() | OCTETS),
    st.builds(GeneralGloCiphering, system_title=st.binary(min_size=8, max_size=8),
              security_control=st.integers(0, 255), invocation_counter=st.integers(0, 2**32 - 1),
              ciphered=st.binary(max_size=200)),
    st.builds(ServiceCiphered, tag=st.sampled_from([0x21, 0x28, 0xC8, 0xCC, 0xD0, 0xD7]),
              security_control=st.integers(0, 255), invocation_counter=st.integers(0, 2**32 - 1),
              ciphered=st.binary(max_size=200)),
)


@settings(max_examples=500, deadline=None)
@given(APDUS)
def test_apdus_round_trip(apdu: Any) -> None:
    raw = apdu.encode()
    assert decode_apdu(raw) == apdu
    assert type(apdu).decode(raw) == apdu


# ------------------------------------------------------------------- crypto
@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=500), sc=st.sampled_from([0x10, 0x20, 0x30]),
       key=st.binary(min_size=16, max_size=16), auth_key=st.binary(min_size=16, max_size=16),
       title=st.binary(min_size=8, max_size=8), counter=st.integers(0, 2**32 - 1))
def test_encrypt_decrypt_round_trips(plaintext: bytes, sc: int, key: bytes, auth_key: bytes,
                                     title: bytes, counter: int) -> None:
    args = {"security_control": sc, "system_title": title, "invocation_counter": counter,
            "key": key, "auth_key": auth_key}
    ciphered = security.encrypt(plaintext, **args)  # type: ignore[arg-type]
    assert security.decrypt(ciphered, **args) == plaintext  # type: ignore[arg-type]
    if sc & 0x10 and ciphered:
        damaged = bytes((ciphered[0] ^ 0x01,)) + ciphered[1:]
        try:
            security.decrypt(damaged, **args)  # type: ignore[arg-type]
        except GatewayError as exc:
            assert getattr(exc, "reason", None) == "wrong_key"
        else:
            raise AssertionError("a damaged authenticated frame was accepted")


@settings(max_examples=200, deadline=None)
@given(body=DATA, counter=st.integers(1, 2**32 - 1), sc=st.sampled_from([0x10, 0x20, 0x30]))
def test_ciphered_pushes_round_trip_through_the_decoder(body: Data, counter: int,
                                                        sc: int) -> None:
    notification = DataNotification(long_invoke_id_and_priority=1, body=body).encode()
    raw = security.cipher_apdu(notification, kind="general-glo", security_control=sc,
                               system_title=b"ABCDEFGH", invocation_counter=counter, key=KEY,
                               auth_key=KEY)
    wrapped = WrapperFrame(source_wport=1, destination_wport=16, apdu=raw).encode()
    events = DlmsPushDecoder(key=KEY, auth_key=KEY).feed(wrapped)
    assert len(events) == 1 and isinstance(events[0], MeterFrame)
    assert events[0].readings == push_content(body).readings
    assert events[0].meter_id == b"ABCDEFGH".hex().upper()


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(8, 300), st.integers(8, 300))
def test_link_moves_any_apdu_both_ways(apdu: bytes, client_tx: int, server_tx: int) -> None:
    client = HdlcLink(role="client", client=CLIENT, server=METER,
                      parameters=HdlcParameters(max_info_tx=client_tx, max_info_rx=client_tx))
    server = HdlcLink(role="server", client=CLIENT, server=METER,
                      parameters=HdlcParameters(max_info_tx=server_tx, max_info_rx=server_tx))
    out = [client.connect()]
    received: dict[str, list[bytes]] = {"client": [], "server": []}

    def pump(sender: HdlcLink, receiver: HdlcLink, frames: list[bytes]) -> None:
        while frames:
            replies: list[bytes] = []
            for frame in frames:
                events, more = receiver.receive(frame)
                received[receiver.role] += [e.apdu for e in events if hasattr(e, "apdu")]
                replies += more
            frames = replies
            sender, receiver = receiver, sender

    pump(client, server, out)
    pump(client, server, [client.send(apdu)])
    pump(server, client, [server.send(apdu[::-1])])
    assert received == {"server": [apdu], "client": [apdu[::-1]]}
