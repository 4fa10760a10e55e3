"""The M-Bus reader, scan and command line against the virtual bus on real ptys and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.bus import Bus, MeterStatus
from gateway.config import MeterConfig, parse_config
from gateway.meters.mbus import MbusReader
from gateway.meters.mbus_scan import Collision, DeviceFound, ScanProgress, scan
from gateway.model import Snapshot
from gateway.sim.mbus import make_bus, serve_pty, serve_tcp
from gateway.transport import open_transport

pytestmark = pytest.mark.timeout(120)
EXE = str(Path(sys.executable).with_name("han-gateway"))
CLOCK = datetime(2026, 3, 1, 12, 0)


@contextlib.asynccontextmanager
async def task(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    t = asyncio.create_task(coro)
    try:
        yield t
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


@contextlib.asynccontextmanager
async def pty_bus(link: Path, **kw: Any) -> AsyncIterator[Any]:
    bus = make_bus(clock=lambda: CLOCK, **kw)
    ready = asyncio.Event()
    async with task(serve_pty(bus, link_path=str(link), on_ready=lambda _p: ready.set())):
        await ready.wait()
        yield bus


async def snapshots_of(sub: Any, meters: set[str], timeout: float = 30.0) -> dict[str, Snapshot]:
    got: dict[str, Snapshot] = {}
    async with asyncio.timeout(timeout):
        while not meters <= set(got):
            item = await sub.get()
            if isinstance(item, Snapshot):
                got[item.meter] = item
    return got


def mbus_config(port: str, **options: Any) -> MeterConfig:
    return MeterConfig(id="bus", protocol="mbus", port=port, options=options)


async def test_reader_reads_every_slave_by_primary_and_secondary_address(tmp_path: Path) -> None:
    link = tmp_path / "mbus"
    async with pty_bus(link, n=3) as bus:
        cfg = mbus_config(str(link), primary_addresses=[1, 2], secondary_addresses=["87654321"],
                          poll_interval_s=0)  # fmt: skip
        hub = Bus()
        sub = hub.subscribe(Snapshot, MeterStatus)
        reader = MbusReader(cfg)
        async with task(reader.run(hub)):
            snaps = await snapshots_of(sub, {"bus-1", "bus-2", "bus-87654321"})
            # a second round: every slave read again with fresh values
            again = await snapshots_of(sub, {"bus-1", "bus-2", "bus-87654321"})
    heat = snaps["bus-1"]
    assert heat.protocol == "mbus" and heat.device_id == "12345678-LUG-01-heat"
    assert heat.header == "LUG M-Bus heat meter v1"
    energy = heat.reading("energy")
    assert energy is not None and energy.unit == "Wh" and isinstance(energy.value, int)
    assert snaps["bus-2"].device_id == "12345679-SEN-02-water"
    volts = snaps["bus-87654321"].reading("voltage_l1")
    assert volts is not None and volts.unit == "V" and 220 < float(volts.value) < 240
    assert again["bus-1"].received > heat.received
    assert [m.reads for m in bus.meters] >= [2, 2, 2]
    assert reader.counters.errors == 0 and reader.rounds >= 2


async def test_a_missing_slave_is_reported_and_does_not_stop_the_others(tmp_path: Path) -> None:
    link = tmp_path / "mbus"
    async with pty_bus(link, n=2):
        cfg = mbus_config(str(link), primary_addresses=[1, 7], poll_interval_s=0, retries=1,
                          timeout_margin_s=0.05)  # fmt: skip
        hub = Bus()
        sub = hub.subscribe(Snapshot, MeterStatus)
        reader = MbusReader(cfg)
        offline: MeterStatus | None = None
        reads = 0
        async with task(reader.run(hub)):
            async with asyncio.timeout(30):
                while offline is None or reads < 3:
                    item = await sub.get()
                    if isinstance(item, Snapshot):
                        assert item.meter == "bus-1"
                        reads += 1
                    elif item.meter == "bus-7" and not item.online:
                        offline = item
    assert "read failed" in offline.detail and "no reply" in offline.detail
    assert reader.counters.errors >= 1
    (missing,) = [s for s in reader.slaves if s.meter == "bus-7"]
    assert missing.failures >= 1 and missing.skip_until > 0  # skipped in later rounds


async def test_reader_over_tcp_like_an_mbus_ethernet_gateway(free_tcp_port: int) -> None:
    bus = make_bus(2, baud=9600, clock=lambda: CLOCK)
    started = asyncio.Event()
    async with task(serve_tcp(bus, "127.0.0.1", free_tcp_port, started=started)):
        await started.wait()
        cfg = MeterConfig(id="gw", protocol="mbus", port=f"socket://127.0.0.1:{free_tcp_port}",
                          baudrate=9600, options={"secondary_addresses": ["12345679"]})  # fmt: skip
        hub = Bus()
        sub = hub.subscribe(Snapshot)
        async with task(MbusReader(cfg).run(hub)):
            snaps = await snapshots_of(sub, {"gw-12345679"})
    assert snaps["gw-12345679"].device_id == "12345679-SEN-02-water"


async def test_scans_over_a_pty(tmp_path: Path) -> None:
    link = tmp_path / "mbus"
    async with pty_bus(link, n=4, baud=9600, primary="sequential") as bus:
        bus.meters[3].primary = 2  # two slaves on primary address 2
        transport = await open_transport(str(link), baudrate=9600, bytesize=8, parity="E")
        events: list[Any] = []
        try:
            found = await scan(transport, mode="secondary", progress=events.append, baud=9600,
                               timeout_margin_s=0.02)  # fmt: skip
            primary = await scan(transport, mode="primary", progress=events.append, baud=9600,
                                 addresses=range(5), timeout_margin_s=0.02)  # fmt: skip
        finally:
            await transport.close()
    assert [f.secondary.id for f in found if f.secondary] == [
        "12340000", "12345678", "12345679", "87654321"
    ]
    assert found[0].header == "ELS M-Bus gas meter v4"
    assert [f.primary for f in primary] == [1, 3]
    assert [e.primary for e in events if isinstance(e, Collision)] == [2]
    progress = [e.fraction for e in events if isinstance(e, ScanProgress)]
    assert progress[0] == 0.0 and 1.0 in progress
    assert len([e for e in events if isinstance(e, DeviceFound)]) == 6


def test_options_are_validated_with_the_config(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    raw = {"meter": [{"id": "bus", "protocol": "mbus", "port": "/dev/null",
                      "options": {"primary_addresses": [1, 251], "retries": -1}}]}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config(raw, file="gw.toml")
    keys = {key for _f, key, _m in info.value.problems}
    assert keys == {"meter[0].options.primary_addresses", "meter[0].options.retries"}
    raw["meter"][0]["options"] = {}  # type: ignore[index]
    with pytest.raises(ConfigError, match="list the slaves"):
        parse_config(raw, file="gw.toml")
    raw["meter"][0]["options"] = {"secondary_addresses": ["1234FFFF"]}  # type: ignore[index]
    with pytest.raises(ConfigError, match="wildcard"):
        parse_config(raw, file="gw.toml")
    raw["meter"][0]["options"] = {"secondary_addresses": ["12345678-LUG-02-heat"]}  # type: ignore[index]
    cfg = parse_config(raw, file="gw.toml")
    assert cfg.meter[0].line_settings() == (2400, 8, "E")


# ---------------------------------------------------------- command line
def start_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([EXE, "simulate-meter", "--protocol", "mbus", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("virtual M-Bus meter on "), proc.stderr.read() if proc.poll() is not None else line
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def read(tmp_path: Path, meter_toml: str) -> dict[str, Any]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[[meter]]\n{meter_toml}\n')
    proc = subprocess.run([EXE, "read", "--config", str(cfg), "--timeout", "30"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_simulate_meter_on_a_pty_read_by_the_gateway(tmp_path: Path) -> None:
    link = tmp_path / "mbus"
    sim, line = start_sim("--pty", "--link", str(link), "--option", "meters=3")
    try:
        assert str(link) in line and "12345678, 12345679, 87654321" in line
        snap = read(tmp_path, f'id = "bus"\nprotocol = "mbus"\nport = "{link}"\n'
                              '[meter.options]\nprimary_addresses = [3]\n')  # fmt: skip
    finally:
        stop(sim)
    assert not link.exists()
    assert snap["meter"] == "bus-3" and snap["device_id"] == "87654321-ABB-03-electricity"
    assert {r["id"] for r in snap["readings"]} >= {"energy_t1", "energy_t2", "power", "voltage_l3"}


def test_simulate_meter_over_tcp_read_by_the_gateway(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim, _ = start_sim("--listen", f"tcp://127.0.0.1:{port}", "--option", "meters=4",
                       "--option", "baud=9600")  # fmt: skip
    try:
        snap = read(tmp_path, f'id = "gas"\nprotocol = "mbus"\nport = "socket://127.0.0.1:{port}"\n'
                              'baudrate = 9600\n[meter.options]\nsecondary_addresses = ["12340000"]\n')  # fmt: skip
    finally:
        stop(sim)
    assert snap["meter"] == "gas-12340000"
    ids = {r["id"] for r in snap["readings"]}
    assert {"volume", "volume_s1", "date_s12"} <= ids  # two telegrams merged
