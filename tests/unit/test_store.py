"""Tests for gateway.store: outbox, history, aggregates, integrity, schema."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.errors import SchemaTooNew, StoreCorrupt, StoreError
from gateway.model import Reading, Snapshot
from gateway.store import (
    BUCKET_S,
    LATEST_SCHEMA,
    Aggregate,
    OutboxItem,
    Store,
    StoreOutbox,
    schema_versions,
)

R = TypeVar("R")

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class FixedClock:
    """A clock the test sets by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now_value = now
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.now_value

    async def sleep(self, seconds: float) -> None:
        self.mono += seconds


def snap(
    ts: datetime,
    *,
    meter: str = "main",
    power_kw: float = 1.5,
    energy_kwh: float = 1000.0,
    extra: Sequence[Reading] = (),
) -> Snapshot:
    return Snapshot(
        meter=meter,
        protocol="dsmr",
        device_id="E0001",
        timestamp=ts,
        received=ts + timedelta(milliseconds=250),
        readings=(
            Reading(id="1-0:1.7.0", value=power_kw, unit="kW"),
            Reading(id="1-0:1.8.1", value=energy_kwh, unit="kWh"),
            Reading(id="0-0:96.1.1", value="4530303434303037"),
            *extra,
        ),
        checksum_ok=True,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "gw.db", clock=FixedClock()) as s:
        yield s


async def drain(box: StoreOutbox, page: int = 3) -> list[OutboxItem]:
    """Every pending item, fetched in small pages through ``after_id``."""
    out: list[OutboxItem] = []
    after = 0
    while True:
        items = await box.pending(after_id=after, limit=page)
        if not items:
            return out
        out.extend(items)
        after = items[-1].id


# ------------------------------------------------------------------- outbox
async def test_round_trip_append_pending_ack(store: Store) -> None:
    s = snap(T0, extra=(Reading(id="x", value=7, unit=None, extra=(("status", "ok"),)),))
    rid = await store.append(s, destinations=["mqtt"])
    box = store.outbox("mqtt")
    assert await box.count() == 1
    items = await box.pending()
    assert [i.id for i in items] == [rid]
    assert items[0].snapshot == s  # Snapshot.from_json is the exact inverse of to_json
    await box.ack([rid])
    assert await box.pending() == []
    assert await box.count() == 0


async def test_order_preserved_and_ids_monotonic(store: Store) -> None:
    snaps = [snap(T0 + timedelta(seconds=i), power_kw=i) for i in range(10)]
    appended = [await store.append(s, destinations=["mqtt"]) for s in snaps[:4]]
    last = await store.append_many(snaps[4:], destinations=["mqtt"], batch_size=4)
    box = store.outbox("mqtt")
    items = await drain(box)
    assert [i.snapshot for i in items] == snaps
    ids = [i.id for i in items]
    assert ids == sorted(set(ids)) and ids[:4] == appended and ids[-1] == last
    newest = await box.newest(limit=3)
    assert [i.id for i in newest] == ids[:-4:-1]
    # Acking the newest must not let its id be handed out again.
    await box.ack([ids[-1]])
    later = await store.append(snap(T0 + timedelta(seconds=99)), destinations=["mqtt"])
    assert later > ids[-1]


async def test_append_is_idempotent(store: Store) -> None:
    s = snap(T0)
    first = await store.append(s, destinations=["mqtt", "knx"])
    again = await store.append(s, destinations=["mqtt", "knx"])
    third = await store.append_many([s], destinations=["mqtt"])
    assert first == again
    assert third < first  # mqtt's row came first; the knx row holds the highest id
    assert await store.outbox("mqtt").count() == 1
    assert await store.outbox("knx").count() == 1
    assert len(await store.history("main", "1-0:1.7.0", T0, T0 + timedelta(hours=1))) == 1
    (agg,) = await store.aggregates("main", "1-0:1.7.0", T0, T0 + timedelta(hours=1))
    assert agg.count == 1
    # A duplicate within one batch is stored once too.
    dup = snap(T0 + timedelta(seconds=1))
    last = await store.append_many([dup] * 3, destinations=["mqtt"])
    assert await store.outbox("mqtt").count() == 2
    assert await store.append(dup, destinations=["mqtt"]) == last


