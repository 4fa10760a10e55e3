"""The in-memory tail of the outbox answers ``pending`` exactly as SQLite would.

The stateful test of ``test_store`` again, with a tail of two rows and a small
size bound, so that eviction, drops and reopen all happen; after every step
each destination's pending items from the tail must equal those read from
SQLite.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

from gateway.model import OutboxItem, Reading, Snapshot
from gateway.store import ACK_DELAY_S, CHECKPOINT_BYTES, Store, StoredItem

from .test_store import DESTS, T0, OutboxMachine, snap


def _committed(store: Store, dest: str) -> list[tuple[int, str]]:
    """(id, payload) of the committed rows, read by a second connection."""
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(
            "SELECT id, payload FROM outbox WHERE dest = ? ORDER BY id", (dest,)
        ).fetchall()
    finally:
        conn.close()


def _from_sqlite(store: Store, dest: str) -> list[OutboxItem]:
    """The rows still queued, read by a second connection (bypassing the tail):
    committed, less the acks not yet committed (see ``_Db.defer_acks``)."""
    assert store._db is not None
    acked = store._db.deferred.get(dest, set())
    return [
        OutboxItem(id=rid, snapshot=Snapshot.from_json(json.loads(p)))
        for rid, p in _committed(store, dest)
        if rid not in acked
    ]


class SmallTailMachine(OutboxMachine):
    tail_rows = 2  # smaller than the bound: rows leave the tail by eviction
    max_rows = 6

    def __init__(self) -> None:
        super().__init__()
        self.reopen()

    def reopen(self) -> None:  # type: ignore[override]
        self.run(self.store.close())
        self.store = self.run(
            Store.open(self.dir / "gw.db", tail_rows=self.tail_rows, outbox_max_rows=self.max_rows)
        )

    @invariant()
    def nothing_lost_nothing_resurrected(self) -> None:
        # With drops the expected sets of the parent no longer hold; compare the
        # two read paths instead (and the count).
        for d in DESTS:
            want = _from_sqlite(self.store, d)
            for after in {0, *(i.id for i in want)}:
                got = self.run(self.store.outbox(d).pending(after_id=after, limit=100))
                assert [(i.id, i.snapshot) for i in got] == [
                    (i.id, i.snapshot) for i in want if i.id > after
                ]
            assert self.run(self.store.outbox(d).count()) == len(want)


SmallTailMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_small_tail_matches_sqlite = SmallTailMachine.TestCase


class BoundedTailMachine(SmallTailMachine):
    tail_rows = 4  # larger than the bound: the bound drops rows that are in the tail
    max_rows = 3


BoundedTailMachine.TestCase.settings = SmallTailMachine.TestCase.settings
test_bounded_tail_matches_sqlite = BoundedTailMachine.TestCase


async def test_tail_hands_out_what_sqlite_would(tmp_path: Path) -> None:
    """Values that JSON changes come out of the tail as they come out of SQLite."""
    async with await Store.open(tmp_path / "gw.db") as store:
        odd = snap(
            T0,
            extra=(
                Reading(id="x", value=1, extra=(("when", T0),)),  # not JSON-able: str
                Reading(id="t", value=2, extra=(("pair", (1, 2)),)),  # a tuple: a list
                Reading(id="nan", value=math.nan),
            ),
        )
        plain = snap(T0 + timedelta(seconds=1))
        await store.append_many([odd, plain], destinations=["mqtt"])
        fast = await store.outbox("mqtt").pending()
        slow = _from_sqlite(store, "mqtt")
        assert [i.id for i in fast] == [i.id for i in slow]
        assert fast[0].snapshot.reading("x") == slow[0].snapshot.reading("x")
        assert fast[0].snapshot.reading("t") == slow[0].snapshot.reading("t")
        assert math.isnan(float(fast[0].snapshot.reading("nan").value))  # type: ignore[union-attr]
        assert fast[1].snapshot is plain  # exact round trip: the appended object itself


async def test_tail_rows_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await Store.open(tmp_path / "gw.db", tail_rows=0)


async def test_items_carry_the_stored_json(tmp_path: Path) -> None:
    """``StoredItem.payload`` is the snapshot's JSON, from the tail and from SQLite."""
    async with await Store.open(tmp_path / "gw.db", tail_rows=1) as store:
        plain = snap(T0, extra=(Reading(id="t", value=21.5, unit="°C"),))
        odd = snap(T0 + timedelta(seconds=1), extra=(Reading(id="raw", value="b\udcffd"),))
        await store.append_many([plain, odd], destinations=["mqtt"])
        box = store.outbox("mqtt")
        older, newer = await box.pending()  # below the tail's floor: SQLite
        (from_tail,) = await box.pending(after_id=older.id)
        for item in (older, newer, from_tail):
            assert isinstance(item, StoredItem)
            assert Snapshot.from_json(json.loads(item.payload)) == item.snapshot
        assert from_tail.payload == newer.payload
        compact = json.dumps(plain.to_json(), separators=(",", ":"), ensure_ascii=False)
        assert older.payload == compact  # UTF-8, not \\u escapes
        assert newer.payload.isascii()  # lone surrogates: escaped, so it can be stored


