"""The whole loop through the real daemon: a BMS (@bacnet-js/client) overrides a load on
the gateway's BACnet device -> the rule engine -> the gateway's BACnet actuator commands
the load's relay object on another device (a bacpypes3 process) at priority 9 -> the
relay's priority array, read by the BMS; relinquishing the override hands it back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_udp_port, start_target
from .test_bacnet_device import BV, PRIORITY_ARRAY, PV, T_ENUMERATED, T_NULL

pytestmark = pytest.mark.timeout(180)
BO = 4


async def poll(peer: Any, what: str, check: Any, timeout: float = 60, **read: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await peer.request("read", **read)
        if last["ok"] and check(last["values"]):
            return last["values"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last read {last}")


async def test_bms_override_switches_the_relay(tmp_path: Path, bacnet_peer: Any, gateway_factory: Any,
                                               meter_factory: Any) -> None:
    port, tport = free_udp_port("127.0.0.2"), free_udp_port("127.0.0.3")
    target = await start_target(tport)
    try:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "boiler.toml").write_text(f"""
[[load]]
name = "boiler"
actuator = "bacnet:127.0.0.3:{tport}/binary-output:3@9"
rated_power = "2 kW"
""")
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f"""
[gateway]
id = "loop"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{tmp_path / 'p1'}"

[rules]
dir = "rules"

[adapter.bacnet]
device_instance = 4711
address = "127.0.0.2/8:{port}"
loads = {{ boiler = {{ instance = 1, override = true }} }}
""")
        meter = meter_factory()
        gw = gateway_factory(cfg)
        peer = await bacnet_peer()
        gwaddr, taddr = f"127.0.0.2:{port}", f"127.0.0.3:{tport}"
        meter.push()
        # the rules put the boiler in its safe state (on); the gateway's BV 1 shows it
        await poll(peer, "the load on", lambda v: v[0]["value"] == 1, address=gwaddr, type=BV, instance=1, property=PV)
        assert gw.alive, gw.log_text()

        # the BMS switches it off by hand, at priority 8 of the override object
        reply = await peer.request("write", address=gwaddr, type=BV, instance=1001, property=PV,
                                   values=[{"type": T_ENUMERATED, "value": 0}], priority=8)
        assert reply["ok"], reply
        pa = await poll(peer, "the relay commanded off at priority 9", lambda v: v[8]["type"] != T_NULL,
                        address=taddr, type=BO, instance=3, property=PRIORITY_ARRAY)
        assert pa[8]["value"] == 0 and all(v["type"] == T_NULL for i, v in enumerate(pa) if i != 8)
        await poll(peer, "the load off", lambda v: v[0]["value"] == 0, address=gwaddr, type=BV, instance=1, property=PV)

        # relinquished: the rules decide again and restore the load (slot 9 relinquished)
        reply = await peer.request("write", address=gwaddr, type=BV, instance=1001, property=PV,
                                   values=[{"type": T_NULL, "value": None}], priority=8)
        assert reply["ok"], reply
        await poll(peer, "slot 9 relinquished", lambda v: all(x["type"] == T_NULL for x in v),
                   address=taddr, type=BO, instance=3, property=PRIORITY_ARRAY)
        await poll(peer, "the relay back on", lambda v: v[0]["value"] == 1, address=taddr, type=BO, instance=3, property=PV)
        assert gw.terminate() == 0
        log = gw.log_text()
        assert "override of load boiler to off" in log and "override of load boiler to auto" in log
    finally:
        assert target.stdin is not None
        target.stdin.close()
        await target.wait()
