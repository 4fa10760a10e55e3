"""Prices accepted by the signal gate come back from the audit trail after a restart,
so the page costs today with the prices of the day, not only those seen since start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.bus import Bus, SignalInput
from gateway.model import PriceSignal
from gateway.signals.gate import SignalGate
from gateway.signals.signing import Verifier
from gateway.store import AuditEntry, Store
from gateway.web.data import PriceLog, prices_from_audit


async def test_accepted_prices_survive_a_restart_through_the_audit_trail(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    now = datetime.now(UTC).replace(microsecond=0)
    async with await Store.open(path) as store:

        async def audit(rows: Any) -> None:
            await store.append_audit([AuditEntry(**r) for r in rows])

        bus = Bus()
        gate = SignalGate(bus, Verifier({}, require=False), state=store, audit=audit)
        published: list[PriceSignal] = []
        for price, start_h in ((0.31, -2), (0.12, -1), (0.45, 0)):
            start = now + timedelta(hours=start_h)
            payload = (f'{{"price": {price}, "currency": "SEK", "tier": 2, '
                       f'"start": "{start.isoformat()}", '
                       f'"end": "{(start + timedelta(hours=1)).isoformat()}"}}').encode()
            sig = await gate.handle(SignalInput(kind="price", payload=payload, source="mqtt",
                                                received=now))
            assert isinstance(sig, PriceSignal)
            published.append(sig)
        bad = await gate.handle(SignalInput(kind="price", payload=b'{"price": "x"}',
                                            source="mqtt", received=now))
        assert bad is None
        # a row of another kind and a damaged price row are skipped
        await store.append_audit([
            AuditEntry(ts=now, kind="command", load="boiler", action="shed"),
            AuditEntry(ts=now, kind="signal", action="accepted", rule="price",
                       detail={"price": 1.0, "start": "yesterday"}),
        ])
    async with await Store.open(path) as store:
        rows = await store.audit(now - timedelta(days=3), now + timedelta(minutes=1),
                                 kind="signal")
    assert {r.kind for r in rows} == {"signal"}
    restored = prices_from_audit(rows)
    assert restored == published
    log = PriceLog()
    for sig in restored:
        log.add(sig)
    found = log.at(now - timedelta(minutes=90))
    assert found is not None and found.price_per_kwh == 0.31 and found.currency == "SEK"
