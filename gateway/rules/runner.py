"""The rule engine at work: fed from the bus, commands sent to actuators, decisions kept.

:class:`RuleRunner` owns one :class:`~gateway.rules.engine.Engine`.  It takes
snapshots, prices, DR events, override requests and actuator feedback off the
bus, evaluates on every input and whenever the engine's
:meth:`~gateway.rules.engine.Engine.next_wakeup` (or the tick, for time-of-day
conditions and stale meter data) falls due, and hands each command to
``dispatch`` (the supervisor routes it to the adapter named by the load's
actuator).  Every load's state, with the rule and reason behind it, is
published on the bus as a :class:`~gateway.model.LoadState`, and every
decision goes to the audit trail.

Commands to one load are sent in order, one at a time; loads do not wait for
each other.  A commanded load's state is published once its command was
delivered.  A command that fails (adapter down, timeout) is retried with
backoff until it succeeds or a newer command for that load replaces it, so a
restore is never lost to a broker outage.

The first evaluation puts every load in its safe state (the engine's start-up
rule), so after a crash or restart nothing stays shed by a decision the
gateway no longer remembers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.backoff import Backoff
from gateway.bus import Bus, DrEventReport, LoadFeedback, OverrideRequest, OverrideResult
from gateway.clock import Clock, RealClock
from gateway.errors import GatewayError
from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    LoadState,
    PriceSignal,
    Snapshot,
)
from gateway.rules.engine import Engine, Override, format_command
from gateway.rules.rulefile import RuleSet

__all__ = ["AuditSink", "Dispatch", "RuleRunner"]

log = logging.getLogger(__name__)

#: Sends one command; returns the actuator's view of the load (or None).
Dispatch = Callable[[LoadCommand], Awaitable[LoadState | None]]
#: Appends audit rows: ``(kind, load, action, rule, reason, source, detail)``.
AuditSink = Callable[[Sequence[dict[str, Any]]], Awaitable[None]]

_MODES = {"on": LoadAction.RESTORE, "off": LoadAction.SHED, "limit": LoadAction.LIMIT}
MAX_OVERRIDE_S = 7 * 86400.0


class RuleRunner:
    def __init__(
        self,
        rules: RuleSet,
        *,
        bus: Bus,
        dispatch: Dispatch,
        audit: AuditSink | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        tick_s: float = 5.0,
        override_default_s: float = 3600.0,
        send_timeout_s: float = 10.0,
    ) -> None:
        self.engine = Engine(rules, rng_seed=seed)
        self.bus = bus
        self._dispatch = dispatch
        self._audit = audit
        self.clock: Clock = clock or RealClock()
        self.tick_s = tick_s
        self.override_default_s = override_default_s
        self.send_timeout_s = send_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._latest: dict[str, int] = {}  # load -> sequence of its newest command
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._audit_rows: list[dict[str, Any]] = []
        self._audit_wake = asyncio.Event()
        self.counters = {"evaluations": 0, "commands": 0, "send_failures": 0,
                         "overrides": 0, "overrides_refused": 0, "reloads": 0}
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        """Evaluate and send until cancelled."""
        sub = self.bus.subscribe(Snapshot, PriceSignal, DemandResponseEvent, OverrideRequest,
                                 LoadFeedback, DrEventReport, maxsize=10000)
        now = self.clock.now()
        # Signals published before we subscribed (a retained price, say) still count.
        if self.bus.last_price is not None:
            self.engine.set_price(self.bus.last_price)
        for ev in self.bus.dr_events.values():
            self.engine.set_dr_event(ev, now)
        for snap in self.bus.last_snapshot.values():
            self.engine.observe(snap)
        auditor = asyncio.create_task(self._audit_loop(), name="rules:audit")
        try:
            self._evaluate(now, publish_all=True)
            self.ready.set()
            while True:
                now = self.clock.now()
                wake = self.engine.next_wakeup(now)
                timeout = self.tick_s
                if wake is not None:
                    timeout = min(timeout, max(0.0, (wake - now).total_seconds()) + 0.001)
                try:
                    async with asyncio.timeout(timeout):
                        item = await sub.get()
                except TimeoutError:
                    item = None
                now = self.clock.now()
                if item is not None:
                    self._take(item, now)
                    while (more := sub.get_nowait()) is not None:
                        self._take(more, now)
                self._evaluate(now)
        finally:
            sub.close()
            auditor.cancel()
            for t in tuple(self._tasks):
                t.cancel()
            await asyncio.gather(auditor, *self._tasks, return_exceptions=True)
            await self._flush_audit()

    def reload(self, rules: RuleSet) -> None:
        """Swap in a new, already validated rule set (the caller validated it fully)."""
        now = self.clock.now()
        cmds = self.engine.reload(rules, now)
        self.counters["reloads"] += 1
        self._record("reload", "", "ok", "", f"{len(rules.loads)} load(s), "
                     f"{len(rules.rules)} rule(s)", "sighup", {})
        for cmd in cmds:
            self._send(cmd)
        self._evaluate(now, publish_all=True)

    def load_specs(self) -> list[dict[str, Any]]:
        """The configured loads, for the web page and the MQTT discovery."""
        return [{"name": ld.name, "actuator": ld.actuator, "rated_power_w": ld.rated_power_w,
                 "priority": ld.priority, "classes": list(ld.classes),
                 "description": ld.description}
                for ld in self.engine.rules.loads]

    # --------------------------------------------------------------- inputs
    def _take(self, item: object, now: datetime) -> None:
        if isinstance(item, Snapshot):
            self.engine.observe(item)
        elif isinstance(item, PriceSignal):
            self.engine.set_price(item)
        elif isinstance(item, DemandResponseEvent):
            self.engine.set_dr_event(item, now)
        elif isinstance(item, OverrideRequest):
            self._override(item, now)
        elif isinstance(item, LoadFeedback):
            self._feedback(item, now)
        elif isinstance(item, DrEventReport):
            self._record("dr_report", "", item.status[:32], item.event_id[:64], item.device[:64],
                         item.source, dict(item.detail))

    def _override(self, req: OverrideRequest, now: datetime) -> None:
        why: str | None = None
        if req.mode == "auto":
            known = any(ld.name == req.load for ld in self.engine.rules.loads)
            if not known:
                why = f"no load named {req.load!r} is configured"
            else:
                self.engine.clear_override(req.load)
        elif req.mode not in _MODES:
            why = f"mode must be on, off, limit or auto, not {req.mode!r}"
        else:
            duration = req.duration_s if req.duration_s is not None else self.override_default_s
            if not 0 < duration <= MAX_OVERRIDE_S:
                why = f"duration_s must be more than 0 and at most {MAX_OVERRIDE_S:.0f}"
            else:
                why = self.engine.set_override(Override(
                    load=req.load, action=_MODES[req.mode], until=now + timedelta(seconds=duration),
                    limit_w=req.limit_w, reason=f"manual override ({req.source})",
                    source=req.source), now)
        ok = why is None
        self.counters["overrides" if ok else "overrides_refused"] += 1
        if ok:
            log.info("load %s: override %s from %s", req.load, req.mode, req.source)
        else:
            log.warning("load %s: override %s from %s refused: %s", req.load[:64], req.mode[:16],
                        req.source, why)
        self._record("override", req.load[:64], req.mode[:16] if ok else "refused", "",
                     why or "accepted", req.source,
                     {"duration_s": req.duration_s, "limit_w": req.limit_w})
        self.bus.publish(OverrideResult(request_id=req.request_id, load=req.load, ok=ok,
                                        reason=why or ""))
        if ok:
            # Decide at once, so the person sees the load switch and its state change.
            self._evaluate(now, publish=(req.load,))

    def _feedback(self, fb: LoadFeedback, now: datetime) -> None:
        for ld in self.engine.rules.loads:
            if ld.actuator == fb.actuator:
                self.engine.report(LoadState(load=ld.name, on=fb.on, since=fb.at,
                                             power_w=fb.power_w), now)

    # ------------------------------------------------------------- evaluate
    def _evaluate(self, now: datetime, *, publish_all: bool = False,
                  publish: tuple[str, ...] = ()) -> None:
        cmds = self.engine.evaluate(now)
        self.counters["evaluations"] += 1
        commanded = {c.load for c in cmds}
        for cmd in cmds:
            self._send(cmd)
        if cmds or publish_all or publish:
            # A commanded load's new state is published once its command is delivered
            # (see _deliver): it says what was done, and the command reaches the network
            # first instead of queueing behind its state message.
            for st in self.engine.load_states():
                if publish_all or (st.load not in commanded
                                   and (st.load in publish or self._differs(st))):
                    self.bus.publish(st)

    def _differs(self, st: LoadState) -> bool:
        old = self.bus.load_states.get(st.load)
        return old is None or (old.on, old.override, old.limit_w, old.until) != (
            st.on, st.override, st.limit_w, st.until)

    # ----------------------------------------------------------------- send
    def _send(self, cmd: LoadCommand) -> None:
        self._seq += 1
        self._latest[cmd.load] = self._seq
        self.counters["commands"] += 1
        self._record("command", cmd.load, cmd.action.value, cmd.rule, cmd.reason, "rules",
                     {"limit_w": cmd.limit_w, "until": cmd.until, "actuator": cmd.actuator})
        task = asyncio.create_task(self._deliver(cmd, self._seq), name=f"rules:send:{cmd.load}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, cmd: LoadCommand, seq: int) -> None:
        lock = self._locks.setdefault(cmd.load, asyncio.Lock())
        backoff = Backoff(0.5, 30.0)
        async with lock:
            while self._latest.get(cmd.load) == seq:
                try:
                    async with asyncio.timeout(self.send_timeout_s):
                        state = await self._dispatch(cmd)
                except (GatewayError, TimeoutError, OSError) as exc:
                    self.counters["send_failures"] += 1
                    delay = backoff.next_delay()
                    log.warning("%s: not delivered (%s); retrying in %.1f s",
                                format_command(cmd), exc or type(exc).__name__, delay)
                    await self.clock.sleep(delay)
                    continue
                except Exception as exc:  # noqa: BLE001 - a bug in an adapter must not lose a restore
                    self.counters["send_failures"] += 1
                    delay = backoff.next_delay()
                    log.error("%s: the adapter failed (%r); retrying in %.1f s",
                              format_command(cmd), exc, delay, exc_info=True)
                    await self.clock.sleep(delay)
                    continue
                if state is not None and state.power_w is not None:
                    self.engine.report(state, self.clock.now())
                if self._latest.get(cmd.load) == seq:
                    for st in self.engine.load_states():
                        if st.load == cmd.load:
                            self.bus.publish(st)
                return

    # ---------------------------------------------------------------- audit
    def _record(self, kind: str, load: str, action: str, rule: str, reason: str, source: str,
                detail: dict[str, Any]) -> None:
        if self._audit is None:
            return
        self._audit_rows.append({"ts": self.clock.now(), "kind": kind, "load": load,
                                 "action": action, "rule": rule, "reason": reason,
                                 "source": source, "detail": detail})
        self._audit_wake.set()

    async def _audit_loop(self) -> None:
        while True:
            await self._audit_wake.wait()
            self._audit_wake.clear()
            await self._flush_audit()

    async def _flush_audit(self) -> None:
        if self._audit is None or not self._audit_rows:
            return
        rows, self._audit_rows = self._audit_rows, []
        try:
            await self._audit(rows)
        except GatewayError as exc:
            log.error("cannot write %d audit row(s): %s", len(rows), exc)


def new_request_id() -> str:
    return uuid.uuid4().hex
