"""The real daemon (``han-gateway run`` as a child process) with ``[web]``, ``[rules]`` and
MQTT configured, fed by a virtual DSMR meter on a pty: the page's API shows the live
meter, an override goes through the rule engine to the MQTT actuator, /metrics counts
the frames, and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import Config
from gateway.supervisor import Gateway

from .conftest import PASSWORD, PASSWORD_HASH, RULES

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not hasattr(Gateway(Config()), "web"), reason="needs the supervisor wiring"),
]


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, url
        return await r.json() if r.content_type == "application/json" else await r.text()


async def test_daemon_serves_the_page_and_switches_a_load(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any,
    free_tcp_port: int,
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "boiler.toml").write_text(RULES)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "daemonweb"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{tmp_path / 'p1'}"

[adapter.mqtt]
url = "{mosquitto.url}"

[rules]
dir = "rules"

[web]
listen = "127.0.0.1:{free_tcp_port}"
password_hash = "{PASSWORD_HASH}"
""")
    sub = mqtt_subscriber(mosquitto, "home/#")
    meter = meter_factory()
    gw = gateway_factory(cfg)
    base = f"http://127.0.0.1:{free_tcp_port}/"
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for an IP host
        deadline = loop.time() + 60
        live: dict[str, Any] = {}
        while loop.time() < deadline:
            assert gw.alive, gw.log_text()[-3000:]
            meter.push()
            try:
                live = await _get(http, base + "api/live")
            except aiohttp.ClientConnectionError:
                live = {}
            if live.get("power_import_w") is not None:
                break
            await asyncio.sleep(0.3)
        assert live.get("meter") == "main" and live["power_import_w"] >= 0, live
        assert "household page on http://127.0.0.1:" in gw.log_text()

        health = await _get(http, base + "api/health")
        (m,) = health["meters"]
        assert m["id"] == "main" and m["online"] and m["frames"] >= 1 and m["checksum_errors"] == 0
        assert [a["name"] for a in health["adapters"]] == ["mqtt"]

        async with http.post(base + "api/loads/boiler/override", json={"mode": "off"}) as r:
            assert r.status == 401
        async with http.post(base + "api/login", json={"password": PASSWORD}) as r:
            assert r.status == 200
            csrf = (await r.json())["csrf_token"]
        async with http.post(base + "api/loads/boiler/override", json={"mode": "off", "duration_s": 900},
                             headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["ok"] is True
        # the rule engine switched the boiler through its MQTT actuator
        await sub.wait_for(lambda msg: msg.topic == "home/boiler/set" and msg.text.lower() in ("off", "0", "false"),
                           timeout=15)
        for _ in range(50):
            loads = (await _get(http, base + "api/loads"))["loads"]
            st = loads[0]["state"]
            if st and not st["on"]:
                break
            await asyncio.sleep(0.2)
        assert loads[0]["name"] == "boiler" and st["override"] and not st["on"]

        metrics = await _get(http, base + "metrics")
        frames = [ln for ln in metrics.splitlines() if ln.startswith('han_meter_frames_total{meter="main"}')]
        assert frames and float(frames[0].split()[-1]) >= 1
        assert "han_load_decisions_total" in metrics and "process_cpu_seconds_total" in metrics

    assert gw.terminate() == 0
    assert "Traceback" not in gw.log_text()
    assert signal.SIGTERM
