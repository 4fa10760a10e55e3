"""End to end: an openleadr VTN on loopback → the real daemon's VEN ([signals.openadr]) →
the rule engine → the actuator command on a real mosquitto; the VTN sees the opt-in and
the meter's power in the reports."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openleadr", reason="openleadr (han-gateway[openadr]) is not installed")

from tests.integration.test_openadr import running_vtn  # noqa: E402
from tests.integration.test_rules_e2e import Feeder, commands, last_state  # noqa: E402

pytestmark = pytest.mark.timeout(300)


async def test_vtn_event_sheds_a_load_through_the_daemon(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    gw = f"a{secrets.token_hex(3)}"
    act = f"t/{gw}/ev/set"
    sub = mqtt_subscriber(mosquitto, f"han/{gw}/#", f"t/{gw}/#")
    meter = meter_factory()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "dr.toml").write_text(f"""
[settings]
restore_delay = "0s"

[[load]]
name = "ev"
actuator = "mqtt:{act}"
rated_power = "11 kW"

[[rule]]
id = "dr-emergency"
when = "dr.criticality >= 7"
action = "shed"
loads = ["ev"]
""")
    async with running_vtn() as vtn:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f"""
[gateway]
id = "{gw}"
data_dir = "{tmp_path / 'data'}"

[[meter]]
id = "main"
protocol = "dsmr"
port = "{meter.pty.link}"

[adapter.mqtt]
url = "mqtt://127.0.0.1:{mosquitto.port}"
discovery = false

[rules]
dir = "rules"
tick_s = 0.5

[signals.openadr]
vtn_url = "{vtn.url}"
ven_name = "han"
insecure_http = true
poll_interval_s = 1
meter = "main"
reports = ["power"]
report_interval_s = 1
""")
        with Feeder(meter):
            proc = gateway_factory(cfg)
            await sub.wait_until(lambda _m: (st := last_state(sub, gw, "ev")) is not None
                                 and st["on"], timeout=30)
            # SIMPLE level 3 ("special") maps to criticality 7: the rule sheds the charger.
            vtn.add_event(event_id="adr-1", level=3.0, start=datetime.now(UTC) - timedelta(seconds=5),
                          duration=timedelta(minutes=10))
            async with asyncio.timeout(30):
                assert await vtn.opts.get() == ("adr-1", "optIn")
            await sub.wait_until(lambda _m: "OFF" in commands(sub, act), timeout=30)
            # the state follows once the command was delivered
            await sub.wait_until(lambda _m: (st := last_state(sub, gw, "ev")) is not None
                                 and not st["on"] and st["rule"] == "dr-emergency", timeout=10)
            ev = await sub.wait_for(lambda m: m.topic == f"han/{gw}/dr/adr-1" and bool(m.payload))
            assert ev.json()["criticality"] == 7
            # The VTN receives the meter's import power (W), as the meter sent it.
            async with asyncio.timeout(30):
                measurement, _at, value = await vtn.reports.get()
            assert measurement == "RealPower"
            sent_w = {round(float(r["value"]) * 1000.0, 3)
                      for m in sub.messages if m.topic == f"han/{gw}/meter/main/state"
                      for r in json.loads(m.payload)["readings"] if r["id"] == "1-0:1.7.0"}
            assert round(value, 3) in sent_w
            assert proc.terminate() == 0
    assert "adr-1" in proc.log_text()
