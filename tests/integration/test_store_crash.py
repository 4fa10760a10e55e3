"""kill -9 in the middle of a burst of appends loses nothing that was committed.

A child process appends snapshots in a tight loop and prints each id once
``append`` has returned (after COMMIT).  The parent SIGKILLs it mid-burst,
then reopens the file: the integrity check must pass and every printed id must
still be queued, with its history rows.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import Store

CHILD = r"""
import asyncio, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from gateway.model import Reading, Snapshot
from gateway.store import Store

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

def snap(i):
    ts = T0 + timedelta(seconds=i)
    readings = tuple(
        Reading(id=f"1-0:{k}.8.0", value=1000.0 + i + k, unit="kWh") for k in range(28)
    ) + (Reading(id="0-0:96.1.1", value="E0001"), Reading(id="1-0:1.7.0", value=i, unit="kW"))
    return Snapshot(meter="main", protocol="dsmr", device_id="E0001", timestamp=ts,
                    received=ts, readings=readings)

async def main(path, mode):
    store = await Store.open(Path(path))
    print("ready", flush=True)
    i = 0
    while True:
        if mode == "single":
            ids = [await store.append(snap(i), destinations=["mqtt", "knx"])]
            done = [i]
            i += 1
        else:
            batch = [snap(i + k) for k in range(25)]
            last = await store.append_many(batch, destinations=["mqtt", "knx"], batch_size=10)
            # append_many returns the batch's highest id: report it with each snapshot.
            ids = [last] * 25
            done = list(range(i, i + 25))
            i += 25
        # Only now are the rows committed: report them.
        sys.stdout.write("".join(f"{n} {rid}\n" for n, rid in zip(done, ids)))
        sys.stdout.flush()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def run_and_kill(path: Path, mode: str, kill_after: int, jitter_s: float) -> list[tuple[int, int]]:
    """Start the child, SIGKILL it ``jitter_s`` after ``kill_after`` committed lines.

    Returns every (snapshot number, id) line the child printed.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        lines: list[str] = []
        while len(lines) < kill_after:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child exited"
            lines.append(line)
        # Varying the moment lands the kill in different phases of an append
        # (building rows, inside the transaction, in the fsync of COMMIT).
        time.sleep(jitter_s)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: the child never pauses
        rest, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines.extend(rest.splitlines(keepends=True))
    # A line cut by the kill has no newline; everything before it was committed.
    return [(int(a), int(b)) for a, b in (ln.split() for ln in lines if ln.endswith("\n"))]


@pytest.mark.parametrize("jitter_s", [0.0, 0.0013, 0.0037])
@pytest.mark.parametrize(("mode", "kill_after"), [("single", 150), ("batch", 400)])
async def test_sigkill_mid_burst_loses_no_committed_append(
    tmp_path: Path, mode: str, kill_after: int, jitter_s: float
) -> None:
    path = tmp_path / "gw.db"
    committed = run_and_kill(path, mode, kill_after, jitter_s)
    assert len(committed) >= kill_after

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    async with await Store.open(path) as store:  # runs the integrity check itself too
        for dest in ("mqtt", "knx"):
            items = []
            after = 0
            while page := await store.outbox(dest).pending(after_id=after, limit=500):
                items.extend(page)
                after = page[-1].id
            queued = {i.snapshot.timestamp: i.id for i in items}
            for n, _rid in committed:
                assert t0 + timedelta(seconds=n) in queued, (dest, n)
        knx_ids = {i.id for i in await store.outbox("knx").pending(limit=10**6)}
        assert {rid for _n, rid in committed} <= knx_ids  # append returns knx's (the last) id
        # Rows committed after the last printed line (killed before printing)
        # may be there too; all history, aggregates included, must agree.
        span = (t0, t0 + timedelta(days=1))
        history = await store.history("main", "1-0:1.7.0", *span)
        got = {ts for ts, _v in history}
        assert {t0 + timedelta(seconds=n) for n, _ in committed} <= got
        aggs = await store.aggregates("main", "1-0:1.7.0", *span)
        assert sum(a.count for a in aggs) == len(history)
