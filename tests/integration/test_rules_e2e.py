"""End to end: price / DR / override messages on a real mosquitto → the real daemon's
signal gate and rule engine → actuator commands and load states on the broker; signed
messages, replays across a restart, SIGHUP reload and the audit trail in the store."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway.signals.signing import public_key_text, sign

pytestmark = pytest.mark.timeout(300)

RULES = """
[settings]
restore_delay = "0s"
stale_after = "30s"

[[load]]
name = "boiler"
actuator = "mqtt:{topic}"
rated_power = "2 kW"
max_shed = "1h"

[[rule]]
id = "dr-shed"
when = "dr.criticality >= 5"
action = "shed"
loads = ["boiler"]
"""

EXTRA_LOAD = """
[[load]]
name = "heat_pump"
actuator = "mqtt:{topic}"
rated_power = "3 kW"
"""


def write_setup(tmp: Path, *, broker_port: int, pty: Path, gw: str, extra_signals: str = "") -> Path:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "main.toml").write_text(RULES.format(topic=f"t/{gw}/boiler/set"))
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "{gw}"
data_dir = "{tmp / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{pty}"

[adapter.mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
reconnect_min_s = 0.2
reconnect_max_s = 2
discovery = false

[rules]
dir = "rules"
tick_s = 0.5

[signals]
{extra_signals}
""")
    return cfg


def publish(broker: Any, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{secrets.token_hex(4)}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


class Feeder:
    """Pushes a telegram every 0.3 s, so the engine sees fresh meter data."""

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.meter.push()
            await asyncio.sleep(0.3)

    def __enter__(self) -> Feeder:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


def commands(sub: Any, topic: str) -> list[str]:
    return [m.text for m in sub.messages if m.topic == topic and not m.retain]


def last_state(sub: Any, gw: str, load: str) -> dict[str, Any] | None:
    found = [m for m in sub.messages if m.topic == f"han/{gw}/load/{load}/state" and m.payload]
    return found[-1].json() if found else None


def state_is(sub: Any, gw: str, load: str, pred: Callable[[dict[str, Any]], bool]) -> Callable[[list[Any]], bool]:
    def cond(_msgs: list[Any]) -> bool:
        st = last_state(sub, gw, load)
        return st is not None and pred(st)
    return cond


def errors(sub: Any, gw: str) -> list[dict[str, Any]]:
    return [m.json() for m in sub.messages if m.topic == f"han/{gw}/error"]


def audit_rows(tmp: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{tmp / 'data' / 'gateway.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT kind, load, action, rule, reason, source FROM audit ORDER BY id").fetchall()
    finally:
        con.close()


def dr(event_id: str, criticality: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "criticality": criticality, "duration_s": 600, **extra}


async def test_dr_event_sheds_and_cancel_restores_through_the_broker(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    gw = f"r{secrets.token_hex(3)}"
    act = f"t/{gw}/boiler/set"
    sub = mqtt_subscriber(mosquitto, f"han/{gw}/#", f"t/{gw}/#")
    meter = meter_factory()
    # A command left retained on the broker is stale: the gateway must not apply it when
    # it subscribes.
    publish(mosquitto, f"han/{gw}/dr/set", json.dumps(dr("evt-r", 9)), retain=True)
    proc = gateway_factory(write_setup(tmp_path, broker_port=mosquitto.port, pty=meter.pty.link, gw=gw))
    with Feeder(meter):
        await sub.wait_until(lambda _m: any("retained" in e["reason"] for e in errors(sub, gw)),
                             timeout=30)
        publish(mosquitto, f"han/{gw}/dr/set", b"", retain=True)  # clear it from the broker
        # Start-up: the load goes to its safe state (on) and says why.
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=30)
        publish(mosquitto, f"han/{gw}/dr/set", json.dumps(dr("evt-1", 7, issuer="dso")))
        await sub.wait_until(lambda _m: "OFF" in commands(sub, act), timeout=15)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: not s["on"]), timeout=10)
        st = last_state(sub, gw, "boiler")
        assert st is not None and st["rule"] == "dr-shed" and st["until"] is not None
        ev = await sub.wait_for(lambda m: m.topic == f"han/{gw}/dr/evt-1" and bool(m.payload))
        assert ev.json()["criticality"] == 7 and ev.json()["issuer"] == "dso"

        # A weaker event does not shed; cancelling the strong one restores the load.
        publish(mosquitto, f"han/{gw}/dr/set", json.dumps({"event_id": "evt-1", "cancel": True}))
        await sub.wait_until(lambda _m: commands(sub, act)[-1:] == ["ON"], timeout=15)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=10)
        assert commands(sub, act).count("OFF") == 1

        # A malformed message is refused with its reason on the error topic.
        publish(mosquitto, f"han/{gw}/dr/set", json.dumps({"event_id": "x", "criticality": 12}))
        await sub.wait_until(lambda _m: any("criticality" in e["reason"] for e in errors(sub, gw)),
                             timeout=10)
    assert proc.terminate() == 0
    rows = audit_rows(tmp_path)
    assert ("command", "boiler", "shed", "dr-shed") in [r[:4] for r in rows]
    assert any(r[0] == "signal" and r[2] == "accepted" and r[3] == "dr" for r in rows)
    assert any(r[0] == "signal" and r[2] == "refused" for r in rows)
    assert commands(sub, act).count("OFF") == 1  # the retained event shed nothing


