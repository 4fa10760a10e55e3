"""[adapter.zigbee] validation, its translation for zigpy/bellows, radio selection and bellows' start-up path."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.base import AdapterContext
from adapters.zigbee import plugin
from adapters.zigbee.config import RADIO_LIBRARIES, ZigbeeConfig, installed_radios, radio_class, zigpy_config
from gateway.bus import Bus
from gateway.errors import ConfigError


class _NoOutbox:
    async def pending(self, *, after_id: int = 0, limit: int = 100) -> list[object]:
        return []

    async def newest(self, *, limit: int = 1) -> list[object]:
        return []

    async def ack(self, ids: list[int]) -> None:
        return None

    async def count(self) -> int:
        return 0


def test_defaults_select_bellows() -> None:
    cfg = ZigbeeConfig()
    assert cfg.radio == "ezsp"
    cls = radio_class(cfg.radio)
    assert cls.__module__ == "bellows.zigbee.application"
    assert installed_radios()["ezsp"] == "bellows.zigbee.application:ControllerApplication"


def test_zigpy_config_is_accepted_by_bellows_schema(tmp_path: Path) -> None:
    cfg = ZigbeeConfig(device="/dev/ttyACM0", baudrate=460800, flow_control="hardware", channel=20, pan_id=0x1234,
                       database=tmp_path / "zigbee.db", se_endpoint=9, ha_endpoint=12,
                       radio_config={"ezsp_config": {"CONFIG_MAX_END_DEVICE_CHILDREN": 32}, "network": {"tx_power": 8}})
    raw = zigpy_config(cfg)
    validated = radio_class("ezsp").SCHEMA(raw)
    assert validated["device"] == {"path": "/dev/ttyACM0", "baudrate": 460800, "flow_control": "hardware"}
    assert validated["database_path"] == str(tmp_path / "zigbee.db")
    assert validated["network"]["channel"] == 20
    assert list(validated["network"]["channels"]) == [20]
    assert validated["network"]["pan_id"] == 0x1234
    assert validated["network"]["tx_power"] == 8  # radio_config merged into, not replacing, "network"
    assert validated["ezsp_config"] == {"CONFIG_MAX_END_DEVICE_CHILDREN": 32}
    assert validated["ota"]["enabled"] is False
    eps = {d.endpoint: d for d in validated["additional_endpoints"]}
    assert (eps[9].profile, eps[9].device_type) == (0x0109, 0x0500)  # SE Energy Service Interface
    assert eps[12].profile == 0x0104
    for d in eps.values():
        assert {0x000A, 0x0700, 0x0701, 0x0702} <= set(d.input_clusters)
        assert 0x0800 not in d.input_clusters  # no Key Establishment: no CBKE


def test_no_database_means_none() -> None:
    assert zigpy_config(ZigbeeConfig())["database_path"] is None


@pytest.mark.parametrize(("key", "value", "message"), [
    ("radio", "nosuchradio", "not available"),
    ("rate_label", "a much too long label", "12 bytes"),
    ("timezone", "Mars/Olympus", "unknown time zone"),
    ("channel", 27, "less than or equal to 26"),
    ("trailing_digits", 16, "less than or equal to 15"),
    ("permit_join_s", 255, "less than or equal to 254"),
    ("colour", "blue", "Extra inputs"),
])
def test_invalid_values(key: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ZigbeeConfig.model_validate({key: value})


def test_uninstalled_radio_library_named() -> None:
    missing = [name for name in RADIO_LIBRARIES if name not in installed_radios()]
    if not missing:
        pytest.skip("every radio library is installed")
    with pytest.raises(ValidationError, match=f"install {RADIO_LIBRARIES[missing[0]][1]}"):
        ZigbeeConfig(radio=missing[0])
    with pytest.raises(LookupError, match=missing[0]):
        radio_class(missing[0])


def test_plugin_create_maps_errors_to_config_error() -> None:
    ctx = AdapterContext(gateway_id="gw", config={"radio": "ezsp", "channel": 99}, outbox=_NoOutbox(), meters=())
    with pytest.raises(ConfigError) as excinfo:
        plugin.create(ctx)
    assert excinfo.value.problems[0][1] == "adapter.zigbee.channel"
    ok = plugin.create(AdapterContext(gateway_id="gw", config={"meter": "main"}, outbox=_NoOutbox(), meters=("x",)))
    assert ok.esi.meter == "main"
    assert plugin.create(AdapterContext(gateway_id="gw", config={}, outbox=_NoOutbox(), meters=("x",))).esi.meter == "x"


def test_database_defaults_to_the_data_dir(tmp_path: Path) -> None:
    adapter = plugin.create(AdapterContext(gateway_id="gw", config=ZigbeeConfig(), outbox=_NoOutbox(), meters=(),
                                           data_dir=tmp_path))
    assert adapter.config.database == tmp_path / "zigbee.db"
    explicit = tmp_path / "elsewhere.db"
    adapter = plugin.create(AdapterContext(gateway_id="gw", config=ZigbeeConfig(database=explicit),
                                           outbox=_NoOutbox(), meters=(), data_dir=tmp_path))
    assert adapter.config.database == explicit


@pytest.mark.parametrize(("address", "problem"), [
    ("00:0d:6f:00:0a:bc:de:f0/1", None),
    ("000D6F000ABCDEF0/240", None),
    ("00-0d-6f-00-0a-bc-de-f0/3?rated_w=2000", None),
    ("00:0d:6f:00:0a:bc:de:f0", "expected <ieee>/<endpoint>"),
    ("plug/1", "not an IEEE address"),
    ("000d6f000abcdef0/0", "not in 1..240"),
    ("000d6f000abcdef0/241", "not in 1..240"),
    ("000d6f000abcdef0/1?rated_w=-5", "positive"),
    ("000d6f000abcdef0/1?rated_w=x", "not a number"),
    ("000d6f000abcdef0/1?level=3", "unknown option"),
])
def test_actuator_problem(address: str, problem: str | None) -> None:
    result = plugin.actuator_problem(address)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


async def test_bellows_start_up_opens_the_configured_port_and_retries() -> None:
    """bellows gets our device path: it opens it and sends an ASH reset; a silent 'radio' fails the start."""
    received = bytearray()
    got_reset = asyncio.Event()

    writers: list[asyncio.StreamWriter] = []

    async def silent_ncp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(256):
            received.extend(data)
            if b"\xc0\x38\xbc\x7e" in received:  # ASH RST frame (UG101 §3: control 0xC0, CRC 0x38BC, flag)
                got_reset.set()

    server = await asyncio.start_server(silent_ncp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = ZigbeeConfig(device=f"socket://127.0.0.1:{port}", radio_config={"watchdog_enabled": False})
    adapter = plugin.create(AdapterContext(gateway_id="gw", config=cfg, outbox=_NoOutbox(), meters=()))
    try:
        await adapter.start(Bus())
        async with asyncio.timeout(60):
            await got_reset.wait()
        assert received.startswith(b"\x1a")  # ASH cancel bytes first
        assert not adapter.health().ok
    finally:
        await adapter.stop()
        server.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
    assert adapter.health().detail == "stopped"


async def test_unreachable_radio_counts_failures_without_crashing() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    cfg = ZigbeeConfig(device=f"socket://127.0.0.1:{port}", radio_config={"watchdog_enabled": False})
    adapter = plugin.create(AdapterContext(gateway_id="gw", config=cfg, outbox=_NoOutbox(), meters=()))
    await adapter.start(Bus())
    try:
        async with asyncio.timeout(60):
            while adapter.counters["start_failures"] == 0:
                await asyncio.sleep(0.01)
        health = adapter.health()
        assert not health.ok and "radio not available" in health.detail
    finally:
        await adapter.stop()


@pytest.mark.hardware
@pytest.mark.skipif(not os.environ.get("HAN_ZIGBEE_DEVICE"), reason="no radio: set HAN_ZIGBEE_DEVICE=/dev/ttyUSB0")
async def test_real_radio_forms_network(tmp_path: Path) -> None:
    cfg = ZigbeeConfig(device=os.environ["HAN_ZIGBEE_DEVICE"], radio=os.environ.get("HAN_ZIGBEE_RADIO", "ezsp"),
                       database=tmp_path / "zigbee.db")
    adapter = plugin.create(AdapterContext(gateway_id="gw", config=cfg, outbox=_NoOutbox(), meters=()))
    await adapter.start(Bus())
    try:
        async with asyncio.timeout(120):
            await adapter.ready.wait()
        assert adapter.health().ok
        assert adapter.app.state.network_info.channel in range(11, 27)
    finally:
        await adapter.stop()
