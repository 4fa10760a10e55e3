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
loop; every public method is a coroutine that waits for that thread (but
``count`` and the in-memory answers below).  ``sqlite3.Error`` becomes
:class:`~gateway.errors.StoreError`.

What an adapter that keeps up needs stays off SQLite (one meter at 1 Hz, or a
thousand, see ``benchmarks/``):

- the newest outbox rows of each destination (up to :data:`TAIL_ROWS`) are
  also kept in memory, as the snapshots that were appended, from the COMMIT
  that made them durable until they are acknowledged: ``pending`` answers from
  there, without a trip to the store thread and without decoding JSON, and
  hands out the stored JSON (:class:`StoredItem`).  Rows older than that tail
  (a backlog after an outage, rows from before the last start) are read from
  SQLite; either way ``pending`` returns the same items;
- an ack of rows in that tail takes them out of the outbox at once, and their
  DELETE rides in the next append's transaction (or one of its own after
  :data:`ACK_DELAY_S`, and at close).  A crash in between delivers them
  again, which at-least-once allows; acks are also committed without an
  fsync (see ``_Db.ack``).

Commits of appends are fsynced (``synchronous=FULL``); the store checkpoints
the WAL itself, after acks, instead of inside whichever append crosses
SQLite's threshold.

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
import bisect
import functools
import json
import logging
import math
import re
import sqlite3
import threading
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
    "AuditEntry",
    "OutboxItem",
    "Store",
    "StoreOutbox",
    "StoredItem",
    "schema_versions",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Schema version this code writes; a test guards that it equals the newest
#: ``gateway/schema/vN.sql``.
LATEST_SCHEMA = 2

#: Aggregate bucket length: a UTC quarter hour.
BUCKET_S = 900

_SCHEMA_FILE = re.compile(r"^v(\d+)\.sql$")
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DROP_LOG_INTERVAL_S = 60.0
_MAX_SQLITE_INT = 2**63 - 1

#: Deferred acks (see _Db.defer_acks) are committed by the next append, or
#: in a transaction of their own once the oldest is this old (seconds).
ACK_DELAY_S = 2.0

#: Page size of new database files (see _Db.open).
PAGE_SIZE = 1024

#: Checkpoint the WAL once it holds this much: as a job of its own on the
#: store thread right after the append that crossed it (the snapshots are on
#: their way to the adapters meanwhile), and within an append only once it
#: holds ``_CHECKPOINT_FORCE`` times as much (a safety net).  A DSMR 5 append
#: writes ~70 KiB.
CHECKPOINT_BYTES = 4 << 20
_CHECKPOINT_FORCE = 4
#: After a checkpoint the next write starts the WAL over and SQLite truncates
#: the file to this size; it must stay below CHECKPOINT_BYTES, so that the
#: file's size says how much the WAL holds (see _Db.maybe_checkpoint).
_WAL_SIZE_LIMIT = 1 << 20

