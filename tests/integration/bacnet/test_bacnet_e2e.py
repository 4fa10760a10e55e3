"""End to end: a virtual DSMR meter on a pty -> the real ``han-gateway`` daemon ->
its BACnet device -> the independent @bacnet-js/client reading the power Analog Input."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ..conftest import T0
from .conftest import free_udp_port
from .test_bacnet_device import AI, PV, UNITS, WATTS, instance_named

pytestmark = pytest.mark.timeout(180)


async def test_meter_to_gateway_to_bacnet_client(tmp_path: Path, bacnet_peer: Any, gateway_factory: Any,
                                                 meter_factory: Any) -> None:
    port = free_udp_port("127.0.0.2")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "e2e"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{tmp_path / 'p1'}"

[adapter.bacnet]
device_instance = 4711
address = "127.0.0.2/8:{port}"
quantities = ["power_import", "energy_import_t1"]
""")
    meter = meter_factory()
    gw = gateway_factory(cfg)
    peer = await bacnet_peer()

    class Dev:
        address = f"127.0.0.2:{port}"

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    sent_w: list[float] = []  # 1-0:1.7.0 of every telegram sent, in W
    seen: float | None = None
    while loop.time() < deadline and seen is None:
        assert gw.alive, gw.log_text()
        at = T0 + timedelta(seconds=len(meter.sent))
        telegram = meter.sim.telegram(at)
        meter.pty.write(telegram)
        meter.sent.append(at)
        m = re.search(rb"1-0:1\.7\.0\(([0-9.]+)\*kW\)", telegram)
        assert m is not None
        sent_w.append(float(m.group(1)) * 1000)
        await asyncio.sleep(0.3)
        reply = await peer.request("read", address=Dev.address, type=AI, instance=1, property=PV)
        if reply["ok"]:  # AI 1 exists once the first snapshot reached the adapter
            seen = reply["values"][0]["value"]
    assert seen is not None, f"no power object over BACnet; gateway log:\n{gw.log_text()}"
    assert any(seen == pytest.approx(w, abs=0.01) for w in sent_w), (seen, sent_w)
    # the quantities list fixes the instances: AI 1 is the power, in W
    otype, inst = await instance_named(peer, Dev, "main.power_import")
    assert (otype, inst) == (AI, 1)
    units = await peer.request("read", address=Dev.address, type=AI, instance=1, property=UNITS)
    assert units["values"][0]["value"] == WATTS
    otype, inst = await instance_named(peer, Dev, "main.energy_import_t1")
    assert (otype, inst) == (AI, 2)
    assert gw.terminate() == 0
    assert "BACnet: device 4711" in gw.log_text()
