"""The daemon's memory with every adapter running (issue 5 goal: RSS <= 100 MB).

Three daemons in the same run, each fed by a virtual DSMR meter at 1 Hz for
the same time: MQTT only (the baseline); MQTT, Modbus TCP, the household page
and a rule set (a typical box); and MQTT, Modbus TCP (SunSpec + flat map),
BACnet/IP, KNX, ZigBee, the household page, a rule set and the signal gate.  Modbus, BACnet, MQTT and the web page serve for
real on loopback; KNX and ZigBee have no interface to talk to here (a KNX IP
interface and a radio), so they sit in their reconnect loops with their
libraries (xknx, zigpy, bellows) loaded.  RSS and CPU are read from /proc
at the end.

``python -m benchmarks.rss_all [--quick]``.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MeterFeeder,
    free_port,
    median,
    mosquitto,
    proc_cpu_seconds,
    proc_rss_mb,
)
from benchmarks.gateway_run import gateway_process

RULES = """
[[load]]
name = "boiler"
actuator = "mqtt:bench/boiler/set"
rated_power = "2 kW"

[[rule]]
id = "peak"
when = "import_power_kw > 20 kW"
action = "shed"
loads = ["boiler"]
"""


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(port: int, pty: str, rules: Path, *, extent: str) -> str:
    out = (f'[gateway]\nid = "bench"\ndata_dir = "@DATA@"\n'
           f'[[meter]]\nid = "m0"\nprotocol = "dsmr"\nport = "{pty}"\n'
           f'[adapter.mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ndiscovery = true\n')
    if extent == "mqtt":
        return out
    out += (f'[adapter.modbus]\nlisten = "tcp://127.0.0.1:{free_port()}"\n'
            f'[web]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[rules]\ndir = "{rules}"\n')
    if extent == "typical":
        return out
    return out + (
        f'[adapter.bacnet]\ndevice_instance = 47001\naddress = "127.0.0.1/8:{_free_udp()}"\n'
        f'[adapter.knx]\nconnection = "tunnelling"\ngateway_host = "127.0.0.1"\n'
        f'gateway_port = {_free_udp()}\n'
        f'[[adapter.knx.exposure]]\nvalue = "power_import"\ngroup_address = "5/0/1"\n'
        f'dpt = "14.056"\n'
        f'[adapter.zigbee]\ndevice = "socket://127.0.0.1:{free_port()}"\n')


CASES = {"mqtt": "MQTT only (baseline)", "typical": "MQTT, Modbus, web page, rules",
         "all": "all five adapters, web page, rules"}


def _case(quick: bool, *, extent: str) -> dict[str, Any]:
    seconds = 20 if quick else 60
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as rules_dir, mosquitto() as port:
        Path(rules_dir, "r.toml").write_text(RULES)
        feeder = MeterFeeder()
        with gateway_process(_config(port, feeder.path, Path(rules_dir),
                                     extent=extent)) as proc:
            feeder.start()
            time.sleep(5)  # start-up
            cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
            end = t0 + seconds
            while time.monotonic() < end:
                time.sleep(2)
                rss.append(proc_rss_mb(proc.pid))
            cpu = (proc_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
            alive = proc.poll() is None
        feeder.stop()
    return {"scenario": "rss_all",
            "case": CASES[extent],
            "alive": alive, "rss_mb_median": round(median(rss), 1),
            "rss_mb_max": round(max(rss), 1), "cpu_pct": round(cpu, 2), "goal_rss_mb": 100}


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [_case(quick, extent=e) for e in CASES]


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
