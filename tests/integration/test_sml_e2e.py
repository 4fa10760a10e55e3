"""SML end to end: ``han-gateway simulate-meter --protocol sml`` on a pty → the real
daemon → real mosquitto → a separate subscriber; and the Holley DTZ541 variant (CRC-16/
KERMIT) served over TCP as ser2net would, read with ``han-gateway read``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(180)
EXE = str(Path(sys.executable).with_name("han-gateway"))


def start_sim(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([EXE, "simulate-meter", "--protocol", "sml", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "virtual SML … meter on …" once it is ready
    assert line.startswith("virtual SML"), proc.stderr.read() if proc.poll() is not None else line
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def write_config(tmp: Path, *, broker_url: str, port: str, options: str = "") -> Path:
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "e2e"
data_dir = "{tmp / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "sml"
port = "{port}"
{options}

[adapter.mqtt]
url = "{broker_url}"
reconnect_min_s = 0.2
reconnect_max_s = 2
""")
    return cfg


async def test_virtual_sml_meter_through_the_daemon_to_mqtt(
    tmp_path: Path, mosquitto: Any, mqtt_subscriber: Any, gateway_factory: Any
) -> None:
    link = tmp_path / "ir-head"
    sim = start_sim("--pty", "--link", str(link), "--interval", "0.5", "--option", "pv_peak_w=0")
    try:
        sub = mqtt_subscriber(mosquitto, "han/#", "homeassistant/#")
        gw = gateway_factory(write_config(tmp_path, broker_url=mosquitto.url, port=str(link)))
        state_topic = "han/e2e/meter/main/state"
        msg = await sub.wait_for(lambda m: m.topic == state_topic and not m.retain, timeout=60)
        state = msg.json()
        assert state["protocol"] == "sml" and state["checksum_ok"] is True
        assert state["device_id"] == "1EMH0012345678" and state["header"] == "EMH"
        readings = {r["id"]: r for r in state["readings"]}
        energy = readings["1-0:1.8.0"]
        assert energy["unit"] == "Wh" and isinstance(energy["value"], float) and energy["value"] > 0
        assert energy["status"] == 0x182
        assert readings["1-0:16.7.0"]["unit"] == "W"
        # The next file's register is not lower (the meter counts up).
        first = datetime.fromisoformat(state["received"])
        later = await sub.wait_for(
            lambda m: m.topic == state_topic and not m.retain
            and datetime.fromisoformat(m.json()["received"]) > first,
            timeout=30,
        )
        later_energy = {r["id"]: r for r in later.json()["readings"]}["1-0:1.8.0"]["value"]
        assert later_energy >= energy["value"]
        # One topic per quantity: the import register in kWh for Home Assistant's Energy view.
        # (not m.retain: the session's broker may hold other tests' retained messages)
        kwh = await sub.wait_for(
            lambda m: m.topic == "han/e2e/meter/main/energy_import" and not m.retain, timeout=30
        )
        assert float(kwh.text) == pytest.approx(energy["value"] / 1000, rel=1e-3)
        config = await sub.wait_for(
            lambda m: m.topic.startswith("homeassistant/sensor/e2e_main/") and m.topic.endswith("/config")
            and not m.retain and bool(m.payload) and m.json().get("device_class") == "energy",
            timeout=30,
        )
        device = config.json()["device"]
        assert device["manufacturer"] == "EMH metering" and device["serial_number"] == "1EMH0012345678"
        assert gw.terminate() == 0
        assert "Traceback" not in gw.log_text()
    finally:
        stop(sim)
    assert not link.exists()  # SIGTERM removed the symlink


def test_holley_kermit_crc_variant_over_tcp(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = start_sim("--listen", f"tcp://127.0.0.1:{port}", "--interval", "0.5",
                    "--option", "variant=edl21", "--option", "crc=kermit")
    try:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[[meter]]\nid = "dtz"\nprotocol = "sml"\n'
                       f'port = "socket://127.0.0.1:{port}"\noptions = {{ crc = "kermit" }}\n')
        proc = subprocess.run([EXE, "read", "--config", str(cfg), "--timeout", "30"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        snap = json.loads(proc.stdout)
    finally:
        stop(sim)
    assert snap["protocol"] == "sml" and snap["device_id"] == "1HLY0012345678"
    units = {r["id"]: r["unit"] for r in snap["readings"]}
    assert units["1-0:32.7.0"] == "V" and units["1-0:31.7.0"] == "A" and units["1-0:14.7.0"] == "Hz"


def test_a_bad_sml_option_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[[meter]]\nid = "m"\nprotocol = "sml"\n'
                   'port = "/dev/null"\noptions = { crc = "crc32" }\n')
    proc = subprocess.run([EXE, "check", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "meter[0].options.crc" in proc.stderr
    bad = subprocess.run([EXE, "simulate-meter", "--protocol", "sml", "--pty", "--option", "colour=red"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "unknown SML option 'colour'" in bad.stderr
