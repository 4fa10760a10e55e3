"""The SQLite store: outbox for store-and-forward, and the meter history.

Three things live in one SQLite file (WAL mode):

- the **outbox**: one row per (destination, snapshot), appended before anything
  is published and deleted only when the adapter acknowledges it, so a crash
  at any point loses nothing that ``append`` returned for (at-least-once
  delivery).  The idempotency key is (destination, meter, snapshot timestamp);
  each destination is bounded to ``outbox_max_rows`` rows, dropping its oldest
  rows (counted in :attr:`Store.dropped`) when over;
- **raw history**: every reading of every snapshot (numeric or text), kept for
  ``raw_retention_s`` and removed by :meth:`Store.prune`;
- **15-minute aggregates** of the numeric readings (first, last, min, max, avg,
  count per UTC quarter hour), updated in the same transaction as the raw rows
  and kept for years.

All ``sqlite3`` calls run on one dedicated worker thread, never on the event
loop; every public method is a coroutine that waits for that thread.
``sqlite3.Error`` becomes :class:`~gateway.errors.StoreError`.

The schema is versioned with ``PRAGMA user_version``: ``gateway/schema/vN.sql``
migrates version N-1 to N, and :data:`LATEST_SCHEMA` is the newest.

Not supported: in-memory databases (WAL needs a file), several processes
writing one file, snapshot timestamps before 1970 in the history (they are
still queued in the outbox), and re-appending a snapshot whose outbox row was
already acknowledged is queued again (a duplicate, which at-least-once
delivery allows).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from gateway.clock import Clock, RealClock
from gateway.errors import SchemaTooNew, StoreCorrupt, StoreError
from gateway.model import OutboxItem, Snapshot

__all__ = [
    "BUCKET_S",
    "LATEST_SCHEMA",
    "Aggregate",
    "OutboxItem",
    "Store",
    "StoreOutbox",
    "schema_versions",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Schema version this code writes; a test guards that it equals the newest
#: ``gateway/schema/vN.sql``.
LATEST_SCHEMA = 1

#: Aggregate bucket length: a UTC quarter hour.
BUCKET_S = 900

_SCHEMA_FILE = re.compile(r"^v(\d+)\.sql$")
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DROP_LOG_INTERVAL_S = 60.0
_MAX_SQLITE_INT = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Aggregate:
    """Numeric readings of one series within one UTC quarter hour."""

    start: datetime  # bucket start, aware UTC, aligned to :00, :15, :30, :45
    first: float  # value with the earliest timestamp in the bucket
    last: float  # value with the latest timestamp in the bucket
    min: float
    max: float
    avg: float
    count: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=BUCKET_S)



def schema_versions() -> dict[int, str]:
    """Return the packaged migration scripts, ``{N: sql of vN.sql}``."""
    out: dict[int, str] = {}
    for entry in resources.files("gateway").joinpath("schema").iterdir():
        m = _SCHEMA_FILE.match(entry.name)
        if m is not None:
            out[int(m.group(1))] = entry.read_text(encoding="utf-8")
    return out


def _epoch(dt: datetime) -> float:
    # Naive datetimes are taken as UTC (the model promises aware UTC anyway).
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _aware(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _split_value(value: object) -> tuple[float | int | None, str | None]:
    """Map a reading value to the (num, txt) columns; only num feeds aggregates."""
    if isinstance(value, bool):
        return int(value), None
    if isinstance(value, int):
        if abs(value) > _MAX_SQLITE_INT:
            return float(value), None
        return value, None
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, repr(value)  # SQLite would store NaN as NULL; keep it visible
    text = str(value)
    if not text.isascii():
        # Lone surrogates (bytes decoded with surrogateescape) cannot be bound.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return None, text


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _move_aside(path: Path, stamp: str) -> Path:
    """Rename a corrupt database (and its -wal/-shm) out of the way.

    The WAL keeps its ``-wal`` suffix after the new name, so SQLite still finds
    it when someone opens the moved file for forensics.
    """
    base = f"{path.name}.corrupt-{stamp}"
    target = path.with_name(base)
    n = 1
    while target.exists():
        target = path.with_name(f"{base}.{n}")
        n += 1
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


@dataclass(slots=True)
class _Staged:
    """In-memory changes of one transaction, applied only after COMMIT."""

    series: dict[tuple[str, str], tuple[int, str | None]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


class _Db:
    """The connection and its caches; every method runs on the store thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        clock: Clock,
        outbox_max_rows: int,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.outbox_max_rows = outbox_max_rows
        self.series: dict[tuple[str, str], tuple[int, str | None]] = {}
        self.rows: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.pruned_before = 0.0  # raw history below this horizon is gone; never re-add
        self._drop_logged: dict[str, float] = {}

    # ----------------------------------------------------------------- open
    @classmethod
    def open(cls, path: Path, *, clock: Clock, outbox_max_rows: int) -> _Db:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        try:
            db = cls(conn, clock=clock, outbox_max_rows=outbox_max_rows)
            db._check_integrity(path)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > LATEST_SCHEMA:
                raise SchemaTooNew(
                    f"{path} has schema version {version}; this gateway knows up to {LATEST_SCHEMA}"
                )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
            # Loss window: with WAL and synchronous=FULL the WAL is fsynced at
            # every COMMIT, so a transaction that committed (append returned)
            # survives kill -9 *and* power loss.  NORMAL would only survive a
            # process crash; the last commits could vanish on power loss.
            conn.execute("PRAGMA synchronous=FULL")
            # Checkpointed WAL files shrink back to this size (SD cards).
            conn.execute("PRAGMA journal_size_limit=67108864")
            db._migrate(version)
            db._load_state()
        except BaseException:
            conn.close()
            raise
        return db

    def _check_integrity(self, path: Path) -> None:
        try:
            rows = self.conn.execute("PRAGMA integrity_check").fetchall()
            problem = None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:5])
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            problem = str(exc)
            cause: BaseException | None = exc
        else:
            cause = None
        if problem is None:
            return
        self.conn.close()
        stamp = self.clock.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            moved = _move_aside(path, stamp)
        except OSError as exc:
            log.error(
                "store %s is corrupt (%s) and could not be moved aside: %s", path, problem, exc
            )
            raise StoreCorrupt(
                f"{path} is corrupt ({problem}); moving it aside failed: {exc}"
            ) from exc
        log.error("store %s is corrupt (%s); moved it to %s", path, problem, moved)
        raise StoreCorrupt(f"{path} is corrupt ({problem}); moved it to {moved}") from cause

    def _migrate(self, version: int) -> None:
        if version == LATEST_SCHEMA:
            return
        scripts = schema_versions()
        for n in range(version + 1, LATEST_SCHEMA + 1):
            if n not in scripts:
                raise StoreError(f"schema file v{n}.sql is missing from the package")
            try:
                self.conn.executescript(
                    f"BEGIN IMMEDIATE;\n{scripts[n]}\n;PRAGMA user_version = {n};\nCOMMIT;"
                )
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            log.info("store schema migrated to version %d", n)

    def _load_state(self) -> None:
        c = self.conn
        for sid, meter, reading, unit in c.execute("SELECT id, meter, reading, unit FROM series"):
            self.series[(meter, reading)] = (sid, unit)
        for dest, n in c.execute("SELECT dest, count(*) FROM outbox GROUP BY dest"):
            self.rows[dest] = n
        row = c.execute("SELECT value FROM meta WHERE key = 'raw_pruned_before'").fetchone()
        if row is not None:
            self.pruned_before = float(row[0])

    def close(self) -> None:
        self.conn.close()

    # --------------------------------------------------------------- append
    def _series_id(self, staged: _Staged, meter: str, reading: str, unit: str | None) -> int:
        key = (meter, reading)
        known = staged.series.get(key) or self.series.get(key)
        if known is not None and known[1] == unit:
            return known[0]
        (sid,) = self.conn.execute(
            "INSERT INTO series (meter, reading, unit) VALUES (?, ?, ?)"
            " ON CONFLICT (meter, reading) DO UPDATE SET unit = excluded.unit RETURNING id",
            (meter, reading, unit),
        ).fetchall()[0]
        staged.series[key] = (sid, unit)
        return int(sid)

    def append_many(
        self, snapshots: Sequence[Snapshot], destinations: Sequence[str], batch_size: int
    ) -> list[int]:
        # Serialise before the transaction.  ``default=str`` keeps a stray
        # non-JSON ``extra`` value from failing the batch for good (the
        # supervisor retries a failed batch, so a poison snapshot would block
        # every later one); ASCII output keeps lone surrogates bindable.
        try:
            payloads = [
                json.dumps(s.to_json(), separators=(",", ":"), default=str) for s in snapshots
            ]
        except (TypeError, ValueError) as exc:
            raise StoreError(f"snapshot is not JSON-serialisable: {exc}") from exc
        ids: list[int] = []
        for start in range(0, len(snapshots), batch_size):
            ids.extend(
                self._append_batch(
                    snapshots[start : start + batch_size],
                    payloads[start : start + batch_size],
                    destinations,
                )
            )
        return ids

    def _append_batch(
        self, snapshots: Sequence[Snapshot], payloads: Sequence[str], destinations: Sequence[str]
    ) -> list[int]:
        c = self.conn
        staged = _Staged()
        ids: list[int] = []
        c.execute("BEGIN IMMEDIATE")
        try:
            raw_rows: list[tuple[int, float, float | int | None, str | None, str | None]] = []
            keys: list[tuple[str, float]] = []
            for snap in snapshots:
                ts = _epoch(snap.timestamp)
                keys.append((snap.meter, ts))
                if ts < self.pruned_before:
                    continue  # below the prune horizon: its aggregate would count twice
                for r in snap.readings:
                    sid = self._series_id(staged, snap.meter, r.id, r.unit)
                    num, txt = _split_value(r.value)
                    raw_rows.append((sid, ts, num, txt, r.unit))
            # The trigger raw_to_agg updates the aggregates for inserted rows only.
            c.executemany(
                "INSERT INTO raw (series, ts, num, txt, unit) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                raw_rows,
            )
            for (meter, ts), payload in zip(keys, payloads, strict=True):
                last = 0
                for dest in destinations:
                    got = c.execute(
                        "INSERT INTO outbox (dest, meter, ts, payload) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (dest, meter, ts) DO NOTHING RETURNING id",
                        (dest, meter, ts, payload),
                    ).fetchall()
                    if got:
                        staged.rows[dest] = staged.rows.get(dest, 0) + 1
                    else:  # the same snapshot is already queued for dest
                        got = c.execute(
                            "SELECT id FROM outbox WHERE dest = ? AND meter = ? AND ts = ?",
                            (dest, meter, ts),
                        ).fetchall()
                    last = max(last, int(got[0][0]))
                ids.append(last)
            for dest, added in staged.rows.items():
                excess = self.rows.get(dest, 0) + added - self.outbox_max_rows
                if excess > 0:
                    cur = c.execute(
                        "DELETE FROM outbox WHERE id IN"
                        " (SELECT id FROM outbox WHERE dest = ? ORDER BY id LIMIT ?)",
                        (dest, excess),
                    )
                    staged.rows[dest] = added - cur.rowcount
                    staged.dropped[dest] = cur.rowcount
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self.series.update(staged.series)
        for dest, delta in staged.rows.items():
            self.rows[dest] = self.rows.get(dest, 0) + delta
        for dest, n in staged.dropped.items():
            self._note_dropped(dest, n)
        return ids

    def _note_dropped(self, dest: str, n: int) -> None:
        self.dropped[dest] = self.dropped.get(dest, 0) + n
        now = self.clock.monotonic()
        last = self._drop_logged.get(dest)
        # At most one warning a minute per destination: a dead adapter drops on
        # every append, and the counter carries the exact number.
        if last is None or now - last >= _DROP_LOG_INTERVAL_S:
            self._drop_logged[dest] = now
            log.warning(
                "outbox %r is over %d rows: dropped %d oldest (%d dropped since start)",
                dest,
                self.outbox_max_rows,
                n,
                self.dropped[dest],
            )

    # --------------------------------------------------------------- outbox
    def _items(self, rows: Iterable[tuple[int, str]]) -> list[OutboxItem]:
        out = []
        for rid, payload in rows:
            try:
                snap = Snapshot.from_json(json.loads(payload))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("outbox row %d holds an unreadable snapshot: %s", rid, exc)
                raise StoreError(f"outbox row {rid} holds an unreadable snapshot: {exc}") from exc
            out.append(OutboxItem(id=rid, snapshot=snap))
        return out

    def pending(self, dest: str, after_id: int, limit: int) -> list[OutboxItem]:
        rows = self.conn.execute(
            "SELECT id, payload FROM outbox WHERE dest = ? AND id > ? ORDER BY id LIMIT ?",
            (dest, after_id, limit),
        ).fetchall()
        return self._items(rows)

    def newest(self, dest: str, limit: int) -> list[OutboxItem]:
        rows = self.conn.execute(
            "SELECT id, payload FROM outbox WHERE dest = ? ORDER BY id DESC LIMIT ?",
            (dest, limit),
        ).fetchall()
        return self._items(rows)

    def ack(self, dest: str, ids: Sequence[int]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            cur = c.executemany(
                "DELETE FROM outbox WHERE dest = ? AND id = ?", [(dest, i) for i in ids]
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self.rows[dest] = self.rows.get(dest, 0) - cur.rowcount

    # -------------------------------------------------------------- history
    def _series_ids(self, meter: str, reading: str) -> int | None:
        known = self.series.get((meter, reading))
        return None if known is None else known[0]

    def history(
        self, meter: str, reading: str, start: float, end: float
    ) -> list[tuple[float, float]]:
        sid = self._series_ids(meter, reading)
        if sid is None:
            return []
        return self.conn.execute(
            "SELECT ts, num FROM raw WHERE series = ? AND ts >= ? AND ts < ?"
            " AND num IS NOT NULL ORDER BY ts",
            (sid, start, end),
        ).fetchall()

    def aggregates(
        self, meter: str, reading: str, start: float, end: float
    ) -> list[tuple[int, float, float, float, float, float, int]]:
        sid = self._series_ids(meter, reading)
        if sid is None:
            return []
        return self.conn.execute(
            "SELECT bucket, first_v, last_v, min_v, max_v, sum_v, n FROM agg"
            " WHERE series = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
            (sid, math.floor(start / BUCKET_S), math.ceil(end / BUCKET_S)),
        ).fetchall()

    def prune(self, cutoff: float) -> int:
        c = self.conn
        deleted = 0
        # One transaction per series keeps each write lock short.
        for sid, _unit in list(self.series.values()):
            c.execute("BEGIN IMMEDIATE")
            try:
                deleted += c.execute(
                    "DELETE FROM raw WHERE series = ? AND ts < ?", (sid, cutoff)
                ).rowcount
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        if cutoff > self.pruned_before:
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('raw_pruned_before', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (repr(cutoff),),
            )
            self.pruned_before = cutoff
        return deleted

    def meters(self) -> list[str]:
        return sorted({meter for meter, _reading in self.series})

    def readings(self, meter: str) -> list[tuple[str, str | None]]:
        return sorted((r, unit) for (m, r), (_sid, unit) in self.series.items() if m == meter)


def _guard(op: str, write: bool, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` on the store thread, mapping sqlite3 errors to StoreError."""
    try:
        return fn(*args)
    except (sqlite3.Error, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: a key (meter, reading id, unit) that is not valid
        # UTF-8 cannot be bound.  Write failures may lose data: never below WARNING.
        (log.error if write else log.warning)("store %s failed: %s", op, exc)
        raise StoreError(f"store {op} failed: {exc}") from exc


class StoreOutbox:
    """The outbox of one destination (implements ``adapters.base.Outbox``)."""

    def __init__(self, store: Store, dest: str) -> None:
        self._store = store
        self.dest = dest

    @property
    def dropped(self) -> int:
        """Rows of this destination dropped by the size bound since open."""
        return self._store._dropped_for(self.dest)

    async def pending(self, *, after_id: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Return up to ``limit`` queued items with ``id > after_id``, oldest first.

        Raises:
            StoreError: the database failed, or a row could not be decoded.
        """
        return await self._store._run(
            "pending", False, lambda db: db.pending(self.dest, after_id, limit)
        )

    async def newest(self, *, limit: int = 1) -> list[OutboxItem]:
        """Return up to ``limit`` most recently queued items, newest first.

        Raises:
            StoreError: the database failed, or a row could not be decoded.
        """
        return await self._store._run("newest", False, lambda db: db.newest(self.dest, limit))

    async def ack(self, ids: list[int]) -> None:
        """Delete delivered items; unknown or other destinations' ids are ignored.

        Raises:
            StoreError: the database failed (the rows stay queued).
        """
        ids = list(ids)
        if ids:
            await self._store._run("ack", True, lambda db: db.ack(self.dest, ids))

    async def count(self) -> int:
        """Return the number of queued items.

        Raises:
            StoreError: the store is closed.
        """
        return await self._store._run("count", False, lambda db: db.rows.get(self.dest, 0))


class Store:
    """The gateway's SQLite database; create with ``await Store.open(path)``."""

    def __init__(
        self,
        *,
        path: Path,
        db: _Db,
        executor: ThreadPoolExecutor,
        clock: Clock,
        raw_retention_s: float,
    ) -> None:
        self.path = path
        self._db: _Db | None = db
        self._executor = executor
        self._clock = clock
        self.raw_retention_s = raw_retention_s

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock | None = None,
        raw_retention_s: float = 7 * 86400,
        outbox_max_rows: int = 1_000_000,
    ) -> Store:
        """Open (creating or migrating) the database at ``path``.

        Raises:
            StoreCorrupt: the integrity check failed; the file was moved aside
                to ``<name>.corrupt-<UTC timestamp>`` (a new open starts empty).
            SchemaTooNew: a newer gateway wrote the file; it is left untouched.
            StoreError: SQLite could not open or migrate the file.
        """
        if outbox_max_rows < 1:
            raise ValueError("outbox_max_rows must be at least 1")
        clk = clock if clock is not None else RealClock()
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        opener = functools.partial(_Db.open, path, clock=clk, outbox_max_rows=outbox_max_rows)
        try:
            db = await loop.run_in_executor(executor, _guard, "open", True, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path=path, db=db, executor=executor, clock=clk, raw_retention_s=raw_retention_s)

    async def close(self) -> None:
        """Close the database; later calls raise StoreError.  Idempotent."""
        db, self._db = self._db, None
        if db is None:
            return
        loop = asyncio.get_running_loop()
        try:
            # Queued jobs run first: the worker is FIFO.
            await loop.run_in_executor(self._executor, _guard, "close", True, db.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, op: str, write: bool, fn: Callable[[_Db], T]) -> T:
        db = self._db
        if db is None:
            raise StoreError(f"store {op} failed: the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _guard, op, write, fn, db)

    def _dropped_for(self, dest: str) -> int:
        db = self._db
        return 0 if db is None else db.dropped.get(dest, 0)

    @property
    def dropped(self) -> int:
        """Outbox rows dropped by the size bound since open, all destinations."""
        db = self._db
        return 0 if db is None else sum(db.dropped.values())

    # --------------------------------------------------------------- writes
    async def append(self, snapshot: Snapshot, *, destinations: Sequence[str]) -> int:
        """Store a snapshot's history and queue it for each destination.

        One transaction; when it returns the rows are durable.  Appending a
        snapshot already queued (same meter and timestamp) for a destination
        adds nothing there.

        Returns:
            The highest outbox id holding this snapshot (new or already
            queued), or 0 when ``destinations`` is empty.

        Raises:
            StoreError: the database failed; nothing of the snapshot was stored.
        """
        (last,) = await self._append([snapshot], destinations, 1)
        return last

    async def append_many(
        self,
        snapshots: Sequence[Snapshot],
        *,
        destinations: Sequence[str],
        batch_size: int = 1000,
    ) -> int:
        """Append several snapshots, committing once per ``batch_size`` of them.

        Each snapshot is handled as by :meth:`append`; rows go in with
        ``executemany``, and one COMMIT (one fsync) covers a whole batch.

        Returns:
            The highest outbox id holding any of the snapshots (what
            ``OutboxChanged.last_id`` carries), or 0 when there is none.

        Raises:
            StoreError: the database failed; batches committed before the
                failure stay stored, the failing batch is rolled back whole,
                so retrying the same call is safe (idempotency key).
        """
        return max(await self._append(snapshots, destinations, batch_size), default=0)

    async def _append(
        self, snapshots: Iterable[Snapshot], destinations: Sequence[str], batch_size: int
    ) -> list[int]:
        if isinstance(destinations, str):
            raise TypeError("destinations must be a sequence of names, not one str")
        snaps = list(snapshots)
        dests = list(dict.fromkeys(destinations))
        if not snaps:
            return []
        return await self._run(
            "append", True, lambda db: db.append_many(snaps, dests, max(1, batch_size))
        )

    def outbox(self, dest: str) -> StoreOutbox:
        """Return the outbox of one destination (an adapter's name)."""
        return StoreOutbox(self, dest)

    async def prune(self, now: datetime | None = None) -> int:
        """Delete raw history older than ``raw_retention_s`` before ``now``.

        Aggregates are kept.  Snapshots older than the prune horizon that are
        appended later go to the outbox but not into the history.

        Returns:
            The number of raw rows deleted.

        Raises:
            StoreError: the database failed.
        """
        cutoff = _epoch(now if now is not None else self._clock.now()) - self.raw_retention_s
        return await self._run("prune", True, lambda db: db.prune(cutoff))

    # ---------------------------------------------------------------- reads
    async def history(
        self, meter: str, reading_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float]]:
        """Return raw numeric values with ``start <= ts < end``, oldest first.

        Raises:
            StoreError: the database failed.
        """
        s, e = _epoch(start), _epoch(end)
        rows = await self._run("history", False, lambda db: db.history(meter, reading_id, s, e))
        return [(_aware(ts), num) for ts, num in rows]

    async def aggregates(
        self, meter: str, reading_id: str, start: datetime, end: datetime
    ) -> list[Aggregate]:
        """Return the quarter-hour aggregates of buckets overlapping ``[start, end)``.

        Raises:
            StoreError: the database failed.
        """
        s, e = _epoch(start), _epoch(end)
        rows = await self._run(
            "aggregates", False, lambda db: db.aggregates(meter, reading_id, s, e)
        )
        return [
            Aggregate(
                start=_aware(bucket * BUCKET_S),
                first=first,
                last=last,
                min=lo,
                max=hi,
                avg=total / n,
                count=n,
            )
            for bucket, first, last, lo, hi, total, n in rows
        ]

    async def meters(self) -> list[str]:
        """Return the meters with history, sorted.

        Raises:
            StoreError: the store is closed.
        """
        return await self._run("meters", False, lambda db: db.meters())

    async def readings(self, meter: str) -> list[tuple[str, str | None]]:
        """Return ``(reading id, last unit)`` of one meter's history, sorted.

        Raises:
            StoreError: the store is closed.
        """
        return await self._run("readings", False, lambda db: db.readings(meter))
