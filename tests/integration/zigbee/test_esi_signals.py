"""Prices, demand response and time between the gateway's ESI and a simulated in-home display.

The display decodes PublishPrice, LoadControlEvent and CancelLoadControlEvent
with its own ``struct`` layouts taken from the SE 1.4 field tables
(../shared/ZIGBEE_SE.md §1.3, §2); Metering frames are also decoded by
zigbee-herdsman.
"""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.zigbee.adapter import ZigbeeAdapter
from adapters.zigbee.events import DrlcEventStatus
from gateway.bus import DrEventReport
from gateway.bus import Bus
from gateway.model import DemandResponseEvent, PriceSignal

from .simdevices import VirtualNetwork, Zcl, make_display, from_utc2000, parse_cancel_load_control_event, \
    parse_load_control_event, parse_publish_price, parse_report, report_event_status, utc2000
from .test_esi_metering import snapshot


def _price(now: datetime, value: float, tier: int = 2) -> PriceSignal:
    return PriceSignal(start=now - timedelta(minutes=5), end=now + timedelta(hours=1), price_per_kwh=value,
                       currency="EUR", source="test", tier=tier)


def _is_publish_price(rec: object) -> bool:
    return rec.cluster == 0x0700 and rec.zcl.cluster_specific and rec.zcl.command == 0x00  # type: ignore[attr-defined]


async def test_prices_requested_and_pushed(network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter) -> None:
    ihd = make_display(network)
    network.join(ihd)
    await network.joined(ihd)

    # no price yet: Default Response NOT_FOUND (0x8B) for GetCurrentPrice (0x00)
    rsp = await ihd.request(0x0700, 0x00, b"\x01", dst_ep=10, cluster_specific=True)
    assert (rsp.zcl.cluster_specific, rsp.zcl.command, rsp.zcl.payload) == (False, 0x0B, bytes([0x00, 0x8B]))

    now = datetime.now(UTC)
    bus.publish(_price(now, 0.3150))
    pushed = await ihd.wait_for(_is_publish_price)
    after = datetime.now(UTC)
    first = parse_publish_price(pushed.zcl.payload)
    assert pushed.zcl.server_to_client and (pushed.src_ep, pushed.profile) == (10, 0x0109)
    assert first["provider_id"] == 42
    assert first["rate_label"] == b"Peak"
    assert first["unit_of_measure"] == 0x00
    assert first["currency"] == 978
    assert (first["trailing_digits"], first["tier"]) == (4, 2)
    assert (first["num_tiers"], first["register_tier"]) == (3, 2)
    assert first["price"] == 3150  # 0.3150 EUR/kWh with 4 trailing digits
    assert first["start_time"] == 0  # already started: "now"
    assert first["duration_min"] == 60  # the rest of the hour, rounded up
    assert now.replace(microsecond=0) <= from_utc2000(first["current_time"]) <= after
    # optional fields #12-#19 with their "unused" values, SE 1.1 size 42 + label
    assert (first["price_ratio"], first["generation_price"], first["generation_price_ratio"]) == (0xFF, 0xFFFFFFFF, 0xFF)
    assert (first["alternate_cost_delivered"], first["alternate_cost_unit"]) == (0xFFFFFFFF, 0xFF)
    assert first["size"] == 42 + 4

    # asking gives the same price event, with the request's TSN
    rsp = await ihd.request(0x0700, 0x00, b"\x01", dst_ep=10, cluster_specific=True)
    asked = parse_publish_price(rsp.zcl.payload)
    assert _is_publish_price(rsp)
    assert asked["issuer_event_id"] == first["issuer_event_id"] and asked["price"] == 3150

    # a new price is pushed with a larger issuer event id
    seen = len(ihd.received)
    bus.publish(_price(now, 0.1234, tier=1))
    pushed2 = await ihd.wait_for(lambda r: _is_publish_price(r) and ihd.received.index(r) >= seen)
    second = parse_publish_price(pushed2.zcl.payload)
    assert second["price"] == 1234 and second["tier"] == 1
    assert second["issuer_event_id"] > first["issuer_event_id"]

    # PriceAcknowledgement is recorded
    ack = struct.pack("<IIIB", 42, second["issuer_event_id"], utc2000(now), 0x01)
    await ihd.request(0x0700, 0x02, ack, dst_ep=10, cluster_specific=True)
    assert [a.issuer_event_id for a in adapter.price_acks] == [second["issuer_event_id"]]