async def test_destinations_are_independent(store: Store) -> None:
    snaps = [snap(T0 + timedelta(seconds=i)) for i in range(3)]
    last = await store.append_many(snaps, destinations=["mqtt", "knx"])
    mqtt, knx = store.outbox("mqtt"), store.outbox("knx")
    m_items, k_items = await drain(mqtt), await drain(knx)
    assert [i.snapshot for i in m_items] == [i.snapshot for i in k_items] == snaps
    ids = [i.id for i in k_items]
    assert ids[-1] == last
    assert not {i.id for i in m_items} & {i.id for i in k_items}
    # Acking knx's ids through mqtt's outbox does nothing.
    await mqtt.ack([i.id for i in k_items])
    assert await knx.count() == 3 and await mqtt.count() == 3
    await mqtt.ack([i.id for i in m_items])
    assert await mqtt.count() == 0
    assert [i.id for i in await drain(knx)] == ids
    await store.append(snap(T0 + timedelta(seconds=10)), destinations=["mqtt"])
    assert await mqtt.count() == 1 and await knx.count() == 3
    assert await store.outbox("never-used").pending() == []


async def test_size_bound_drops_oldest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.store")
    async with await Store.open(tmp_path / "gw.db", outbox_max_rows=5) as store:
        snaps = [snap(T0 + timedelta(seconds=i)) for i in range(8)]
        await store.append_many(snaps[:6], destinations=["mqtt", "knx"])
        for s in snaps[6:]:
            await store.append(s, destinations=["mqtt"])
        box = store.outbox("mqtt")
        assert await box.count() == 5
        assert [i.snapshot for i in await drain(box)] == snaps[3:]
        assert box.dropped == 3
        assert store.outbox("knx").dropped == 1
        assert store.dropped == 4
        assert await store.outbox("knx").count() == 5
    warnings = [r for r in caplog.records if r.name == "gateway.store"]
    assert warnings and all(r.levelno >= logging.WARNING for r in warnings)
    assert any("dropped" in r.getMessage() for r in warnings)
    # The bound and the counts survive a reopen (counts are rebuilt from the table).
    async with await Store.open(tmp_path / "gw.db", outbox_max_rows=5) as store:
        assert await store.outbox("mqtt").count() == 5
        await store.append(snap(T0 + timedelta(seconds=50)), destinations=["mqtt"])
        assert await store.outbox("mqtt").count() == 5
        assert store.outbox("mqtt").dropped == 1


