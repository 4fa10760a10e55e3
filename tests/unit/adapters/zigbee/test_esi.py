"""EsiServer frame logic without a network: SE field layouts decoded with struct (ZIGBEE_SE.md)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from adapters.zigbee.config import ZigbeeConfig
from adapters.zigbee.esi import EsiServer, device_class_bits, dr_issuer_id
from adapters.zigbee.events import DrlcEventStatus
from gateway.model import DemandResponseEvent, PriceSignal

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T2000 = datetime(2000, 1, 1, tzinfo=UTC)


def _esi(**cfg: object) -> EsiServer:
    return EsiServer(ZigbeeConfig.model_validate(cfg), meter="main")


def _request(esi: EsiServer, cluster: int, frame: bytes) -> tuple[list[bytes], list[object]]:
    frames, reports = esi.handle_request(device="00:11:22:33:44:55:66:77", endpoint=1, profile=0x0109,
                                         cluster=cluster, data=frame, now=NOW)
    return [f.data for f in frames], list(reports)


def test_device_classes() -> None:
    assert device_class_bits(()) == 0x0FFF
    assert device_class_bits(("water_heater", "EV", "pool-pump")) == 0x0004 | 0x0400 | 0x0008
    assert device_class_bits(("0x0080",)) == 0x0080
    assert device_class_bits(("sauna",)) == 0


def test_issuer_ids_are_stable_uint32() -> None:
    assert dr_issuer_id("1234") == 1234
    assert dr_issuer_id("evt-7") == dr_issuer_id("evt-7") != dr_issuer_id("evt-8")
    assert 0 <= dr_issuer_id("x" * 100) <= 0xFFFFFFFF


def test_publish_price_for_a_future_price_has_start_and_duration() -> None:
    esi = _esi(provider_id=7, trailing_digits=3, currency=826)
    start = NOW + timedelta(minutes=30)
    esi.set_price(PriceSignal(start=start, end=start + timedelta(minutes=15), price_per_kwh=1.2345, currency="GBP"),
                  NOW)
    frame = esi.publish_price(9, NOW)
    assert frame is not None
    assert frame.data[:3] == bytes([0x19, 9, 0x00])  # cluster-specific, server->client, no default rsp; TSN; cmd 0
    p = frame.data[3:]
    provider, n = struct.unpack_from("<IB", p)
    label = p[5:5 + n]
    issuer, now, uom, currency, td_tier, tiers, start_t, duration, price = struct.unpack_from("<IIBHBBIHI", p, 5 + n)
    assert (provider, label, uom, currency) == (7, b"Price", 0, 826)
    assert (td_tier, tiers) == (0x30, 0x00)  # 3 trailing digits, no tier
    assert T2000 + timedelta(seconds=start_t) == start and duration == 15
    assert T2000 + timedelta(seconds=now) == NOW
    assert price == 1234 or price == 1235  # rounded to 3 decimals
    assert issuer >= int((NOW - T2000).total_seconds())


def test_get_current_price_not_found_before_start() -> None:
    esi = _esi()
    esi.set_price(PriceSignal(start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1), price_per_kwh=0.2), NOW)
    frames, _ = _request(esi, 0x0700, bytes([0x01, 0x33, 0x00, 0x00]))
    assert frames == [bytes([0x18, 0x33, 0x0B, 0x00, 0x8B])]  # expired price: NOT_FOUND


def test_lce_duration_capped_and_past_start_is_now() -> None:
    esi = _esi(utility_enrollment_group=3)
    event = DemandResponseEvent(event_id="42", start=NOW - timedelta(minutes=10), end=NOW + timedelta(days=2),
                                criticality=20)
    frame = esi.load_control_event(event, 1, NOW)
    assert frame is not None
    fields = struct.unpack("<IHBIHBBBhhbBB", frame.data[3:])
    assert fields[:6] == (42, 0x0FFF, 3, 0, 1440, 15)  # criticality clamped to 15, duration to 1440
    assert fields[10:] == (-128, 0xFF, 0)  # adjustment and duty cycle unused, no randomisation
    assert esi.load_control_event(
        DemandResponseEvent(event_id="old", start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1)), 1, NOW
    ) is None


def test_report_event_status_without_signature_and_unknown_status() -> None:
    esi = _esi()
    esi.set_dr_event(DemandResponseEvent(event_id="evt-1", start=NOW, end=NOW + timedelta(hours=1)))
    issuer = dr_issuer_id("evt-1")
    body = struct.pack("<IBIBHHbBB", issuer, 0x42, 1000, 5, 0x8000, 0x8000, -20, 40, 0)  # 18 bytes, SE 1.0 style
    frames, reports = _request(esi, 0x0701, bytes([0x01, 0x10, 0x00]) + body)
    assert frames == [bytes([0x18, 0x10, 0x0B, 0x00, 0x00])]  # default response asked for: SUCCESS
    (status,) = reports
    assert isinstance(status, DrlcEventStatus)
    assert (status.event_id, status.status, status.status_name) == ("evt-1", 0x42, "0x42")
    assert (status.load_adjustment_applied_pct, status.duty_cycle_applied_pct) == (-20, 40)
    assert status.status_time == T2000 + timedelta(seconds=1000)
    as_json = status.to_json()
    assert as_json["event_id"] == "evt-1" and as_json["status_time"] == "2000-01-01T00:16:40+00:00"


@pytest.mark.parametrize(("cluster", "frame", "expected"), [
    (0x0701, bytes([0x01, 0x05, 0x00, 0x01]), bytes([0x18, 0x05, 0x0B, 0x00, 0x80])),  # truncated: MALFORMED
    (0x0700, bytes([0x01, 0x06, 0x07]), bytes([0x18, 0x06, 0x0B, 0x07, 0x81])),  # unknown cluster command
    (0x0702, bytes([0x00, 0x07, 0x0C, 0x00, 0x00, 0x10]), bytes([0x18, 0x07, 0x0B, 0x0C, 0x82])),  # discover: no
    (0x0700, bytes([0x05, 0x34, 0x12, 0x08, 0x00]), bytes([0x18, 0x08, 0x0B, 0x00, 0x83])),  # manufacturer specific
])
def test_unsupported_and_malformed_requests(cluster: int, frame: bytes, expected: bytes) -> None:
    frames, reports = _request(_esi(), cluster, frame)
    assert frames == [expected] and reports == []


def test_garbage_never_raises() -> None:
    esi = _esi()
    for data in (b"", b"\x00", b"\x01\x02", bytes(range(40)), b"\xff" * 10):
        for cluster in (0x000A, 0x0700, 0x0701, 0x0702):
            _request(esi, cluster, data)


def test_writes_are_refused() -> None:
    # Write Attributes: CurrentSummationDelivered (uint48) = 1
    frames, _ = _request(_esi(), 0x0702, bytes([0x00, 0x07, 0x02, 0x00, 0x00, 0x25]) + (1).to_bytes(6, "little"))
    assert frames == [bytes([0x18, 0x07, 0x04, 0x88, 0x00, 0x00])]  # READ_ONLY for attribute 0x0000
    frames, _ = _request(_esi(), 0x0702, bytes([0x00, 0x08, 0x05, 0x00, 0x00, 0x25]) + (1).to_bytes(6, "little"))
    assert frames == []  # Write Attributes No Response: refused silently


def test_basic_cluster_of_the_esi() -> None:
    frames, _ = _request(_esi(), 0x0000, bytes([0x00, 0x09, 0x00, 0x00, 0x00, 0x05, 0x00, 0x07, 0x00]))
    assert frames == [bytes([0x18, 0x09, 0x01, 0x00, 0x00, 0x00, 0x20, 0x08,
                             0x05, 0x00, 0x00, 0x42, 0x03]) + b"ESI" + bytes([0x07, 0x00, 0x00, 0x30, 0x01])]


def test_only_the_configured_meter_feeds_metering() -> None:
    from gateway.model import Reading, Snapshot

    esi = _esi()
    other = Snapshot(meter="gas", protocol="mbus", device_id=None, timestamp=NOW, received=NOW,
                     readings=(Reading(id="1-0:1.8.0", value=1.0, unit="kWh"),))
    esi.set_snapshot(other)
    assert 0x0000 not in esi.metering_values()
    esi.set_snapshot(Snapshot(meter="main", protocol="dsmr", device_id=None, timestamp=NOW, received=NOW,
                              readings=(Reading(id="1-0:1.8.0", value=2.5, unit="kWh"),)))
    assert esi.metering_values()[0x0000][1] == 2500


def test_time_status_without_zone_claims_no_dst_authority() -> None:
    values = _esi().time_values(NOW)
    assert values[0x0001][1] == 0x03  # master, synchronized
    assert values[0x0002][1] == 0  # UTC
    assert _esi(time_superseding=True).time_values(NOW)[0x0001][1] == 0x0B
