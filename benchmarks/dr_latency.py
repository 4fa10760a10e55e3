"""DR message in, actuator command out: time through the real daemon (issue 4: p99 <= 20 ms).

A peer publishes a DR event (criticality 7) on ``han/bench/dr/set``; the gateway's
signal gate checks it, the rule engine sheds the load ``boiler`` and the MQTT
adapter publishes ``OFF`` on its actuator topic, where a subscriber times its
arrival.  Then the event is cancelled and the ``ON`` is timed the same way.
Each pair is followed by a broker baseline: the same peer publishes to a topic
the same subscriber listens to, so ``added`` is what the gateway costs.  A
virtual DSMR meter feeds the daemon at 1 Hz meanwhile (the engine only acts on
fresh meter data).  Signed messages are measured too (Ed25519 verify and the
fsynced sequence number are in the path).

mosquitto's default ``set_tcp_nodelay false`` leaves Nagle on towards
subscribers: the load state (retained, published just before the command) and
the command reach the same subscriber within a millisecond, so the command
waits for the subscriber's delayed ACK of the first, about 40 ms on Linux.
Both broker settings are measured; the README advises ``set_tcp_nodelay true``.

``python -m benchmarks.dr_latency [--quick]``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.common import MeterFeeder, mosquitto, percentile
from benchmarks.gateway_run import Collector, gateway_process

RULES = """
[settings]
restore_delay = "0s"

[[load]]
name = "boiler"
actuator = "mqtt:bench/boiler/set"
rated_power = "2 kW"

[[rule]]
id = "dr"
when = "dr.criticality >= 5"
action = "shed"
loads = ["boiler"]
"""


def _config(port: int, pty: str, rules: Path, extra: str) -> str:
    return (f'[gateway]\nid = "bench"\ndata_dir = "@DATA@"\n'
            f'[[meter]]\nid = "m0"\nprotocol = "dsmr"\nport = "{pty}"\nstale_after_s = 600\n'
            f'[adapter.mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ndiscovery = false\n'
            f'[rules]\ndir = "{rules}"\n{extra}')


def _wait_for(col: Collector, before: int, pred: Any, timeout: float = 2.0) -> float | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        col.event.wait(0.05)
        col.event.clear()
        for at, topic, body in col.arrivals[before:]:
            if pred(topic, body):
                return at
    return None


def _case(quick: bool, *, signed: bool, nodelay: bool) -> dict[str, Any]:
    import tempfile

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.signals.signing import public_key_text, sign

    n = 40 if quick else 200
    key = Ed25519PrivateKey.generate()
    extra = (f'[signals]\nrequire_signature = true\ntrusted_keys = {{ dso = '
             f'"{public_key_text(key.public_key())}" }}\n') if signed else ""
    seq = 0

    def message(obj: dict[str, Any]) -> str:
        nonlocal seq
        if not signed:
            return json.dumps(obj)
        seq += 1
        return json.dumps(sign(obj, key, key_id="dso", seq=seq,
                               expires=datetime.now(UTC) + timedelta(minutes=10)))

    shed: list[float] = []
    restore: list[float] = []
    baseline: list[float] = []
    lost = 0
    with tempfile.TemporaryDirectory() as rules_dir, mosquitto(nodelay=nodelay) as port:
        Path(rules_dir, "bench.toml").write_text(RULES)
        feeder = MeterFeeder()
        col = Collector(port, "bench/#", "han/bench/load/+/state")
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        with gateway_process(_config(port, feeder.path, Path(rules_dir), extra)):
            feeder.start()
            # warm-up: the start-up restore reached the actuator topic
            _wait_for(col, 0, lambda topic, body: topic == "bench/boiler/set", timeout=20)
            time.sleep(1.5)
            for i in range(n):
                for kind, body, want, out in (
                        ("shed", {"event_id": f"e{i}", "criticality": 7, "duration_s": 600},
                         b"OFF", shed),
                        ("restore", {"event_id": f"e{i}", "cancel": True}, b"ON", restore)):
                    payload = message(body)
                    before = len(col.arrivals)
                    t0 = time.perf_counter()
                    pub.publish("han/bench/dr/set", payload, qos=1)
                    got = _wait_for(col, before, lambda topic, b, w=want:
                                    topic == "bench/boiler/set" and b == w)
                    if got is None:
                        lost += 1
                    else:
                        out.append((got - t0) * 1e3)
                    time.sleep(0.02)
                before = len(col.arrivals)
                marker = f"{i:08d}".encode()
                t0 = time.perf_counter()
                pub.publish("bench/baseline", marker, qos=1)
                got = _wait_for(col, before, lambda topic, b, m=marker:
                                topic == "bench/baseline" and b == m)
                if got is not None:
                    baseline.append((got - t0) * 1e3)
                time.sleep(0.02 + (i % 5) * 0.01)
        feeder.stop()
        pub.loop_stop()
        pub.disconnect()
        col.close()
    b50 = percentile(baseline, 50)
    case = ("signed" if signed else "unsigned") + (
        ", broker set_tcp_nodelay" if nodelay else ", broker defaults")
    return {"scenario": "dr_latency", "case": case,
            "events": n, "lost": lost,
            "shed_p50_ms": round(percentile(shed, 50), 2),
            "shed_p99_ms": round(percentile(shed, 99), 2),
            "restore_p50_ms": round(percentile(restore, 50), 2),
            "restore_p99_ms": round(percentile(restore, 99), 2),
            "broker_p50_ms": round(b50, 2), "broker_p99_ms": round(percentile(baseline, 99), 2),
            "added_p50_ms": round(percentile(shed, 50) - b50, 2), "target_p99_ms": 20.0}


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [_case(quick, signed=False, nodelay=False), _case(quick, signed=False, nodelay=True),
            _case(quick, signed=True, nodelay=True)]


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
