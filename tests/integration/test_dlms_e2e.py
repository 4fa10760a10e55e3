"""End to end: the virtual DLMS meter (TCP wrapper, HLS-GMAC, ciphered) → the real
daemon with a ``protocol = "dlms"`` meter → mosquitto → a subscriber sees the state
with 1-0:1.8.0 scaled in Wh and the meter's clock as timestamp, and the load profile
rows under ``<id>-load-profile``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.dlms import DlmsMeter, MeterOptions, serve_tcp

pytestmark = pytest.mark.timeout(120)

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))


async def test_dlms_meter_reaches_the_broker(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any
) -> None:
    meter = DlmsMeter(MeterOptions(authentication="hls-gmac", key=EK, auth_key=AK,
                                   max_pdu_size=512, timezone="Europe/Berlin"))
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sim = asyncio.create_task(serve_tcp(meter, "127.0.0.1", 0, on_ready=bound.set_result))
    try:
        port = await asyncio.wait_for(bound, 10)
        (tmp_path / "main.key").write_text(EK.hex() + "\n")
        (tmp_path / "main.auth").write_text(AK.hex() + "\n")
        for f in ("main.key", "main.auth"):
            (tmp_path / f).chmod(0o600)
        sub = mqtt_subscriber(mosquitto, "han/#")
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f"""
[gateway]
id = "e2e"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dlms"
port = "socket://127.0.0.1:{port}"
key_file = "{tmp_path / 'main.key'}"
auth_key_file = "{tmp_path / 'main.auth'}"

[meter.options]
transport = "wrapper"
authentication = "hls-gmac"
poll_interval_s = 1
load_profile = "1-0:99.1.0"
load_profile_days = 0.25

[adapter.mqtt]
url = "{mosquitto.url}"
reconnect_min_s = 0.2
reconnect_max_s = 2
""")
        gw = gateway_factory(cfg)
        state = await sub.wait_for(lambda m: m.topic == "han/e2e/meter/main/state" and not m.retain, timeout=60)
        snap = state.json()
        assert snap["protocol"] == "dlms"
        assert snap["device_id"] == "HGW12345678"
        assert snap["timestamp"].endswith(("+01:00", "+02:00"))
        readings = {r["id"]: r for r in snap["readings"]}
        assert readings["1-0:1.8.0"]["unit"] == "Wh"
        assert abs(readings["1-0:1.8.0"]["value"] - meter.import_wh()) < 10
        assert readings["1-0:32.7.0"]["unit"] == "V"
        assert 220 < readings["1-0:32.7.0"]["value"] < 240
        profile = await sub.wait_for(
            lambda m: m.topic == "han/e2e/meter/main-load-profile/state", timeout=30)
        assert {r["id"] for r in profile.json()["readings"]} == {"1-0:1.8.0", "1-0:2.8.0"}
        # a second poll on the same association
        await sub.wait_until(
            lambda ms: sum(m.topic == "han/e2e/meter/main/state" and not m.retain for m in ms) >= 2, timeout=30)
        assert gw.alive
        assert gw.terminate() == 0
        assert "Traceback" not in gw.log_text()
    finally:
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim
