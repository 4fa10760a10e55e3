"""IEC 62056-21: messages (shared vectors), the readout decoder, and the client dialog
driven against the simulated meter through an in-memory optical link with fake time."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest

from gateway.errors import (
    ChecksumError,
    FramingError,
    LocalProtocolError,
    ReadTimeout,
    UnsupportedError,
)
from gateway.model import MeterFrame
from gateway.protocols._events import Discarded
from gateway.protocols.iec62056_21 import (
    Ack,
    AckOptionSelect,
    AnswerMessage,
    ClientSession,
    CommandMessage,
    DataLine,
    DataSet,
    IdentificationMessage,
    IdentReceived,
    Nak,
    ReadoutDecoder,
    ReadoutMessage,
    RequestMessage,
    Retrying,
    Send,
    SessionFailed,
    SessionState,
    SetBaudrate,
    baud_char_for,
    decode_message,
)
from gateway.sim.iec62056_21 import LoadModel, MeterSession, SwitchBaud, Wait, _garble

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "iec62056_21"
PWITAB = json.loads((VECTORS / "pwitab_messages.json").read_text())["cases"]
EASYMETER = sorted((VECTORS / "dsmr_parser_easymeter").glob("*.txt"))


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['kind']}:{case['bytes_hex'][:24]}"


# ------------------------------------------------------------------ vectors
@pytest.mark.parametrize("case", PWITAB, ids=_case_id)
def test_pwitab_vector(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["bytes_hex"])
    kind, expected = case["kind"], case["expected"]
    if "text" in case:
        assert data == case["text"].encode("latin-1")
    if kind == "data_set":
        ds = DataSet.decode(data)
        assert (ds.address, ds.value, ds.unit) == (
            expected["address"],
            expected["value"],
            expected["unit"],
        )
        assert ds.encode() == data
    elif kind == "data_set_invalid":
        with pytest.raises(FramingError):
            DataSet.decode(data)
    elif kind == "data_line":
        line = DataLine.decode(data)
        assert len(line.sets) == expected["data_sets"]
        first = line.sets[0]
        assert (first.address, first.value, first.unit) == (
            expected["first"]["address"],
            expected["first"]["value"],
            expected["first"]["unit"],
        )
        assert line.encode() == data
    elif kind in ("answer_data_message", "readout_data_message", "command_message", "raw_bcc"):
        if not expected["bcc_ok"]:
            with pytest.raises(ChecksumError) as info:
                decode_message(data)
            assert info.value.got == int(case["bcc_in_frame"], 16)
            assert info.value.expected == int(case["bcc_computed_by_us"], 16)
            assert info.value.offset == len(data) - 1
            return
        msg = decode_message(data)
        assert msg.encode() == data
        if kind == "answer_data_message":
            assert isinstance(msg, AnswerMessage)
            sets = [s for line in msg.lines() for s in line.sets]
            assert [(s.address, s.value, s.unit) for s in sets] == [
                (d["address"], d["value"], d["unit"]) for d in expected["data"]
            ]
        elif kind == "readout_data_message":
            assert isinstance(msg, ReadoutMessage)
            assert len(msg.lines) == expected["data_lines"]
            assert sum(len(line.sets) for line in msg.lines) == expected["data_sets"]
        elif kind == "command_message":
            assert isinstance(msg, CommandMessage)
            assert (msg.command, msg.command_type) == (
                expected["command"],
                expected["command_type"],
            )
            if "value" in expected:
                ds = msg.data_set()
                assert (ds.address, ds.value) == (expected["address"], expected["value"])
                assert ds.unit == expected.get("unit")
            else:
                assert msg.data is None
        else:
            assert isinstance(msg, CommandMessage)
            assert (msg.command, msg.command_type) == ("W", "2")
            # the vector's note writes "(91032409223 9)"; the bytes have no space
            assert msg.data == "C003(910324092239)"
    elif kind == "request_message":
        msg = decode_message(data)
        assert isinstance(msg, RequestMessage)
        assert msg.address == (expected["device_address"] or "")
        assert msg.encode() == data
    elif kind == "ack_option_select":
        msg = decode_message(data)
        assert isinstance(msg, AckOptionSelect)
        assert (msg.protocol_char, msg.baud_char, msg.mode_char) == (
            expected["protocol_char"],
            expected["baud_char"],
            expected["mode_char"],
        )
        assert msg.baud == 9600 and not msg.is_hdlc
        assert msg.encode() == data
    elif kind == "identification_message":
        msg = decode_message(data)
        assert isinstance(msg, IdentificationMessage)
        assert (msg.manufacturer, msg.baud_char) == (
            expected["manufacturer"],
            expected["baud_char"],
        )
        # pwitab keeps "2EK280"; the "\2" is the enhanced identification (mode E), not
        # part of the identification
        assert msg.enhanced == ("2",) and msg.identification == "EK280"
        assert msg.mode == "E" and msg.baud == 19200 and not msg.fast_reaction
        assert msg.encode() == data
    else:
        pytest.fail(f"vector kind {kind!r} not covered")


def test_every_vector_kind_is_known() -> None:
    kinds = {c["kind"] for c in PWITAB}
    assert kinds <= {
        "data_set",
        "data_set_invalid",
        "data_line",
        "answer_data_message",
        "readout_data_message",
        "command_message",
        "raw_bcc",
        "request_message",
        "ack_option_select",
        "identification_message",
    }


@pytest.mark.parametrize("path", EASYMETER, ids=lambda p: p.stem)
def test_easymeter_mode_d_push_without_stx(path: Path) -> None:
    """EasyMeter Q3D pushes ident + data lines + "!" with no STX/ETX/BCC; the decoder
    reads that as a mode D readout with checksum_ok=None.  The lines the COM-1 gateway
    appends after "!" (and its 0xFF filler) are reported as garbage."""
    expected = json.loads(path.with_suffix(".json").read_text())["generic_tokens"]
    dec = ReadoutDecoder()
    events = dec.feed(path.read_bytes()) + dec.feed_eof()
    frames = [e for e in events if isinstance(e, MeterFrame)]
    assert len(frames) == 1
    frame = frames[0]
    assert frame.header == "/" + expected["header"]
    assert frame.checksum_ok is None and frame.offset == 0 and frame.timestamp is None
    assert frame.meter_id == expected["objects"][0]["values"][0]["value"]  # 1-0:0.0.0
    assert len(frame.readings) == len(expected["objects"])
    for reading, obj in zip(frame.readings, expected["objects"], strict=True):
        assert reading.id == obj["obis"].removesuffix("*255")
        (value,) = obj["values"]
        assert str(reading.value) == value["value"] or reading.value == float(value["value"])
        assert reading.unit == value["unit"]
    rest = [e for e in events if isinstance(e, Discarded)]
    assert [d.reason for d in rest] == ["garbage"]
    assert rest[0].offset > frame.offset and rest[0].raw.startswith(b"258")


# --------------------------------------------------------- message round trips
ROUND_TRIP = [
    RequestMessage(),
    RequestMessage(address="12345678"),
    IdentificationMessage(manufacturer="ISk", baud_char="5", identification="MT174-0001"),
    IdentificationMessage(
        manufacturer="ISK", baud_char="5", identification="MT382-1000", enhanced=("2",)
    ),
    IdentificationMessage(manufacturer="LGZ", baud_char="E", identification="ZMD120"),
    IdentificationMessage(manufacturer="ABC", baud_char="X", identification=""),
    AckOptionSelect(baud_char="5"),
    AckOptionSelect(protocol_char="2", baud_char="5", mode_char="2"),
    Ack(),
    Nak(),
    ReadoutMessage(lines=()),
    ReadoutMessage(
        lines=(
            DataLine(sets=(DataSet(address="1.8.0", value="001234.5", unit="kWh"),)),
            DataLine(
                sets=(
                    DataSet(address="P.01", value="2401150800"),
                    DataSet(address=None, value="00"),
                    DataSet(address=None, value="15"),
                    DataSet(address=None, value="1.5", unit="kWh"),
                )
            ),
            DataLine(sets=()),
            DataLine(sets=(DataSet(address="1-0:1.8.0*255", value="1", unit=""),)),
        )
    ),
    AnswerMessage(data="(0)"),
    AnswerMessage(data="1.8.0(1)\r\n", partial=True),
    CommandMessage(command="R", command_type="1", data="1.8.0()"),
    CommandMessage(command="B", command_type="0"),
    CommandMessage(command="W", command_type="5", data="C.1.0(1)", partial=True),
]


@pytest.mark.parametrize("msg", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_message_round_trip(msg: Any) -> None:
    data = msg.encode()
    assert decode_message(data) == msg
    assert type(msg).decode(data) == msg
    # a 7E1 line read as 8N1 sets bit 7 on odd characters: the decode ignores it
    parity = bytes(b | 0x80 if b.bit_count() % 2 else b for b in data)
    assert type(msg).decode(parity) == msg


def test_data_set_and_line_round_trip() -> None:
    for ds in (
        DataSet(address="F.F", value="00"),
        DataSet(address=None, value=""),
        DataSet(address="C.1.0", value="1234", unit=""),
    ):
        assert DataSet.decode(ds.encode()) == ds
    line = DataLine.decode(b"1.8.1(1*kWh)1.8.2(2*kWh)(3)")
    assert [s.address for s in line.sets] == ["1.8.1", "1.8.2", None]


def _bcc(block: bytes) -> bytes:
    """Append the right BCC so that only the structure is wrong."""
    from gateway.protocols._checks import bcc

    return block + bytes((bcc(block[1:]),))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x07",
        b"/?!\n",
        b"/AB5x\r\n",
        b"/?abc*!\r\n",
        b"\x06\x00\x00\x00\r\n",
        b"\x02a(1)\r\n!\r\n",
        _bcc(b"\x02a(1)\x03\x03"),
        _bcc(b"\x01\x03"),
        _bcc(b"\x01RR\x02x\x02\x03"),
        _bcc(b"\x01R\x03"),
        _bcc(b"\x02a(b\r\n!\r\n\x03"),
        _bcc(b"\x02a(1)!\r\n\x03"),
        _bcc(b"\x02a(1)\r\n!\r\n\x04"),
        _bcc(b"\x02\x07\x03"),
    ],
)
def test_decode_message_rejects(data: bytes) -> None:
    with pytest.raises(FramingError):
        decode_message(data)


def test_builders_validate() -> None:
    with pytest.raises(LocalProtocolError):
        RequestMessage(address="a/b")
    with pytest.raises(LocalProtocolError):
        IdentificationMessage(manufacturer="AB", baud_char="5", identification="x")
    with pytest.raises(LocalProtocolError):
        DataSet(address="1.8.0", value="1(2")
    with pytest.raises(LocalProtocolError):
        baud_char_for(7200)
    assert baud_char_for(9600) == "5" and baud_char_for(9600, "B") == "E"


def test_identification_modes() -> None:
    def ident(z: str, *enhanced: str) -> IdentificationMessage:
        return IdentificationMessage(
            manufacturer="ABc", baud_char=z, identification="m", enhanced=enhanced
        )

    assert (ident("X").mode, ident("X").baud) == ("A", 300)
    assert (ident("C").mode, ident("C").baud) == ("B", 2400)
    assert (ident("G").mode, ident("G").baud) == ("B", None)
    assert (ident("4").mode, ident("4").baud) == ("C", 4800)
    assert (ident("9").mode, ident("9").baud) == ("C", None)
    assert ident("5", "2").mode == "E"
    assert not ident("5").fast_reaction


# ---------------------------------------------------------------- decoder
def _readout(*sets: tuple[str, str, str | None]) -> bytes:
    return ReadoutMessage(
        lines=tuple(DataLine(sets=(DataSet(address=a, value=v, unit=u),)) for a, v, u in sets)
    ).encode()


def _parity(data: bytes) -> bytes:
    return bytes(b | 0x80 if b.bit_count() % 2 else b for b in data)


IDENT = b"/ISk5MT174-0001\r\n"
READOUT = _readout(
    ("0.0.0", "00012345", None),
    ("0.9.1", "093012", None),
    ("0.9.2", "240131", None),
    ("1.8.0", "001234.5", "kWh"),
    ("1-0:2.8.0*255", "000012", "kWh"),
    ("16.7.0", "-0.25", "kW"),
)


def _frames(events: list[MeterFrame | Discarded]) -> list[MeterFrame]:
    return [e for e in events if isinstance(e, MeterFrame)]


def test_decoder_full_dialog_capture() -> None:
    """Sign-on + echo, identification, option select + echo, noise, parity bits,
    then a second readout: every readout is found."""
    capture = (
        b"/?!\r\n"
        + b"/?!\r\n"
        + IDENT
        + b"\x06050\r\n" * 2
        + b"\x00\xff\x00"
        + _parity(READOUT)
        + b"\r\n"
        + b"~~~junk"
        + b"/?!\r\n"
        + _parity(IDENT)
        + READOUT
    )
    dec = ReadoutDecoder(meter_tz=UTC)
    events = dec.feed(capture) + dec.feed_eof()
    frames = _frames(events)
    assert len(frames) == 2
    for f in frames:
        assert f.protocol == "iec62056-21"
        assert f.checksum_ok is True
        assert f.header == "/ISk5MT174-0001"
        assert f.meter_id == "00012345"  # 0.0.0 beats the identification
        assert f.timestamp == datetime(2024, 1, 31, 9, 30, 12, tzinfo=UTC)
        values = {r.id: (r.value, r.unit) for r in f.readings}
        assert values == {
            "0.0.0": ("00012345", None),
            "0.9.1": ("093012", None),
            "0.9.2": ("240131", None),
            "1.8.0": (1234.5, "kWh"),
            "1-0:2.8.0": (12, "kWh"),
            "16.7.0": (-0.25, "kW"),
        }
        assert f.raw.translate(bytes(b & 0x7F for b in range(256))).startswith(b"/ISk5")
    assert frames[0].offset == capture.index(IDENT)
    assert frames[1].offset == capture.rindex(b"/?!\r\n") + 5
    garbage = [e for e in events if isinstance(e, Discarded)]
    assert [d.reason for d in garbage] == ["garbage", "garbage"]
    assert garbage[0].raw == b"\xff\x00"  # NUL alone is idle line, 0xFF is not
    assert garbage[1].raw.endswith(b"~~~junk")
    assert dec.buffered == 0


def test_decoder_meter_id_and_timestamp_fallbacks() -> None:
    dec = ReadoutDecoder()
    (frame,) = _frames(dec.feed(IDENT + _readout(("1.8.0", "1", "kWh"), ("0.9.1", "0930", None))))
    assert frame.meter_id == "MT174-0001" and frame.timestamp is None
    (frame,) = _frames(dec.feed(_readout(("C.1.0", "777", None), ("0-0:96.1.0", "888", None))))
    assert frame.meter_id == "777" and frame.header == ""
    (frame,) = _frames(dec.feed(_readout(("0-0:96.1.0*255", "888", None))))
    assert frame.meter_id == "888" and frame.readings[0].id == "0-0:96.1.0"
    # a century digit in front of YYMMDD, time without seconds, the zone the caller gives
    tz = timezone(timedelta(hours=1))
    dec = ReadoutDecoder(meter_tz=tz)
    (frame,) = _frames(dec.feed(_readout(("0.9.2", "1240229", None), ("0.9.1", "2359", None))))
    assert frame.timestamp == datetime(2024, 2, 29, 23, 59, tzinfo=tz)
    (frame,) = _frames(dec.feed(_readout(("0.9.2", "241399", None), ("0.9.1", "000000", None))))
    assert frame.timestamp is None  # an impossible date is no timestamp, not an error


def test_decoder_multi_value_sets() -> None:
    block = b"\x02P.01(2401150800)(00)(15)(1.8.0)(kWh)\r\n(0.5)(0.6)\r\n1.8.0(1*kWh)(2*kWh)\r\n!\r\n\x03"
    from gateway.protocols._checks import bcc

    dec = ReadoutDecoder()
    (frame,) = _frames(dec.feed(block + bytes((bcc(block[1:]),))))
    p01, energy = frame.readings
    assert p01.id == "P.01" and p01.value == 2401150800
    assert dict(p01.extra)["values"] == (2401150800, 0, 15, "1.8.0", "kWh", 0.5, 0.6)
    assert dict(energy.extra) == {"values": (1, 2), "units": ("kWh", "kWh")}
    json.dumps(frame.to_json())  # extra stays JSON-able


def test_decoder_bad_bcc_and_bad_line() -> None:
    bad = bytearray(READOUT)
    bad[-1] ^= 0x01
    capture = IDENT + bytes(bad) + b"\x02x(1)\r\nnot a data set\r\n!\r\n\x03"
    from gateway.protocols._checks import bcc

    capture += bytes((bcc(capture[capture.rindex(b"\x02") + 1 :]),))
    events = ReadoutDecoder().feed(capture)
    checksum, framing, frame = events
    assert isinstance(checksum, Discarded) and checksum.reason == "checksum"
    assert (
        isinstance(checksum.error, ChecksumError) and checksum.offset == 0 == checksum.error.offset
    )
    assert checksum.raw == IDENT + bytes(bad)
    assert isinstance(framing, Discarded) and framing.reason == "framing"
    assert framing.raw == b"not a data set\r" and capture[framing.offset :].startswith(
        b"not a data"
    )
    assert isinstance(frame, MeterFrame) and [r.id for r in frame.readings] == ["x"]
    assert frame.header == ""  # the identification went with the bad readout


def test_decoder_mode_e() -> None:
    """A mode E capable meter read in mode C decodes; a switch to HDLC is unsupported."""
    ident = b"/ISK5\\2MT382-1000\r\n"
    dec = ReadoutDecoder()
    (frame,) = dec.feed(b"/?!\r\n" + ident + b"\x06050\r\n" + READOUT)
    assert isinstance(frame, MeterFrame) and frame.header == "/ISK5\\2MT382-1000"
    hdlc = b"\x7e\xa0\x19\x03\x41\x93\x5a\x64\x81\x80\x12\x05\x01\x80\x06\x01\x80\x07\x04\x00\x7e"
    events = dec.feed(b"/?!\r\n" + ident + b"\x06252\r\n" + hdlc * 3 + b"/?!\r\n" + IDENT + READOUT)
    unsupported, frame = events
    assert isinstance(unsupported, Discarded) and unsupported.reason == "unsupported"
    assert isinstance(unsupported.error, UnsupportedError)
    assert "mode E" in str(unsupported.error) and unsupported.raw == ident + b"\x06252\r\n"
    assert isinstance(frame, MeterFrame) and frame.header == "/ISk5MT174-0001"
    # only the meter's side captured: ident with \2 then HDLC flags
    events = ReadoutDecoder().feed(ident + hdlc + IDENT + READOUT)
    assert [type(e).__name__ for e in events] == ["Discarded", "MeterFrame"]
    assert events[0].reason == "unsupported"  # type: ignore[union-attr]


def test_decoder_truncated_and_overflow() -> None:
    dec = ReadoutDecoder(max_frame_bytes=1024)
    cut = READOUT[:40]
    events = dec.feed(IDENT + cut + IDENT + READOUT)
    assert [getattr(e, "reason", "frame") for e in events] == ["framing", "frame"]
    assert events[0].offset == len(IDENT)
    events = dec.feed(b"\x02" + b"1.8.0(1)\r\n" * 200)
    assert [e.reason for e in events if isinstance(e, Discarded)] == ["overflow"]
    assert dec.buffered <= 1024
    events = dec.feed(READOUT[:30]) + dec.feed_eof()
    assert len(events) >= 1 and isinstance(events[-1], Discarded) and events[-1].reason == "framing"
    assert dec.buffered == 0


def test_decoder_skips_programming_traffic() -> None:
    session = (
        b"/?!\r\n"
        + IDENT
        + b"\x06051\r\n"
        + CommandMessage(command="P", command_type="0", data="(12345678)").encode()
        + CommandMessage(command="P", command_type="1", data="(00000000)").encode()
        + b"\x06"
        + CommandMessage(command="R", command_type="1", data="1.8.0()").encode()
        + AnswerMessage(data="1.8.0(001234.5*kWh)").encode()
        + b"\x15"
        + CommandMessage(command="B", command_type="0").encode()
    )
    assert ReadoutDecoder().feed(session) == []


def test_decoder_offsets_across_feeds() -> None:
    dec = ReadoutDecoder()
    stream = b"xx" + IDENT + READOUT + b"\r\n" + READOUT
    events: list[MeterFrame | Discarded] = []
    for i in range(0, len(stream), 7):
        events += dec.feed(stream[i : i + 7])
    frames = _frames(events)
    assert [f.offset for f in frames] == [2, 2 + len(IDENT) + len(READOUT) + 2]
    assert isinstance(events[0], Discarded)
    assert (events[0].reason, events[0].raw, events[0].offset) == ("garbage", b"xx", 0)


# ------------------------------------------------------ in-memory optical link
@dataclass(order=True)
class _Ev:
    t: float
    seq: int
    kind: str = field(compare=False)
    data: bytes = field(compare=False, default=b"")
    baud: int = field(compare=False, default=0)


class Link:
    """A ClientSession and a MeterSession on an emulated optical line with fake time
    (the h11 ConnectionPair idea, plus baud rates: bytes only arrive intact when both
    ends use the same rate).  Transmission time is modelled; the head may echo."""

    def __init__(
        self,
        client: ClientSession,
        meter: MeterSession | None,
        *,
        echo_head: bool = False,
        mute_requests: int = 0,
        corrupt_readouts: int = 0,
        chunk: int = 0,
        noise: bytes = b"",
        client_ignores_baud: bool = False,
    ) -> None:
        self.client, self.meter = client, meter
        self.now = 0.0
        self.client_baud = 0
        self.meter_baud = meter.initial_baud if meter else 300
        self.meter_free = 0.0  # the meter's action sequence runs until then
        self.heap: list[_Ev] = []
        self.seq = 0
        self.echo_head = echo_head
        self.mute_requests = mute_requests
        self.corrupt_readouts = corrupt_readouts
        self.chunk = chunk
        self.noise = noise
        self.client_ignores_baud = client_ignores_baud
        self.out: list[object] = []  # everything the client session returned
        self.timeline: list[tuple[float, object]] = []

    def _at(self, t: float, kind: str, data: bytes = b"", baud: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, _Ev(t, self.seq, kind, data, baud))

    def _client(self, items: list[Any]) -> None:
        for item in items:
            self.out.append(item)
            self.timeline.append((self.now, item))
            if isinstance(item, SetBaudrate):
                if not (self.client_ignores_baud and self.client_baud):
                    self.client_baud = item.baud
            elif isinstance(item, Send):
                tx = len(item.data) * 10 / self.client_baud
                self._at(self.now + tx, "to_meter", item.data, self.client_baud)
                if self.echo_head:
                    self._at(self.now + tx, "to_client", item.data, self.client_baud)

    def _meter(self, actions: list[Any]) -> None:
        t = max(self.now, self.meter_free)
        baud = self.meter_baud
        for a in actions:
            if isinstance(a, Wait):
                t += a.seconds
            elif isinstance(a, SwitchBaud):
                baud = a.baud
                self._at(t, "meter_baud", baud=a.baud)
            else:
                data = a.data
                if data.startswith(b"\x02") and self.corrupt_readouts:
                    self.corrupt_readouts -= 1
                    data = data[:-1] + bytes((data[-1] ^ 0x11,))
                self._at(t, "send_from_meter", data)
                t += len(data) * 10 / baud  # the next action waits for the transmission
        self.meter_free = t

    def run(self, until: float = 60.0) -> list[object]:
        if self.noise:
            self._at(0.05, "to_client", self.noise, 0)
        self._client(self.client.start(self.now))
        done = (SessionState.DONE, SessionState.ERROR)
        while self.client.state not in done:
            times = [
                e
                for e in (
                    self.heap[0].t if self.heap else None,
                    self.client.deadline(),
                    self.meter.deadline() if self.meter else None,
                )
                if e is not None
            ]
            if not times or min(times) > until:
                break
            self.now = max(self.now, min(times))
            if self.heap and self.heap[0].t <= self.now:
                self._event(heapq.heappop(self.heap))
            elif (d := self.client.deadline()) is not None and d <= self.now:
                self._client(self.client.on_timeout(now=self.now))
            elif self.meter and (d := self.meter.deadline()) is not None and d <= self.now:
                self._meter(self.meter.on_timeout(now=self.now))
        return self.out

    def _event(self, ev: _Ev) -> None:
        if ev.kind == "meter_baud":
            self.meter_baud = ev.baud
        elif ev.kind == "send_from_meter":
            # the bytes take their time on the wire at the meter's current rate and
            # arrive a few at a time, as from a UART
            for i in range(0, len(ev.data), 16):
                part = ev.data[i : i + 16]
                tx = (i + len(part)) * 10 / self.meter_baud
                self._at(self.now + tx, "to_client", part, self.meter_baud)
        elif ev.kind == "to_meter":
            if self.meter is None or ev.baud != self.meter_baud:
                return  # a meter hears garbage at the wrong rate and ignores it
            if ev.data.startswith(b"/?") and self.mute_requests:
                self.mute_requests -= 1
                return
            self._meter(self.meter.feed(ev.data, now=self.now))
        else:
            data = ev.data
            if ev.baud and ev.baud != self.client_baud:
                data = _garble(data, ev.baud, self.client_baud)
            step = self.chunk or len(data)
            for i in range(0, len(data), step):
                self._client(self.client.feed(data[i : i + step], now=self.now))

    def of(self, cls: type) -> list[Any]:
        return [o for o in self.out if isinstance(o, cls)]


def _bauds(link: Link) -> list[int]:
    return [a.baud for a in link.of(SetBaudrate)]


def _sent(link: Link) -> list[bytes]:
    return [a.data for a in link.of(Send)]


def _meter(**kw: Any) -> MeterSession:
    return MeterSession(reaction_time_s=kw.pop("reaction_time_s", 0.2), **kw)


def test_mode_c_readout() -> None:
    link = Link(ClientSession(meter_tz=UTC), _meter())
    link.run()
    assert link.client.state is SessionState.DONE and link.client.deadline() is None
    assert _sent(link) == [b"/?!\r\n", b"\x06050\r\n"]
    assert _bauds(link) == [300, 9600]
    (ident,) = link.of(IdentReceived)
    assert ident.header == "/HGW5SIM-IEC-0001" and ident.identification.mode == "C"
    (frame,) = link.of(MeterFrame)
    assert frame.checksum_ok is True and frame.meter_id == "12345678"
    assert frame.header == "/HGW5SIM-IEC-0001"
    assert frame.timestamp == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    ids = [r.id for r in frame.readings]
    assert ids[:5] == ["0.0.0", "C.1.0", "F.F", "0.9.1", "0.9.2"]
    assert {"1.8.0", "1.8.1", "1.8.2", "2.8.0", "16.7.0", "1.7.0", "32.7.0"} <= set(ids)
    # the ACK went out no earlier than tr after the identification, then the baud change
    t_ident = next(t for t, o in link.timeline if isinstance(o, IdentReceived))
    t_ack, ack = next(
        (t, o) for t, o in link.timeline if isinstance(o, Send) and o.data.startswith(b"\x06")
    )
    assert t_ack - t_ident >= 0.2 - 1e-9
    order = [o for _, o in link.timeline if isinstance(o, (Send, SetBaudrate))]
    assert order.index(ack) + 1 == order.index(SetBaudrate(baud=9600))


def test_mode_c_limited_by_max_baud_and_mode_a_config() -> None:
    link = Link(ClientSession(max_baud=4800), _meter())
    link.run()
    assert _sent(link)[1] == b"\x06040\r\n" and _bauds(link) == [300, 4800]
    assert link.of(MeterFrame)
    # configured as mode A: a mode C meter is acknowledged at 300 Bd
    link = Link(ClientSession(mode="A"), _meter())
    link.run()
    assert _sent(link)[1] == b"\x06000\r\n" and _bauds(link) == [300, 300]
    assert link.of(MeterFrame)


def test_mode_a_readout() -> None:
    link = Link(ClientSession(mode="A"), _meter(mode="A", identification="MODE-A"))
    link.run()
    assert _sent(link) == [b"/?!\r\n"] and _bauds(link) == [300]
    (frame,) = link.of(MeterFrame)
    assert frame.header == "/HGWXMODE-A" and frame.checksum_ok


def test_mode_b_readout() -> None:
    link = Link(ClientSession(mode="B"), _meter(mode="B", baud=4800))
    link.run()
    assert _sent(link) == [b"/?!\r\n"] and _bauds(link) == [300, 4800]
    (frame,) = link.of(MeterFrame)
    assert frame.header.startswith("/HGWD") and frame.checksum_ok


def test_mode_d_push() -> None:
    link = Link(ClientSession(mode="D", timeout_s=8.0), _meter(mode="D", push_interval_s=5.0))
    link.run()
    assert _sent(link) == [] and _bauds(link) == [2400]
    assert link.client.state is SessionState.DONE
    (frame,) = link.of(MeterFrame)
    assert frame.header == "/HGW3SIM-IEC-0001" and frame.meter_id == "12345678"


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_echo_noise_and_parity(chunk: int) -> None:
    link = Link(
        ClientSession(),
        _meter(parity=True),
        echo_head=True,
        chunk=chunk,
        noise=b"\x00\x7fxx\xfe",
    )
    link.run()
    (frame,) = link.of(MeterFrame)
    assert frame.checksum_ok and frame.meter_id == "12345678"
    assert [d.reason for d in link.of(Discarded)] == ["garbage"]
    assert _bauds(link) == [300, 9600]


def test_meter_echo_flag() -> None:
    link = Link(ClientSession(), _meter(echo=True))
    link.run()
    assert link.of(MeterFrame)


def test_timeouts_then_failure() -> None:
    link = Link(ClientSession(retries=3, timeout_s=1.5), None)
    link.run()
    assert link.client.state is SessionState.ERROR and link.client.deadline() is None
    assert _sent(link) == [b"/?!\r\n"] * 4
    retrying = link.of(Retrying)
    assert [r.attempt for r in retrying] == [1, 2, 3]
    (failed,) = link.of(SessionFailed)
    assert failed.attempts == 4 and isinstance(failed.error, ReadTimeout)
    assert "nothing at all" in str(failed.error)
    assert link.now == pytest.approx(4 * (5 * 10 / 300 + 1.5))
    with pytest.raises(LocalProtocolError):
        link.client.feed(b"x", now=link.now)
    assert link.client.start(link.now)  # a fresh readout may start again


def test_retry_until_the_meter_answers() -> None:
    link = Link(ClientSession(), _meter(), mute_requests=2)
    link.run()
    assert [r.attempt for r in link.of(Retrying)] == [1, 2]
    assert len(link.of(MeterFrame)) == 1 and link.client.attempt == 3
    assert _bauds(link) == [300, 300, 300, 9600]


def test_bad_bcc_is_retried() -> None:
    link = Link(ClientSession(), _meter(), corrupt_readouts=1)
    link.run()
    (discarded,) = [d for d in link.of(Discarded) if d.reason == "checksum"]
    assert isinstance(discarded.error, ChecksumError)
    (retry,) = link.of(Retrying)
    assert retry.error is discarded.error
    (frame,) = link.of(MeterFrame)
    assert frame.checksum_ok and _bauds(link) == [300, 9600, 300, 9600]


def test_bad_bcc_every_time_fails_with_checksum_error() -> None:
    link = Link(ClientSession(retries=1), _meter(), corrupt_readouts=5)
    link.run()
    (failed,) = link.of(SessionFailed)
    assert isinstance(failed.error, ChecksumError) and failed.attempts == 2


def test_client_that_does_not_switch_gets_no_readout() -> None:
    link = Link(ClientSession(retries=1), _meter(), client_ignores_baud=True)
    link.run()
    assert not link.of(MeterFrame)
    assert link.of(SessionFailed) and link.meter is not None and link.meter.readouts == 2


def test_meter_without_option_select_goes_back_to_idle() -> None:
    meter = _meter()
    actions = meter.feed(b"/?!\r\n", now=0.0)
    assert actions == [Wait(seconds=0.2), Send(data=b"/HGW5SIM-IEC-0001\r\n")]
    deadline = meter.deadline()
    assert deadline is not None and deadline > 1.5
    assert meter.on_timeout(now=deadline) == [] and meter.deadline() is None
    assert meter.feed(b"\x06050\r\n", now=deadline + 0.1) == []  # too late
    # addressed to someone else / programming mode: no answer
    assert meter.feed(b"/?99!\r\n", now=5.0) == []
    assert meter.feed(b"/?012345678!\r\n", now=5.0)  # leading zeros do not matter
    assert meter.feed(b"\x06051\r\n", now=5.5) == []


def test_reserved_mode_b_baud_character_fails() -> None:
    sess = ClientSession(mode="B")
    sess.start(0.0)
    events = sess.feed(b"/ABCG1\r\n", now=0.5)
    assert isinstance(events[-1], SessionFailed) and isinstance(events[-1].error, UnsupportedError)
    assert sess.state is SessionState.ERROR


def test_session_misuse_and_settings() -> None:
    sess = ClientSession()
    with pytest.raises(LocalProtocolError):
        sess.feed(b"x", now=0.0)
    sess.start(0.0)
    with pytest.raises(LocalProtocolError):
        sess.start(0.1)
    assert sess.on_timeout(now=0.1) == []  # too early
    for kw in (
        {"mode": "E"},
        {"max_baud": 200},
        {"reaction_time_s": 2.0},
        {"timeout_s": 0},
        {"retries": -1},
        {"address": "x!"},
    ):
        with pytest.raises(LocalProtocolError):
            ClientSession(**kw)


def _state(sess: ClientSession) -> SessionState:
    """(mypy narrows ``sess.state`` after one ``is`` check and then sees no overlap)"""
    return sess.state


def test_session_states_in_mode_c() -> None:
    sess = ClientSession(reaction_time_s=0.25)
    assert _state(sess) is SessionState.IDLE
    assert sess.start(10.0) == [SetBaudrate(baud=300), Send(data=b"/?!\r\n")]
    assert _state(sess) is SessionState.SIGN_ON_SENT
    assert sess.feed(b"/?!\r\n", now=10.2) == []  # our echo
    events = sess.feed(b"/ABC5xyz\r\n", now=10.9)
    assert isinstance(events[0], IdentReceived) and _state(sess) is SessionState.WAIT_ACK_DELAY
    assert sess.deadline() == pytest.approx(11.15)
    assert sess.on_timeout(now=11.0) == []
    assert sess.on_timeout(now=11.15) == [Send(data=b"\x06050\r\n"), SetBaudrate(baud=9600)]
    assert _state(sess) is SessionState.IDENT_RECEIVED and sess.baud == 9600
    sess.feed(READOUT[:10], now=11.5)
    assert _state(sess) is SessionState.READING
    (frame,) = sess.feed(READOUT[10:], now=11.6)
    assert isinstance(frame, MeterFrame) and _state(sess) is SessionState.DONE
    assert sess.feed(b"trailing", now=12.0) == []


def test_load_model_registers_grow() -> None:
    model = LoadModel(serial="42")
    first = {s.address: s.value for s in model(100.0)}
    later = {s.address: s.value for s in model(100.0 + 3600)}
    assert first["0.0.0"] == "42" and first["0.9.1"] == "080000" and later["0.9.1"] == "090000"
    assert float(later["1.8.0"]) > float(first["1.8.0"])
    assert float(later["2.8.0"]) > float(first["2.8.0"])  # the PV exported some
    assert float(later["1.8.0"]) == pytest.approx(
        float(later["1.8.1"]) + float(later["1.8.2"]), abs=0.002
    )
    again = {s.address: s.value for s in LoadModel(serial="42")(0.0)}
    assert again["1.8.0"] == first["1.8.0"]
    prefixed = LoadModel(obis_prefix=True)(0.0)
    assert prefixed[5].address == "1-0:1.8.0*255"


@pytest.mark.parametrize("mode", ["A", "B", "C", "D"])
def test_sim_readout_decodes(mode: Literal["A", "B", "C", "D"]) -> None:
    meter = _meter(mode=mode)
    (frame,) = _frames(ReadoutDecoder().feed(meter.identification.encode() + meter.readout(0.0)))
    assert frame.checksum_ok and frame.meter_id == "12345678"
