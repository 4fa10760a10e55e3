"""An in-home display joins the gateway's ZigBee network and reads the Metering server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.zigbee.adapter import ZigbeeAdapter
from gateway.bus import Bus, MeterStatus
from gateway.model import Reading, Snapshot

from .simdevices import VirtualNetwork, make_display

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


def snapshot(energy_kwh: float = 12345.678, power_kw: float = 1.5, export_kw: float = 0.0) -> Snapshot:
    return Snapshot(meter="main", protocol="dsmr", device_id="E0001", timestamp=NOW, received=NOW, readings=(
        Reading(id="1-0:1.8.0", value=energy_kwh, unit="kWh"),
        Reading(id="1-0:2.8.0", value=12.5, unit="kWh"),
        Reading(id="1-0:1.7.0", value=power_kw, unit="kW"),
        Reading(id="1-0:2.7.0", value=export_kw, unit="kW"),
    ))


@pytest.mark.parametrize(("profile", "esi_ep"), [(0x0109, 10), (0x0104, 11)], ids=["se", "ha"])
async def test_display_joins_and_reads_metering(
    network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter, profile: int, esi_ep: int
) -> None:
    bus.publish(snapshot())
    ihd = make_display(network, profile=profile)
    network.join(ihd)
    dev = await network.joined(ihd)
    # the interview's Basic read went through zigpy even on the SE profile
    assert (dev.manufacturer, dev.model) == ("Sim Displays", "IHD-Sim")

    attrs = await ihd.read_attributes(
        0x0702, [0x0000, 0x0001, 0x0200, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x0306, 0x0400, 0x0207],
        dst_ep=esi_ep)
    assert attrs[0x0000] == (0, (0x25, 12_345_678))  # Wh with divisor 1000
    assert attrs[0x0001] == (0, (0x25, 12_500))
    assert attrs[0x0200] == (0, (0x18, 0))
    assert attrs[0x0300] == (0, (0x30, 0x00))  # kWh
    assert attrs[0x0301] == (0, (0x22, 1))
    assert attrs[0x0302] == (0, (0x22, 1000))
    assert attrs[0x0303] == (0, (0x18, 0x33))
    assert attrs[0x0304] == (0, (0x18, 0x2B))
    assert attrs[0x0306] == (0, (0x18, 0))  # electric
    assert attrs[0x0400] == (0, (0x2A, 1500))  # W
    assert attrs[0x0207] == (0x86, None)
    answer = ihd.received[-1]
    assert (answer.src_ep, answer.profile) == (esi_ep, profile)  # answered from the ESI endpoint, same profile


async def test_export_gives_negative_demand_and_offline_meter_sets_check_meter(
    network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter
) -> None:
    ihd = make_display(network)
    network.join(ihd)
    await network.joined(ihd)
    bus.publish(snapshot(power_kw=0.0, export_kw=2.25))
    bus.publish(MeterStatus(meter="main", online=False))
    expected = {0x0400: (0, (0x2A, -2250)), 0x0200: (0, (0x18, 0x01))}
    async with asyncio.timeout(10):  # the adapter takes both bus messages in its own time
        while (attrs := await ihd.read_attributes(0x0702, [0x0400, 0x0200], dst_ep=10)) != expected:
            await asyncio.sleep(0.01)
    assert attrs[0x0400] == (0, (0x2A, -2250))
    assert attrs[0x0200] == (0, (0x18, 0x01))


async def test_request_from_unknown_device_goes_to_zigpy_discovery(network: VirtualNetwork,
                                                                   adapter: ZigbeeAdapter) -> None:
    stranger = make_display(network, nwk=0x3003)  # never joined: zigpy does not know it
    stranger.send(0x0700, bytes([0x01, 0x10, 0x00, 0x00]), dst_ep=10)  # GetCurrentPrice
    async with asyncio.timeout(10):
        # zigpy asks the network who 0x3003 is (ZDO IEEE_addr_req, cluster 0x0001)
        while not [p for p in network.sent if p.cluster_id == 0x0001 and p.dst_ep == 0]:
            await asyncio.sleep(0.01)
    assert not [r for r in stranger.received if r.cluster == 0x0700]  # and the ESI did not answer a stranger