#: Outbox rows per destination kept in memory (see the module docstring).  A
#: DSMR 5 snapshot is a few kB, so this bounds the tail to a few MB.
TAIL_ROWS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One decision in the audit trail (see gateway/schema/v2.sql)."""

    ts: datetime
    kind: str  # command | override | signal | reload | dr_report
    load: str = ""
    action: str = ""
    rule: str = ""
    reason: str = ""
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


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



@dataclass(frozen=True, slots=True, kw_only=True)
class StoredItem(OutboxItem):
    """An outbox item as the store hands it out, with the JSON it stored.

    ``payload`` is ``json.dumps(snapshot.to_json())`` in compact form, UTF-8
    rather than ``\\u`` escapes (unless the text holds lone surrogates), NaN
    and infinities spelled as Python's ``json`` does: an adapter that
    publishes the snapshot as JSON need not serialise it again.
    """

    payload: str


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


_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_exact(obj: object) -> bool:
    """Whether ``json.loads(json.dumps(obj))`` gives back an equal object of the same types."""
    t = type(obj)
    if t in _JSON_SCALARS:
        return True
    if t is list:
        return all(_json_exact(v) for v in obj)  # type: ignore[attr-defined]
    if t is dict:
        return all(type(k) is str and _json_exact(v) for k, v in obj.items())  # type: ignore[attr-defined]
    return False


def _round_trips(snapshot: Snapshot) -> bool:
    """Whether the outbox's JSON gives back exactly this snapshot (see ``_Tail``).

    False for what JSON changes on the way: a non-JSON ``extra`` value (stored
    as its ``str``), tuples (come back as lists), subclasses of the value types.
    """
    for r in snapshot.readings:
        if type(r.value) not in _JSON_SCALARS or (r.unit is not None and type(r.unit) is not str):
            return False
        for _key, v in r.extra:
            if not _json_exact(v):
                return False
    return True


class _Tail:
    """The newest outbox rows of one destination, in memory, oldest first.

    Invariant: every row of the destination with ``id > floor`` that is queued
    (in SQLite and not acked) is in ``items``, and nothing else is, so
    ``pending(after_id >= floor)`` can be answered from here.  Rows come in
    after their COMMIT and leave when acked; when more than ``limit`` are held
    the oldest leave and ``floor`` rises.  Mutated on the store thread and by
    acks on the event loop, read on the event loop: every access holds
    ``lock``.
    """

    __slots__ = ("floor", "ids", "items", "limit", "lock")

    def __init__(self, floor: int, limit: int, lock: threading.RLock) -> None:
        self.floor = floor
        self.limit = limit
        self.lock = lock
        self.ids: list[int] = []  # ascending; may still hold ids no longer in items
        self.items: dict[int, OutboxItem] = {}

    def add(self, new: Sequence[OutboxItem]) -> None:
        with self.lock:
            for item in new:
                if self.ids and item.id <= self.ids[-1]:
                    # Not newer than what we hold (cannot happen with one writer
                    # thread and AUTOINCREMENT): give the tail up rather than guess.
                    self._reset(max(item.id, self.ids[-1]))
                    continue
                self.ids.append(item.id)
                self.items[item.id] = item
            excess = len(self.items) - self.limit
            if excess > 0:
                cut = 0
                while excess > 0:
                    rid = self.ids[cut]
                    cut += 1
                    if self.items.pop(rid, None) is not None:
                        excess -= 1
                self.floor = max(self.floor, self.ids[cut - 1])
                del self.ids[:cut]
            self._compact()

    def remove(self, ids: Iterable[int]) -> None:
        with self.lock:
            for rid in ids:
                self.items.pop(rid, None)
            self._compact()

    def take(self, ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Remove ``ids`` from the tail: (those it held, the others)."""
        held: list[int] = []
        other: list[int] = []
        with self.lock:
            for rid in ids:
                (held if self.items.pop(rid, None) is not None else other).append(rid)
            self._compact()
        return held, other

    def reset(self, floor: int) -> None:
        with self.lock:
            self._reset(floor)

    def _reset(self, floor: int) -> None:
        self.floor = max(self.floor, floor)
        self.ids.clear()
        self.items.clear()

    def _compact(self) -> None:
        if not self.items:
            self.ids.clear()
        elif len(self.ids) > 2 * len(self.items) + 64:
            self.ids = [i for i in self.ids if i in self.items]

    def pending(self, after_id: int, limit: int) -> list[OutboxItem] | None:
        """Items with ``id > after_id``, oldest first; None when SQLite must answer."""
        with self.lock:
            if after_id < self.floor:
                return None
            out: list[OutboxItem] = []
            items = self.items
            ids = self.ids
            for k in range(bisect.bisect_right(ids, after_id), len(ids)):
                item = items.get(ids[k])
                if item is not None:
                    out.append(item)
                    if len(out) >= limit:
                        break
            return out


