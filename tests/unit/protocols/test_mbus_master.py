"""The sans-IO M-Bus master against the virtual bus, in simulated time.

:class:`Line` connects a :class:`MasterSession` to a :class:`VirtualBus` the way a
serial line does: what the master sends reaches every slave, replies come back at the
time the bus computed from bits on the wire.  No real time passes, so a 250-meter scan
runs in seconds and timing is exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest

from gateway.errors import LocalProtocolError, ReadTimeout, RemoteProtocolError
from gateway.protocols._events import Discarded
from gateway.protocols.mbus import SecondaryAddress, decode_frame, meter_frame
from gateway.protocols.mbus.app import CI_APPLICATION_ERROR, MbusApplicationError
from gateway.protocols.mbus.link import LongFrame, ShortFrame
from gateway.protocols.mbus.master import (
    Collision,
    CommandDone,
    CommandFailed,
    DeviceFound,
    DeviceRead,
    MasterEvent,
    MasterSession,
    ReadFailed,
    Retrying,
    ScanDone,
    ScanProgress,
    Send,
    SessionState,
    SetBaudrate,
    cycle_time_s,
    reply_timeout_s,
    transmission_time_s,
)
from gateway.sim.mbus import SimMeter, VirtualBus, make_bus

CLOCK = datetime(2026, 3, 1, 12, 0)


class Line:
    """Master ↔ bus in simulated time.  ``drop(i, reply)`` may swallow the i-th reply
    (all its pieces);
    ``echo`` sends the master's own bytes back first, as some level converters do."""

    def __init__(
        self,
        bus: VirtualBus,
        *,
        drop: Callable[[int, bytes], bool] | None = None,
        echo: bool = False,
    ) -> None:
        self.bus = bus
        self.now = 0.0
        self.sent: list[bytes] = []
        self.drop = drop
        self.echo = echo
        self._replies = 0
        self._pending: list[tuple[float, int, bytes]] = []
        self._seq = 0

    def _push(self, at: float, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (at, self._seq, data))

    def run(self, master: MasterSession, events: Sequence[MasterEvent]) -> list[MasterEvent]:
        out: list[MasterEvent] = []

        def perform(items: Sequence[MasterEvent]) -> None:
            for ev in items:
                if not isinstance(ev, Send):
                    out.append(ev)
                    continue
                self.sent.append(ev.data)
                if self.echo:
                    self._push(self.now, ev.data)
                pieces = self.bus.handle(ev.data, self.now)
                if pieces:
                    self._replies += 1
                    whole = b"".join(p for _, p in pieces)
                    if self.drop is None or not self.drop(self._replies, whole):
                        for at, piece in pieces:
                            self._push(at, piece)

        perform(events)
        while master.state is not SessionState.IDLE:
            deadline = master.deadline()
            assert deadline is not None
            if self._pending and self._pending[0][0] <= deadline:
                at, _, data = heapq.heappop(self._pending)
                self.now = max(self.now, at)
                perform(master.feed(data, now=self.now))
            else:
                self.now = max(self.now, deadline)
                perform(master.on_timeout(now=self.now))
        return out


def bus(n: int = 4, **kw: object) -> VirtualBus:
    return make_bus(n, clock=lambda: CLOCK, **kw)  # type: ignore[arg-type]


def controls(sent: list[bytes]) -> list[str]:
    out = []
    for data in sent:
        f = decode_frame(data)
        assert isinstance(f, (ShortFrame, LongFrame))
        out.append(f"{f.control:02X}@{f.address}")
    return out


# ----------------------------------------------------------------- timing
def test_timing_follows_bits_on_the_wire() -> None:
    assert transmission_time_s(5, 2400) == pytest.approx(55 / 2400)
    assert reply_timeout_s(2400) == pytest.approx(330 / 2400 + 0.05)  # 187.5 ms (MBUS_FACTS)
    assert reply_timeout_s(300) == pytest.approx(1.15)
    assert reply_timeout_s(9600, 0.1) == pytest.approx(330 / 9600 + 0.15)
    # REQ_UD2 (5) + RSP_UD (100): 1155 bits + 11 turnaround + 33 idle
    assert cycle_time_s(5, 100, 2400) == pytest.approx(1199 / 2400)


