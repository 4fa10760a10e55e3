"""The store's persistent state values and the rule engine's audit trail (schema v2)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.store import LATEST_SCHEMA, AuditEntry, Store, schema_versions

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


async def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await Store.open(path) as store:
        assert await store.get_state("dlms:main:ic") is None
        await store.set_state("dlms:main:ic", "41")
        await store.set_state("dlms:main:ic", "42")
    async with await Store.open(path) as store:
        assert await store.get_state("dlms:main:ic") == "42"
        assert await store.get_state("other") is None


async def test_audit_round_trip_filter_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    rows = [
        AuditEntry(ts=T0 + timedelta(minutes=i), kind="command", load="boiler" if i % 2 else "ev",
                   action="shed", rule="peak", reason=f"r{i}", source="rules",
                   detail={"limit_w": None, "i": i})
        for i in range(10)
    ]
    async with await Store.open(path) as store:
        await store.append_audit(rows[:5])
        await store.append_audit(rows[5:])
        await store.append_audit([])
    async with await Store.open(path) as store:
        got = await store.audit(T0, T0 + timedelta(hours=1))
        assert got == rows
        boiler = await store.audit(T0, T0 + timedelta(hours=1), load="boiler")
        assert [r.reason for r in boiler] == ["r1", "r3", "r5", "r7", "r9"]
        newest = await store.audit(T0, T0 + timedelta(hours=1), limit=3)
        assert [r.reason for r in newest] == ["r7", "r8", "r9"]
        assert await store.prune_audit(T0 + timedelta(minutes=4)) == 4
        assert [r.reason for r in await store.audit(T0, T0 + timedelta(hours=1))] == [
            f"r{i}" for i in range(4, 10)]


async def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(schema_versions()[1] + "\nPRAGMA user_version = 1;")
    conn.execute("INSERT INTO meta (key, value) VALUES ('state:x', 'kept')")
    conn.commit()
    conn.close()
    async with await Store.open(path) as store:
        assert await store.get_state("x") == "kept"
        await store.append_audit([AuditEntry(ts=T0, kind="reload", reason="ok")])
        assert len(await store.audit(T0, T0 + timedelta(seconds=1))) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_SCHEMA == 2
    conn.close()
