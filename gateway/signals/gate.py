"""The gate every price and DR message passes: schema, signature, replay, then the bus.

Inputs (the MQTT adapter's ``price/set`` and ``dr/set``, the web page, other
adapters) publish raw :class:`~gateway.bus.SignalInput` s and trust nothing.
:class:`SignalGate` parses each (:mod:`.messages`), checks its signature
(:mod:`.signing`), persists the signing key's sequence number *before* the
signal takes effect (so a replay is refused across restarts and crashes), and
publishes the :class:`~gateway.model.PriceSignal` /
:class:`~gateway.model.DemandResponseEvent`, or a
:class:`~gateway.bus.SignalRejected` with the reason, which is also logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from gateway.bus import Bus, SignalInput, SignalRejected
from gateway.clock import Clock, RealClock
from gateway.errors import SignalError, StoreError
from gateway.model import DemandResponseEvent, PriceSignal
from gateway.signals.messages import decode_json, parse_dr, parse_price
from gateway.signals.signing import Verifier

__all__ = ["SignalGate", "StateStore"]

log = logging.getLogger(__name__)


class StateStore(Protocol):
    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...


class SignalGate:
    def __init__(
        self,
        bus: Bus,
        verifier: Verifier,
        *,
        state: StateStore | None = None,
        audit: Callable[[Sequence[dict[str, Any]]], Awaitable[None]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.bus = bus
        self.verifier = verifier
        self._state = state
        self._audit = audit
        self.clock: Clock = clock or RealClock()
        self._seq: dict[str, int] = {}
        self.counters = {"accepted": 0, "rejected": 0}

    async def run(self) -> None:
        """Check inputs from the bus until cancelled."""
        sub = self.bus.subscribe(SignalInput, maxsize=1000)
        try:
            await self._load_seqs()
            while True:
                await self.handle(await sub.get())
        finally:
            sub.close()

    async def _load_seqs(self) -> None:
        if self._state is None:
            return
        for key_id in self.verifier.trusted:
            raw = await self._state.get_state(_seq_key(key_id))
            if raw is not None and raw.isdigit():
                self._seq[key_id] = int(raw)

    async def handle(self, inp: SignalInput) -> PriceSignal | DemandResponseEvent | None:
        """Check one input; publish and return the signal, or publish the rejection."""
        now = self.clock.now()
        try:
            if inp.kind not in ("price", "dr"):
                raise SignalError("malformed", f"unknown signal kind {inp.kind[:16]!r}")
            obj = decode_json(inp.payload)
            signed = self.verifier.check(obj, now=now, last_seq=self._seq)
            signal: PriceSignal | DemandResponseEvent
            if inp.kind == "price":
                signal = parse_price(obj, now=now, source=inp.source)
            else:
                signal = parse_dr(obj, now=now, source=inp.source)
            if signed is not None:
                # Remember the sequence number before acting on it: after a crash the
                # same message must still count as a replay.
                if self._state is not None:
                    try:
                        await self._state.set_state(_seq_key(signed.key_id), str(signed.seq))
                    except StoreError as exc:
                        raise SignalError("malformed", f"cannot record the sequence number "
                                                       f"({exc}); refused to be safe") from None
                self._seq[signed.key_id] = signed.seq
        except SignalError as exc:
            self.counters["rejected"] += 1
            log.warning("%s message from %s refused (%s): %s", inp.kind[:16], inp.source,
                        exc.code, exc.reason)
            self.bus.publish(SignalRejected(kind=inp.kind, source=inp.source,
                                            reason=f"{exc.code}: {exc.reason}", received=now))
            await self._record(inp, "refused", f"{exc.code}: {exc.reason}", {})
            return None
        self.counters["accepted"] += 1
        self.bus.publish(signal)
        if isinstance(signal, PriceSignal):
            log.info("price from %s: %.4f %s/kWh%s, %s to %s", inp.source, signal.price_per_kwh,
                     signal.currency, f" tier {signal.tier}" if signal.tier else "",
                     signal.start.isoformat(), signal.end.isoformat())
            detail: dict[str, Any] = {"price": signal.price_per_kwh, "tier": signal.tier,
                                      "currency": signal.currency, "source": signal.source,
                                      "start": signal.start.isoformat(),
                                      "end": signal.end.isoformat()}
        else:
            log.info("DR event %s from %s: %s, criticality %d, %s to %s", signal.event_id,
                     inp.source, "cancelled" if signal.cancelled else "active",
                     signal.criticality, signal.start.isoformat(), signal.end.isoformat())
            detail = {"event_id": signal.event_id, "criticality": signal.criticality,
                      "cancelled": signal.cancelled, "start": signal.start.isoformat(),
                      "end": signal.end.isoformat()}
        if signed is not None:
            detail.update(key_id=signed.key_id, seq=signed.seq)
        await self._record(inp, "accepted", "", detail)
        return signal

    async def _record(self, inp: SignalInput, action: str, reason: str,
                      detail: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            await self._audit([{"ts": self.clock.now(), "kind": "signal", "load": "",
                                "action": action, "rule": inp.kind, "reason": reason,
                                "source": inp.source, "detail": detail}])
        except StoreError as exc:
            log.error("cannot write the audit row of a %s signal: %s", inp.kind, exc)


def _seq_key(key_id: str) -> str:
    return f"signals:seq:{key_id}"
