"""The MQTT adapter under a burst larger than it can publish at once.

With a small in-flight window the adapter must queue: each meter's newest
snapshot goes live (state and per-quantity topics), the older ones it
superseded to history.  Every snapshot is published once, in order per
meter, and acked; nothing is left behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .test_mqtt_adapter import RigFactory, rig, snapshot, started  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(60)


async def test_a_burst_is_published_once_each_newest_live(
    mosquitto: Any, rig: RigFactory, mqtt_subscriber: Any  # noqa: F811 - the fixture
) -> None:
    meters = tuple(f"m{i}" for i in range(5))
    r = await started(rig(mosquitto.url, meters=meters, discovery=False, max_inflight=8))
    sub = mqtt_subscriber(mosquitto, f"{r.root}/meter/+/state", f"{r.root}/meter/+/history")
    await r.wait_connected()
    per_meter = 40
    for n in range(per_meter):
        for m in meters:
            r.append(snapshot(n, meter=m))
        if n % 10 == 0:
            await asyncio.sleep(0)  # let a round start while more keep coming
    total = per_meter * len(meters)
    msgs = await sub.wait_until(lambda ms: len(ms) >= total, timeout=30)
    await r.wait_drained()
    await asyncio.sleep(0.3)  # anything published twice would show up by now
    msgs = sub.messages

    def key(m: Any) -> tuple[str, str]:
        data = m.json()
        return data["meter"], data["timestamp"]

    keys = [key(m) for m in msgs]
    assert len(keys) == len(set(keys)) == total  # each once
    history = sum(1 for m in msgs if m.topic.endswith("/history"))
    assert history > total // 2  # the burst was queued: most snapshots superseded
    assert sorted(r.outbox.acked) == list(range(1, total + 1))
    newest = snapshot(per_meter - 1).timestamp.isoformat()
    for m in meters:
        mine = [mm for mm in msgs if mm.json()["meter"] == m]
        stamps = [mm.json()["timestamp"] for mm in mine]
        older = [s for s, mm in zip(stamps, mine, strict=True) if mm.topic.endswith("/history")]
        assert older == sorted(older)
        assert mine[-1].topic.endswith("/state") or newest in stamps
        # the meter's newest snapshot went live, and its topics carry its values
        state = [mm for mm in mine if mm.topic.endswith("/state")]
        assert state and state[-1].json()["timestamp"] == newest
    power = await sub_value(mosquitto, mqtt_subscriber, f"{r.root}/meter/m0/energy_import_t1")
    assert float(power) == pytest.approx(1000.0 + per_meter - 1)


async def sub_value(broker: Any, mqtt_subscriber: Any, topic: str) -> str:
    """The retained value of ``topic``, as a new subscriber sees it."""
    fresh = mqtt_subscriber(broker, topic)
    msg = await fresh.wait_for(lambda m: m.topic == topic and m.retain, timeout=5)
    return msg.text
