"""The virtual M-Bus (gateway.sim.mbus): slaves' link behaviour, timing, collisions."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.errors import ConfigError
from gateway.model import MeterFrame
from gateway.protocols.mbus import MbusDecoder, SecondaryAddress
from gateway.protocols.mbus.link import baud_switch, req_ud2, snd_nke, snd_ud
from gateway.protocols.mbus.master import select_frame
from gateway.sim.mbus import VirtualBus, bus_from_options, make_bus, make_ids, wire_merge

CLOCK = datetime(2026, 3, 1, 12, 0)


def new_bus(n: int = 4, **kw: object) -> VirtualBus:
    return make_bus(n, clock=lambda: CLOCK, jitter_bits=0, **kw)  # type: ignore[arg-type]


def reply(bus: VirtualBus, data: bytes, now: float = 0.0) -> tuple[float, bytes]:
    pieces = bus.handle(data, now)
    assert pieces, "no reply"
    return pieces[-1][0], b"".join(p for _, p in pieces)


def decoded(data: bytes) -> MeterFrame:
    (frame,) = MbusDecoder().feed(data)
    assert isinstance(frame, MeterFrame)
    return frame


def test_reply_time_is_request_turnaround_and_reply_on_the_wire() -> None:
    bus = new_bus(1)
    at, data = reply(bus, req_ud2(1, fcb=True).encode(), now=10.0)
    assert at == pytest.approx(10.0 + (5 * 11 + 11 + len(data) * 11) / 2400)
    ack_at, ack = reply(bus, snd_nke(1).encode(), now=20.0)
    assert ack == b"\xe5" and ack_at == pytest.approx(20.0 + (55 + 11 + 11) / 2400)


def test_values_change_over_time_and_frames_decode() -> None:
    bus = new_bus(1)
    _, first = reply(bus, req_ud2(1, fcb=True).encode(), now=0.0)
    _, later = reply(bus, req_ud2(1, fcb=False).encode(), now=3600.0)
    a, b = decoded(first), decoded(later)
    assert a.meter_id == "12345678-LUG-01-heat"
    energy = [f.readings[1] for f in (a, b)]
    assert energy[0].id == "energy" and energy[0].unit == "Wh"
    assert isinstance(energy[0].value, int) and isinstance(energy[1].value, int)
    assert energy[1].value > energy[0].value  # an hour of heat demand
    assert a.readings[0].value == 12345678  # fabrication number


def test_same_fcb_repeats_the_last_telegram() -> None:
    bus = new_bus(1)
    _, one = reply(bus, req_ud2(1, fcb=True).encode(), now=0.0)
    _, again = reply(bus, req_ud2(1, fcb=True).encode(), now=100.0)
    _, new = reply(bus, req_ud2(1, fcb=False).encode(), now=200.0)
    assert again == one and new != one
    assert bus.meters[0].reads == 2


def test_selection_wildcards_and_deselection() -> None:
    bus = new_bus(4, primary="zero")
    _, ack = reply(bus, select_frame(SecondaryAddress.parse("87654321")).encode())
    assert ack == b"\xe5"
    assert [m.selected for m in bus.meters] == [False, False, True, False]
    _, data = reply(bus, req_ud2(253, fcb=True).encode())
    assert decoded(data).meter_id == "87654321-ABB-03-electricity"
    # a non-matching selection deselects; a mask that matches three garbles their E5s
    assert bus.handle(select_frame(SecondaryAddress.parse("99999999")).encode(), 0.0) == []
    assert not any(m.selected for m in bus.meters)
    jittered = make_bus(4, primary="zero", clock=lambda: CLOCK)
    _, garbled = reply(jittered, select_frame(SecondaryAddress.parse("1234FFFF")).encode())
    assert garbled != b"\xe5" and jittered.collisions == 1


def test_set_primary_address_broadcast_and_baud_switch() -> None:
    bus = new_bus(2)
    _, ack = reply(bus, snd_ud(1, 0x51, bytes.fromhex("01 7A 09")).encode())
    assert ack == b"\xe5" and bus.meters[0].primary == 9
    assert bus.handle(snd_nke(255).encode(), 0.0) == []  # broadcast: nobody answers
    at, ack = reply(bus, baud_switch(9, 9600).encode(), now=0.0)
    assert ack == b"\xe5" and bus.baud == 9600
    assert at == pytest.approx((9 * 11 + 11 + 11) / 2400)  # the ACK still at 2400 Bd


def test_wire_merge_is_what_a_uart_reads_from_overlapping_replies() -> None:
    assert wire_merge([(0.0, b"\xe5"), (0.0, b"\xe5")], 2400) == b"\xe5"  # undetectable
    assert wire_merge([(0.0, b"\x16")], 2400) == b"\x16"
    shifted = wire_merge([(0.0, b"\xe5"), (3 / 2400, b"\xe5")], 2400)
    assert shifted != b"\xe5"
    apart = wire_merge([(0.0, b"\x10\x5b"), (1.0, b"\xe5")], 2400)  # no overlap: both intact
    assert apart == b"\x10\x5b\xe5"


def test_ids_share_digits_so_the_search_meets_collisions() -> None:
    ids = make_ids(30, seed=3)
    assert len(set(ids)) == 30 and ids[:2] == ["12345678", "12345679"]
    prefixes = [i[:7] for i in ids]
    assert len(set(prefixes)) < len(prefixes)


def test_command_line_options() -> None:
    bus = bus_from_options({"meters": "5", "baud": "9600", "kinds": "water,gas", "primary": "zero"})
    assert len(bus.meters) == 5 and bus.baud == 9600
    assert {m.kind for m in bus.meters} == {"water", "gas"} and {m.primary for m in bus.meters} == {0}
    for bad in ({"meters": "x"}, {"baud": "1234"}, {"kinds": "steam"}, {"colour": "red"},
                {"meters": "300"}):  # fmt: skip
        with pytest.raises(ConfigError):
            bus_from_options(bad)