async def test_reopen_keeps_pending_rows(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with await Store.open(path) as store:
        await store.append_many(
            [snap(T0 + timedelta(seconds=i)) for i in range(5)], destinations=["mqtt"]
        )
        ids = [i.id for i in await store.outbox("mqtt").pending()]
        await store.outbox("mqtt").ack(ids[:2])
    async with await Store.open(path) as store:
        items = await drain(store.outbox("mqtt"))
        assert [i.id for i in items] == ids[2:]
        assert await store.outbox("mqtt").count() == 3
        assert await store.meters() == ["main"]


async def test_values_of_every_kind_round_trip(store: Store) -> None:
    s = snap(
        T0,
        extra=(
            Reading(id="flag", value=True),
            Reading(id="big", value=2**70, unit="Wh"),
            Reading(id="nan", value=math.nan),
            Reading(id="ts", value=3, unit="V", timestamp=T0 - timedelta(minutes=5)),
        ),
    )
    await store.append(s, destinations=["mqtt"])
    (item,) = await store.outbox("mqtt").pending()
    got = {r.id: r for r in item.snapshot.readings}
    assert got["flag"].value is True
    assert got["big"].value == 2**70
    assert math.isnan(float(got["nan"].value))
    assert got["ts"] == s.reading("ts")
    end = T0 + timedelta(seconds=1)
    assert await store.history("main", "flag", T0, end) == [(T0, 1.0)]
    assert await store.history("main", "big", T0, end) == [(T0, float(2**70))]
    assert await store.history("main", "nan", T0, end) == []  # not numeric
    assert await store.history("main", "0-0:96.1.1", T0, end) == []  # text
    assert await store.aggregates("main", "0-0:96.1.1", T0, end) == []
    assert ("0-0:96.1.1", None) in await store.readings("main")
    assert ("1-0:1.7.0", "kW") in await store.readings("main")


async def test_awkward_values_never_poison_a_batch(store: Store) -> None:
    odd = snap(
        T0,
        extra=(
            Reading(id="raw", value="b\udcffd"),  # bytes decoded with surrogateescape
            Reading(id="x", value=1, extra=(("when", T0),)),  # not JSON-able
        ),
    )
    await store.append_many([odd, snap(T0 + timedelta(seconds=1))], destinations=["mqtt"])
    first, second = await store.outbox("mqtt").pending()
    assert first.snapshot.reading("raw") == Reading(id="raw", value="b\udcffd")
    assert first.snapshot.reading("x") == Reading(id="x", value=1, extra=(("when", str(T0)),))
    assert second.snapshot.timestamp == T0 + timedelta(seconds=1)
    # A key that SQLite cannot bind fails as a StoreError, not a builtin.
    with pytest.raises(StoreError):
        await store.append(snap(T0, meter="m\udcff"), destinations=["mqtt"])


async def test_empty_inputs(store: Store) -> None:
    assert await store.append(snap(T0), destinations=[]) == 0
    assert await store.append_many([], destinations=["mqtt"]) == 0
    assert await store.history("main", "1-0:1.7.0", T0, T0 + timedelta(seconds=1)) == [(T0, 1.5)]
    assert await store.history("nope", "1-0:1.7.0", T0, T0 + timedelta(seconds=1)) == []
    await store.outbox("mqtt").ack([])


# ------------------------------------------------------------------ history
async def test_history_and_quarter_hour_aggregates(store: Store) -> None:
    q = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)  # a quarter-hour boundary
    points = [
        (q - timedelta(seconds=10), 4.0),  # bucket 14:45
        (q + timedelta(minutes=14, seconds=59), 2.0),  # bucket 15:00, latest
        (q, 3.0),  # bucket 15:00, earliest (appended after a later one)
        (q + timedelta(minutes=7), 10.0),  # bucket 15:00
        (q + timedelta(minutes=15), 5.0),  # bucket 15:15
    ]
    await store.append_many([snap(ts, power_kw=v) for ts, v in points[:2]], destinations=["a"])
    for ts, v in points[2:]:
        await store.append(snap(ts, power_kw=v), destinations=["a"])

    start, end = q - timedelta(minutes=15), q + timedelta(minutes=30)
    hist = await store.history("main", "1-0:1.7.0", start, end)
    assert hist == sorted(points)
    assert all(ts.tzinfo is not None and ts.utcoffset() == timedelta(0) for ts, _ in hist)
    # [start, end): end is exclusive
    assert await store.history("main", "1-0:1.7.0", q, q + timedelta(minutes=15)) == sorted(
        points[1:4]
    )

    aggs = await store.aggregates("main", "1-0:1.7.0", start, end)
    assert aggs == [
        Aggregate(start=q - timedelta(minutes=15), first=4, last=4, min=4, max=4, avg=4, count=1),
        Aggregate(start=q, first=3, last=2, min=2, max=10, avg=5, count=3),
        Aggregate(start=q + timedelta(minutes=15), first=5, last=5, min=5, max=5, avg=5, count=1),
    ]
    assert aggs[1].end == q + timedelta(minutes=15)
    assert all(a.start.timestamp() % BUCKET_S == 0 for a in aggs)
    # A range inside one bucket returns that (overlapping) bucket.
    inner = await store.aggregates(
        "main", "1-0:1.7.0", q + timedelta(minutes=1), q + timedelta(minutes=2)
    )
    assert [a.start for a in inner] == [q]
    assert await store.meters() == ["main"]