async def test_acks_of_tail_rows_ride_on_the_next_write(tmp_path: Path) -> None:
    """An ack of rows in the tail hides them at once and deletes them with the next
    append, at close, or ACK_DELAY_S later, whichever comes first."""
    async with await Store.open(tmp_path / "gw.db") as store:
        box = store.outbox("mqtt")
        await store.append_many([snap(T0), snap(T0 + timedelta(seconds=1))], destinations=["mqtt"])
        first, second = await box.pending()
        await box.ack([first.id])
        assert [i.id for i in await box.pending()] == [second.id] and await box.count() == 1
        assert [rid for rid, _ in _committed(store, "mqtt")] == [first.id, second.id]
        await store.append(snap(T0 + timedelta(seconds=2)), destinations=["mqtt"])
        assert first.id not in [rid for rid, _ in _committed(store, "mqtt")]
        await box.ack([second.id])
        await asyncio.sleep(ACK_DELAY_S + 0.5)  # no append: the timer commits it
        assert second.id not in [rid for rid, _ in _committed(store, "mqtt")]
        (third,) = await box.pending()
        await box.ack([third.id])
        assert await box.count() == 0
    assert _committed(store, "mqtt") == []  # close committed the last one


async def test_the_bound_does_not_count_deferred_acks(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "gw.db", outbox_max_rows=3) as store:
        box = store.outbox("mqtt")
        await store.append_many([snap(T0 + timedelta(seconds=i)) for i in range(3)],
                                destinations=["mqtt"])
        first, *_ = await box.pending()
        await box.ack([first.id])  # deferred: its row is deleted by the next append
        await store.append(snap(T0 + timedelta(seconds=3)), destinations=["mqtt"])
        assert await box.count() == 3 and store.dropped == 0
        assert len(_committed(store, "mqtt")) == 3


async def test_the_wal_is_checkpointed_without_ack_transactions(tmp_path: Path) -> None:
    """Acks ride on appends, so checkpoints follow appends: the WAL stays bounded."""
    wal = tmp_path / "gw.db-wal"
    sizes = []
    async with await Store.open(tmp_path / "gw.db") as store:
        box = store.outbox("mqtt")
        readings = tuple(Reading(id=f"1-0:{k}.8.0", value=float(k), unit="kWh") for k in range(40))
        for i in range(400):
            await store.append(snap(T0 + timedelta(seconds=i), extra=readings),
                               destinations=["mqtt"])
            await box.ack([i.id for i in await box.pending()])
            sizes.append(wal.stat().st_size)
    assert max(sizes) > CHECKPOINT_BYTES // 2  # enough written to need checkpoints
    assert max(sizes) < 2 * CHECKPOINT_BYTES
    assert any(b < a for a, b in itertools.pairwise(sizes))  # the WAL started over
