"""Fixtures for the ZigBee adapter: a virtual radio at zigpy's radio API, simulated devices,
and zigbee-herdsman (npm) as an independent ZCL decoder."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.zigbee.adapter import ZigbeeAdapter
from adapters.zigbee.config import ZigbeeConfig
from gateway.bus import Bus

from .simdevices import RADIO_CONFIG, VirtualNetwork, app_class_for

NODE_MODULES = Path(__file__).resolve().parents[2] / "node" / "node_modules"
ZH_DECODE = Path(__file__).with_name("zh_decode.js")


@pytest.fixture
def network() -> VirtualNetwork:
    return VirtualNetwork()


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
async def make_adapter(network: VirtualNetwork, bus: Bus) -> AsyncIterator[Any]:
    adapters: list[ZigbeeAdapter] = []

    async def make(**overrides: Any) -> ZigbeeAdapter:
        settings: dict[str, Any] = {
            "device": "/dev/null", "channel": 15, "provider_id": 42, "rate_label": "Peak", "currency": 978,
            "trailing_digits": 4, "price_tiers": 3, "radio_config": RADIO_CONFIG}
        cfg = ZigbeeConfig(**(settings | overrides))
        adapter = ZigbeeAdapter(config=cfg, gateway_id="test", meters=("main",), app_class=app_class_for(network))
        adapters.append(adapter)
        await adapter.start(bus)
        async with asyncio.timeout(15):
            await adapter.ready.wait()
        return adapter

    try:
        yield make
    finally:
        for a in adapters:
            await a.stop()


@pytest.fixture
async def adapter(make_adapter: Any) -> ZigbeeAdapter:
    return await make_adapter()  # type: ignore[no-any-return]


def _run_herdsman(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "zigbee-herdsman").is_dir():
        pytest.skip("node or zigbee-herdsman missing (make tests/node/node_modules/.installed)")
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([node, str(ZH_DECODE)], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=NODE_MODULES.parent, env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"},
                          check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def herdsman() -> Callable[[list[tuple[int, bytes]]], list[dict[str, Any]]]:
    """Decode (cluster, frame) pairs with zigbee-herdsman's ZCL codec."""

    def decode(frames: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
        return _run_herdsman([{"cluster": c, "hex": f.hex()} for c, f in frames])

    return decode


@pytest.fixture
def herdsman_encode() -> Callable[[list[dict[str, Any]]], list[bytes]]:
    """Encode client -> server frames with zigbee-herdsman (``{"cluster", "command", "tsn", "global", "payload"}``)."""

    def encode(frames: list[dict[str, Any]]) -> list[bytes]:
        out = _run_herdsman([{"encode": f} for f in frames])
        assert all("hex" in o for o in out), out
        return [bytes.fromhex(o["hex"]) for o in out]

    return encode
