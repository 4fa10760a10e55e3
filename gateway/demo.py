"""``han-gateway demo``: a virtual DSMR meter on a pty, an embedded MQTT broker
(amqtt, only when no ``--broker`` is given) and the gateway with its household
page on loopback (port 8080 when free; a throwaway password for switching loads
is printed), with a live summary of the last readings in the terminal.  No
hardware and no config file needed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import socket
import sys
from typing import Any

from gateway.config import parse_config
from gateway.model import Snapshot
from gateway.web.config import hash_password

log = logging.getLogger(__name__)

SUMMARY = (
    ("1-0:1.7.0", "power import"),
    ("1-0:2.7.0", "power export"),
    ("1-0:1.8.1", "import T1"),
    ("1-0:1.8.2", "import T2"),
    ("1-0:32.7.0", "voltage L1"),
    ("0-1:24.2.1", "gas"),
)


DEMO_RULES = """\
# Demo loads (their actuators are MQTT topics nobody listens to): see rules/ for real examples.
[settings]
restore_delay = "10s"

[[load]]
name = "water_heater"
actuator = "mqtt:demo/water_heater/set"
rated_power = "2 kW"
priority = 1
classes = ["water_heater"]
max_shed = "30m"

[[load]]
name = "ev_charger"
actuator = "mqtt:demo/ev_charger/set"
rated_power = "7.4 kW"
priority = 3
classes = ["ev"]
max_shed = "1h"

[[rule]]
id = "dr-shed"
when = "dr.criticality >= 5"
action = "shed"
loads = ["water_heater", "ev_charger"]

[[rule]]
id = "peak"
when = "import_power_kw > 4 kW"
for = "10s"
action = "shed"
until = "import_power_kw < 3 kW"
loads = ["water_heater"]
"""


def web_demo_port() -> int:
    """8080 on loopback when it is free, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_embedded_broker(port: int) -> Any:
    """amqtt broker on loopback; anonymous, no $SYS chatter."""
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    return broker


def summary_line(snap: Snapshot | None, mqtt_health: Any) -> str:
    if snap is None:
        return "waiting for the first telegram…"
    parts = [snap.timestamp.strftime("%H:%M:%S")]
    for rid, label in SUMMARY:
        r = snap.reading(rid)
        if r is not None:
            parts.append(f"{label} {r.value} {r.unit or ''}".rstrip())
    if mqtt_health is not None:
        c = mqtt_health.counters
        parts.append(f"mqtt {'up' if mqtt_health.ok else 'DOWN'} published {c.get('published', 0)}"
                     f" backlog {c.get('backlog', 0)}")
    return " | ".join(parts)


async def run_demo(args: argparse.Namespace) -> int:
    from gateway.sim.dsmr import DsmrSimulator
    from gateway.sim.runner import PtyMeter, push_to_pty
    from gateway.supervisor import Gateway

    broker = None
    if args.broker:
        url = args.broker
    else:
        port = free_port()
        broker = await start_embedded_broker(port)
        url = f"mqtt://127.0.0.1:{port}"
    key = bytes(range(16)) if args.variant == "smarty" else None
    sim = DsmrSimulator(args.variant, key=key, auth_key=key)
    meter = PtyMeter()
    meter_cfg: dict[str, Any] = {"id": "main", "protocol": "dsmr", "port": meter.path}
    if key:
        meter_cfg["key"] = meter_cfg["auth_key"] = key.hex()
    rules_dir = args.data_dir.resolve() / "demo-rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    (rules_dir / "demo.toml").write_text(DEMO_RULES, encoding="utf-8")
    web_port = web_demo_port()
    web_password = secrets.token_urlsafe(9)
    cfg = parse_config({
        "gateway": {"id": "demo", "data_dir": str(args.data_dir.resolve())},
        "meter": [meter_cfg],
        "adapter": {"mqtt": {"url": url, "discovery": True}},
        "web": {"listen": f"127.0.0.1:{web_port}", "password_hash": hash_password(web_password, log2_n=14)},
        "rules": {"dir": str(rules_dir)},
    }, file="(demo)")
    gw = Gateway(cfg)
    host_port = url.split("://", 1)[1]
    host, _, port_s = host_port.partition(":")
    print(f"""
han-gateway demo
  virtual {args.variant} meter : {meter.path}
  MQTT broker          : {url}{' (embedded amqtt)' if broker else ''}
  household page       : http://127.0.0.1:{web_port}/   (password for switching loads: {web_password})
  data                 : {args.data_dir.resolve()}/gateway.sqlite3
  look at the topics   : mosquitto_sub -h {host} -p {port_s or 1883} -t 'han/#' -t 'homeassistant/#' -v
     han/demo/status                      online/offline (retained, last will)
     han/demo/meter/main/state            JSON snapshot (retained)
     han/demo/meter/main/<quantity>       one value each (power_import, energy_import_t1, …)
     homeassistant/sensor/demo_main/…     Home Assistant discovery
     han/demo/load/<load>/state           each demo load, with the rule and reason
  try a DR event       : mosquitto_pub -h {host} -p {port_s or 1883} -t han/demo/dr/set -m '{{"event_id": "e1", "criticality": 7, "duration_s": 300}}'
  stop with Ctrl-C
""", flush=True)
    tasks = [
        asyncio.create_task(push_to_pty(meter, sim.telegram, sim.interval_s), name="demo-meter"),
        asyncio.create_task(gw.run(), name="gateway"),
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration if args.duration else None
    tty = sys.stdout.isatty()
    try:
        while deadline is None or loop.time() < deadline:
            await asyncio.sleep(1.0)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            mqtt = gw.adapters.get("mqtt")
            line = summary_line(gw.bus.last_snapshot.get("main"), mqtt.health() if mqtt else None)
            print(("\r\033[K" if tty else "") + line, end="" if tty else "\n", flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        print()
        for t in reversed(tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        meter.close()
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()
    return 0
