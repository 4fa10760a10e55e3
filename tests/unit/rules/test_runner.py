"""RuleRunner: bus in, commands out in order per load, retried until delivered, audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.bus import Bus, OverrideRequest, OverrideResult
from gateway.errors import AdapterError
from gateway.model import LoadAction, LoadCommand, LoadState, Reading, Snapshot
from gateway.rules import parse_rule_texts
from gateway.rules.runner import RuleRunner

RULES = """
[settings]
restore_delay = "0s"

[[load]]
name = "boiler"
actuator = "mqtt:b/set"
rated_power = "2 kW"

[[load]]
name = "ev"
actuator = "mqtt:ev/set"
rated_power = "7 kW"
safe_state = "off"
"""


def snapshot(kw: float) -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(meter="main", protocol="dsmr", device_id="x", timestamp=now, received=now,
                    readings=(Reading(id="1-0:1.7.0", value=kw, unit="kW", timestamp=now),))


async def wait(cond: Any, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def run(runner: RuleRunner) -> asyncio.Task[None]:
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(runner.ready.wait(), 5)
    return task


async def test_startup_publishes_safe_states_and_retries_until_delivered() -> None:
    bus = Bus()
    sent: list[tuple[str, LoadAction]] = []
    failures = {"ev": 2}

    async def dispatch(cmd: LoadCommand) -> LoadState | None:
        if failures.get(cmd.load, 0) > 0:
            failures[cmd.load] -= 1
            raise AdapterError("broker down", adapter="mqtt")
        sent.append((cmd.load, cmd.action))
        return None

    audit: list[dict[str, Any]] = []

    async def sink(rows: Any) -> None:
        audit.extend(rows)

    runner = RuleRunner(parse_rule_texts([("r.toml", RULES)]), bus=bus, dispatch=dispatch,
                        audit=sink, tick_s=0.05)
    task = await run(runner)
    try:
        assert {s.load: s.on for s in bus.load_states.values()} == {"boiler": True, "ev": False}
        await wait(lambda: len(sent) == 2, "both safe-state commands")
        assert sorted(sent) == [("boiler", LoadAction.RESTORE), ("ev", LoadAction.SHED)]
        assert runner.counters["send_failures"] == 2
        await wait(lambda: len(audit) >= 2, "audit rows")
        assert {(r["kind"], r["load"], r["action"]) for r in audit} == {
            ("command", "boiler", "restore"), ("command", "ev", "shed")}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_overrides_answered_and_a_newer_command_replaces_an_undelivered_one() -> None:
    bus = Bus()
    delivered: list[tuple[str, LoadAction]] = []
    down = asyncio.Event()
    down.set()

    async def dispatch(cmd: LoadCommand) -> LoadState | None:
        if cmd.load == "boiler" and down.is_set():
            raise AdapterError("broker down", adapter="mqtt")
        delivered.append((cmd.load, cmd.action))
        return None

    results = bus.subscribe(OverrideResult)
    runner = RuleRunner(parse_rule_texts([("r.toml", RULES)]), bus=bus, dispatch=dispatch,
                        tick_s=0.05)
    task = await run(runner)
    try:
        bus.publish(snapshot(1.0))
        bus.publish(OverrideRequest(request_id="1", load="boiler", mode="off", source="test"))
        r = await asyncio.wait_for(results.get(), 5)
        assert (r.request_id, r.ok) == ("1", True)
        bus.publish(OverrideRequest(request_id="2", load="boiler", mode="auto", source="test"))
        assert (await asyncio.wait_for(results.get(), 5)).ok
        bus.publish(OverrideRequest(request_id="3", load="sauna", mode="off", source="test"))
        r = await asyncio.wait_for(results.get(), 5)
        assert not r.ok and "sauna" in r.reason
        bus.publish(OverrideRequest(request_id="4", load="boiler", mode="dim", source="test"))
        assert not (await asyncio.wait_for(results.get(), 5)).ok
        await asyncio.sleep(0.3)
        down.clear()
        await wait(lambda: any(d[0] == "boiler" for d in delivered), "boiler delivered")
        await asyncio.sleep(0.3)
        # restore (start-up), shed (override), restore (auto): only the newest reached it
        assert [d for d in delivered if d[0] == "boiler"] == [("boiler", LoadAction.RESTORE)]
        assert bus.load_states["boiler"].on and not bus.load_states["boiler"].override
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("duration", [0.0, -1.0, 8 * 86400.0])
async def test_override_duration_bounds(duration: float) -> None:
    bus = Bus()

    async def dispatch(cmd: LoadCommand) -> LoadState | None:
        return None

    results = bus.subscribe(OverrideResult)
    runner = RuleRunner(parse_rule_texts([("r.toml", RULES)]), bus=bus, dispatch=dispatch)
    task = await run(runner)
    try:
        bus.publish(OverrideRequest(request_id="x", load="boiler", mode="off", source="t",
                                    duration_s=duration))
        r = await asyncio.wait_for(results.get(), 5)
        assert not r.ok and "duration_s" in r.reason
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
