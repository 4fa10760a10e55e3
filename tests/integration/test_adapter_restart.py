"""A crashed adapter (a bug in its own task, not a network outage) is restarted by the
supervisor, while the meter keeps being read and stored."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.mqtt.adapter import MqttAdapter
from gateway.config import parse_config
from gateway.sim.dsmr import DsmrSimulator
from gateway.sim.runner import PtyMeter
from gateway.supervisor import Gateway

pytestmark = pytest.mark.timeout(120)


async def test_crashed_adapter_is_restarted(tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    gw_id = f"c{secrets.token_hex(3)}"
    calls = 0
    original = MqttAdapter._connection_loop

    async def crash_once(self: MqttAdapter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the adapter")
        await original(self)

    monkeypatch.setattr(MqttAdapter, "_connection_loop", crash_once)
    meter = PtyMeter()
    sim = DsmrSimulator("dsmr5")
    sub = mqtt_subscriber(mosquitto, f"han/{gw_id}/status", f"han/{gw_id}/meter/main/state",
                          f"han/{gw_id}/meter/main/history")
    cfg = parse_config({
        "gateway": {"id": gw_id, "data_dir": str(tmp_path / "data")},
        "meter": [{"id": "main", "protocol": "dsmr", "port": meter.path}],
        "adapter": {"mqtt": {"url": f"mqtt://127.0.0.1:{mosquitto.port}", "discovery": False}},
    })
    gw = Gateway(cfg)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 10)
        first = t = datetime(2026, 1, 1, tzinfo=UTC)
        meter.write(sim.telegram(first))  # read while the adapter is down (it crashed at once)

        def delivered(when: datetime) -> bool:
            return any(datetime.fromisoformat(m.json()["timestamp"]) == when
                       for m in sub.messages if m.topic.endswith(("/state", "/history")))

        async with asyncio.timeout(60):
            while not delivered(first):
                t += timedelta(seconds=1)
                meter.write(sim.telegram(t))
                await asyncio.sleep(0.3)
        assert calls == 2  # crashed once, restarted once
        comp = gw.health()["components"]["adapter:mqtt"]
        assert comp["restarts"] == 1 and "a bug in the adapter" in comp["last_error"]
        assert comp["running"] and gw.healthy()
        assert gw.health()["adapters"]["mqtt"].ok
        assert sub.on(f"han/{gw_id}/status")[-1].text == "online"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        meter.close()
