"""The BACnet adapter binds late, rebinds by itself and never takes the bus down."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from adapters.bacnet import BacnetAdapter, BacnetConfig
from gateway.bus import Bus
from gateway.model import Snapshot

from .conftest import free_udp_port, wait_for
from .test_bacnet_device import AI, PV, snapshot, value_of

pytestmark = pytest.mark.timeout(120)


async def test_busy_port_then_bind_when_free(bacnet_peer: Any) -> None:
    port = free_udp_port("127.0.0.2")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.2", port))  # no SO_REUSEPORT: bacpypes3's bind fails with EADDRINUSE
    bus = Bus()
    config = BacnetConfig(device_instance=4711, address=f"127.0.0.2/8:{port}", rebind_min_s=0.1, rebind_max_s=0.5)
    adapter = BacnetAdapter(gateway_id="test", config=config, meters=("main",))
    try:
        await adapter.start(bus)  # returns at once, whatever the network does
        await wait_for(lambda: "cannot bind" in adapter.health().detail, what="the bind failure in health")
        assert adapter.health().ok is False
        # the rest of the gateway goes on: publishing never fails, other subscribers get it
        other = bus.subscribe(Snapshot)
        bus.publish(snapshot(1.0))
        assert other.get_nowait() is not None
        blocker.close()
        await wait_for(lambda: adapter.health().ok, timeout=15, what="the bind once the port is free")
        await wait_for(lambda: ("main", "power_import") in adapter._points, what="the power object")
        inst = adapter._points[("main", "power_import")].obj.objectIdentifier[1]
        peer = await bacnet_peer()
        reply = await peer.request("read", address=f"127.0.0.2:{port}", type=AI, instance=inst, property=PV)
        assert value_of(reply) == pytest.approx(1000.0)
    finally:
        blocker.close()
        await adapter.stop()
    assert adapter.health().detail == "stopped"


async def test_rebinds_after_the_socket_is_lost(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory(rebind_min_s=0.1, rebind_max_s=0.5)
    dev.bus.publish(snapshot(1.0))
    await wait_for(lambda: ("main", "power_import") in dev.adapter._points, what="the power object")
    inst = dev.adapter._points[("main", "power_import")].obj.objectIdentifier[1]
    dev.adapter._server().local_transport.close()  # as after a fatal socket error
    await wait_for(lambda: dev.adapter.health().counters["rebinds"] == 1, timeout=15, what="the loss noticed")
    await wait_for(lambda: dev.adapter.health().ok, timeout=15, what="the rebind")
    assert dev.adapter.health().counters["binds"] == 2
    dev.bus.publish(snapshot(2.0))
    peer = await bacnet_peer()
    reply = await peer.request("read", address=dev.address, type=AI, instance=inst, property=PV)
    assert value_of(reply) == pytest.approx(2000.0)


async def test_registers_as_foreign_device(bacnet_device_factory: Any) -> None:
    """``foreign_device``: the gateway registers with a BBMD (here a second gateway device
    acting as BBMD; the independent client's side of BBMD is in test_bacnet_device)."""
    bbmd = await bacnet_device_factory(bbmd_peers=["127.0.0.2/8:{port}"])
    port = free_udp_port("127.0.0.4")
    config = BacnetConfig.model_validate({"device_instance": 4712, "address": f"127.0.0.4/8:{port}",
                                          "foreign_device": {"bbmd": bbmd.address, "ttl_s": 60}})
    fd = BacnetAdapter(gateway_id="fd", config=config)
    await fd.start(Bus())
    try:
        link = next(iter(bbmd.adapter._app.link_layers.values()))
        entry = await wait_for(lambda: [e for e in link.bbmdFDT if str(e.fdAddress) == f"127.0.0.4:{port}"],
                               what="the foreign device table entry")
        assert entry[0].fdTTL == 60
        await wait_for(lambda: fd.health().ok, what="the foreign device's health")
    finally:
        await fd.stop()