async def test_prune_keeps_aggregates(tmp_path: Path) -> None:
    clock = FixedClock()
    async with await Store.open(tmp_path / "gw.db", clock=clock, raw_retention_s=3600) as store:
        old = [snap(T0 + timedelta(minutes=i), power_kw=i) for i in range(3)]
        new = snap(T0 + timedelta(hours=2), power_kw=9)
        await store.append_many([*old, new], destinations=["mqtt"])
        deleted = await store.prune(T0 + timedelta(hours=2, minutes=30))
        assert deleted == 3 * 3  # three readings per old snapshot
        span = (T0 - timedelta(days=1), T0 + timedelta(days=1))
        assert await store.history("main", "1-0:1.7.0", *span) == [(new.timestamp, 9.0)]
        (agg_old, agg_new) = await store.aggregates("main", "1-0:1.7.0", *span)
        assert (agg_old.count, agg_old.first, agg_old.last) == (3, 0, 2)
        assert (agg_new.count, agg_new.avg) == (1, 9)
        # Re-appending a pruned snapshot must not count it twice in the aggregates.
        await store.append(old[0], destinations=["mqtt"])
        (agg_old, _) = await store.aggregates("main", "1-0:1.7.0", *span)
        assert agg_old.count == 3
        # Pruning never touches the outbox.
        assert await store.outbox("mqtt").count() == 4
        clock.now_value = T0 + timedelta(hours=10)
        assert await store.prune() == 3
    async with await Store.open(tmp_path / "gw.db", raw_retention_s=3600) as store:
        await store.append(old[1], destinations=[])
        (agg_old, _) = await store.aggregates("main", "1-0:1.7.0", *span)
        assert agg_old.count == 3  # the prune horizon is persistent


