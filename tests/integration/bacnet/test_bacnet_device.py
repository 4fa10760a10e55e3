"""The gateway as a BACnet device, checked by an independent stack (@bacnet-js/client)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.bus import OverrideRequest
from gateway.model import DemandResponseEvent, LoadState, PriceSignal, Reading, Snapshot

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)

# BACnet enumerations (clause 21) as @bacnet-js/client uses them
AI, AV, BV, MSV, DEVICE = 0, 2, 5, 19, 8
PV, UNITS, OBJECT_NAME, OBJECT_LIST, PRIORITY_ARRAY = 85, 117, 77, 76, 87
WATTS, KWH, VOLTS = 47, 19, 5
T_NULL, T_ENUMERATED = 0, 9

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def snapshot(power_kw: float, *, tariff: str = "0002", at: datetime = T0) -> Snapshot:
    return Snapshot(
        meter="main", protocol="dsmr", device_id=None, timestamp=at, received=at,
        readings=(
            Reading(id="1-0:1.8.1", value=1234.5, unit="kWh"),
            Reading(id="1-0:1.7.0", value=power_kw, unit="kW"),
            Reading(id="1-0:32.7.0", value=230.1, unit="V"),
            Reading(id="0-0:96.14.0", value=tariff),
            Reading(id="0-0:96.1.1", value="4530303034303031"),
        ))


def value_of(reply: dict[str, Any]) -> Any:
    assert reply["ok"], reply
    return reply["values"][0]["value"]


async def instance_named(peer: Any, dev: Any, name: str) -> tuple[int, int]:
    objs = await peer.request("read", address=dev.address, type=DEVICE, instance=4711, property=OBJECT_LIST)
    assert objs["ok"], objs
    for o in objs["values"]:
        oid = o["value"]
        got = await peer.request("read", address=dev.address, type=oid["type"], instance=oid["instance"],
                                 property=OBJECT_NAME)
        if value_of(got) == name:
            return oid["type"], oid["instance"]
    raise AssertionError(f"no object named {name!r}")


async def test_who_is_finds_the_gateway(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory()
    peer = await bacnet_peer()
    await peer.request("whois", address=f"127.255.255.255:{dev.port}")
    iam = await peer.wait_event(lambda e: e.get("event") == "iam" and e["deviceId"] == 4711)
    assert iam["address"].startswith("127.0.0.2")
    name = await peer.request("read", address=dev.address, type=DEVICE, instance=4711, property=OBJECT_NAME)
    assert value_of(name) == "han-gateway-test"


async def test_peer_reads_values_and_units(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory()
    dev.bus.publish(snapshot(1.25))
    await wait_for(lambda: ("main", "power_import") in dev.adapter._points, what="the power object")
    peer = await bacnet_peer()
    otype, inst = await instance_named(peer, dev, "main.power_import")
    assert otype == AI
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=PV)) == pytest.approx(1250.0)
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=UNITS)) == WATTS
    # objects appeared after the device was up: database-revision tells caching clients
    assert value_of(await peer.request("read", address=dev.address, type=DEVICE, instance=4711, property=155)) > 1
    otype, inst = await instance_named(peer, dev, "main.energy_import_t1")
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=PV)) == pytest.approx(1234.5)
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=UNITS)) == KWH
    otype, inst = await instance_named(peer, dev, "main.voltage_l1")
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=UNITS)) == VOLTS
    # tariff, price and DR level
    assert value_of(await peer.request("read", address=dev.address, type=MSV, instance=1, property=PV)) == 2
    dev.bus.publish(PriceSignal(start=T0, end=T0 + timedelta(hours=1), price_per_kwh=0.3125))
    now = datetime.now(UTC)
    dev.bus.publish(DemandResponseEvent(event_id="e1", start=now - timedelta(minutes=1),
                                        end=now + timedelta(hours=1), level=2))
    await wait_for(lambda: dev.adapter._dr.presentValue == 3, what="DR level")
    assert value_of(await peer.request("read", address=dev.address, type=AV, instance=1, property=PV)) == pytest.approx(0.3125)
    assert value_of(await peer.request("read", address=dev.address, type=MSV, instance=2, property=PV)) == 3


async def test_cov_notification_when_the_value_changes(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory()
    dev.bus.publish(snapshot(1.0))
    await wait_for(lambda: ("main", "power_import") in dev.adapter._points, what="the power object")
    inst = dev.adapter._points[("main", "power_import")].obj.objectIdentifier[1]
    peer = await bacnet_peer()
    for confirmed, spid in ((False, 7), (True, 8)):
        mark = len(peer.events)
        reply = await peer.request("subscribe", address=dev.address, type=AI, instance=inst,
                                   subscribeId=spid, confirmed=confirmed, lifetime=300)
        assert reply["ok"], reply
        # the initial notification after subscribing (clause 13.14.1.1)
        first = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == spid, start=mark)
        assert first["confirmed"] is confirmed
        assert first["values"][0]["value"][0] == pytest.approx(1000.0)
    mark = len(peer.events)
    dev.bus.publish(snapshot(1.005))  # 5 W: below the 10 W COV increment
    dev.bus.publish(snapshot(2.5))
    ev = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == 7, start=mark)
    assert ev["object"] == {"type": AI, "instance": inst}
    assert ev["values"][0]["property"] == PV and ev["values"][0]["value"][0] == pytest.approx(2500.0)
    ev = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == 8, start=mark)
    assert ev["values"][0]["value"][0] == pytest.approx(2500.0)
    assert dev.adapter.health().counters["cov_subscriptions"] == 2


async def test_cov_of_multi_state_and_binary_values(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory(loads={"boiler": {"instance": 3}})
    peer = await bacnet_peer()
    for otype, inst, spid in ((MSV, 2, 1), (MSV, 1, 2), (BV, 3, 3)):
        reply = await peer.request("subscribe", address=dev.address, type=otype, instance=inst,
                                   subscribeId=spid, confirmed=False, lifetime=300)
        assert reply["ok"], reply
        await peer.wait_event(lambda e, s=spid: e.get("event") == "cov" and e["subscriberProcessId"] == s)
    mark = len(peer.events)
    now = datetime.now(UTC)
    dev.bus.publish(DemandResponseEvent(event_id="e1", start=now - timedelta(minutes=1),
                                        end=now + timedelta(hours=1), level=1))
    dev.bus.publish(snapshot(1.0, tariff="0001"))
    dev.bus.publish(snapshot(1.0, tariff="0002"))
    dev.bus.publish(LoadState(load="boiler", on=True, since=T0))
    ev = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == 1, start=mark)
    assert ev["object"] == {"type": MSV, "instance": 2} and ev["values"][0]["value"][0] == 2
    ev = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == 2
                               and e["values"][0]["value"][0] == 2, start=mark)
    ev = await peer.wait_event(lambda e: e.get("event") == "cov" and e["subscriberProcessId"] == 3, start=mark)
    assert ev["object"] == {"type": BV, "instance": 3} and ev["values"][0]["value"][0] == 1


async def test_override_write_publishes_override_request(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory(loads={"boiler": {"instance": 3, "override": True}})
    requests = dev.bus.subscribe(OverrideRequest)
    dev.bus.publish(LoadState(load="boiler", on=True, since=T0))
    await wait_for(lambda: str(dev.adapter._load_bv["boiler"].presentValue) == "active", what="load state")
    peer = await bacnet_peer()
    assert value_of(await peer.request("read", address=dev.address, type=BV, instance=3, property=PV)) == 1
    # relinquished: the override shows the load's actual state
    assert value_of(await peer.request("read", address=dev.address, type=BV, instance=1003, property=PV)) == 1
    reply = await peer.request("write", address=dev.address, type=BV, instance=1003, property=PV,
                               values=[{"type": T_ENUMERATED, "value": 0}], priority=8)
    assert reply["ok"], reply
    req = await wait_for(requests.get_nowait, what="OverrideRequest")
    assert (req.load, req.mode) == ("boiler", "off") and req.source.startswith("bacnet:127.0.0.1")
    pa = await peer.request("read", address=dev.address, type=BV, instance=1003, property=PRIORITY_ARRAY)
    assert pa["ok"] and pa["values"][7]["value"] == 0 and pa["values"][0]["type"] == T_NULL
    assert value_of(await peer.request("read", address=dev.address, type=BV, instance=1003, property=PV)) == 0
    # relinquish: back to automatic
    reply = await peer.request("write", address=dev.address, type=BV, instance=1003, property=PV,
                               values=[{"type": T_NULL, "value": None}], priority=8)
    assert reply["ok"], reply
    req = await wait_for(requests.get_nowait, what="OverrideRequest")
    assert (req.load, req.mode) == ("boiler", "auto")
    assert value_of(await peer.request("read", address=dev.address, type=BV, instance=1003, property=PV)) == 1


async def test_writes_to_read_only_objects_are_refused(bacnet_peer: Any, bacnet_device_factory: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    dev = await bacnet_device_factory(loads={"boiler": {"instance": 3, "override": True}})
    requests = dev.bus.subscribe(OverrideRequest)
    dev.bus.publish(snapshot(1.0))
    await wait_for(lambda: ("main", "power_import") in dev.adapter._points, what="the power object")
    inst = dev.adapter._points[("main", "power_import")].obj.objectIdentifier[1]
    peer = await bacnet_peer()
    cases = [
        (AI, inst, PV, [{"type": 4, "value": 99.0}], None),
        (AV, 1, PV, [{"type": 4, "value": 0.01}], 8),
        (BV, 3, PV, [{"type": T_ENUMERATED, "value": 0}], 8),
        (MSV, 1, PV, [{"type": 2, "value": 1}], None),
        (DEVICE, 4711, OBJECT_NAME, [{"type": 7, "value": "evil"}], None),
        (BV, 1003, OBJECT_NAME, [{"type": 7, "value": "evil"}], None),
    ]
    for otype, oinst, prop, values, prio in cases:
        kw = {"priority": prio} if prio else {}
        reply = await peer.request("write", address=dev.address, type=otype, instance=oinst, property=prop,
                                   values=values, **kw)
        assert not reply["ok"], (otype, oinst, prop)
        assert "Class:2 - Code:40" in reply["error"], reply  # property / write-access-denied
    # WritePropertyMultiple too (clause 15.10): answered with an Error PDU, not left to time
    # out (bacpypes3 0.0.110 alone sends nothing).  @bacnet-js/client 3.3.2 decodes every Error
    # PDU in the plain form, so it cannot show this one's nested class/code (property /
    # write-access-denied): the refusal counter below says which error it was.
    reply = await peer.request("writemultiple", address=dev.address, type=AI, instance=inst, property=PV,
                               values=[{"type": 4, "value": 99.0}])
    assert not reply["ok"] and reply["error"].startswith("BacnetError"), reply
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=PV)) == pytest.approx(1000.0)
    assert value_of(await peer.request("read", address=dev.address, type=DEVICE, instance=4711, property=OBJECT_NAME)) == "han-gateway-test"
    # services that would silence or restart the device are not implemented: rejected
    for op in ("dcc", "reinitialize"):
        reply = await peer.request(op, address=dev.address)
        # a Reject PDU, reason 9 unrecognized-service (@bacnet-js/client reports rejects as aborts)
        assert not reply["ok"] and reply["error"] == "BacnetAbort - Reason:9", reply
    assert value_of(await peer.request("read", address=dev.address, type=AI, instance=inst, property=PV)) == pytest.approx(1000.0)
    assert requests.get_nowait() is None
    assert dev.adapter.health().counters["writes_refused"] == len(cases) + 1
    assert any("refused a write from 127.0.0.1" in r.getMessage() for r in caplog.records)


async def test_bbmd_accepts_a_foreign_device(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    """As a BBMD (Annex J.4): the peer registers as a foreign device and finds us through
    Distribute-Broadcast-To-Network."""
    dev = await bacnet_device_factory(bbmd_peers=["127.0.0.2/8:{port}"])  # the BDT: just us
    peer = await bacnet_peer("127.0.0.5")
    reply = await peer.request("register", address=dev.address, ttl=60)
    assert reply["ok"], reply
    await peer.request("whoisbbmd", address=dev.address)
    iam = await peer.wait_event(lambda e: e.get("event") == "iam" and e["deviceId"] == 4711)
    assert iam["address"].startswith("127.0.0.2")
    # the control: a device that is no BBMD refuses the registration
    plain = await bacnet_device_factory()
    reply = await peer.request("register", address=plain.address, ttl=60)
    assert not reply["ok"] and "Result:48" in reply["error"], reply  # Register-Foreign-Device NAK (0x30)


async def test_cov_subscriptions_are_bounded(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory(max_cov_subscriptions=2)
    peer = await bacnet_peer()
    for spid in (1, 2):
        assert (await peer.request("subscribe", address=dev.address, type=MSV, instance=1, subscribeId=spid,
                                   confirmed=False, lifetime=300))["ok"]
    reply = await peer.request("subscribe", address=dev.address, type=MSV, instance=2, subscribeId=3,
                               confirmed=False, lifetime=300)
    assert not reply["ok"] and "Class:3 - Code:19" in reply["error"], reply  # resources / no-space-to-add-list-element
    # renewing one that exists is still fine, and a cancellation frees a place
    assert (await peer.request("subscribe", address=dev.address, type=MSV, instance=1, subscribeId=2,
                               confirmed=False, lifetime=600))["ok"]
    assert (await peer.request("subscribe", address=dev.address, type=MSV, instance=1, subscribeId=2,
                               cancel=True))["ok"]
    assert (await peer.request("subscribe", address=dev.address, type=MSV, instance=2, subscribeId=3,
                               confirmed=False, lifetime=300))["ok"]
    assert dev.adapter.health().counters["cov_subscriptions"] == 2