@pytest.mark.parametrize(("profile", "esi_ep"), [(0x0104, 11), (0x0109, 10)], ids=["ha", "se"])
async def test_dr_event_sent_acknowledged_and_cancelled(network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter,
                                                        profile: int, esi_ep: int) -> None:
    statuses = bus.subscribe(DrlcEventStatus)
    reports = bus.subscribe(DrEventReport)
    ihd = make_display(network, profile=profile)
    network.join(ihd)
    await network.joined(ihd)
    now = datetime.now(UTC)
    event = DemandResponseEvent(
        event_id="evt-7", start=now + timedelta(minutes=10), end=now + timedelta(minutes=70), level=2,
        source="openadr", criticality=7, load_classes=("water_heater", "ev"), load_adjustment_pct=-30.0,
        duty_cycle_pct=50.0, randomize_start_s=300.0, randomize_end_s=0.0)
    bus.publish(event)

    lce_rec = await ihd.wait_for(lambda r: r.cluster == 0x0701 and r.zcl.cluster_specific and r.zcl.command == 0x00)
    lce = parse_load_control_event(lce_rec.zcl.payload)
    assert (lce_rec.src_ep, lce_rec.profile) == (esi_ep, profile)  # from the ESI endpoint of its profile
    assert lce["device_class"] == 0x0004 | 0x0400
    assert lce["utility_enrollment_group"] == 0
    assert lce["start_time"] == utc2000(event.start)
    assert lce["duration_min"] == 60
    assert lce["criticality"] == 7
    assert (lce["cooling_offset"], lce["heating_offset"]) == (0xFF, 0xFF)
    assert (lce["cooling_set_point"], lce["heating_set_point"]) == (-0x8000, -0x8000)
    assert (lce["avg_load_adjustment"], lce["duty_cycle"]) == (-30, 50)
    assert lce["event_control"] == 0x01  # randomise start
    # the randomisation minutes were written to the client's DRLC attributes first
    assert (0x0701, 0x0001, 5) in ihd.written and (0x0701, 0x0002, 0) in ihd.written

    # the display acknowledged (ReportEventStatus 0x01) -> published on the bus
    async with asyncio.timeout(10):
        status = await statuses.get()
    assert status.event_id == "evt-7"
    assert status.issuer_event_id == lce["issuer_event_id"]
    assert (status.status, status.status_name) == (0x01, "received")
    assert status.device == "00:0d:6f:00:00:00:aa:01"
    assert status.criticality_applied == 7
    report = await asyncio.wait_for(reports.get(), 5)  # the network-neutral form, for MQTT
    assert (report.event_id, report.device, report.status, report.source) == (
        "evt-7", "00:0d:6f:00:00:00:aa:01", "received", "zigbee")
    assert report.detail["issuer_event_id"] == lce["issuer_event_id"]

    # a display that asks for scheduled events gets the same LCE, with its TSN
    rsp = await ihd.request(0x0701, 0x01, struct.pack("<IB", 0, 0), dst_ep=esi_ep, cluster_specific=True)
    assert rsp.zcl.cluster_specific and parse_load_control_event(rsp.zcl.payload)["issuer_event_id"] == \
        lce["issuer_event_id"]

    # "started" reported by the device later
    frame = Zcl.build(tsn=ihd.next_tsn(), command=0x00, cluster_specific=True, server_to_client=False,
                      disable_default_response=True,
                      payload=report_event_status(lce["issuer_event_id"], 0x02, now.replace(microsecond=0), 7))
    ihd.send(0x0701, frame, dst_ep=esi_ep)
    async with asyncio.timeout(10):
        while (status := await statuses.get()).status_name == "received":  # the GetScheduledEvents answer's ack
            pass
    assert status.status_name == "started"
    assert status.status_time == now.replace(microsecond=0)

    bus.publish(DemandResponseEvent(event_id="evt-7", start=event.start, end=event.end, cancelled=True,
                                    load_classes=event.load_classes))
    cancel_rec = await ihd.wait_for(lambda r: r.cluster == 0x0701 and r.zcl.cluster_specific and r.zcl.command == 0x01)
    cancel = parse_cancel_load_control_event(cancel_rec.zcl.payload)
    assert cancel == {"issuer_event_id": lce["issuer_event_id"], "device_class": 0x0404,
                      "utility_enrollment_group": 0, "cancel_control": 0, "effective_time": 0}
    rsp = await ihd.request(0x0701, 0x01, struct.pack("<IB", 0, 0), dst_ep=esi_ep, cluster_specific=True)
    assert (rsp.zcl.cluster_specific, rsp.zcl.payload) == (False, bytes([0x01, 0x8B]))  # nothing scheduled now


