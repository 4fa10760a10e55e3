"""A simulated smart plug switched by the gateway (a rule's load command), confirmed by its reports."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.zigbee.adapter import ZigbeeAdapter
from gateway.bus import Bus, LoadFeedback
from gateway.errors import AdapterError
from gateway.model import LoadAction, LoadCommand, PriceSignal
from gateway.rules import Engine, parse_rule_texts

from .simdevices import PLUG_IEEE, VirtualNetwork, make_plug
from .test_esi_metering import snapshot

ACTUATOR = f"zigbee:{PLUG_IEEE}/1"

RULES = f"""
[[load]]
name = "boiler"
actuator = "{ACTUATOR}"
rated_power = "2 kW"
priority = 1

[[rule]]
id = "price-high"
when = "price > 0.35"
action = "shed"
loads = ["boiler"]
reason = "price above 0.35 per kWh"
"""


async def _feedback(sub: object) -> LoadFeedback:
    async with asyncio.timeout(10):
        return await sub.get()  # type: ignore[attr-defined,no-any-return]


async def test_rule_sheds_and_restores_plug(network: VirtualNetwork, bus: Bus, adapter: ZigbeeAdapter) -> None:
    feedback = bus.subscribe(LoadFeedback)
    plug = make_plug(network)
    network.join(plug)
    await network.joined(plug)

    engine = Engine(parse_rule_texts([("zigbee.toml", RULES)]), log_commands=False)
    now = datetime.now(UTC)
    engine.observe(replace(snapshot(), timestamp=now, received=now))
    engine.set_price(PriceSignal(start=now - timedelta(minutes=1), end=now + timedelta(hours=1), price_per_kwh=0.5))
    startup = engine.evaluate(now)  # the engine first puts every load in its safe state (on)
    assert [(c.action, c.actuator) for c in startup] == [(LoadAction.RESTORE, ACTUATOR)]
    assert (await adapter.apply(startup[0])).on is True
    assert (await _feedback(feedback)).on is True

    commands = engine.evaluate(now + timedelta(seconds=1))
    assert [(c.action, c.load, c.actuator) for c in commands] == [(LoadAction.SHED, "boiler", ACTUATOR)]
    state = await adapter.apply(commands[0])
    assert (state.load, state.on, state.rule) == ("boiler", False, "price-high")
    assert plug.commands[-1][:2] == (0x0006, 0x00)  # On/Off "off" seen by the plug
    assert plug.on is False
    fb = await _feedback(feedback)  # from the plug's attribute report
    assert (fb.actuator, fb.on) == (ACTUATOR, False)

    state = await adapter.apply(LoadCommand(load="boiler", action=LoadAction.RESTORE, reason="price ok",
                                            actuator=ACTUATOR))
    assert state.on is True and plug.commands[-1][:2] == (0x0006, 0x01) and plug.on is True
    fb = await _feedback(feedback)
    assert (fb.actuator, fb.on) == (ACTUATOR, True)


async def test_plug_without_reports_is_confirmed_by_reading(network: VirtualNetwork, bus: Bus,
                                                           make_adapter: object) -> None:
    adapter = await make_adapter(confirm_timeout_s=0.2)  # type: ignore[operator]
    feedback = bus.subscribe(LoadFeedback)
    plug = make_plug(network, report=False)
    network.join(plug)
    await network.joined(plug)
    await adapter.apply(LoadCommand(load="boiler", action=LoadAction.SHED, reason="test", actuator=ACTUATOR))
    fb = await _feedback(feedback)
    assert (fb.actuator, fb.on) == (ACTUATOR, False)
    reads = [p for p in network.sent if p.cluster_id == 0x0006 and p.data.serialize()[2] == 0x00]
    assert reads, "the adapter read the On/Off attribute"


async def test_limit_through_level_control(network: VirtualNetwork, adapter: ZigbeeAdapter) -> None:
    plug = make_plug(network)
    network.join(plug)
    await network.joined(plug)
    state = await adapter.apply(LoadCommand(load="boiler", action=LoadAction.LIMIT, limit_w=1000.0, reason="cap",
                                            actuator=f"{ACTUATOR}?rated_w=2000"))
    assert state.on is True and state.limit_w == 1000.0
    cluster, command, payload = plug.commands[-1]
    assert (cluster, command) == (0x0008, 0x04)  # Move to Level (with On/Off)
    level, transition = struct.unpack_from("<BH", payload)
    assert (level, transition) == (127, 0)
    with pytest.raises(AdapterError, match="rated_w"):
        await adapter.apply(LoadCommand(load="boiler", action=LoadAction.LIMIT, limit_w=500.0, reason="cap",
                                        actuator=ACTUATOR))


async def test_unknown_or_invalid_actuator_refused(network: VirtualNetwork, adapter: ZigbeeAdapter) -> None:
    with pytest.raises(AdapterError) as excinfo:
        await adapter.apply(LoadCommand(load="x", action=LoadAction.SHED, reason="t",
                                        actuator="zigbee:00:11:22:33:44:55:66:77/1"))
    assert excinfo.value.retryable is False
    with pytest.raises(AdapterError, match="IEEE"):
        await adapter.apply(LoadCommand(load="x", action=LoadAction.SHED, reason="t", actuator="zigbee:plug/1"))
    assert not [p for p in network.sent if p.cluster_id == 0x0006]  # nothing was written