async def test_manual_override_with_expiry_and_refusals(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    gw = f"o{secrets.token_hex(3)}"
    act = f"t/{gw}/boiler/set"
    sub = mqtt_subscriber(mosquitto, f"han/{gw}/#", f"t/{gw}/#")
    meter = meter_factory()
    proc = gateway_factory(write_setup(tmp_path, broker_port=mosquitto.port, pty=meter.pty.link, gw=gw))
    with Feeder(meter):
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=30)
        publish(mosquitto, f"han/{gw}/load/boiler/set", json.dumps({"mode": "off", "duration_s": 2}))
        await sub.wait_until(lambda _m: "OFF" in commands(sub, act), timeout=15)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["override"] and not s["on"]),
                             timeout=10)
        # The override expires after 2 s: the rules (nothing to shed) take the load back.
        await sub.wait_until(lambda _m: commands(sub, act)[-1:] == ["ON"], timeout=15)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"] and not s["override"]),
                             timeout=10)
        publish(mosquitto, f"han/{gw}/load/garage_door/set", "OFF")
        publish(mosquitto, f"han/{gw}/load/boiler/set", "HALF")
        await sub.wait_until(lambda _m: len(errors(sub, gw)) >= 2, timeout=10)
        reasons = " | ".join(e["reason"] for e in errors(sub, gw))
        assert "garage_door" in reasons and "expected ON, OFF, AUTO" in reasons
    assert proc.terminate() == 0
    assert commands(sub, act).count("OFF") == 1  # the refused requests switched nothing
    rows = audit_rows(tmp_path)
    assert ("override", "boiler", "off") in [r[:3] for r in rows]
    assert ("override", "garage_door", "refused") in [r[:3] for r in rows]


