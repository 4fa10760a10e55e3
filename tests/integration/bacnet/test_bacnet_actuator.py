"""The BACnet actuator writing to other devices: a separate bacpypes3 process (real
priority-array semantics, read back by the independent @bacnet-js/client) and a tiny
device on @bacnet-js/client itself (its own decoder checks what we put on the wire)."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.bacnet import plugin
from gateway.bus import LoadFeedback
from gateway.errors import AdapterError
from gateway.model import LoadAction, LoadCommand

from .conftest import NODE_DIR, free_udp_port, node_available, start_target

JS_TARGET = Path(__file__).parent / "bacnet_js_target.js"

pytestmark = pytest.mark.timeout(120)

BO, AV = 4, 2
PV, PRIORITY_ARRAY = 85, 87
T_NULL = 0


def command(actuator: str, action: LoadAction, limit_w: float | None = None) -> LoadCommand:
    return LoadCommand(load="heater", action=action, reason="test", actuator=actuator, limit_w=limit_w,
                       issued=datetime.now(UTC))


async def slots(peer: Any, address: str, otype: int, inst: int) -> list[Any]:
    reply = await peer.request("read", address=address, type=otype, instance=inst, property=PRIORITY_ARRAY)
    assert reply["ok"], reply
    return [None if v["type"] == T_NULL else v["value"] for v in reply["values"]]


async def test_shed_writes_at_priority_and_restore_relinquishes(bacnet_peer: Any, bacnet_device_factory: Any) -> None:
    tport = free_udp_port("127.0.0.3")
    target = await start_target(tport)
    try:
        dev = await bacnet_device_factory()
        feedback = dev.bus.subscribe(LoadFeedback)
        peer = await bacnet_peer()
        taddr = f"127.0.0.3:{tport}"
        actuator = f"bacnet:{taddr}/binary-output:3@9"
        assert plugin.actuator_problem(actuator.removeprefix("bacnet:")) is None

        state = await dev.adapter.apply(command(actuator, LoadAction.SHED))
        assert state.on is False and state.extra["priority"] == 9
        pa = await slots(peer, taddr, BO, 3)
        assert pa[8] == 0 and all(v is None for i, v in enumerate(pa) if i != 8)
        assert (await peer.request("read", address=taddr, type=BO, instance=3, property=PV))["values"][0]["value"] == 0
        fb = feedback.get_nowait()
        assert fb is not None and fb.actuator == actuator and fb.on is False

        state = await dev.adapter.apply(command(actuator, LoadAction.RESTORE))
        assert state.on is True
        assert all(v is None for v in await slots(peer, taddr, BO, 3))
        assert (await peer.request("read", address=taddr, type=BO, instance=3, property=PV))["values"][0]["value"] == 1

        # an analog object: LIMIT writes the limit in W, RESTORE relinquishes
        limit = f"bacnet:{taddr}/analog-value:7@12"
        state = await dev.adapter.apply(command(limit, LoadAction.LIMIT, limit_w=1500.0))
        pa = await slots(peer, taddr, AV, 7)
        assert pa[11] == pytest.approx(1500.0) and state.limit_w == 1500.0
        await dev.adapter.apply(command(limit, LoadAction.RESTORE))
        assert all(v is None for v in await slots(peer, taddr, AV, 7))
        assert dev.adapter.health().counters["actuator_writes"] == 4
    finally:
        assert target.stdin is not None
        target.stdin.close()
        await target.wait()


async def test_actuator_errors(bacnet_device_factory: Any) -> None:
    dev = await bacnet_device_factory()
    # nothing listens there: a timeout, as a retryable AdapterError
    silent = f"bacnet:127.0.0.3:{free_udp_port('127.0.0.3')}/binary-output:3"
    with pytest.raises(AdapterError) as exc:
        await dev.adapter.apply(command(silent, LoadAction.SHED))
    assert exc.value.retryable
    # unknown object on a real device: refused by the device
    tport = free_udp_port("127.0.0.3")
    target = await start_target(tport)
    try:
        with pytest.raises(AdapterError, match="unknown"):
            await dev.adapter.apply(command(f"bacnet:127.0.0.3:{tport}/binary-output:99", LoadAction.SHED))
    finally:
        assert target.stdin is not None
        target.stdin.close()
        await target.wait()
    # our own address would be short-circuited by bacpypes3: refused up front
    with pytest.raises(AdapterError) as exc:
        await dev.adapter.apply(command(f"bacnet:127.0.0.9:{dev.port}/binary-output:3", LoadAction.SHED))
    assert not exc.value.retryable
    with pytest.raises(AdapterError) as exc:
        await dev.adapter.apply(command("bacnet:127.0.0.3/binary-output:3", LoadAction.LIMIT, limit_w=100))
    assert not exc.value.retryable


async def test_writes_as_an_independent_device_decodes_them(bacnet_device_factory: Any) -> None:
    """The same commands against a device built on @bacnet-js/client: its own decoder sees
    present-value written at priority 9 (enumerated inactive), then a NULL at 9."""
    why = node_available()
    if why:
        pytest.skip(why)
    port = free_udp_port("127.0.0.6")
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS_TARGET), "127.0.0.6", str(port), cwd=str(NODE_DIR), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) == {"event": "listening"}
        dev = await bacnet_device_factory()
        actuator = f"bacnet:127.0.0.6:{port}/binary-output:3@9"
        state = await dev.adapter.apply(command(actuator, LoadAction.SHED))
        write = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert write == {"event": "write", "object": {"type": BO, "instance": 3}, "property": PV,
                         "priority": 9, "values": [{"type": 9, "value": 0}]}
        assert state.on is False and state.extra["present_value"] == "inactive"
        state = await dev.adapter.apply(command(actuator, LoadAction.RESTORE))
        write = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert write["priority"] == 9 and write["values"] == [{"type": T_NULL, "value": None}]
        assert state.on is True  # relinquished: back to its relinquish default (active)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
