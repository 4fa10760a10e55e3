"""Network persistence in zigpy's database, ``han-gateway zigbee devices`` and ``permit`` with an install code."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.zigbee.cli import install_code_key, list_devices, permit
from adapters.zigbee.config import ZigbeeConfig
from gateway.bus import Bus
from gateway.model import PriceSignal

from .simdevices import IHD_IEEE, PLUG_IEEE, RADIO_CONFIG, VirtualNetwork, app_class_for, make_display, make_plug, \
    parse_publish_price

# ZigBee spec example (also in zigpy's tests): install code + CRC -> link key by AES-MMO
INSTALL_CODE = bytes.fromhex("83FED3407A939723A5C639B26916D505C3B5")
LINK_KEY = bytes.fromhex("66B6900981E1EE3CA4206B6B861C02BB")


async def test_devices_survive_a_restart_and_are_listed(network: VirtualNetwork, bus: Bus, make_adapter: Any,
                                                        tmp_path: Path) -> None:
    db = tmp_path / "zigbee.db"
    first = await make_adapter(database=db)
    ihd, plug = make_display(network), make_plug(network)
    for dev in (ihd, plug):
        network.join(dev)
        await network.joined(dev)
    await first.stop()

    out = io.StringIO()
    assert await list_devices(ZigbeeConfig(database=db), out=out) == 0
    listed = {d["ieee"]: d for d in map(json.loads, out.getvalue().splitlines())}
    assert set(listed) == {IHD_IEEE, PLUG_IEEE}
    assert listed[IHD_IEEE]["model"] == "IHD-Sim"
    assert listed[IHD_IEEE]["endpoints"] == [{"endpoint": 1, "profile": "0x0109", "in": ["0x0000"],
                                              "out": ["0x000a", "0x0700", "0x0701", "0x0702"]}]
    assert listed[PLUG_IEEE]["endpoints"][0]["in"] == ["0x0000", "0x0006", "0x0008"]

    # the restarted gateway knows the display from the database: a new price reaches it without a rejoin
    await make_adapter(database=db)
    seen = len(ihd.received)
    now = datetime.now(UTC)
    bus.publish(PriceSignal(start=now, end=now + timedelta(hours=1), price_per_kwh=0.25))
    pushed = await ihd.wait_for(lambda r: r.cluster == 0x0700 and r.zcl.cluster_specific
                                and ihd.received.index(r) >= seen)
    assert parse_publish_price(pushed.zcl.payload)["price"] == 2500


async def test_devices_command_line(network: VirtualNetwork, make_adapter: Any, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "home"\ndata_dir = "{tmp_path}"\n\n[adapter.zigbee]\ndevice = "/dev/null"\n',
                      encoding="utf-8")
    command = [sys.executable, "-m", "gateway", "zigbee", "devices", "--config", str(config)]
    # no database yet: a clear message and exit status 1
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "no ZigBee database" in proc.stderr

    adapter = await make_adapter(database=tmp_path / "zigbee.db")  # where the daemon puts it (data_dir)
    plug = make_plug(network)
    network.join(plug)
    await network.joined(plug)
    await adapter.stop()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["ieee"] for line in proc.stdout.splitlines()] == [PLUG_IEEE]


def test_install_code_key() -> None:
    assert bytes(install_code_key(INSTALL_CODE)) == LINK_KEY


async def test_permit_with_install_code(network: VirtualNetwork, tmp_path: Path) -> None:
    plug = make_plug(network)
    cfg = ZigbeeConfig(device="/dev/null", database=tmp_path / "zigbee.db", radio_config=RADIO_CONFIG)

    async def join_during_window(seconds: float) -> None:
        assert seconds == 30
        network.join(plug)
        await network.joined(plug)

    out = io.StringIO()
    status = await permit(cfg, ieee=PLUG_IEEE, install_code=INSTALL_CODE, duration_s=30, out=out,
                          app_class=app_class_for(network), sleep=join_during_window)
    assert status == 0
    assert network.link_keys == [(PLUG_IEEE, LINK_KEY, 30)]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"permit": PLUG_IEEE, "duration_s": 30}
    assert lines[1]["ieee"] == PLUG_IEEE and lines[1]["model"] == "Plug-Sim"
    assert INSTALL_CODE.hex() not in out.getvalue().lower()  # the secret is never printed


async def test_permit_rejects_bad_crc(network: VirtualNetwork, tmp_path: Path) -> None:
    bad = INSTALL_CODE[:-1] + b"\x00"
    status = await permit(ZigbeeConfig(device="/dev/null"), ieee=PLUG_IEEE, install_code=bad, duration_s=30,
                          out=io.StringIO(), app_class=app_class_for(network))
    assert status == 2 and network.link_keys == []
