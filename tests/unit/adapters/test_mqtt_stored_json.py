"""The MQTT adapter publishes the store's JSON of a snapshot, byte for byte what
it would have written itself (and writes its own where the store's is not JSON)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.mqtt.adapter import _item_json, _snapshot_json
from gateway.model import OutboxItem, Reading, Snapshot
from gateway.store import Store, StoredItem

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _snap(n: int, *extra: Reading) -> Snapshot:
    ts = T0 + timedelta(seconds=n)
    return Snapshot(
        meter="main", protocol="dsmr", device_id="E0025", timestamp=ts, received=ts,
        readings=(
            Reading(id="1-0:1.8.1", value=1000.5 + n, unit="kWh"),
            Reading(id="1-0:1.7.0", value=1.25, unit="kW"),
            Reading(id="0-1:24.2.1", value=500.25, unit="m3", timestamp=ts),
            Reading(id="1-0:99.97.0", value=1,
                    extra=(("events", [{"end": ts.isoformat(), "duration_s": 5}]),)),
            *extra,
        ),
        checksum_ok=True,
    )


async def test_stored_json_is_what_the_adapter_writes(tmp_path: Path) -> None:
    snaps = [
        _snap(0),
        _snap(1, Reading(id="t", value=21.5, unit="°C")),  # non-ASCII
        _snap(2, Reading(id="x", value=1, extra=(("when", T0),))),  # not JSON-able
    ]
    async with await Store.open(tmp_path / "gw.db") as store:
        await store.append_many(snaps, destinations=["mqtt"])
        items = await store.outbox("mqtt").pending()
    assert len(items) == 3
    for item in items:
        assert isinstance(item, StoredItem)
        assert _item_json(item) == item.payload == _snapshot_json(item.snapshot)


async def test_nan_is_not_taken_from_the_store(tmp_path: Path) -> None:
    s = _snap(0, Reading(id="v", value=math.nan, unit="V"))
    async with await Store.open(tmp_path / "gw.db") as store:
        await store.append(s, destinations=["mqtt"])
        (item,) = await store.outbox("mqtt").pending()
    assert "NaN" in item.payload  # type: ignore[attr-defined]
    published = _item_json(item)
    assert json.loads(published)["readings"][-1]["value"] is None  # valid JSON: null
    assert _item_json(OutboxItem(id=1, snapshot=s)) == published
