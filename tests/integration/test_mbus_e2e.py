"""End to end: a virtual M-Bus of 3 meters on a pty → the real daemon → mosquitto → a
subscriber, which sees one state per M-Bus device (``<meter id>-<address>``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.mbus import make_bus, serve_pty

pytestmark = pytest.mark.timeout(120)


async def test_three_meters_on_one_bus_reach_the_broker(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any
) -> None:
    link = tmp_path / "mbus"
    bus = make_bus(3)
    ready = asyncio.Event()
    sim = asyncio.create_task(serve_pty(bus, link_path=str(link), on_ready=lambda _p: ready.set()))
    try:
        await ready.wait()
        sub = mqtt_subscriber(mosquitto, "han/#", "homeassistant/#")
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f"""
[gateway]
id = "e2e"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "heating"
protocol = "mbus"
port = "{link}"
timezone = "Europe/Berlin"

[meter.options]
primary_addresses = [1, 2]
secondary_addresses = ["87654321"]
poll_interval_s = 1

[adapter.mqtt]
url = "{mosquitto.url}"
reconnect_min_s = 0.2
reconnect_max_s = 2
""")
        gw = gateway_factory(cfg)
        topics = {f"han/e2e/meter/heating-{a}/state" for a in ("1", "2", "87654321")}
        msgs = await sub.wait_until(lambda ms: topics <= {m.topic for m in ms}, timeout=60)
        states = {m.topic.split("/")[3]: m.json() for m in msgs if m.topic in topics}
        assert states["heating-1"]["protocol"] == "mbus"
        assert states["heating-1"]["device_id"] == "12345678-LUG-01-heat"
        assert states["heating-2"]["device_id"] == "12345679-SEN-02-water"
        assert states["heating-87654321"]["device_id"] == "87654321-ABB-03-electricity"
        # the meter's own clock (local time, zone from the config) is the snapshot time
        assert states["heating-1"]["timestamp"].endswith(("+01:00", "+02:00"))
        heat = {r["id"]: r for r in states["heating-1"]["readings"]}
        assert heat["energy"]["unit"] == "Wh" and heat["energy"]["quantity"] == "energy"
        assert heat["flow_temperature"]["unit"] == "°C"
        # one topic per quantity, and each device online on its own
        energy = await sub.wait_for(lambda m: m.topic == "han/e2e/meter/heating-1/energy", timeout=20)
        assert float(energy.text) > 0
        avail = await sub.wait_for(
            lambda m: m.topic == "han/e2e/meter/heating-87654321/availability", timeout=20
        )
        assert avail.text == "online"
        assert gw.alive
        assert gw.terminate() == 0
        assert "Traceback" not in gw.log_text()
    finally:
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim
