"""End to end: virtual DSMR meter on a pty → the real ``han-gateway`` daemon → KNX
tunnel → knxd (dummy bus) → ``knxtool groupsocketlisten``, all in a private
network namespace (the daemon is started from the namespace's thread)."""

from __future__ import annotations

import re
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(200)

T0 = datetime(2026, 11, 22, 18, 0, 0, tzinfo=UTC)  # evening: import, no PV
_POWER = re.compile(rb"1-0:1\.7\.0\((\d+\.\d+)\*kW\)")
_VOLTAGE = re.compile(rb"1-0:32\.7\.0\((\d+\.\d+)\*V\)")


def write_config(tmp: Path, port: Path, *, top: str = "") -> Path:
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
id = "knx-e2e"
data_dir = "{tmp / 'data'}"
shutdown_timeout_s = 8
{top}

[[meter]]
id = "main"
protocol = "dsmr"
port = "{port}"
stale_after_s = 30

[adapter.knx]
connection = "tunnelling"
gateway_host = "127.0.0.1"
local_ip = "127.0.0.1"
reconnect_min_s = 0.2
reconnect_max_s = 2

[[adapter.knx.exposure]]
value = "power_import"
group_address = "1/1/1"
dpt = "14.056"

[[adapter.knx.exposure]]
value = "voltage_l1"
group_address = "1/1/3"
dpt = "14.027"
""")
    return cfg


def test_meter_to_knx_bus(tmp_path: Path, knx_ns: Any, knxd_factory: Any, gateway_factory: Any,
                          meter_factory: Any) -> None:
    knxd = knxd_factory()
    listen = knxd.listen()
    meter = meter_factory()
    gw = knx_ns.call(gateway_factory, write_config(tmp_path, tmp_path / "p1"))
    powers: set[bytes] = set()
    volts: set[bytes] = set()
    deadline = time.monotonic() + 60
    power_line = None
    while power_line is None:
        assert gw.alive, gw.log_text()
        assert time.monotonic() < deadline, f"no power on 1/1/1: {listen.raw!r}\n{gw.log_text()}"
        now = T0 + timedelta(seconds=len(meter.sent))
        telegram = meter.sim.telegram(now)
        meter.pty.write(telegram)
        meter.sent.append(now)
        kw = _POWER.search(telegram)
        v = _VOLTAGE.search(telegram)
        assert kw is not None and v is not None
        powers.add(struct.pack(">f", float(kw.group(1)) * 1000))
        volts.add(struct.pack(">f", float(v.group(1))))
        try:
            power_line = listen.wait_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/1",
                                         timeout=0.5)
        except AssertionError:
            continue
    # the value on the bus is one the meter sent, as DPT 14.056 (W, float32)
    assert power_line.data in powers
    volt_line = listen.wait_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/3")
    assert volt_line.data in volts
    assert gw.terminate() == 0
    log = gw.log_text()
    assert "KNX tunnel 127.0.0.1:3671/UDP: connected" in log
    assert "Traceback" not in log


def test_dead_knx_gateway_stops_nothing_else(tmp_path: Path, knx_ns: Any, gateway_factory: Any,
                                             meter_factory: Any) -> None:
    """No KNX interface answers: the meter is still read and stored, /api/health says
    why KNX is down, and the daemon stops cleanly."""
    import json
    import socket
    import sqlite3
    import urllib.request

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    web_port = knx_ns.call(free_port)
    cfg = write_config(tmp_path, tmp_path / "p1")
    cfg.write_text(cfg.read_text().replace('gateway_host = "127.0.0.1"', 'gateway_host = "127.0.0.1"\n'
                                           'connect_timeout_s = 1')
                   + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n')
    meter = meter_factory()
    gw = knx_ns.call(gateway_factory, cfg)
    db = tmp_path / "data" / "gateway.sqlite3"

    def stored() -> int:
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute("SELECT count(*) FROM raw").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    def health() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/health", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    deadline = time.monotonic() + 60
    knx: dict[str, Any] = {}
    while True:
        assert gw.alive, gw.log_text()
        assert time.monotonic() < deadline, f"stored={stored()} knx={knx}\n{gw.log_text()}"
        now = T0 + timedelta(seconds=len(meter.sent))
        meter.pty.write(meter.sim.telegram(now))
        meter.sent.append(now)
        time.sleep(0.2)
        try:
            knx = next(a for a in knx_ns.call(health)["adapters"] if a["name"] == "knx")
        except OSError:
            continue  # the web server is not up yet
        if stored() > 0 and knx["counters"]["connect_failures"] >= 2:
            break
    assert knx["ok"] is False and "cannot connect" in knx["detail"]
    assert gw.terminate() == 0  # within terminate()'s wait: nothing hangs on the dead KNX link


def test_rule_switches_a_knx_load(tmp_path: Path, knx_ns: Any, knxd_factory: Any,
                                  gateway_factory: Any, meter_factory: Any) -> None:
    """A rule sheds a load whose actuator is knx:2/0/1: DPT 1.001 off reaches the bus."""
    knxd = knxd_factory()
    listen = knxd.listen()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shed.toml").write_text("""
[[load]]
name = "boiler"
actuator = "knx:2/0/1"
rated_power = "2 kW"

[[rule]]
id = "always"
when = "import_power_kw >= 0 kW"
action = "shed"
loads = ["boiler"]
reason = "test"
""")
    cfg = write_config(tmp_path, tmp_path / "p1", top=f'[rules]\ndir = "{rules}"')
    meter = meter_factory()
    gw = knx_ns.call(gateway_factory, cfg)
    deadline = time.monotonic() + 60
    while True:
        assert gw.alive, gw.log_text()
        assert time.monotonic() < deadline, f"{listen.raw!r}\n{gw.log_text()}"
        now = T0 + timedelta(seconds=len(meter.sent))
        meter.pty.write(meter.sim.telegram(now))
        meter.sent.append(now)
        try:
            line = listen.wait_for(lambda ln: ln.kind == "Write" and ln.group == "2/0/1"
                                   and ln.data == b"\x00", timeout=0.5)
            break
        except AssertionError:
            continue
    power = listen.wait_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/1")
    assert line.source == power.source  # the gateway's tunnel address
    assert gw.terminate() == 0