def test_a_read_takes_exactly_the_wire_time() -> None:
    line = Line(bus(1, jitter_bits=0))
    master = MasterSession(baud=2400)
    line.run(master, master.read(1, now=0.0))  # SND_NKE first
    start = line.now
    (read,) = line.run(master, master.read(1, now=start))
    assert isinstance(read, DeviceRead)
    reply = len(read.raw)
    # request + turnaround + reply (the idle time is before the *next* request)
    assert line.now - start == pytest.approx((5 * 11 + 11 + reply * 11) / 2400 + 33 / 2400)


# -------------------------------------------------------------- FCB, reads
def test_primary_read_resets_once_then_toggles_the_fcb() -> None:
    line = Line(bus(2))
    master = MasterSession()
    for _ in range(3):
        events = line.run(master, master.read(1, now=line.now))
        assert [type(e) for e in events] == [DeviceRead]
    assert controls(line.sent) == ["40@1", "7B@1", "5B@1", "7B@1"]


def test_a_lost_reply_is_asked_for_again_with_the_same_fcb() -> None:
    # The first REQ_UD2 reaches the slave, its reply is lost on the way back; the
    # repeat with the same FCB gets the same telegram (same access number), not a new one.
    lost: list[bytes] = []

    def drop(i: int, reply: bytes) -> bool:
        if reply[:1] == b"\x68" and not lost:
            lost.append(reply)
            return True
        return False

    line = Line(bus(2), drop=drop)
    master = MasterSession(retries=2)
    events = line.run(master, master.read(2, now=0.0))
    kinds = [type(e) for e in events]
    assert kinds == [Retrying, DeviceRead]
    retry = events[0]
    assert isinstance(retry, Retrying) and isinstance(retry.error, ReadTimeout)
    assert controls(line.sent) == ["40@2", "7B@2", "7B@2"]
    read = events[1]
    assert isinstance(read, DeviceRead) and read.raw == lost[0]
    assert line.bus.meters[1].reads == 1  # one readout, sent twice


def test_a_silent_slave_fails_after_the_retries() -> None:
    line = Line(bus(2))
    master = MasterSession(baud=2400, retries=3, timeout_margin_s=0.0)
    events = line.run(master, master.read(9, now=0.0))
    assert [type(e) for e in events] == [Retrying] * 3 + [ReadFailed]
    failed = events[-1]
    assert isinstance(failed, ReadFailed) and failed.attempts == 4
    assert isinstance(failed.error, ReadTimeout)
    per_try = transmission_time_s(5, 2400) + reply_timeout_s(2400) + 33 / 2400
    assert line.now == pytest.approx(4 * per_try - 33 / 2400)
    # slower baud rate, longer waits
    slow = Line(bus(1, baud=300))
    slow_master = MasterSession(baud=300, retries=0)
    slow.run(slow_master, slow_master.read(9, now=0.0))
    assert slow.now > 1.15


def test_multi_telegram_read_follows_more_records_follow() -> None:
    line = Line(bus(4))  # meter 4 is a gas meter: history in a second telegram
    master = MasterSession()
    (read,) = line.run(master, master.read(4, now=0.0))
    assert isinstance(read, DeviceRead) and len(read.telegrams) == 2
    assert controls(line.sent) == ["40@4", "7B@4", "5B@4"]  # FCB toggled for telegram 2
    frame = meter_frame(read.telegrams, raw=read.raw)
    ids = [r.id for r in frame.readings]
    assert len(ids) == len(set(ids))
    assert "volume_s12" in ids and "date_s12" in ids and frame.meter_id == "12340000-ELS-04-gas"
    # the next read starts again at the first telegram, with the FCB toggled on
    (again,) = line.run(master, master.read(4, now=line.now))
    assert isinstance(again, DeviceRead) and len(again.telegrams) == 2
    assert controls(line.sent)[3:] == ["7B@4", "5B@4"]