# ------------------------------------------------------ integrity and schema
async def test_garbage_file_is_corrupt_and_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.write_bytes(b"this is not an SQLite database, just garbage " * 200)
    clock = FixedClock(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    with pytest.raises(StoreCorrupt):
        await Store.open(path, clock=clock)
    assert not path.exists()
    aside = tmp_path / "gw.db.corrupt-20240506T070809Z"
    assert aside.read_bytes().startswith(b"this is not an SQLite")
    # The next open starts a fresh database.
    async with await Store.open(path, clock=clock) as store:
        await store.append(snap(T0), destinations=["mqtt"])
        assert await store.outbox("mqtt").count() == 1


async def test_damaged_pages_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    async with await Store.open(path) as store:
        await store.append_many(
            [snap(T0 + timedelta(seconds=i)) for i in range(300)], destinations=["mqtt"]
        )
    with sqlite3.connect(path) as conn:  # fold the WAL into the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for off in range(3 * page, len(data) - page, 2 * page):  # smash every other page
        data[off : off + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        await Store.open(path)
    assert not path.exists()
    assert len(list(tmp_path.glob("gw.db.corrupt-*"))) == 1


async def test_schema_too_new_leaves_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {LATEST_SCHEMA + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew):
        await Store.open(path)
    assert path.read_bytes() == before


def test_latest_schema_is_newest_schema_file() -> None:
    versions = schema_versions()
    assert max(versions) == LATEST_SCHEMA
    assert sorted(versions) == list(range(1, LATEST_SCHEMA + 1))
    on_disk = {
        int(p.stem[1:]) for p in (Path(__file__).parents[2] / "gateway" / "schema").glob("v*.sql")
    }
    assert on_disk == set(versions)


async def test_new_database_has_latest_schema_and_wal(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_SCHEMA
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_sqlite_errors_become_store_errors(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.store")
    conn = sqlite3.connect(store.path)
    try:
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        conn.commit()
        with pytest.raises(StoreError) as info:
            await store.append(snap(T0), destinations=["mqtt"])
        assert isinstance(info.value.__cause__, sqlite3.Error)
        # One transaction: the history rows of the failed append were rolled back too.
        assert await store.history("main", "1-0:1.7.0", T0, T0 + timedelta(hours=1)) == []
        assert await store.meters() == []
        conn.execute("DROP TRIGGER boom")
        conn.commit()
    finally:
        conn.close()
    failures = [r for r in caplog.records if "boom" in r.getMessage()]
    assert failures and all(r.levelno >= logging.WARNING for r in failures)
    await store.append(snap(T0), destinations=["mqtt"])
    assert await store.outbox("mqtt").count() == 1
    assert await store.meters() == ["main"]


async def test_open_failure_and_closed_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await Store.open(tmp_path / "missing-dir" / "gw.db")
    store = await Store.open(tmp_path / "gw.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        await store.append(snap(T0), destinations=["mqtt"])
    with pytest.raises(StoreError):
        await store.outbox("mqtt").count()


# ----------------------------------------------- at-least-once (stateful)
DESTS = ("mqtt", "knx")


class OutboxMachine(RuleBasedStateMachine):
    """Appends, acks and reopens in any order never lose or resurrect a row."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-sm-"))
        self.loop = asyncio.new_event_loop()
        self.store = self.run(Store.open(self.dir / "gw.db"))
        self.expected: dict[str, set[tuple[str, float]]] = {d: set() for d in DESTS}
        self.acked: set[int] = set()
        self.max_id = 0

    def run(self, coro: Coroutine[object, object, R]) -> R:
        return self.loop.run_until_complete(coro)

    @rule(
        keys=st.lists(
            st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 15)), min_size=1, max_size=4
        ),
        dests=st.lists(st.sampled_from(DESTS), unique=True),
    )
    def append(self, keys: list[tuple[str, int]], dests: list[str]) -> None:
        snaps = [snap(T0 + timedelta(seconds=t), meter=m) for m, t in keys]
        new = any(
            (s.meter, s.timestamp.timestamp()) not in self.expected[d] for s in snaps for d in dests
        )
        if len(snaps) == 1:
            ids = [self.run(self.store.append(snaps[0], destinations=dests))]
        else:
            ids = [self.run(self.store.append_many(snaps, destinations=dests, batch_size=2))]
        for d in dests:
            self.expected[d] |= {(s.meter, s.timestamp.timestamp()) for s in snaps}
        if new:
            assert max(ids) > self.max_id  # new rows get ids above all earlier ones
        self.max_id = max(self.max_id, *ids)

    @rule(dest=st.sampled_from(DESTS), data=st.data())
    def ack(self, dest: str, data: st.DataObject) -> None:
        items = self.run(drain(self.store.outbox(dest), page=5))
        chosen = (
            data.draw(st.lists(st.sampled_from(items), unique_by=lambda i: i.id)) if items else []
        )
        stale = data.draw(st.lists(st.sampled_from(sorted(self.acked)))) if self.acked else []
        self.run(self.store.outbox(dest).ack([i.id for i in chosen] + stale))
        for i in chosen:
            self.expected[dest].discard((i.snapshot.meter, i.snapshot.timestamp.timestamp()))
            self.acked.add(i.id)

    @rule()
    def reopen(self) -> None:
        self.run(self.store.close())
        self.store = self.run(Store.open(self.dir / "gw.db"))

    @precondition(lambda self: self.max_id > 0)
    @rule(dest=st.sampled_from(DESTS), data=st.data())
    def page(self, dest: str, data: st.DataObject) -> None:
        after = data.draw(st.integers(0, self.max_id))
        limit = data.draw(st.integers(1, 5))
        items = self.run(self.store.outbox(dest).pending(after_id=after, limit=limit))
        ids = [i.id for i in items]
        assert len(ids) <= limit and ids == sorted(ids) and all(i > after for i in ids)

    @invariant()
    def nothing_lost_nothing_resurrected(self) -> None:
        for d in DESTS:
            items = self.run(drain(self.store.outbox(d), page=4))
            ids = [i.id for i in items]
            assert ids == sorted(set(ids))
            assert not set(ids) & self.acked
            got = [(i.snapshot.meter, i.snapshot.timestamp.timestamp()) for i in items]
            assert len(got) == len(set(got))
            assert set(got) == self.expected[d]
            assert self.run(self.store.outbox(d).count()) == len(got)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_outbox_at_least_once = OutboxMachine.TestCase