def _payload(snapshot: Snapshot) -> str:
    """The outbox's JSON of a snapshot (see :class:`StoredItem`).

    ``default=str`` keeps a stray non-JSON ``extra`` value from failing the
    batch for good (the supervisor retries a failed batch, so a poison
    snapshot would block every later one).  Text with lone surrogates (bytes
    decoded with surrogateescape) cannot be bound as UTF-8: then ASCII with
    ``\\u`` escapes.
    """
    data = snapshot.to_json()
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(data, separators=(",", ":"), default=str)
    return text


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
    new: dict[str, list[OutboxItem]] = field(default_factory=dict)  # rows inserted, per dest


class _Db:
    """The connection and its caches.

    Every method runs on the store thread, but those that say "any thread":
    they touch only the tails, ``rows`` and ``deferred``, under ``tail_lock``
    (or stat the WAL).
    """

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
        self.tails: dict[str, _Tail] = {}
        self.wal_path: Path | None = None
        # Acked rows still in SQLite (see defer_acks), per destination; with
        # ``rows`` and the tails, guarded by tail_lock (the loop thread reads
        # and defers, the store thread deletes).
        self.deferred: dict[str, set[int]] = {}
        self.deferred_since: float | None = None  # event loop time the oldest was deferred
        self.tail_lock = threading.RLock()  # the tails, ``rows`` and ``deferred``
        self.tail_rows = TAIL_ROWS
        self._tail_floor = 0  # no outbox row above this id existed at open

    def tail(self, dest: str) -> _Tail:
        """The in-memory tail of ``dest`` (any thread; created empty: any row of
        ``dest`` above the ids that existed at open was appended since, into it)."""
        t = self.tails.get(dest)
        if t is None:
            with self.tail_lock:  # the loop thread may ask for it too: create it once
                t = self.tails.get(dest)
                if t is None:
                    t = self.tails[dest] = _Tail(self._tail_floor, self.tail_rows, self.tail_lock)
        return t

    # ----------------------------------------------------------------- open
    @classmethod
    def open(
        cls, path: Path, *, clock: Clock, outbox_max_rows: int, tail_rows: int = TAIL_ROWS
    ) -> _Db:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        try:
            db = cls(conn, clock=clock, outbox_max_rows=outbox_max_rows)
            db.tail_rows = tail_rows
            db.wal_path = path.with_name(path.name + "-wal")
            db._check_integrity(path)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > LATEST_SCHEMA:
                raise SchemaTooNew(
                    f"{path} has schema version {version}; this gateway knows up to {LATEST_SCHEMA}"
                )
            # New files only (an existing file keeps its page size).  A snapshot
            # touches one leaf of each of its series in ``raw`` and ``agg``, and
            # every COMMIT writes each touched page whole to the WAL: with 4 KiB
            # pages a DSMR 5 snapshot wrote ~190 KiB, with 1 KiB ~70 KiB (less
            # CPU per append, less wear on SD cards).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
            # Loss window: with WAL and synchronous=FULL the WAL is fsynced at
            # every COMMIT, so a transaction that committed (append returned)
            # survives kill -9 *and* power loss.  NORMAL would only survive a
            # process crash; the last commits could vanish on power loss.
            # (Acks alone commit with NORMAL: see _Db.ack.)  What the fsync
            # costs: ``python -m benchmarks --only latency`` (0.3-1 ms a commit
            # on the benchmark machine, about half of an append).
            conn.execute("PRAGMA synchronous=FULL")
            # Checkpointed WAL files shrink back to this size (SD cards).
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            # Checkpoints are ours (see maybe_checkpoint), not SQLite's automatic
            # one inside whichever COMMIT crosses 1000 pages: that one sat on the
            # path from meter to adapter and made its slowest appends.
            conn.execute("PRAGMA wal_autocheckpoint=0")
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
        self._tail_floor = int(c.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])

    def close(self) -> None:
        try:
            self.flush_acks()
        except sqlite3.Error as exc:
            # Those rows will be delivered again after the next start.
            log.warning("store: committing %s deferred ack(s) at close failed: %s",
                        sum(len(v) for v in self.deferred.values()), exc)
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
        # Serialise before the transaction (see _payload).
        try:
            payloads = [_payload(s) for s in snapshots]
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
        self.maybe_checkpoint(CHECKPOINT_BYTES * _CHECKPOINT_FORCE)
        return ids

    def wal_bytes(self) -> int:
        """What the WAL holds (any thread).

        The file's size is what it holds: it only grows past
        ``_WAL_SIZE_LIMIT`` by appending frames, and is cut back to that when
        the WAL starts over after a checkpoint.
        """
        if self.wal_path is None:
            return 0
        try:
            return self.wal_path.stat().st_size
        except OSError:
            return 0

    def maybe_checkpoint(self, threshold: int = CHECKPOINT_BYTES) -> None:
        """Checkpoint when the WAL holds ``threshold`` bytes or more."""
        if self.wal_bytes() >= threshold:
            # PASSIVE: never waits for a reader; with no other connection it
            # copies every frame, and the next write starts the WAL over.
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @staticmethod
    def _as_stored(snapshot: Snapshot, payload: str) -> Snapshot:
        """The snapshot as ``pending`` reads it back from SQLite."""
        if _round_trips(snapshot):
            return snapshot
        return Snapshot.from_json(json.loads(payload))

    def _append_batch(
        self, snapshots: Sequence[Snapshot], payloads: Sequence[str], destinations: Sequence[str]
    ) -> list[int]:
        c = self.conn
        staged = _Staged()
        ids: list[int] = []
        c.execute("BEGIN IMMEDIATE")
        try:
            # Deferred acks first: a re-appended snapshot whose row is among
            # them is queued again, and the bound counts without them.
            acked = self._delete_deferred()
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
            for snap, (meter, ts), payload in zip(snapshots, keys, payloads, strict=True):
                last = 0
                stored: Snapshot | None = None
                for dest in destinations:
                    got = c.execute(
                        "INSERT INTO outbox (dest, meter, ts, payload) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (dest, meter, ts) DO NOTHING RETURNING id",
                        (dest, meter, ts, payload),
                    ).fetchall()
                    if got:
                        staged.rows[dest] = staged.rows.get(dest, 0) + 1
                        if stored is None:
                            stored = self._as_stored(snap, payload)
                        staged.new.setdefault(dest, []).append(
                            StoredItem(id=int(got[0][0]), snapshot=stored, payload=payload)
                        )
                    else:  # the same snapshot is already queued for dest
                        got = c.execute(
                            "SELECT id FROM outbox WHERE dest = ? AND meter = ? AND ts = ?",
                            (dest, meter, ts),
                        ).fetchall()
                    last = max(last, int(got[0][0]))
                ids.append(last)
            for dest, added in staged.rows.items():
                queued = self.rows.get(dest, 0) - acked.get(dest, (0, ()))[0]
                excess = queued + added - self.outbox_max_rows
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
        with self.tail_lock:
            self._deleted(acked)
            for dest, delta in staged.rows.items():
                self.rows[dest] = self.rows.get(dest, 0) + delta
        for dest, new in staged.new.items():
            tail = self.tail(dest)
            if dest in staged.dropped:
                # The bound deleted this destination's oldest rows, which may be
                # in the tail: start the tail afresh above everything written.
                tail.reset(new[-1].id)
            else:
                tail.add(new)
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
        out: list[OutboxItem] = []
        for rid, payload in rows:
            try:
                snap = Snapshot.from_json(json.loads(payload))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("outbox row %d holds an unreadable snapshot: %s", rid, exc)
                raise StoreError(f"outbox row {rid} holds an unreadable snapshot: {exc}") from exc
            out.append(StoredItem(id=rid, snapshot=snap, payload=payload))
        return out

    def pending(self, dest: str, after_id: int, limit: int) -> list[OutboxItem]:
        # The tail first: if it can answer, SQLite holds nothing else above after_id.
        fast = self.tail(dest).pending(after_id, limit)
        if fast is not None:
            return fast
        skip = self._deferred_of(dest)
        rows = self.conn.execute(
            "SELECT id, payload FROM outbox WHERE dest = ? AND id > ? ORDER BY id LIMIT ?",
            (dest, after_id, limit + len(skip)),
        ).fetchall()
        return self._items([r for r in rows if r[0] not in skip][:limit])

    def newest(self, dest: str, limit: int) -> list[OutboxItem]:
        skip = self._deferred_of(dest)
        rows = self.conn.execute(
            "SELECT id, payload FROM outbox WHERE dest = ? ORDER BY id DESC LIMIT ?",
            (dest, limit + len(skip)),
        ).fetchall()
        return self._items([r for r in rows if r[0] not in skip][:limit])

    def _deferred_of(self, dest: str) -> frozenset[int]:
        with self.tail_lock:
            return frozenset(self.deferred.get(dest, ()))

    def count(self, dest: str) -> int:
        """Rows queued for ``dest`` (any thread)."""
        with self.tail_lock:
            return self.rows.get(dest, 0) - len(self.deferred.get(dest, ()))

    # ------------------------------------------------------------------ acks
    # An ack of a row in the tail (an adapter that keeps up) only marks it on
    # the event loop: its DELETE rides in the next append's transaction, or in
    # one of its own once the oldest such ack is ACK_DELAY_S old.  Until then
    # the row is hidden from pending(), newest() and count(); a crash before
    # that DELETE delivers it again, which at-least-once allows.
    def defer_acks(self, dest: str, ids: Sequence[int], now: float) -> list[int]:
        """Mark the acked rows that are in the tail; return the other ids (any thread)."""
        held, other = self.tail(dest).take(ids)
        if held:
            with self.tail_lock:
                self.deferred.setdefault(dest, set()).update(held)
                if self.deferred_since is None:
                    self.deferred_since = now
        return other

    def _delete_deferred(self) -> dict[str, tuple[int, frozenset[int]]]:
        """DELETE the deferred acks inside the caller's transaction.

        Returns ``{dest: (rows deleted, ids)}`` for :meth:`_deleted` after COMMIT.
        """
        with self.tail_lock:
            todo = {d: frozenset(ids) for d, ids in self.deferred.items() if ids}
        done: dict[str, tuple[int, frozenset[int]]] = {}
        for dest, ids in todo.items():
            cur = self.conn.executemany(
                "DELETE FROM outbox WHERE dest = ? AND id = ?", [(dest, i) for i in ids]
            )
            done[dest] = (cur.rowcount, ids)
        return done

    def _deleted(self, done: dict[str, tuple[int, frozenset[int]]]) -> None:
        """After COMMIT: the deferred acks ``done`` are gone from SQLite."""
        if not done:
            return
        with self.tail_lock:
            for dest, (n, ids) in done.items():
                self.rows[dest] = self.rows.get(dest, 0) - n
                left = self.deferred.get(dest)
                if left is not None:
                    left -= ids
            if not any(self.deferred.values()):
                self.deferred_since = None

    def flush_acks(self) -> None:
        """Commit the deferred acks now (an ack-only transaction, see ack)."""
        with self.tail_lock:
            if not any(self.deferred.values()):
                self.deferred_since = None
                return
        self.ack("", ())

    def ack(self, dest: str, ids: Sequence[int]) -> None:
        """DELETE ``ids`` of ``dest`` and every deferred ack, in one transaction."""
        c = self.conn
        # No fsync for acks: an ack lost with the power is a row delivered
        # twice, which at-least-once allows; the next append's fsync makes it
        # durable anyway (the WAL is one file, synced whole).  A process crash
        # loses nothing either way.
        c.execute("PRAGMA synchronous=NORMAL")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                acked = self._delete_deferred()
                cur = c.executemany(
                    "DELETE FROM outbox WHERE dest = ? AND id = ?", [(dest, i) for i in ids]
                )
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        finally:
            c.execute("PRAGMA synchronous=FULL")
        self._deleted(acked)
        if ids:
            with self.tail_lock:
                self.rows[dest] = self.rows.get(dest, 0) - cur.rowcount
            self.tail(dest).remove(ids)
        self.maybe_checkpoint()

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
        self.maybe_checkpoint()
        return deleted

    def meters(self) -> list[str]:
        return sorted({meter for meter, _reading in self.series})

    def readings(self, meter: str) -> list[tuple[str, str | None]]:
        return sorted((r, unit) for (m, r), (_sid, unit) in self.series.items() if m == meter)

    # ------------------------------------------------------ state and audit
    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", ("state:" + key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("state:" + key, value),
            )

    def append_audit(self, rows: Sequence[AuditEntry]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT INTO audit (ts, kind, load, action, rule, reason, source, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(_epoch(r.ts), r.kind, r.load, r.action, r.rule, r.reason, r.source,
                  json.dumps(r.detail, separators=(",", ":"), default=str)) for r in rows],
            )

    def audit(self, start: float, end: float, load: str | None, limit: int,
              kind: str | None = None) -> list[tuple[Any, ...]]:
        sql = ("SELECT ts, kind, load, action, rule, reason, source, detail FROM audit"
               " WHERE ts >= ? AND ts < ?")
        args: list[Any] = [start, end]
        if load is not None:
            sql += " AND load = ?"
            args.append(load)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return self.conn.execute(sql, args).fetchall()[::-1]

    def prune_audit(self, cutoff: float) -> int:
        with self.conn:
            return self.conn.execute("DELETE FROM audit WHERE ts < ?", (cutoff,)).rowcount


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

        Answered from memory when every such item is in the in-memory tail
        (an adapter that keeps up), else from SQLite.

        Raises:
            StoreError: the store is closed, the database failed, or a row
                could not be decoded.
        """
        db = self._store._db
        if db is not None:
            fast = db.tail(self.dest).pending(after_id, limit)
            if fast is not None:
                return fast
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

        Items that are in the in-memory tail leave ``pending``, ``newest`` and
        ``count`` at once; their rows are deleted in the next append's
        transaction, or within ``ACK_DELAY_S`` (a crash before that delivers
        them again).  Other ids are deleted before this returns.

        Raises:
            StoreError: the store is closed, or the database failed (the rows
                stay queued).
        """
        ids = list(ids)
        if not ids:
            return
        db = self._store._db
        if db is None:
            raise StoreError("store ack failed: the store is closed")
        rest = db.defer_acks(self.dest, ids, asyncio.get_running_loop().time())
        self._store._acks_deferred()
        if rest:
            await self._store._run("ack", True, lambda db: db.ack(self.dest, rest))

    async def count(self) -> int:
        """Return the number of queued items (kept in memory: no trip to the store thread).

        Raises:
            StoreError: the store is closed.
        """
        db = self._store._db
        if db is None:
            raise StoreError("store count failed: the store is closed")
        return db.count(self.dest)


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
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_flush: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock | None = None,
        raw_retention_s: float = 7 * 86400,
        outbox_max_rows: int = 1_000_000,
        tail_rows: int = TAIL_ROWS,
    ) -> Store:
        """Open (creating or migrating) the database at ``path``.

        ``tail_rows`` bounds the outbox rows per destination kept in memory
        (see the module docstring).

        Raises:
            StoreCorrupt: the integrity check failed; the file was moved aside
                to ``<name>.corrupt-<UTC timestamp>`` (a new open starts empty).
            SchemaTooNew: a newer gateway wrote the file; it is left untouched.
            StoreError: SQLite could not open or migrate the file.
        """
        if outbox_max_rows < 1:
            raise ValueError("outbox_max_rows must be at least 1")
        if tail_rows < 1:
            raise ValueError("tail_rows must be at least 1")
        clk = clock if clock is not None else RealClock()
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        opener = functools.partial(
            _Db.open, path, clock=clk, outbox_max_rows=outbox_max_rows, tail_rows=tail_rows
        )
        try:
            db = await loop.run_in_executor(executor, _guard, "open", True, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path=path, db=db, executor=executor, clock=clk, raw_retention_s=raw_retention_s)

    async def close(self) -> None:
        """Close the database; later calls raise StoreError.  Idempotent.

        Deferred acks are committed first.
        """
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        busy = {t for t in (self._ack_flush, self._checkpoint) if t is not None and not t.done()}
        if busy:
            await asyncio.wait(busy)
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

    # ------------------------------------------------------- deferred acks
    def _acks_deferred(self) -> None:
        """(Event loop) acks were deferred: make sure they are committed in time."""
        if self._ack_timer is None and (self._ack_flush is None or self._ack_flush.done()):
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._ack_due)

    def _acks_applied(self) -> None:
        """(Event loop) an append committed the deferred acks: no timer needed."""
        db = self._db
        if self._ack_timer is not None and (db is None or db.deferred_since is None):
            self._ack_timer.cancel()
            self._ack_timer = None

    def _ack_due(self) -> None:
        self._ack_timer = None
        db = self._db
        since = None if db is None else db.deferred_since
        if since is None:
            return
        loop = asyncio.get_running_loop()
        wait = since + ACK_DELAY_S - loop.time()
        if wait > 0:  # younger acks than the ones this timer was for
            self._ack_timer = loop.call_later(wait, self._ack_due)
            return
        self._ack_flush = loop.create_task(self._flush_acks(), name="store:acks")

    async def _flush_acks(self) -> None:
        try:
            await self._run("ack", True, lambda db: db.flush_acks())
        except StoreError as exc:
            # The rows stay queued (hidden); the next append or timer retries.
            log.warning("store: committing deferred acks failed: %s", exc)
            if self._db is not None:
                self._ack_timer = asyncio.get_running_loop().call_later(
                    ACK_DELAY_S, self._ack_due
                )

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
        ids = await self._run(
            "append", True, lambda db: db.append_many(snaps, dests, max(1, batch_size))
        )
        self._acks_applied()
        self._checkpoint_if_due()
        return ids

    def _checkpoint_if_due(self) -> None:
        """(Event loop) queue a checkpoint behind the append that made the WAL big."""
        db = self._db
        if db is None or (self._checkpoint is not None and not self._checkpoint.done()):
            return
        if db.wal_bytes() >= CHECKPOINT_BYTES:
            self._checkpoint = asyncio.get_running_loop().create_task(
                self._run_checkpoint(), name="store:checkpoint"
            )

    async def _run_checkpoint(self) -> None:
        try:
            await self._run("checkpoint", True, lambda db: db.maybe_checkpoint())
        except StoreError as exc:
            log.warning("store: WAL checkpoint failed: %s", exc)

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

    # ------------------------------------------------------ state and audit
    async def get_state(self, key: str) -> str | None:
        """Return a small persistent value (counters, sequence numbers) or None.

        Raises:
            StoreError: the database failed.
        """
        return await self._run("get_state", False, lambda db: db.get_state(key))

    async def set_state(self, key: str, value: str) -> None:
        """Store a small persistent value; committed (fsynced) before returning.

        Raises:
            StoreError: the database failed.
        """
        await self._run("set_state", True, lambda db: db.set_state(key, value))

    async def append_audit(self, rows: Sequence[AuditEntry]) -> None:
        """Append decisions to the audit trail in one transaction.

        Raises:
            StoreError: the database failed.
        """
        if rows:
            await self._run("append_audit", True, lambda db: db.append_audit(rows))

    async def audit(
        self, start: datetime, end: datetime, *, load: str | None = None,
        kind: str | None = None, limit: int = 1000,
    ) -> list[AuditEntry]:
        """Return the newest ``limit`` audit rows with ``start <= ts < end`` (of one load,
        of one kind, when given), oldest first.

        Raises:
            StoreError: the database failed.
        """
        s, e = _epoch(start), _epoch(end)
        rows = await self._run("audit", False, lambda db: db.audit(s, e, load, limit, kind))
        return [AuditEntry(ts=_aware(ts), kind=kind, load=ld, action=action, rule=rule,
                           reason=reason, source=source, detail=json.loads(detail))
                for ts, kind, ld, action, rule, reason, source, detail in rows]

    async def prune_audit(self, before: datetime) -> int:
        """Delete audit rows older than ``before``; returns how many.

        Raises:
            StoreError: the database failed.
        """
        cutoff = _epoch(before)
        return await self._run("prune_audit", True, lambda db: db.prune_audit(cutoff))

    async def register_deltas(
        self, meter: str, reading_id: str, boundaries: Sequence[datetime]
    ) -> list[float | None]:
        """Return how much a cumulative register (an energy total) grew in each interval.

        ``boundaries`` are ascending instants ``b0 < b1 < ... < bn``; the answer
        has one entry per interval ``[b_i, b_i+1)`` (so ``n`` entries), read
        from the quarter-hour aggregates: the register at an instant is the
        newest stored value at or before it that a bucket's first or last
        value gives (exact for boundaries on quarter hours, which every
        whole-hour time zone gives; within 15 minutes otherwise).
        Where nothing was stored before an interval, its own first value is
        the start.  ``None`` for intervals with no data at all and for those
        starting after the newest value.  Used by the web page's history.

        Raises:
            StoreError: the database failed.
        """
        edges = [_epoch(b) for b in boundaries]

        def query(db: _Db) -> list[float | None]:
            sid = db._series_ids(meter, reading_id)
            if sid is None or len(edges) < 2:
                return [None] * max(0, len(edges) - 1)
            c = db.conn
            row = c.execute("SELECT last_ts FROM agg WHERE series = ? ORDER BY bucket DESC LIMIT 1",
                            (sid,)).fetchone()
            newest = None if row is None else float(row[0])
            if newest is None:
                return [None] * (len(edges) - 1)

            def at(t: float) -> float | None:
                # the newest value at or before t, as far as the bucket's ends tell
                b0 = math.floor(t / BUCKET_S)
                row = c.execute("SELECT first_ts, first_v, last_ts, last_v FROM agg"
                                " WHERE series = ? AND bucket = ?", (sid, b0)).fetchone()
                if row is not None and row[2] <= t:
                    return float(row[3])
                if row is not None and row[0] <= t:
                    return float(row[1])
                row = c.execute(
                    "SELECT last_v FROM agg WHERE series = ? AND bucket < ?"
                    " ORDER BY bucket DESC LIMIT 1", (sid, b0)).fetchone()
                return None if row is None else float(row[0])

            def first_in(a: float, b: float) -> float | None:
                row = c.execute(
                    "SELECT first_v FROM agg WHERE series = ? AND bucket >= ? AND bucket < ?"
                    " ORDER BY bucket LIMIT 1",
                    (sid, math.floor(a / BUCKET_S), math.ceil(b / BUCKET_S))).fetchone()
                return None if row is None else float(row[0])

            values = [at(t) for t in edges]
            out: list[float | None] = []
            for i in range(len(edges) - 1):
                a, b = edges[i], edges[i + 1]
                end_v = values[i + 1]
                if a > newest or end_v is None:
                    out.append(None)
                    continue
                start_v = values[i] if values[i] is not None else first_in(a, b)
                out.append(None if start_v is None else end_v - start_v)
            return out

        return await self._run("register_deltas", False, query)