async def test_time_server(network: VirtualNetwork, make_adapter: object) -> None:
    await make_adapter(timezone="Europe/Amsterdam")  # type: ignore[operator]
    ihd = make_display(network)
    network.join(ihd)
    await network.joined(ihd)
    before = datetime.now(UTC).replace(microsecond=0)
    attrs = await ihd.read_attributes(0x000A, [0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0007], dst_ep=10)
    after = datetime.now(UTC)
    assert attrs[0x0000][1][0] == 0xE2 and before <= from_utc2000(attrs[0x0000][1][1]) <= after
    assert attrs[0x0001] == (0, (0x18, 0x07))  # master, synchronized, master for zone and DST
    assert attrs[0x0002] == (0, (0x2B, 3600))  # CET standard offset, without DST
    dst_start, dst_end = attrs[0x0003][1][1], attrs[0x0004][1][1]
    assert from_utc2000(dst_start).month == 3 and from_utc2000(dst_end).month == 10
    assert attrs[0x0005] == (0, (0x2B, 3600))
    local = attrs[0x0007][1][1]
    assert local - attrs[0x0000][1][1] in (3600, 7200)


async def test_metering_reports_and_herdsman_cross_check(
    network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter, herdsman: object
) -> None:
    ihd = make_display(network)
    network.join(ihd)
    await network.joined(ihd)
    bus.publish(snapshot())
    # Configure Reporting: instantaneous demand (int24) and summation (uint48), min 0 s, max 300 s
    cfg = struct.pack("<BHBHH", 0, 0x0400, 0x2A, 0, 300) + b"\x01\x00\x00" \
        + struct.pack("<BHBHH", 0, 0x0000, 0x25, 0, 300) + b"\x01\x00\x00\x00\x00\x00"
    rsp = await ihd.request(0x0702, 0x06, cfg, dst_ep=10, cluster_specific=False)
    assert (rsp.zcl.command, rsp.zcl.payload) == (0x07, b"\x00")
    read = await ihd.request(0x0702, 0x00, struct.pack("<4H", 0x0000, 0x0400, 0x0302, 0x0306), dst_ep=10,
                             cluster_specific=False)

    seen = len(ihd.received)
    bus.publish(snapshot(energy_kwh=12346.0, power_kw=2.0))
    report = await ihd.wait_for(lambda r: r.cluster == 0x0702 and r.zcl.command == 0x0A
                                and ihd.received.index(r) >= seen)
    assert report.zcl.server_to_client
    assert parse_report(report.zcl.payload) == {0x0000: (0x25, 12_346_000), 0x0400: (0x2A, 2000)}

    decoded = herdsman([(0x0702, read.raw), (0x0702, report.raw), (0x0702, rsp.raw)])  # type: ignore[operator]
    assert decoded[0]["cluster"] == "seMetering" and decoded[0]["command"] == "readRsp"
    assert decoded[0]["direction"] == 1 and decoded[0]["tsn"] == read.zcl.tsn
    assert {(p["attrId"], p["dataType"], p["attrData"]) for p in decoded[0]["payload"]} == {
        (0x0000, 37, 12_345_678), (0x0400, 42, 1500), (0x0302, 34, 1000), (0x0306, 24, 0)}
    assert decoded[1]["command"] == "report"
    assert {(p["attrId"], p["dataType"], p["attrData"]) for p in decoded[1]["payload"]} == {
        (0x0000, 37, 12_346_000), (0x0400, 42, 2000)}
    assert decoded[2]["command"] == "configReportRsp" and decoded[2]["payload"][0]["status"] == 0