async def test_signatures_required_replay_refused_across_restart(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    gw = f"s{secrets.token_hex(3)}"
    key = Ed25519PrivateKey.generate()
    foreign = Ed25519PrivateKey.generate()
    sub = mqtt_subscriber(mosquitto, f"han/{gw}/#")
    meter = meter_factory()
    cfg = write_setup(tmp_path, broker_port=mosquitto.port, pty=meter.pty.link, gw=gw,
                      extra_signals=f'require_signature = true\ntrusted_keys = {{ dso = "{public_key_text(key.public_key())}" }}')
    expires = datetime.now(UTC) + timedelta(minutes=30)
    price = {"price": 0.42, "currency": "EUR", "tier": 3}
    signed = json.dumps(sign(price, key, key_id="dso", seq=10, expires=expires))
    with Feeder(meter):
        proc = gateway_factory(cfg)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=30)
        publish(mosquitto, f"han/{gw}/price/set", json.dumps(price))  # unsigned
        publish(mosquitto, f"han/{gw}/price/set",
                json.dumps(sign(price, foreign, key_id="dso", seq=11, expires=expires)))
        publish(mosquitto, f"han/{gw}/price/set",
                json.dumps(sign(price, foreign, key_id="other", seq=11, expires=expires)))
        await sub.wait_until(lambda _m: len(errors(sub, gw)) >= 3, timeout=10)
        codes = [e["reason"].split(":")[0] for e in errors(sub, gw)]
        assert codes == ["unsigned", "bad_signature", "unknown_key"]
        assert not [m for m in sub.messages if m.topic == f"han/{gw}/price" and m.payload]
        publish(mosquitto, f"han/{gw}/price/set", signed)
        got = await sub.wait_for(lambda m: m.topic == f"han/{gw}/price" and bool(m.payload))
        assert got.json()["price"] == 0.42 and got.json()["tier"] == 3
        publish(mosquitto, f"han/{gw}/price/set", signed)  # replayed at once
        await sub.wait_until(lambda _m: any(e["reason"].startswith("replayed") for e in errors(sub, gw)),
                             timeout=10)
        assert proc.terminate() == 0

        # After a restart the sequence number is remembered: the replay is still refused.
        sub.clear()
        proc = gateway_factory(cfg)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=30)
        publish(mosquitto, f"han/{gw}/price/set", signed)
        await sub.wait_until(lambda _m: any(e["reason"].startswith("replayed") for e in errors(sub, gw)),
                             timeout=10)
        publish(mosquitto, f"han/{gw}/price/set",
                json.dumps(sign({**price, "price": 0.1}, key, key_id="dso", seq=11, expires=expires)))
        await sub.wait_for(lambda m: m.topic == f"han/{gw}/price" and bool(m.payload)
                           and m.json()["price"] == 0.1, timeout=10)
        assert proc.terminate() == 0
    publish(mosquitto, f"han/{gw}/price", b"", retain=True)


async def test_sighup_reload_validates_then_swaps(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any, meter_factory: Any
) -> None:
    gw = f"h{secrets.token_hex(3)}"
    sub = mqtt_subscriber(mosquitto, f"han/{gw}/#")
    meter = meter_factory()
    cfg = write_setup(tmp_path, broker_port=mosquitto.port, pty=meter.pty.link, gw=gw)
    rules = tmp_path / "rules" / "main.toml"
    with Feeder(meter):
        proc = gateway_factory(cfg)
        await sub.wait_until(state_is(sub, gw, "boiler", lambda s: s["on"]), timeout=30)
        good = rules.read_text()
        rules.write_text(good + EXTRA_LOAD.format(topic=f"t/{gw}/hp/set") + '\n[[rule]]\nid = "bad"\nwhen = "import_power_kw >"\naction = "shed"\nloads = ["heat_pump"]\n')
        proc.proc.send_signal(signal.SIGHUP)
        await sub.wait_until(lambda _m: "rule reload refused" in proc.log_text(), timeout=10)
        assert "main.toml:" in proc.log_text()  # the problem names file:line:column
        assert last_state(sub, gw, "heat_pump") is None and proc.alive
        rules.write_text(good + EXTRA_LOAD.format(topic=f"t/{gw}/hp/set"))
        proc.proc.send_signal(signal.SIGHUP)
        await sub.wait_until(state_is(sub, gw, "heat_pump", lambda s: s["on"]), timeout=15)
        assert "rules reloaded" in proc.log_text()
        assert proc.terminate() == 0
    rows = audit_rows(tmp_path)
    assert [r[2] for r in rows if r[0] == "reload"] == ["refused", "ok"]