def test_secondary_read_selects_once_and_checks_who_answers() -> None:
    line = Line(bus(3, primary="zero"))
    master = MasterSession()
    first = SecondaryAddress.parse("12345679")
    for _ in range(2):
        (read,) = line.run(master, master.read(first, now=line.now))
        assert isinstance(read, DeviceRead)
    other = SecondaryAddress.parse("87654321")
    (read,) = line.run(master, master.read(other, now=line.now))
    assert isinstance(read, DeviceRead)
    assert controls(line.sent) == ["53@253", "7B@253", "5B@253", "53@253", "7B@253"]
    assert meter_frame(read.telegrams).meter_id == "87654321-ABB-03-electricity"


def test_level_converter_echo_is_ignored() -> None:
    line = Line(bus(2), echo=True)
    master = MasterSession()
    (read,) = line.run(master, master.read(1, now=0.0))
    assert isinstance(read, DeviceRead)


class ErrorMeter(SimMeter):
    """A slave that answers every readout with CI 70 "application busy"."""

    def rsp_ud(self, payload: bytes) -> bytes:
        return LongFrame(control=0x08, address=self.primary, ci=CI_APPLICATION_ERROR,
                         data=b"\x08").encode()  # fmt: skip


def test_application_error_is_reported_as_such() -> None:
    good = bus(1).meters[0]
    meter = ErrorMeter(primary=1, address=good.address, kind="water", clock=lambda: CLOCK)
    line = Line(VirtualBus([meter]))
    master = MasterSession()
    (failed,) = line.run(master, master.read(1, now=0.0))
    assert isinstance(failed, ReadFailed) and isinstance(failed.error, MbusApplicationError)
    assert failed.error.code == 0x08 and failed.attempts == 1


def test_operations_refuse_misuse() -> None:
    master = MasterSession()
    with pytest.raises(LocalProtocolError):
        master.read(251, now=0.0)
    with pytest.raises(LocalProtocolError):
        master.read(SecondaryAddress.parse("1234FFFF"), now=0.0)
    master.read(1, now=0.0)
    with pytest.raises(LocalProtocolError):
        master.read(2, now=0.0)  # one operation at a time
    with pytest.raises(LocalProtocolError):
        MasterSession(max_telegrams=0)


# ---------------------------------------------------------------- SND_UD
def test_snd_ud_sets_a_primary_address_with_the_fcb() -> None:
    line = Line(bus(2))
    master = MasterSession()
    (done,) = line.run(master, master.send_ud(1, 0x51, bytes.fromhex("01 7A 09"), now=0.0))
    assert isinstance(done, CommandDone) and line.bus.meters[0].primary == 9
    assert controls(line.sent) == ["40@1", "73@1"]  # reset, then SND_UD with FCB = 1
    (read,) = line.run(master, master.read(9, now=line.now))
    assert isinstance(read, DeviceRead)
    (failed,) = [e for e in line.run(master, master.send_ud(1, 0x50, now=line.now))
                 if not isinstance(e, Retrying)]  # fmt: skip
    assert isinstance(failed, CommandFailed) and failed.attempts == 4  # nobody at 1 now


def test_baud_rate_switch_and_broadcast() -> None:
    line = Line(bus(2))
    master = MasterSession(baud=2400)
    events = line.run(master, master.switch_baud(1, 9600, now=0.0))
    assert events == [SetBaudrate(baud=9600), CommandDone(target=1, ci=0xBD)]
    assert master.baud == 9600 and line.bus.baud == 9600
    start = line.now
    (done,) = line.run(master, master.send_ud(255, 0x50, now=start))  # broadcast: no reply
    assert isinstance(done, CommandDone)
    # the idle time after the E5 (still at 2400 Bd), then the frame at 9600 Bd
    assert line.now - start == pytest.approx(33 / 2400 + transmission_time_s(9, 9600))


