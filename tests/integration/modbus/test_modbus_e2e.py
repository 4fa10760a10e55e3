"""End to end: a virtual DSMR meter on a pty -> the real ``han-gateway run`` daemon with
``[adapter.modbus]`` -> Debian ``mbpoll`` reads the meter's power (SunSpec and flat map)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(180)

_POWER = re.compile(rb"1-0:([12])\.7\.0\((\d+\.\d+)\*kW\)")


def net_power_w(telegram: bytes) -> float:
    """Import minus export of a telegram, in W."""
    values = {m[1]: float(m[2]) for m in _POWER.finditer(telegram)}
    return (values[b"1"] - values.get(b"2", 0.0)) * 1000


async def test_mbpoll_sees_the_virtual_meters_power(tmp_path: Path, gateway_factory: Any,
                                                   meter_factory: Any, mbt: Any) -> None:
    meter = meter_factory()
    port = mbt.free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "mb-e2e"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{tmp_path / 'p1'}"

[adapter.modbus]
listen = "tcp://127.0.0.1:{port}"
unit_id = 3
map = "both"
flat_base = 0
""")
    gw = gateway_factory(cfg)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    sunspec_w: int | None = None
    flat_w: float | None = None
    telegrams: list[bytes] = []
    while loop.time() < deadline:
        assert gw.alive, gw.log_text()
        # meter.push(), keeping the bytes: the telegram says what power to expect
        now = mbt.T0 + timedelta(seconds=len(meter.sent))
        telegrams.append(meter.sim.telegram(now))
        meter.pty.write(telegrams[-1])
        meter.sent.append(now)
        out = await mbt.run_async("-m", "tcp", "-p", str(port), "-a", "3", "-t", "4", "-0",
                                  "-r", "40070", "-c", "23", "-1", "127.0.0.1")
        values = mbt.values(out.stdout)
        if out.returncode == 0 and int(values[40088]) != -32768:
            sunspec_w = int(values[40088]) * 10 ** int(values[40092])
            out = await mbt.run_async("-m", "tcp", "-p", str(port), "-a", "3", "-t", "4:float",
                                      "-B", "-0", "-r", "0", "-c", "1", "-1", "127.0.0.1")
            flat_w = float(mbt.values(out.stdout)[0])
            break
        await asyncio.sleep(0.2)
    assert sunspec_w is not None, "mbpoll never saw a power value\n" + gw.log_text()
    assert int(values[40070]) == 203  # the DSMR 5 meter reports three phases
    # The value is one of the telegrams sent (the meter may have pushed a newer one
    # between the two reads; the daemon serves the newest).
    powers = [net_power_w(t) for t in telegrams]
    assert sunspec_w in [round(p) for p in powers]
    assert flat_w is not None and any(abs(flat_w - p) < 0.5 for p in powers)
    assert gw.terminate() == 0
    assert "Traceback" not in gw.log_text()


async def test_rule_engine_switches_a_load_on_the_libmodbus_server(
        tmp_path: Path, gateway_factory: Any, meter_factory: Any, mbt: Any,
        libmodbus_server: Any) -> None:
    """The daemon's rule engine puts a load in its safe state (off) at start-up and back on
    once meter data flows, through a ``modbus:`` actuator on the libmodbus server; the flat
    map shows the load's state."""
    meter = meter_factory()
    port = mbt.free_port()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "loads.toml").write_text(f"""
[[load]]
name = "boiler"
actuator = "modbus:127.0.0.1:{libmodbus_server.port}/1/hr:20=1,0"
rated_power = "2 kW"
safe_state = "off"
""")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "mb-rules"
data_dir = "{tmp_path / 'data'}"
shutdown_timeout_s = 8

[[meter]]
id = "main"
protocol = "dsmr"
port = "{tmp_path / 'p1'}"

[rules]
dir = "{rules}"
tick_s = 0.5

[adapter.modbus]
listen = "tcp://127.0.0.1:{port}"
loads = ["boiler"]
""")
    gw = gateway_factory(cfg)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    on: float | None = None
    while loop.time() < deadline:
        assert gw.alive, gw.log_text()
        meter.push()
        out = await mbt.run_async("-m", "tcp", "-p", str(port), "-a", "1", "-t", "4:float",
                                  "-B", "-0", "-r", "64", "-c", "1", "-1", "127.0.0.1")
        values = mbt.values(out.stdout)
        if out.returncode == 0 and values.get(64) == "1" and len(libmodbus_server.writes()) >= 2:
            on = float(values[64])
            break
        await asyncio.sleep(0.2)
    assert on == 1.0, "the load's state never reached the flat map\n" + gw.log_text()
    # FC 6 to register 20 only (the load's address): OFF (0) at start-up, then ON (1)
    assert libmodbus_server.writes() == ["write 6 20 0", "write 6 20 1"]
    assert gw.terminate() == 0
    assert "Traceback" not in gw.log_text()