async def test_display_joining_later_gets_current_price_and_events(network: VirtualNetwork, bus: Bus,
                                                                  adapter: ZigbeeAdapter) -> None:
    now = datetime.now(UTC)
    bus.publish(_price(now, 0.2222))
    bus.publish(DemandResponseEvent(event_id="777", start=now, end=now + timedelta(minutes=30), criticality=2))
    ihd = make_display(network)
    async with asyncio.timeout(10):  # the adapter takes both signals in its own time
        while adapter.esi.price is None or not adapter.esi.dr_events:
            await asyncio.sleep(0.01)
    network.join(ihd)
    await network.joined(ihd)
    price = await ihd.wait_for(_is_publish_price)
    assert parse_publish_price(price.zcl.payload)["price"] == 2222
    lce = await ihd.wait_for(lambda r: r.cluster == 0x0701 and r.zcl.cluster_specific and r.zcl.command == 0x00)
    assert parse_load_control_event(lce.zcl.payload)["issuer_event_id"] == 777


async def test_lost_radio_is_reopened(network: VirtualNetwork, bus: Bus, make_adapter: Any, tmp_path: Path) -> None:
    adapter = await make_adapter(database=tmp_path / "zigbee.db")  # the devices survive the restart
    ihd = make_display(network)
    network.join(ihd)
    await network.joined(ihd)
    old_app = adapter.app
    old_app.connection_lost(ConnectionResetError("stick unplugged"))
    async with asyncio.timeout(30):  # reopened after the backoff delay
        while adapter.counters["starts"] < 2 or not adapter.ready.is_set():
            await asyncio.sleep(0.01)
    assert adapter.app is not old_app and adapter.health().ok
    bus.publish(snapshot())
    async with asyncio.timeout(10):
        while (await ihd.read_attributes(0x0702, [0x0000], dst_ep=10))[0x0000][0] != 0:
            await asyncio.sleep(0.01)


async def test_herdsman_encoded_requests_are_answered(
    network: VirtualNetwork, bus: Bus, make_adapter: Any, herdsman: Any, herdsman_encode: Any
) -> None:
    """Requests encoded by zigbee-herdsman (as Zigbee2MQTT would send them) get answers it can decode."""
    await make_adapter(timezone="Europe/Amsterdam")
    ihd = make_display(network, profile=0x0104)
    network.join(ihd)
    await network.joined(ihd)
    bus.publish(snapshot())
    read_metering, read_time = herdsman_encode([
        {"cluster": "seMetering", "command": "read", "tsn": 201, "global": True,
         "payload": [{"attrId": 0x0000}, {"attrId": 0x0400}, {"attrId": 0x0300}]},
        {"cluster": "genTime", "command": "read", "tsn": 202, "global": True,
         "payload": [{"attrId": 0x0000}, {"attrId": 0x0001}, {"attrId": 0x0002}]},
    ])
    async with asyncio.timeout(10):
        while True:
            ihd.send(0x0702, read_metering, dst_ep=11)
            metering = await ihd.wait_for(lambda r: r.cluster == 0x0702 and r.zcl.tsn == 201)
            if metering.zcl.payload[2] == 0:  # summation known (the snapshot has been taken in)
                break
            ihd.received.remove(metering)
    before = datetime.now(UTC).replace(microsecond=0)
    ihd.send(0x000A, read_time, dst_ep=11)
    time_rsp = await ihd.wait_for(lambda r: r.cluster == 0x000A and r.zcl.tsn == 202)
    after = datetime.now(UTC)
    decoded = herdsman([(0x0702, metering.raw), (0x000A, time_rsp.raw)])
    assert decoded[0]["command"] == "readRsp" and decoded[0]["tsn"] == 201
    assert [(p["attrId"], p["attrData"]) for p in decoded[0]["payload"]] == [
        (0x0000, 12_345_678), (0x0400, 1500), (0x0300, 0)]
    assert decoded[1]["cluster"] == "genTime" and decoded[1]["command"] == "readRsp"
    by_id = {p["attrId"]: p for p in decoded[1]["payload"]}
    assert by_id[0x0000]["dataType"] == 0xE2
    assert before <= from_utc2000(by_id[0x0000]["attrData"]) <= after
    assert (by_id[0x0001]["attrData"], by_id[0x0002]["attrData"]) == (0x07, 3600)