# ------------------------------------------------------------------- scans
def test_primary_scan_finds_identifies_and_reports_collisions() -> None:
    b = bus(5)
    b.meters[4].primary = 3  # two slaves on address 3
    line = Line(b)
    master = MasterSession()
    events = line.run(master, master.scan_primary(now=0.0, addresses=range(8)))
    found = [e for e in events if isinstance(e, DeviceFound)]
    assert [f.primary for f in found] == [1, 2, 4]
    assert found[0].secondary is not None and found[0].secondary.label == "12345678-LUG-01-heat"
    assert [e.primary for e in events if isinstance(e, Collision)] == [3]
    done = events[-1]
    assert isinstance(done, ScanDone) and done.found == tuple(found)
    fractions = [e.fraction for e in events if isinstance(e, ScanProgress)]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_secondary_scan_resolves_collisions_digit_by_digit() -> None:
    line = Line(bus(4, primary="zero"))
    master = MasterSession()
    events = line.run(master, master.scan_secondary(now=0.0))
    found = [e.secondary.id for e in events if isinstance(e, DeviceFound) and e.secondary]
    assert found == ["12340000", "12345678", "12345679", "87654321"]  # id order
    assert line.bus.collisions > 0  # the search met (and resolved) collisions
    assert not [e for e in events if isinstance(e, Collision)]
    # collided replies reached the master as garbage
    assert any(isinstance(e, Discarded) for e in events)


def test_secondary_scan_of_a_250_meter_bus_reports_progress() -> None:
    line = Line(bus(250, primary="zero", seed=7, baud=9600))
    master = MasterSession(baud=9600, timeout_margin_s=0.0)
    events = line.run(master, master.scan_secondary(now=0.0))
    found = sorted(e.secondary.id for e in events if isinstance(e, DeviceFound) and e.secondary)
    assert found == sorted(m.address.id for m in line.bus.meters)
    progress = [e for e in events if isinstance(e, ScanProgress)]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1].found == 250 and progress[-1].probes == master.probes > 250
    # probes are spread over the run: progress is visible all along, not at the end
    quarter = next(p for p in progress if p.fraction >= 0.25)
    assert 0 < quarter.found < 250


def test_hex_digit_ids_are_found_when_asked_for() -> None:
    line = Line(bus(3, primary="zero", ids=["0500023E", "05000230", "11111111"]))
    master = MasterSession()
    events = line.run(master, master.scan_secondary(now=0.0))
    assert [e.secondary.id for e in events if isinstance(e, DeviceFound) and e.secondary] == [
        "05000230", "11111111"
    ]  # BCD digits only: the hex id stays hidden, as with libmbus
    events = line.run(master, master.scan_secondary(now=line.now, digits="0123456789ABCDE"))
    assert [e.secondary.id for e in events if isinstance(e, DeviceFound) and e.secondary] == [
        "05000230", "0500023E", "11111111"
    ]
    with pytest.raises(LocalProtocolError):
        master.scan_secondary(now=line.now, digits="0F")


def test_meters_sharing_all_eight_digits_are_reported_as_a_collision() -> None:
    b = bus(2, primary="zero", ids=["55555555", "55555555"])
    line = Line(b)
    master = MasterSession()
    events = line.run(master, master.scan_secondary(now=0.0, mask=SecondaryAddress.parse("5555555F")))
    (collision,) = [e for e in events if isinstance(e, Collision)]
    assert collision.mask is not None and collision.mask.id == "55555555"


def test_a_garbled_reply_counts_as_a_failed_attempt() -> None:
    def garble(i: int, reply: bytes) -> bool:
        return False

    b = bus(2)
    b.meters[1].primary = 1  # both answer REQ_UD2 to address 1: their RSP_UDs collide
    line = Line(b, drop=garble)
    master = MasterSession(retries=1)
    events = line.run(master, master.read(1, now=0.0))
    failed = events[-1]
    assert isinstance(failed, ReadFailed) and isinstance(failed.error, RemoteProtocolError)
